"""Rooms, their members, and fan-out.

A `Member` is one open Chat stream. `Rooms` is membership and local
fan-out: it appends an event's bytes to the bounded queue of every member of
the room, here. A hub composes it with a broker (`securechat.broker.Broker`):

    RoomHub        a single server: the in-memory broker's synchronous fast
                   path (`LocalBroker`) accepts each message, which gives it an
                   id and serializes the ChatEvent once, and delivers it at once
    SharedRoomHub  replicas (`securechat.server.shared`): any Broker, NATS
                   JetStream in production; delivery from its subscriptions

Everything runs on the one event loop, so appending to every queue in turn
keeps one order per room, and the per-member cost of an event is one deque
append. `Hub` is what ChatService needs from either.

A ChatBatched member (`batched=True`) queues each event framed as one
element of `ChatEventBatch.events` (field 1: its tag, its length, its
bytes; see `frame_event`), so that its writer sends a batch as the plain
concatenation of what is queued. The hub frames each event once, the first
time a batched member of the room needs it, and hands the same bytes to
every batched member.

A member whose queue is full is a slow consumer: its stream is ended with
RESOURCE_EXHAUSTED instead of slowing the room or blocking the sender. A
member is never dropped silently: it is either delivered to, or told.

A member that opened its stream with `last-event-id` first gets, for each
room it joins, that room's events after the id (from the broker's history),
then the live ones; if they are no longer held its stream ends with
OUT_OF_RANGE naming the oldest id still held. An id from before this server
run is refused for the whole stream as it opens (`RoomHub.refuse_resume`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import grpc

from securechat._gen import chat_pb2
from securechat.protocol import Reason, Refusal, history_gone
from securechat.server.broker import HistoryGap, LocalBroker

log = logging.getLogger(__name__)

Kind = chat_pb2.ChatEvent.Kind

# `ChatEventBatch.events` is field 1, length-delimited: key (1 << 3) | 2.
_EVENTS_KEY = b"\x0a"


def frame_event(event: bytes) -> bytes:
    """EVENT (a serialized ChatEvent) as one element of ChatEventBatch.events: key, varint length, bytes.

    Concatenating framed events gives a serialized ChatEventBatch with those
    events in that order (protobuf encoding, "Length-delimited records").
    """
    size = len(event)
    if size < 0x80:  # most chat events: a one-byte length
        return _EVENTS_KEY + bytes((size,)) + event
    length = bytearray()
    while size >= 0x80:
        length.append((size & 0x7F) | 0x80)
        size >>= 7
    length.append(size)
    return _EVENTS_KEY + bytes(length) + event


class Member:
    """One Chat or ChatBatched stream: its identity, its rooms, and its queue of serialized events."""

    __slots__ = (
        "name",
        "rooms",
        "since",
        "resume_after",
        "batched",
        "_events",
        "_limit",
        "_replayed",
        "_waiter",
        "_closed",
        "_end",
        "_draining",
        "on_abort",
    )

    def __init__(self, name: str, *, queue_size: int, resume_after: int | None = None, batched: bool = False) -> None:
        self.name = name
        self.batched = batched  # queue events framed for ChatEventBatch (frame_event)
        self.rooms: set[str] = set()
        # Per room: this stream gets every event of the room with an id above
        # this one (its history after resume_after, then live events).
        self.since: dict[str, int] = {}
        self.resume_after = resume_after
        self._events: deque[bytes] = deque()
        self._limit = queue_size
        self._replayed = 0  # history queued on join; it does not count against the limit
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._end: Refusal | None = None  # None with _closed: ended normally (OK)
        self._draining = False
        # Called on abort: the stream's writer may be blocked in a write that
        # HTTP/2 flow control holds back, and must be interrupted to end it.
        self.on_abort: Callable[[], object] | None = None

    def offer(self, event: bytes, framed: bytes | None = None) -> None:
        """Queue one serialized event; end the stream if the member cannot keep up.

        FRAMED is `frame_event(event)` when the caller already has it (the
        hub shares one per event); a batched member frames EVENT otherwise.
        """
        if self._closed:
            return
        if self.batched:
            event = framed if framed is not None else frame_event(event)
        if len(self._events) >= self._limit + self._replayed:
            self.abort(
                Refusal(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    Reason.SLOW_CONSUMER,
                    f"slow consumer: {len(self._events)} events behind; resume with last-event-id",
                )
            )
            return
        self._events.append(event)
        if self._waiter is not None:
            self._wake()

    def replay(self, events: list[bytes]) -> None:
        """Queue history on join, ahead of live events, whatever the queue's size."""
        if not self._closed and events:
            self._events.extend(map(frame_event, events) if self.batched else events)
            self._replayed += len(events)
            self._wake()

    @property
    def backlog(self) -> int:
        return len(self._events)

    def finish(self, refusal: Refusal | None = None) -> None:
        """End the stream once everything already queued is written: OK, or with REFUSAL."""
        if not self._closed:
            self._closed = True
            self._end = refusal
            self._draining = True
            self._wake()

    def abort(self, refusal: Refusal) -> None:
        """End the stream now with REFUSAL; events still queued are not sent."""
        if not self._closed or self._draining:
            self._closed = True
            self._end = refusal
            self._draining = False
            self._events.clear()
            self._wake()
            if self.on_abort is not None:
                self.on_abort()

    @property
    def ended(self) -> bool:
        """True once the stream was finished or aborted."""
        return self._closed

    @property
    def refusal(self) -> Refusal | None:
        """Why the stream ended, if it did not end normally."""
        return self._end

    async def next_events(self) -> list[bytes]:
        """Wait for queued events; an empty list means the stream has ended."""
        while not self._events:
            if self._closed:
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        batch = list(self._events)
        self._events.clear()
        self._replayed = 0
        return batch

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


FanOutObserver = Callable[[int, float], None]
Presence = Callable[[str], bool]
"""presence(identity): whether a JOIN/LEAVE of identity may be announced now (it spends the identity's budget)."""


class Rooms:
    """Membership and local fan-out: each room's members on this server, and one deque append per member per event."""

    __slots__ = ("_rooms", "_on_fan_out")

    def __init__(self, *, on_fan_out: FanOutObserver | None = None) -> None:
        self._rooms: dict[str, dict[Member, None]] = {}
        self._on_fan_out = on_fan_out

    def size(self, room: str) -> int:
        return len(self._rooms.get(room, ()))

    @property
    def count(self) -> int:
        return len(self._rooms)

    def of(self, room: str) -> dict[Member, None] | None:
        """The members of `room` here, in join order (None: nobody)."""
        return self._rooms.get(room)

    def add(self, member: Member, room: str) -> tuple[int, bool]:
        """Add `member` to `room`; (members now, whether the room was created)."""
        members = self._rooms.get(room)
        created = members is None
        if members is None:
            members = self._rooms[room] = {}
        members[member] = None
        return len(members), created

    def remove(self, member: Member, room: str) -> int | None:
        """Take `member` out of `room`; the members left, or None if it was not there."""
        members = self._rooms.get(room)
        if members is None or members.pop(member, "absent") == "absent":
            return None
        if not members:
            del self._rooms[room]
        return len(members)

    def members(self) -> set[Member]:
        return {member for members in self._rooms.values() for member in members}

    def deliver(self, room: str, event_id: int, event: bytes) -> None:
        """Hand one serialized event to every member of `room`: one deque append each."""
        members = self._rooms.get(room)
        if not members:
            return
        started = time.perf_counter()
        # Aborting a slow member only marks it; it leaves the room later, from
        # its own stream, so this dict does not change while we walk it.
        framed = None  # framed once for ChatBatched members, the first time one needs it
        for member in members:
            if member.batched and framed is None:
                framed = frame_event(event)
            member.offer(event, framed)
        if self._on_fan_out is not None:
            self._on_fan_out(len(members), time.perf_counter() - started)


class Hub(Protocol):
    """What ChatService needs from a hub. `remote`: await enter/accept; otherwise call join/post (no coroutine)."""

    remote: bool
    presence: Presence | None

    def room_size(self, room: str) -> int: ...

    @property
    def room_count(self) -> int: ...

    def members(self) -> set[Member]: ...

    def refuse_resume(self, after: int) -> Refusal | None: ...

    def join(self, member: Member, room: str) -> None: ...

    def post(self, member: Member, room: str, text: str, client_msg_id: str = "") -> bool: ...

    async def enter(self, member: Member, room: str) -> None: ...

    async def accept(self, member: Member, room: str, text: str, client_msg_id: str = "") -> bool: ...

    def leave_all(self, member: Member) -> None: ...

    async def close(self) -> None: ...


class RoomHub:
    """A single server's rooms: `Rooms` over the in-memory broker's synchronous fast path."""

    remote = False  # join/post complete at once: ChatService calls them without a coroutine per message

    def __init__(
        self, broker: LocalBroker, *, announce_max_members: int, on_fan_out: FanOutObserver | None = None
    ) -> None:
        self._local = Rooms(on_fan_out=on_fan_out)
        self._announce_max = announce_max_members
        self._broker = broker
        self.presence: Presence | None = None
        broker.attach(self._local.deliver)

    def room_size(self, room: str) -> int:
        return self._local.size(room)

    @property
    def room_count(self) -> int:
        return self._local.count

    def refuse_resume(self, after: int) -> Refusal | None:
        """The refusal every room would give a stream resuming after AFTER, if it does not depend on the room.

        An id from before this server run: no room holds what came after it,
        so the stream is refused as it opens (history-gone, resuming from the
        run's start), before it joins anything. Other ids are decided per room
        on join, as their history may or may not reach back to them.
        """
        floor = self._broker.resume_floor
        if after >= floor:
            return None
        return history_gone(
            f"last-event-id {after} is from before this server started: the oldest id this server run holds is"
            f" {floor + 1} or later. Resume after {floor} (securechat-resume-from) or rejoin without last-event-id;"
            " events in between are lost.",
            floor,
        )

    def join(self, member: Member, room: str) -> None:
        """Add `member` to `room`: first its history after member.resume_after, then live events.

        The history is read synchronously, so no live event can come between
        it and the member's first live one (SharedRoomHub, whose history is
        remote, holds them back meanwhile).
        """
        if room in member.rooms:
            return
        member.since[room] = member.resume_after if member.resume_after is not None else self._broker.last_id
        if member.resume_after is not None:
            try:
                member.replay(self._broker.replay(room, member.resume_after))
            except HistoryGap as gap:
                log.info(
                    "resume refused for %s in room %s: OUT_OF_RANGE (oldest held %s)", member.name, room, gap.oldest
                )
                member.abort(history_gone(str(gap), gap.resume_from))
                return
        size, created = self._local.add(member, room)
        member.rooms.add(room)
        log.info(
            "%s joined room %s (%d members)", member.name, room, size, extra={"identity": member.name, "room": room}
        )
        # A new room's JOIN was paid for by creating it (ChatService asks Admission).
        if size <= self._announce_max and (created or self.announces(member.name)):
            self._broker.publish(room, member.name, "", Kind.JOIN)

    def post(self, member: Member, room: str, text: str, client_msg_id: str = "") -> bool:
        """Accept a message: give it an id and hand it to every member of the room; False if not accepted now.

        A repeat of a CLIENT_MSG_ID this sender already had accepted is not
        accepted again: the sender gets the original event (see `repeat`).
        """
        self.join(member, room)
        if member.ended:
            return False
        if client_msg_id:
            original = self._broker.accepted(member.name, client_msg_id)
            if original is not None:
                self.repeat(member, *original)
                return False
        self._broker.publish(room, member.name, text, Kind.MESSAGE, msg_id=client_msg_id)
        return True

    @staticmethod
    def repeat(member: Member, room: str, event_id: int, event: bytes) -> None:
        """Answer a repeated send with the original event, unless this stream already carries it.

        The stream carries every event of a room it is in with an id above
        `member.since[room]`: then the original was (or is about to be)
        written to it, and a second copy would be the duplicate we avoid.
        """
        log.debug("%s repeated an accepted message: echoing event %d again", member.name, event_id)
        if room in member.rooms and event_id > member.since.get(room, event_id):
            return
        member.offer(event)

    # The same, for callers that treat every hub alike (ChatService awaits
    # these only for a remote hub).
    async def enter(self, member: Member, room: str) -> None:
        self.join(member, room)

    async def accept(self, member: Member, room: str, text: str, client_msg_id: str = "") -> bool:
        return self.post(member, room, text, client_msg_id)

    async def close(self) -> None:
        """Nothing to release for an in-memory broker."""

    def leave_all(self, member: Member) -> None:
        for room in sorted(member.rooms):
            left = self._local.remove(member, room)
            if left and left < self._announce_max and self.announces(member.name):
                self._broker.publish(room, member.name, "", Kind.LEAVE)
        member.rooms.clear()

    def announces(self, identity: str) -> bool:
        """Whether a JOIN/LEAVE of IDENTITY is announced now (`presence`: its budget; always without one)."""
        return self.presence is None or self.presence(identity)

    def members(self) -> set[Member]:
        return self._local.members()
