"""How the CLI talks to a person: one-line errors, warnings, success lines."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from securechat.errors import SecureChatError

P = ParamSpec("P")
R = TypeVar("R")

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


def fail(message: str, *, code: int = 1) -> NoReturn:
    """Print `error: message` on stderr as one line and exit with code."""
    # Text, not markup: a message may hold '[...]' or ':cd:' (fingerprints,
    # paths, YAML) that Rich would otherwise read as markup or emoji codes.
    stderr.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True, emoji=False)
    sys.exit(code)


def warn(message: str) -> None:
    stderr.print(Text.assemble(("warning:", "bold yellow"), " ", message), soft_wrap=True, emoji=False)


def exit_with(code: int) -> NoReturn:
    raise typer.Exit(code=code)


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a SecureChatError raised by a command into one line and exit 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except SecureChatError as exc:
            fail(str(exc))

    return wrapper
