"""Every error securechat raises for a mistake a user can make.

    SecureChatError            one line: what is wrong, where, how to fix it
    ├── PkiError               issuing, loading or inspecting certificates
    │   └── FileExistsRefused  a key or certificate would be overwritten
    ├── ConfigError            a YAML config is wrong (names file and field)
    ├── ConnectError           a client could not reach or trust the server
    └── BrokerError            the message broker (NATS JetStream) failed
        ├── BrokerUnavailable  not connected / no answer: the message was not accepted
        └── OutOfRange         a resume id is older than the history still held

The CLI prints `str(error)` as one line and exits non-zero; library code
never prints. Lower-layer exceptions are chained with `raise ... from exc`.
"""

from __future__ import annotations

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


class ConfigError(SecureChatError):
    """A config file is invalid: names the file, the field and the fix."""

    def __init__(self, source: str, field: str | None, problem: str, fix: str = "", *, code: str | None = None) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        self.fix = fix
        self.code = code  # the machine-readable reason when a TLS check decided it (securechat.tls.checks.Code)
        where = f"{source}: {field}" if field else source
        text = f"{where}: {problem}"
        if fix:
            text += f" {fix}"
        super().__init__(text)


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
