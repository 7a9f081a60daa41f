"""Room names <-> NATS subjects, one subject per room under the deployment's stream.

A room name is `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`. NATS subjects are
dot-separated tokens, so a '.' inside a room name would split it into two
tokens (`a.b` would be the two-level subject `a` `b`, and a wildcard `*`
over rooms would no longer match it). Each room becomes exactly one token:

    '_'  ->  '_5F'      (the escape character itself)
    '.'  ->  '_2E'

Every other allowed character is kept, so subjects stay readable in
`nats stream view` and the mapping is one-to-one: '_' only ever starts an
escape in a token, so decoding is unambiguous. Subject tokens are
case-sensitive, like room names.
"""

from __future__ import annotations

import re

ROOM_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

_ESCAPES = {"_": "_5F", ".": "_2E"}
_UNESCAPE = re.compile(r"_(5F|2E)")


def validate_room(room: str) -> str:
    """Return `room` if it is a valid room name; raise ValueError naming the rule otherwise."""
    if not isinstance(room, str) or not ROOM_PATTERN.fullmatch(room):
        raise ValueError(
            f"room name {room!r} is not allowed: use 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or digit."
        )
    return room


def room_token(room: str) -> str:
    """The single subject token for `room` (see the module docstring)."""
    validate_room(room)
    return "".join(_ESCAPES.get(char, char) for char in room)


def token_room(token: str) -> str:
    """The room name a subject token stands for (the inverse of `room_token`)."""
    return _UNESCAPE.sub(lambda match: chr(int(match.group(1), 16)), token)


def room_subject_prefix(stream: str) -> str:
    """Every room subject of a stream starts with this, e.g. 'SECURECHAT.room'."""
    return f"{stream}.room"


def room_subject(stream: str, room: str) -> str:
    """The subject of one room, e.g. 'SECURECHAT.room.general' or 'SECURECHAT.room.ops_2Eeu'."""
    return f"{room_subject_prefix(stream)}.{room_token(room)}"


def subject_room(stream: str, subject: str) -> str:
    """The room a subject of `stream` belongs to; ValueError for any other subject."""
    prefix = room_subject_prefix(stream) + "."
    token = subject[len(prefix) :] if subject.startswith(prefix) else ""
    if not token or "." in token:
        raise ValueError(f"subject {subject!r} is not a room subject of stream {stream}.")
    return token_room(token)
