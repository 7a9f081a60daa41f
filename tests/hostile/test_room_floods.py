"""One identity flooding rooms (issue 13): presence churn, room creation, history eviction; each beside its passing twin."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from securechat._gen import chat_pb2
from securechat.client import open_channel, open_chat
from securechat.protocol import Reason, reason_of
from securechat.server.broker import HistoryGap, InMemoryBroker

Kind = chat_pb2.ChatEvent.Kind
STEP = 5.0


def _broker(rooms: int) -> InMemoryBroker:
    broker = InMemoryBroker(history_size=10, history_rooms=rooms)
    broker.attach(lambda room, event_id, event: None)
    return broker


def test_one_identity_creating_rooms_in_bulk_evicts_only_its_own_history():
    """mallory starting 50 histories with room for 10 drops her own; alice's room can still be resumed."""
    broker = _broker(10)
    broker.publish("real", "alice", "hello", Kind.MESSAGE)
    after = broker.last_id
    broker.publish("real", "alice", "still here", Kind.MESSAGE)
    for i in range(50):
        broker.publish(f"empty-{i}", "mallory", "", Kind.JOIN)
    assert len(broker.replay("real", after)) == 1
    assert broker.history_creators == {"alice": 1, "mallory": 9}


def test_rooms_of_many_identities_still_make_room_for_new_ones():
    """Twin: when every identity holds one room, the room used longest ago goes, as before."""
    broker = _broker(3)
    for name in ("a", "b", "c"):
        broker.publish(f"room-{name}", name, "x", Kind.MESSAGE)
    after = broker.first_id - 1
    broker.publish("room-b", "b", "y", Kind.MESSAGE)  # room-a is now the least recently used
    broker.publish("room-d", "d", "x", Kind.MESSAGE)
    with pytest.raises(HistoryGap, match="is older than the history kept"):
        broker.replay("room-a", after)
    assert len(broker.replay("room-b", after)) == 2
    assert sorted(broker.history_creators) == ["b", "c", "d"]


async def _events_for(stream, seconds: float) -> list[chat_pb2.ChatEvent]:
    events, iterator = [], aiter(stream)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            events.append(await asyncio.wait_for(anext(iterator), left))
        except asyncio.TimeoutError:
            break
    return events


async def test_stream_churn_cannot_flood_a_room_with_presence(deployment, start):
    """bob opening and closing 40 streams into alice's room: at most message_burst (5) JOIN/LEAVE reach her, bob included."""
    server = await start(limits={"max_messages_per_second": 1, "message_burst": 5})
    async with open_chat(deployment.client("alice", server.port)) as alice:
        await alice.join("r")
        assert (await asyncio.wait_for(anext(aiter(alice)), STEP)).kind == Kind.JOIN
        for _ in range(20):
            async with open_chat(deployment.client("bob", server.port)) as bob:
                await bob.join("r")
                await asyncio.sleep(0.05)  # joined: announced or, past the budget, not
        presence = [e for e in await _events_for(alice, 1.0) if e.kind in (Kind.JOIN, Kind.LEAVE)]
    assert 1 <= len(presence) <= 5 + 3  # the burst, plus what refills during the churn


async def test_presence_within_the_budget_is_announced(deployment, start):
    """Twin: bob joining and leaving once is announced to alice both times."""
    server = await start(limits={"max_messages_per_second": 1, "message_burst": 5})
    async with open_chat(deployment.client("alice", server.port)) as alice:
        await alice.join("r")
        assert (await asyncio.wait_for(anext(aiter(alice)), STEP)).kind == Kind.JOIN
        async with open_chat(deployment.client("bob", server.port)) as bob:
            await bob.join("r")
            await asyncio.wait_for(anext(aiter(bob)), STEP)
        kinds = [(e.sender, e.kind) for e in await _events_for(alice, 1.0)]
    assert kinds == [("bob", Kind.JOIN), ("bob", Kind.LEAVE)]


async def _joins(rooms: int, *, then_wait: bool):
    for i in range(rooms):
        yield chat_pb2.ChatMessage(room=f"room-{i}")
    if then_wait:  # no half-close racing the server's refusal (the client would see INTERNAL)
        await asyncio.Event().wait()


@pytest.mark.parametrize(("rooms", "refused"), [(5, False), (11, True)])
async def test_creating_rooms_counts_against_the_message_budget(deployment, start, rooms, refused):
    """message_burst 10: joining an 11th new room at once ends the stream with rate-limited; 5 rooms are fine."""
    server = await start(limits={"max_messages_per_second": 1, "message_burst": 10, "max_rooms_per_stream": 100})
    async with open_channel(deployment.client("alice", server.port)) as channel:
        call = channel.stub.Chat(_joins(rooms, then_wait=refused), timeout=STEP)
        joins, error = 0, None
        try:
            async for event in call:
                joins += event.kind == Kind.JOIN
        except grpc.aio.AioRpcError as exc:
            error = exc
    if refused:
        assert error is not None and error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason_of(error) is Reason.RATE_LIMITED
        assert "is creating rooms too fast" in error.details()
        assert joins == 10
    else:
        assert error is None  # the stream ended normally when alice stopped sending
        assert joins == rooms
