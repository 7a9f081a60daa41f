"""The wire contract that securechat's server and every client share.

Beside the proto (`protos/securechat/v1/chat.proto`), a client needs to know:

- metadata keys: `last-event-id` (request; resume after this event id) and
  `securechat-refusal` (trailing; why the server ended the call);
- room names: 1-64 of `A-Za-z0-9._-`, starting with a letter or digit; an
  empty room is `general`;
- refusal reasons: a machine-readable word in the trailing metadata of every
  call the server refuses or ends early, beside the status code and a message
  for people. Clients act on the reason, never on the message text. With
  `history-gone`, `securechat-resume-from` says which id to resume from to get
  everything the server still holds (accepting the gap before it).

This module holds those names and the `Refusal` value that carries them. It
does not decide *when* to refuse (the server's admission, rooms and policy
do) nor how to show one to a person (the client's explain does).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

LAST_EVENT_ID = "last-event-id"
"""Request metadata: the decimal id of the last event this client received."""
REFUSAL_KEY = "securechat-refusal"
"""Trailing metadata: the `Reason` the server refused or ended the call for."""
RESUME_FROM_KEY = "securechat-resume-from"
"""Trailing metadata beside `history-gone`: the last-event-id that resumes with everything still held."""

DEFAULT_ROOM = "general"
ROOM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ROOM_RULE = "1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"


RULE_INHERITS = {"/securechat.v1.ChatService/ChatBatched": "/securechat.v1.ChatService/Chat"}
"""Authorization: a method without a rule of its own is decided by this one's (ChatBatched is Chat, batched)."""


def valid_room(room: str) -> bool:
    """True if ROOM is a room name the server accepts (the empty room means `general`)."""
    return ROOM_NAME.fullmatch(room) is not None


class Reason(str, enum.Enum):
    """Why the server refused or ended a call: the value of `securechat-refusal`.

    The status code says how to react in general (retry, fix, give up); the
    reason says exactly what happened. New reasons may be added; a client
    treats an unknown one by its status code.
    """

    # The caller's identity and permissions.
    NO_CERTIFICATE = "no-certificate"
    """UNAUTHENTICATED: mutual TLS is required and no client certificate was sent."""
    BAD_CERTIFICATE = "bad-certificate"
    """UNAUTHENTICATED: the certificate cannot name a client (no clientAuth, bad SAN, CA:TRUE ...)."""
    REVOKED = "revoked"
    """UNAUTHENTICATED: the certificate (or one in its chain) is in the CRL."""
    NOT_ALLOWED = "not-allowed"
    """PERMISSION_DENIED: authz does not let this identity call this method."""
    # What the caller sent.
    INVALID_ROOM = "invalid-room"
    """INVALID_ARGUMENT: the room name breaks the room rule."""
    TEXT_TOO_LONG = "text-too-long"
    """INVALID_ARGUMENT: longer than limits.max_text_length."""
    BAD_RESUME_ID = "bad-resume-id"
    """INVALID_ARGUMENT: `last-event-id` is not a decimal event id."""
    # Limits.
    RATE_LIMITED = "rate-limited"
    """RESOURCE_EXHAUSTED: the identity sends faster than limits.max_messages_per_second."""
    TOO_MANY_ROOMS = "too-many-rooms"
    """RESOURCE_EXHAUSTED: the stream is in limits.max_rooms_per_stream rooms."""
    TOO_MANY_STREAMS = "too-many-streams"
    """RESOURCE_EXHAUSTED: the identity has limits.max_streams_per_identity streams open."""
    TOO_MANY_CONNECTIONS = "too-many-connections"
    """RESOURCE_EXHAUSTED: the server has limits.max_connections connections."""
    SLOW_CONSUMER = "slow-consumer"
    """RESOURCE_EXHAUSTED: the member fell limits.queue_size events behind; resume with last-event-id."""
    # Delivery.
    HISTORY_GONE = "history-gone"
    """OUT_OF_RANGE: the resume id is older than the history kept (the message names the oldest id)."""
    FEED_LOST = "feed-lost"
    """UNAVAILABLE: the replica lost its broker feed for a room; reconnect with last-event-id."""
    BROKER_UNAVAILABLE = "broker-unavailable"
    """UNAVAILABLE: the broker did not accept the message; it was not posted. Retry."""
    SHUTTING_DOWN = "shutting-down"
    """UNAVAILABLE: the server is stopping; reconnect (to another replica) with last-event-id."""
    STREAM_BROKEN = "stream-broken"
    """CANCELLED: the request stream broke under the server."""


@dataclass(frozen=True)
class Refusal:
    """A status code, its machine-readable reason, and a message for people."""

    code: grpc.StatusCode
    reason: Reason
    message: str
    details: tuple[tuple[str, str], ...] = ()
    """More trailing metadata for programs, e.g. (RESUME_FROM_KEY, "1234")."""

    @property
    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((REFUSAL_KEY, self.reason.value), *self.details)

    async def abort(self, context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
        """End the call with this refusal: code, message and the reason in trailing metadata."""
        await context.abort(self.code, self.message, trailing_metadata=self.trailing_metadata)
        raise AssertionError("context.abort returned")  # it always raises


def refusal_reason(metadata: Sequence[tuple[str, str | bytes]] | None) -> Reason | None:
    """The `Reason` in a call's trailing metadata, or None (absent or unknown to this version)."""
    for key, value in metadata or ():
        if key == REFUSAL_KEY:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
            try:
                return Reason(text)
            except ValueError:
                return None
    return None


def history_gone(message: str, resume_from: int | None) -> Refusal:
    """OUT_OF_RANGE for a resume id older than the history kept, with the id to resume from when there is one."""
    details = ((RESUME_FROM_KEY, str(resume_from)),) if resume_from is not None else ()
    return Refusal(grpc.StatusCode.OUT_OF_RANGE, Reason.HISTORY_GONE, message, details)


def resume_from(error: grpc.RpcError) -> int | None:
    """The `securechat-resume-from` id of a `history-gone` refusal, or None."""
    trailing = getattr(error, "trailing_metadata", None)
    for key, value in (trailing() if trailing is not None else None) or ():
        if key == RESUME_FROM_KEY:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
            return int(text) if text.isascii() and text.isdigit() else None
    return None


def reason_of(error: grpc.RpcError) -> Reason | None:
    """The refusal reason of a failed call (sync or aio), read from its trailing metadata."""
    trailing = getattr(error, "trailing_metadata", None)
    if trailing is None:
        return None
    metadata = trailing()
    return refusal_reason(tuple(metadata) if metadata is not None else None)
