"""inert(): the one function between other people's text and our terminal, and the chat View that uses it."""

from __future__ import annotations

import pytest

from securechat._gen import chat_pb2
from securechat.cli.chat import View, use_colour
from securechat.cli.inert import inert


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, ünïcödé, 日本語, emoji 👩‍💻", "plain text, ünïcödé, 日本語, emoji 👩‍💻"),
        ("[bold]markup[/] [link=http://x]y[/link]", "[bold]markup[/] [link=http://x]y[/link]"),
        ("a\nb\r\tc", "a\\nb\\r\\tc"),
        ("\x1b[2J\x1b]0;title\x07", "\\x1b[2J\\x1b]0;title\\x07"),
        ("\x9b31m C1 CSI, \x7f DEL, \x00 NUL", "\\x9b31m C1 CSI, \\x7f DEL, \\x00 NUL"),
        ("\u202eevil\u202c \u2066iso\u2069 \u200f", "\\u202eevil\\u202c \\u2066iso\\u2069 \\u200f"),
        ("line\u2028sep\u2029para", "line\\u2028sep\\u2029para"),
        ("tag\U000e0041\ufeff", "tag\\U000e0041\\ufeff"),
    ],
)
def test_inert_shows_controls_and_keeps_text(text: str, shown: str):
    """Controls, escapes, line breaks and bidi controls become visible escapes; printable text and markup stay as they are."""
    assert inert(text) == shown
    assert inert(shown) == shown  # what it makes is itself inert


def test_view_renders_every_field_another_party_controls_inert():
    """Sender, room and text of an event are all passed through inert()."""
    view = View(me="alice", show_ids=True, interactive=False, unicode=True)
    event = chat_pb2.ChatEvent(
        id="7", room="r\x1b[1m", sender="[/bold]\x1b]8;;x\x07", text="hi\nalice: x", sent_at_unix_ms=0, kind=1
    )
    line = "".join(text for _, text in view.event(event, kind="message"))
    assert line == "--:--:-- #7 [r\\x1b[1m] [/bold]\\x1b]8;;x\\x07: hi\\nalice: x"


def test_colour_follows_no_color_and_terminals(monkeypatch: pytest.MonkeyPatch):
    """NO_COLOR or a non-terminal means no colour."""

    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert use_colour(Tty())  # type: ignore[arg-type]
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(Tty())  # type: ignore[arg-type]
    monkeypatch.delenv("NO_COLOR")
    assert not use_colour(open("/dev/null"))  # noqa: SIM115 - a non-terminal
