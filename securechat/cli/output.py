"""How the CLI talks to a person: one-line errors, warnings, success lines."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, ParamSpec, TypeVar

import typer

from securechat.cli.inert import inert
from securechat.errors import SecureChatError

if TYPE_CHECKING:
    from rich.console import Console

P = ParamSpec("P")
R = TypeVar("R")


@functools.cache
def console(*, stderr: bool = False) -> Console:
    """The Rich console for stdout (or stderr), made on first use."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def __getattr__(name: str) -> Console:
    # `stdout` and `stderr` are made when first imported or used, so a command
    # that only prints plain lines (`certs ...`) does not load Rich at start.
    if name in ("stdout", "stderr"):
        return console(stderr=name == "stderr")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def fail(message: str, *, code: int = 1) -> NoReturn:
    """Print `error: message` on stderr and exit with code; each line of MESSAGE gets its own `error:`.

    A ConfigError holds every problem of a file, one per line.
    """
    # Text, not markup: a message may hold '[...]' or ':cd:' (fingerprints,
    # paths, YAML) that Rich would otherwise read as markup or emoji codes,
    # and text another party controls (a server's details, a certificate's
    # names) that must reach the terminal inert.
    from rich.text import Text

    # One line per problem (a config reports all of its problems at once), each made inert.
    for line in message.splitlines() or [""]:
        console(stderr=True).print(Text.assemble(("error:", "bold red"), " ", inert(line)), soft_wrap=True, emoji=False)
    sys.exit(code)


def warn(message: str) -> None:
    from rich.text import Text

    console(stderr=True).print(
        Text.assemble(("warning:", "bold yellow"), " ", inert(message)), soft_wrap=True, emoji=False
    )


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
