"""The CLI's one-line errors print the message exactly as written."""

from __future__ import annotations

import pytest

from securechat.cli import output


@pytest.mark.parametrize("message", ["tls: [bold]x[/] not found", "fingerprint AB:CD:cd:EF", "server.yaml: :smile: odd"])
def test_fail_prints_markup_and_emoji_codes_literally(capsys, message):
    """Brackets and ':name:' in a message are text, not Rich markup or emoji."""
    with pytest.raises(SystemExit) as exited:
        output.fail(message)
    assert exited.value.code == 1
    assert capsys.readouterr().err == f"error: {message}\n"
