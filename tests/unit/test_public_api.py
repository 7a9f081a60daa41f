"""The public API: every name in securechat.__all__ resolves, and importing securechat stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import securechat


@pytest.mark.parametrize("name", securechat.__all__)
def test_every_public_name_resolves(name: str) -> None:
    """Each exported name is there (lazily loaded ones included)."""
    assert getattr(securechat, name) is not None


def test_an_unknown_name_is_an_attribute_error() -> None:
    """The failing twin: a name that is not public is not found."""
    with pytest.raises(AttributeError, match="has no attribute 'material'"):
        securechat.material  # noqa: B018


def test_importing_securechat_does_not_load_grpc() -> None:
    """`import securechat` (what every CLI start pays) loads neither grpc nor the server."""
    code = "import sys, securechat; print(sorted(m for m in sys.modules if m == 'grpc' or m.startswith('securechat.server')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_all_lists_exactly_the_eager_and_lazy_names() -> None:
    """__all__ is written out (for linters and readers); it must match what the module serves."""
    eager = {"BrokerError", "BrokerUnavailable", "ConfigError", "ConfigProblem", "ConnectError", "FileExistsRefused"}
    assert eager <= set(securechat.__all__)
    assert set(securechat._LAZY) <= set(securechat.__all__)
