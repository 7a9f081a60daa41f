"""RoomHub fan-out and Member queues, on a real event loop."""

from __future__ import annotations

import grpc

from securechat._gen import chat_pb2
from securechat.protocol import Reason, Refusal
from securechat.server.broker import HistoryGap, InMemoryBroker
from securechat.server.rooms import Member, RoomHub

Kind = chat_pb2.ChatEvent.Kind


def make_hub(*, announce_max_members: int = 100, history_size: int = 100, history_rooms: int = 100) -> RoomHub:
    broker = InMemoryBroker(history_size=history_size, history_rooms=history_rooms, first_id=1)
    return RoomHub(broker, announce_max_members=announce_max_members)


def decoded(member_events: list[bytes]) -> list[chat_pb2.ChatEvent]:
    return [chat_pb2.ChatEvent.FromString(raw) for raw in member_events]


async def test_every_member_gets_the_same_bytes_in_one_order():
    """One serialization per event: members receive identical bytes, ids increasing."""
    hub = make_hub()
    alice, bob = Member("alice", queue_size=100), Member("bob", queue_size=100)
    hub.join(alice, "r")
    hub.join(bob, "r")
    hub.post(alice, "r", "one")
    hub.post(bob, "r", "two")
    a, b = await alice.next_events(), await bob.next_events()
    assert a[-3:] == b
    events = decoded(a)
    assert [(e.kind, e.sender, e.text) for e in events] == [
        (Kind.JOIN, "alice", ""),
        (Kind.JOIN, "bob", ""),
        (Kind.MESSAGE, "alice", "one"),
        (Kind.MESSAGE, "bob", "two"),
    ]
    assert [int(e.id) for e in events] == [1, 2, 3, 4]


async def test_join_and_leave_are_not_announced_in_large_rooms():
    """Above announce_max_members, JOIN/LEAVE are not sent (they would cost O(N^2))."""
    hub = make_hub(announce_max_members=1)
    first, second = Member("a", queue_size=10), Member("b", queue_size=10)
    hub.join(first, "r")
    hub.join(second, "r")
    hub.leave_all(second)
    assert [e.kind for e in decoded(await first.next_events())] == [Kind.JOIN]


async def test_slow_consumer_is_ended_not_waited_for():
    """A full queue ends that member with RESOURCE_EXHAUSTED; the room goes on."""
    hub = make_hub(announce_max_members=0)
    slow, fast = Member("slow", queue_size=3), Member("fast", queue_size=100)
    hub.join(slow, "r")
    hub.join(fast, "r")
    for i in range(5):
        hub.post(fast, "r", str(i))
    assert slow.refusal == Refusal(
        grpc.StatusCode.RESOURCE_EXHAUSTED, Reason.SLOW_CONSUMER, "slow consumer: 3 events behind; resume with last-event-id"
    )
    assert await slow.next_events() == []
    assert [e.text for e in decoded(await fast.next_events())] == ["0", "1", "2", "3", "4"]


async def test_finish_drains_then_ends_and_abort_overrides_it():
    """finish() delivers what is queued first; a later abort() drops the rest and wins."""
    member = Member("m", queue_size=10)
    member.offer(b"x")
    bye = Refusal(grpc.StatusCode.UNAVAILABLE, Reason.SHUTTING_DOWN, "bye")
    member.finish(bye)
    assert await member.next_events() == [b"x"]
    assert await member.next_events() == []
    assert member.ended and member.refusal == bye
    other = Member("o", queue_size=10)
    other.offer(b"y")
    other.finish()
    revoked = Refusal(grpc.StatusCode.UNAUTHENTICATED, Reason.REVOKED, "revoked")
    other.abort(revoked)
    assert await other.next_events() == []
    assert other.refusal == revoked


def ids(member_events: list[bytes]) -> list[int]:
    return [int(e.id) for e in decoded(member_events)]


async def test_resume_replays_each_joined_room_after_the_id_then_live():
    """A member resuming after id 2 gets that room's later events, then live ones: nothing twice."""
    hub = make_hub(announce_max_members=0)
    poster = Member("p", queue_size=100)
    for i in range(1, 6):
        hub.post(poster, "r" if i % 2 else "s", f"m{i}")  # ids 1..5; r has 1, 3, 5
    back = Member("back", queue_size=100, resume_after=2)
    hub.join(back, "r")
    hub.post(poster, "r", "live")
    assert [e.text for e in decoded(await back.next_events())] == ["m3", "m5", "live"]


async def test_resume_older_than_history_is_out_of_range_naming_the_oldest_id():
    """With history_size 2, resuming after id 1 would skip id 2: OUT_OF_RANGE naming id 3."""
    hub = make_hub(announce_max_members=0, history_size=2)
    poster = Member("p", queue_size=100)
    for i in range(4):
        hub.post(poster, "r", str(i))  # ids 1..4, history holds 3 and 4
    late = Member("late", queue_size=100, resume_after=1)
    hub.join(late, "r")
    assert late.refusal == Refusal(
        grpc.StatusCode.OUT_OF_RANGE,
        Reason.HISTORY_GONE,
        "last-event-id 1 is older than the history kept: the oldest id still held for room 'r' is 3. "
        "Rejoin without last-event-id; events in between are lost.",
        (("securechat-resume-from", "2"),),
    )
    exact = Member("exact", queue_size=100, resume_after=2)
    hub.join(exact, "r")
    assert not exact.ended
    assert ids(await exact.next_events()) == [3, 4]


def test_broker_refuses_ids_from_another_run_and_forgotten_rooms():
    """Ids before this run, after the newest, or in a room whose history was dropped are gaps."""
    broker = InMemoryBroker(history_size=10, history_rooms=1, first_id=100)
    broker.attach(lambda room, event_id, event: None)
    broker.publish("a", "x", "1", Kind.MESSAGE)  # id 100
    broker.publish("b", "x", "2", Kind.MESSAGE)  # id 101: room a is forgotten
    assert broker.replay("b", 100) == [broker.replay("b", 99)[0]]
    for room, after, reason in [
        ("b", 50, "is from before this server started"),
        ("b", 500, "is newer than every event of this server run"),
        ("a", 99, "is older than the history kept: no events of room 'a' are held"),
    ]:
        try:
            broker.replay(room, after)
        except HistoryGap as gap:
            assert reason in str(gap)
        else:
            raise AssertionError(f"no gap for {room} after {after}")
    assert broker.replay("a", 100) == []
    assert broker.replay("new", 101) == []


def test_a_forgotten_room_names_where_to_resume():
    """A resume into a room whose history was dropped whole is refused with the newest forgotten id, which then works."""
    broker = InMemoryBroker(history_size=10, history_rooms=1, first_id=100)
    broker.attach(lambda room, event_id, event: None)
    broker.publish("a", "x", "1", Kind.MESSAGE)  # id 100
    broker.publish("b", "x", "2", Kind.MESSAGE)  # id 101: room a is forgotten
    try:
        broker.replay("a", 99)
    except HistoryGap as gap:
        assert gap.resume_from == 100
    else:
        raise AssertionError("no gap for room a after 99")
    assert broker.replay("a", 100) == []


async def test_replayed_history_does_not_count_as_falling_behind():
    """A replay longer than the queue is delivered; only live events past the queue size end the stream."""
    hub = make_hub(announce_max_members=0)
    poster = Member("p", queue_size=100)
    for i in range(10):
        hub.post(poster, "r", str(i))
    back = Member("back", queue_size=3, resume_after=0)
    hub.join(back, "r")
    hub.post(poster, "r", "live")
    assert not back.ended
    assert len(await back.next_events()) == 11


def test_a_resume_id_from_before_this_run_is_refused_for_the_whole_stream():
    """Every room would refuse an id below the run's first: RoomHub says so without a room; from the run's start it is None."""
    broker = InMemoryBroker(history_size=10, history_rooms=10, first_id=100)
    hub = RoomHub(broker, announce_max_members=100)
    assert hub.refuse_resume(98) == Refusal(
        grpc.StatusCode.OUT_OF_RANGE,
        Reason.HISTORY_GONE,
        "last-event-id 98 is from before this server started: the oldest id this server run holds is 100 or later. "
        "Resume after 99 (securechat-resume-from) or rejoin without last-event-id; events in between are lost.",
        (("securechat-resume-from", "99"),),
    )
    assert hub.refuse_resume(99) is None  # the resume point it names: nothing of this run is missed
    assert hub.refuse_resume(500) is None  # newer than every event: decided per room, on join
