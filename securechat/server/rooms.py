"""Rooms, their members, and fan-out.

A `Member` is one open Chat stream. The `RoomHub` assigns each accepted
message an id, serializes the ChatEvent once, and appends the same bytes to
the bounded queue of every member of the room. Everything runs on the one
event loop, so appending to every queue in turn keeps one order per room.

A member whose queue is full is a slow consumer: its stream is ended with
RESOURCE_EXHAUSTED instead of slowing the room or blocking the sender. A
member is never dropped silently: it is either delivered to, or told.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque

import grpc

from securechat._gen import chat_pb2

log = logging.getLogger(__name__)

Kind = chat_pb2.ChatEvent.Kind


class Member:
    """One Chat stream: its identity, its rooms, and its queue of serialized events."""

    __slots__ = ("name", "rooms", "_events", "_limit", "_waiter", "_end", "_draining")

    def __init__(self, name: str, *, queue_size: int) -> None:
        self.name = name
        self.rooms: set[str] = set()
        self._events: deque[bytes] = deque()
        self._limit = queue_size
        self._waiter: asyncio.Future[None] | None = None
        self._end: tuple[grpc.StatusCode, str] | None = None
        self._draining = False

    def offer(self, event: bytes) -> None:
        """Queue one serialized event; end the stream if the member cannot keep up."""
        if self._end is not None:
            return
        if len(self._events) >= self._limit:
            self.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"slow consumer: {len(self._events)} events behind; reconnect and resume with last-event-id",
            )
            return
        self._events.append(event)
        self._wake()

    def finish(self, code: grpc.StatusCode = grpc.StatusCode.OK, message: str = "") -> None:
        """End the stream with `code` once everything already queued is written."""
        if self._end is None:
            self._end = (code, message)
            self._draining = True
            self._wake()

    def abort(self, code: grpc.StatusCode, message: str) -> None:
        """End the stream now with `code`; events still queued are not sent."""
        if self._end is None or self._draining:
            self._end = (code, message)
            self._draining = False
            self._events.clear()
            self._wake()

    @property
    def ended(self) -> tuple[grpc.StatusCode, str] | None:
        return self._end

    async def next_events(self) -> list[bytes]:
        """Wait for queued events; an empty list means the stream has ended."""
        while not self._events:
            if self._end is not None:
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        batch = list(self._events)
        self._events.clear()
        return batch

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class RoomHub:
    """Membership and fan-out for every room of one server."""

    def __init__(self, *, announce_max_members: int) -> None:
        self._rooms: dict[str, dict[Member, None]] = {}
        self._announce_max = announce_max_members
        self._ids = itertools.count(1)

    def room_size(self, room: str) -> int:
        return len(self._rooms.get(room, ()))

    @property
    def room_count(self) -> int:
        return len(self._rooms)

    def join(self, member: Member, room: str) -> None:
        if room in member.rooms:
            return
        members = self._rooms.setdefault(room, {})
        members[member] = None
        member.rooms.add(room)
        log.debug("%s joined room %s (%d members)", member.name, room, len(members))
        if len(members) <= self._announce_max:
            self._publish(room, member.name, "", Kind.JOIN)

    def post(self, member: Member, room: str, text: str) -> None:
        """Accept a message: give it an id and hand it to every member of the room."""
        self.join(member, room)
        self._publish(room, member.name, text, Kind.MESSAGE)

    def leave_all(self, member: Member) -> None:
        for room in sorted(member.rooms):
            members = self._rooms.get(room)
            if members is None:
                continue
            members.pop(member, None)
            if not members:
                del self._rooms[room]
            elif len(members) < self._announce_max:
                self._publish(room, member.name, "", Kind.LEAVE)
        member.rooms.clear()

    def members(self) -> set[Member]:
        return {member for members in self._rooms.values() for member in members}

    def _publish(self, room: str, sender: str, text: str, kind: int) -> None:
        event = chat_pb2.ChatEvent(
            id=str(next(self._ids)),
            room=room,
            sender=sender,
            text=text,
            sent_at_unix_ms=time.time_ns() // 1_000_000,
            kind=kind,  # type: ignore[arg-type]
        ).SerializeToString()
        # Aborting a slow member only marks it; it leaves the room later, from
        # its own stream, so this dict does not change while we walk it.
        for member in self._rooms.get(room, ()):
            member.offer(event)
