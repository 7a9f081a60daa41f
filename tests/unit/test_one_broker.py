"""One Broker protocol: the in-memory broker behind the shared-room hub, as JetStream is behind it on replicas."""

from __future__ import annotations

import grpc
import pytest

from securechat._gen import chat_pb2
from securechat.broker import Broker
from securechat.errors import OutOfRange
from securechat.protocol import Reason, Refusal
from securechat.server.broker import InMemoryBroker, LocalBroker
from securechat.server.rooms import Member, RoomHub
from securechat.server.shared import SharedRoomHub

Kind = chat_pb2.ChatEvent.Kind


def decoded(raw: list[bytes]) -> list[chat_pb2.ChatEvent]:
    return [chat_pb2.ChatEvent.FromString(item) for item in raw]


def shared_over_memory(*, history_size: int = 100) -> tuple[InMemoryBroker, SharedRoomHub]:
    broker = InMemoryBroker(history_size=history_size, history_rooms=100, first_id=1)
    hub_broker: Broker = broker  # the one protocol: this assignment is what mypy checks
    return broker, SharedRoomHub(hub_broker, announce_max_members=0, replica="test")


def test_the_in_memory_broker_fits_both_protocols() -> None:
    """InMemoryBroker is a Broker (what SharedRoomHub takes) and a LocalBroker (RoomHub's synchronous fast path)."""
    broker = InMemoryBroker(history_size=10, history_rooms=10, first_id=1)
    as_broker: Broker = broker
    as_local: LocalBroker = broker
    assert as_broker is as_local
    RoomHub(as_local, announce_max_members=0)
    with pytest.raises(TypeError, match=r"SharedRoomHub.post: await accept\(\) instead"):
        SharedRoomHub(as_broker, announce_max_members=0).post(Member("a", queue_size=1), "r", "x")


async def test_shared_hub_over_the_in_memory_broker_delivers_one_order() -> None:
    """Members joined through the shared hub get every message once, in id order, ids stamped by the broker."""
    broker, hub = shared_over_memory()
    alice, bob = Member("alice", queue_size=100), Member("bob", queue_size=100)
    await hub.enter(alice, "r")
    await hub.enter(bob, "r")
    for n in range(5):
        await hub.accept(alice if n % 2 else bob, "r", f"m{n}")
    assert hub.room_size("r") == 2 and hub.room_count == 1 and hub.members() == {alice, bob}
    got_a, got_b = decoded(await alice.next_events()), decoded(await bob.next_events())

    assert got_a == got_b
    assert [e.text for e in got_a] == [f"m{n}" for n in range(5)]
    assert [int(e.id) for e in got_a] == list(range(1, 6))
    assert [(e.sender, e.kind) for e in got_a[:2]] == [("bob", Kind.MESSAGE), ("alice", Kind.MESSAGE)]
    hub.leave_all(bob)
    assert hub.room_size("r") == 1
    await hub.close()


async def test_shared_hub_resumes_from_the_in_memory_history() -> None:
    """A member resuming after id 2 gets ids 3.. then live ones; after an id no longer held it is OUT_OF_RANGE."""
    broker, hub = shared_over_memory(history_size=3)
    poster = Member("p", queue_size=100)
    for n in range(5):
        await hub.accept(poster, "r", f"m{n}")  # ids 1..5; history holds 3, 4, 5
    back = Member("back", queue_size=100, resume_after=2)
    await hub.enter(back, "r")
    await hub.accept(poster, "r", "live")
    assert [e.text for e in decoded(await back.next_events())] == ["m2", "m3", "m4", "live"]

    late = Member("late", queue_size=100, resume_after=1)
    await hub.enter(late, "r")
    assert late.refusal == Refusal(
        grpc.StatusCode.OUT_OF_RANGE,
        Reason.HISTORY_GONE,
        "room r: events after id 1 are no longer held; the oldest id still held is 4. "
        "Resume with last-event-id 3 (accepting the gap) or rejoin without it.",
        (("securechat-resume-from", "3"),),
    )
    await hub.close()


async def test_in_memory_history_and_subscribe_speak_the_protocol() -> None:
    """history gives (id, event) pairs and OutOfRange; subscribe(after_id) delivers the held ones, then live, until unsubscribed."""
    broker = InMemoryBroker(history_size=2, history_rooms=10, first_id=10)
    for n in range(3):
        await broker.send("r", chat_pb2.ChatEvent(room="r", sender="a", text=f"m{n}").SerializeToString(), msg_id=f"a{n}")
    assert [(event_id, chat_pb2.ChatEvent.FromString(event).text) for event_id, event in await broker.history("r", 10)] == [
        (11, "m1"),
        (12, "m2"),
    ]
    with pytest.raises(OutOfRange) as gap:
        await broker.history("r", 9)
    assert (gap.value.oldest, gap.value.resume_from) == (11, 10)
    with pytest.raises(OutOfRange, match="event id 99 was never issued here"):
        await broker.history("r", 99)

    got: list[int] = []
    sub = await broker.subscribe("r", lambda event_id, event: got.append(event_id), after_id=11)
    stored = await (await broker.send("r", chat_pb2.ChatEvent(room="r", sender="a", text="live").SerializeToString(), msg_id="x"))
    await sub.unsubscribe()
    await broker.send("r", chat_pb2.ChatEvent(room="r", sender="a", text="after").SerializeToString(), msg_id="y")
    assert got == [12, stored.id] == [12, 13]
    assert sub.last_id == 13
