"""ChatEventBatch built from shared bytes: frame_event's framing and the service's split at MAX_BATCH_BYTES."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError

from securechat._gen import chat_pb2
from securechat.server.rooms import frame_event
from securechat.server.service import _split


@pytest.mark.parametrize("text_size", [0, 1, 100, 127 - 8, 128, 16_383, 16_384, 300_000])
def test_framed_events_concatenate_to_the_serialized_batch(text_size):
    """Across the varint length's 1/2/3-byte boundaries, framed events joined are exactly ChatEventBatch's bytes."""
    events = [
        chat_pb2.ChatEvent(id=str(i), room="r", text="x" * text_size, kind=chat_pb2.ChatEvent.MESSAGE) for i in range(3)
    ]
    joined = b"".join(frame_event(event.SerializeToString()) for event in events)
    assert joined == chat_pb2.ChatEventBatch(events=events).SerializeToString()
    assert list(chat_pb2.ChatEventBatch.FromString(joined).events) == events
    # The twin: one length byte short and the bytes no longer parse back as those events.
    broken = frame_event(events[0].SerializeToString())[:-1]
    with pytest.raises(DecodeError, match="Error parsing message"):
        chat_pb2.ChatEventBatch.FromString(broken)


@pytest.mark.parametrize(
    ("sizes", "limit", "parts"),
    [
        ([10, 10, 10], 30, [[10, 10, 10]]),
        ([10, 10, 10], 25, [[10, 10], [10]]),
        ([40, 10], 25, [[40], [10]]),  # one event over the limit travels alone
        ([10, 40, 10], 25, [[10], [40], [10]]),
    ],
)
def test_split_keeps_order_and_the_limit(sizes, limit, parts):
    """Parts are in order, each within LIMIT unless a single event is larger."""
    batch = [bytes([i]) * size for i, size in enumerate(sizes)]
    split = _split(batch, limit)
    assert [[len(piece) for piece in part] for part in split] == parts
    assert [piece for part in split for piece in part] == batch
