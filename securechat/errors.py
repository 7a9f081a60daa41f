"""Every error securechat raises for a mistake a user can make.

    SecureChatError            one line: what is wrong, where, how to fix it
    ├── PkiError               issuing, loading or inspecting certificates
    │   └── FileExistsRefused  a key or certificate would be overwritten
    ├── ConfigError            a YAML config is wrong: every problem of the file, one per line
    ├── InputFileError         an input file is not a regular file, or is larger than its limit
    ├── ConnectError           a client could not reach or trust the server
    └── BrokerError            the message broker (NATS JetStream) failed
        ├── BrokerUnavailable  not connected / no answer: the message was not accepted
        └── OutOfRange         a resume id is older than the history still held

The CLI prints `str(error)` -- one line, or one line per problem for a
ConfigError -- and exits non-zero; library code never prints. Lower-layer exceptions are chained with `raise ... from exc`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc

    from securechat.protocol import Reason


class SecureChatError(Exception):
    """Base of every securechat error; its text is meant for a person."""


class PkiError(SecureChatError):
    """A certificate or key could not be made, read, or trusted."""


class FileExistsRefused(PkiError):
    """Refusing to overwrite an existing key or certificate without --force."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"{path} already exists; refusing to overwrite it. Pass --force to replace it.")


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config: the file (or flag), the dotted field, what is wrong and the fix."""

    source: str
    field: str | None
    problem: str
    fix: str = ""
    code: str | None = None
    """The machine-readable reason when a TLS check decided it (securechat.tls.checks.Code)."""

    def __str__(self) -> str:
        where = f"{self.source}: {self.field}" if self.field else self.source
        return f"{where}: {self.problem} {self.fix}" if self.fix else f"{where}: {self.problem}"


class ConfigError(SecureChatError):
    """A config file is invalid: names the file, the field and the fix, for every problem found.

    `problems` holds each problem of the file (at least one), in the order
    they were found; `str()` is one line per problem. `source`, `field`,
    `problem` and `fix` are the first problem's.
    """

    def __init__(self, source: str, field: str | None, problem: str, fix: str = "", *, code: str | None = None) -> None:
        self._init((ConfigProblem(source, field, problem, fix, code=code),))

    @classmethod
    def from_problems(cls, problems: Sequence[ConfigProblem]) -> ConfigError:
        """One error carrying every problem in PROBLEMS (which must not be empty)."""
        if not problems:
            raise ValueError("a ConfigError needs at least one problem")
        error = cls.__new__(cls)
        error._init(tuple(problems))
        return error

    def _init(self, problems: tuple[ConfigProblem, ...]) -> None:
        self.problems = problems
        first = problems[0]
        self.source = first.source
        self.field = first.field
        self.problem = first.problem
        self.fix = first.fix
        self.code = first.code  # the machine-readable reason when a TLS check decided it (securechat.tls.checks.Code)
        super().__init__("\n".join(str(item) for item in problems))

    def __reduce__(self) -> tuple[object, ...]:
        # Exceptions pickle through their args; rebuild from the problems instead.
        return (ConfigError.from_problems, (self.problems,))


class InputFileError(SecureChatError):
    """An input file was refused before reading: not a regular file (a FIFO, a device, a directory) or too large.

    `path`, `problem` and `fix` are data, so a config loader can name its field:
    `str()` is `PATH PROBLEM FIX`.
    """

    def __init__(self, path: str, problem: str, fix: str) -> None:
        self.path = path
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path} {problem} {fix}")

    def __reduce__(self) -> tuple[object, ...]:
        return (InputFileError, (self.path, self.problem, self.fix))


class ConnectError(SecureChatError):
    """The client could not talk to the server; the text says why.

    `code` and `reason` are the gRPC status and the server's refusal reason
    (`securechat.protocol.Reason`, from trailing metadata) when the server
    answered: code acts on them, never on the text.
    """

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None, reason: Reason | None = None) -> None:
        self.code = code
        self.reason = reason
        super().__init__(message)


class BrokerError(SecureChatError):
    """The message broker shared by replicas (NATS JetStream) failed; the text says how."""


class BrokerUnavailable(BrokerError):
    """The broker could not be reached or did not answer in time.

    For a publish: `maybe_accepted` is False when nothing was sent (the
    message is certainly not stored); True when a request went out but no
    acknowledgement came back, so it may still appear -- a retry with the
    same msg_id would not store it twice.
    """

    def __init__(self, message: str, *, maybe_accepted: bool = False) -> None:
        self.maybe_accepted = maybe_accepted
        super().__init__(message)


class OutOfRange(BrokerError):
    """A resume id is older than the history a room still holds (gRPC OUT_OF_RANGE).

    `oldest` is the oldest id still held for the room: resuming with
    last-event-id `oldest - 1` or later is complete.
    """

    def __init__(self, room: str, after_id: int, oldest: int, *, newest: int | None = None) -> None:
        self.room = room
        self.after_id = after_id
        self.oldest = oldest
        self.newest = newest
        if newest is not None and after_id > newest:
            # Ids above the newest were never issued here: the broker's stream
            # was recreated, or the id came from another deployment.
            text = f"room {room}: event id {after_id} was never issued here (the newest is {newest}). Rejoin without last-event-id."
        else:
            text = (
                f"room {room}: events after id {after_id} are no longer held; the oldest id still held is {oldest}. "
                f"Resume with last-event-id {oldest - 1} (accepting the gap) or rejoin without it."
            )
        super().__init__(text)

    @property
    def resume_from(self) -> int:
        """The last-event-id that gets everything still held, accepting the gap before it."""
        return self.oldest - 1
