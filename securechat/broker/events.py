"""What every broker hands back: stored events with their ids, without parsing them.

Kept apart from jetstream.py so that the in-memory broker (a single server,
no nats-py) uses the same helpers.
"""

from __future__ import annotations

from dataclasses import dataclass

from securechat._gen import chat_pb2


@dataclass(frozen=True)
class Stored:
    """An event JetStream holds: its id, and whether this publish repeated an earlier one's msg_id."""

    id: int
    duplicate: bool = False


def stamp_id(event: bytes, event_id: int) -> bytes:
    """A serialized ChatEvent with its `id` field set, without parsing it.

    Protobuf merges concatenated messages and the last value of a scalar field
    wins, so appending an encoded `ChatEvent(id=...)` sets the id for every
    reader. https://protobuf.dev/programming-guides/encoding/#last-one-wins
    """
    return event + chat_pb2.ChatEvent(id=str(event_id)).SerializeToString()
