"""Every error securechat raises for a mistake a user can make.

    SecureChatError            one line: what is wrong, where, how to fix it
    ├── PkiError               issuing, loading or inspecting certificates
    │   └── FileExistsRefused  a key or certificate would be overwritten
    ├── ConfigError            a YAML config is wrong (names file and field)
    └── ConnectError           a client could not reach or trust the server

The CLI prints `str(error)` as one line and exits non-zero; library code
never prints. Lower-layer exceptions are chained with `raise ... from exc`.
"""

from __future__ import annotations

from pathlib import Path


class SecureChatError(Exception):
    """Base of every securechat error; its text is meant for a person."""


class PkiError(SecureChatError):
    """A certificate or key could not be made, read, or trusted."""


class FileExistsRefused(PkiError):
    """Refusing to overwrite an existing key or certificate without --force."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"{path} already exists; refusing to overwrite it. Pass --force to replace it.")


class ConfigError(SecureChatError):
    """A config file is invalid: names the file, the field and the fix."""

    def __init__(self, source: str, field: str | None, problem: str, fix: str = "") -> None:
        self.source = source
        self.field = field
        self.problem = problem
        self.fix = fix
        where = f"{source}: {field}" if field else source
        text = f"{where}: {problem}"
        if fix:
            text += f" {fix}"
        super().__init__(text)


class ConnectError(SecureChatError):
    """The client could not talk to the server; the text says why."""
