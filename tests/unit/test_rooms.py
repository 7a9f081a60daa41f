"""RoomHub fan-out and Member queues, on a real event loop."""

from __future__ import annotations

import grpc

from securechat._gen import chat_pb2
from securechat.server.rooms import Member, RoomHub

Kind = chat_pb2.ChatEvent.Kind


def decoded(member_events: list[bytes]) -> list[chat_pb2.ChatEvent]:
    return [chat_pb2.ChatEvent.FromString(raw) for raw in member_events]


async def test_every_member_gets_the_same_bytes_in_one_order():
    """One serialization per event: members receive identical bytes, ids increasing."""
    hub = RoomHub(announce_max_members=100)
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
    hub = RoomHub(announce_max_members=1)
    first, second = Member("a", queue_size=10), Member("b", queue_size=10)
    hub.join(first, "r")
    hub.join(second, "r")
    hub.leave_all(second)
    assert [e.kind for e in decoded(await first.next_events())] == [Kind.JOIN]


async def test_slow_consumer_is_ended_not_waited_for():
    """A full queue ends that member with RESOURCE_EXHAUSTED; the room goes on."""
    hub = RoomHub(announce_max_members=0)
    slow, fast = Member("slow", queue_size=3), Member("fast", queue_size=100)
    hub.join(slow, "r")
    hub.join(fast, "r")
    for i in range(5):
        hub.post(fast, "r", str(i))
    assert slow.ended is not None
    code, message = slow.ended
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert message.startswith("slow consumer: 3 events behind")
    assert await slow.next_events() == []
    assert [e.text for e in decoded(await fast.next_events())] == ["0", "1", "2", "3", "4"]


async def test_finish_drains_then_ends_and_abort_overrides_it():
    """finish() delivers what is queued first; a later abort() drops the rest and wins."""
    member = Member("m", queue_size=10)
    member.offer(b"x")
    member.finish(grpc.StatusCode.UNAVAILABLE, "bye")
    assert await member.next_events() == [b"x"]
    assert await member.next_events() == []
    assert member.ended == (grpc.StatusCode.UNAVAILABLE, "bye")
    other = Member("o", queue_size=10)
    other.offer(b"y")
    other.finish()
    other.abort(grpc.StatusCode.UNAUTHENTICATED, "revoked")
    assert await other.next_events() == []
    assert other.ended == (grpc.StatusCode.UNAUTHENTICATED, "revoked")
