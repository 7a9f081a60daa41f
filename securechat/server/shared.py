"""Rooms shared by several replicas: RoomHub over a remote broker (NATS JetStream).

`SharedRoomHub` keeps RoomHub's membership and local fan-out (one deque
append per member per event) and replaces the in-memory broker with
`securechat.broker.Broker` (JetStreamBroker), whose calls are async:

- Accepting a message = JetStream acknowledged it. `accept` publishes the
  ChatEvent (without id) with a msg_id unique to this accepted message
  (replica id + counter), so the broker's retries are deduplicated. The
  id is the stream sequence. If the publish fails, the SENDER's stream ends
  with UNAVAILABLE naming the broker: never a silent drop. The sender's
  echo, delivered like everyone's from the subscription, is its ack.
- Delivery: one live subscription per room per replica, attached while the
  room has local members (or a member is joining). Members on every replica
  get what JetStream hands back, in stream order: one order per room.
- Resume (`last-event-id`) reads the room's history from JetStream, so it
  works on any replica; too old -> OUT_OF_RANGE naming the oldest id held.
  Live events that arrive during the read are held and released after it,
  without duplicates.
- A subscription that can no longer promise a gap-free sequence (`on_lost`)
  ends its room's local streams with UNAVAILABLE telling them to resume.
- JOIN and LEAVE go through JetStream too, so members on other replicas see
  them, in the same order and with ids. A JOIN that cannot be published ends
  the joining stream with UNAVAILABLE; a LEAVE that cannot be published is
  logged (its sender is already gone). `announce_max_members` counts this
  replica's members of the room.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from dataclasses import dataclass, field

import grpc

from securechat._gen import chat_pb2
from securechat.broker import Broker, OutOfRange, Subscription
from securechat.errors import BrokerError
from securechat.protocol import Reason, Refusal, history_gone
from securechat.server.rooms import FanOutObserver, Kind, Member, RoomHub

log = logging.getLogger(__name__)

BROKER_NAME = "NATS JetStream"


@dataclass(eq=False)
class _RoomLink:
    """This replica's live subscription to one room."""

    room: str
    ready: asyncio.Future[Subscription]
    holding: dict[Member, list[tuple[int, bytes]]] = field(default_factory=dict)
    joining: int = 0  # members waiting for `ready` or for their history


class SharedRoomHub(RoomHub):
    """Membership and local fan-out; ids, order and history from a shared broker."""

    remote = True

    def __init__(
        self, broker: Broker, *, announce_max_members: int, on_fan_out: FanOutObserver | None = None, replica: str | None = None
    ) -> None:
        self._rooms: dict[str, dict[Member, None]] = {}
        self._announce_max = announce_max_members
        self._on_fan_out = on_fan_out
        self._shared = broker
        self._links: dict[str, _RoomLink] = {}
        self._replica = replica or uuid.uuid4().hex[:12]
        self._counter = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self.presence = None

    # The in-memory entry points do not apply: the service awaits enter/accept.
    def join(self, member: Member, room: str) -> None:
        raise TypeError("SharedRoomHub.join: await enter() instead")

    def post(self, member: Member, room: str, text: str) -> None:
        raise TypeError("SharedRoomHub.post: await accept() instead")

    async def enter(self, member: Member, room: str) -> None:
        """Add `member` to `room`: its history after member.resume_after first, then live events."""
        if room in member.rooms or member.ended:
            return
        member.rooms.add(room)  # taken now: a second message for the room waits on this join
        link = self._link(room)
        link.joining += 1
        try:
            await asyncio.shield(link.ready)
            if member.resume_after is not None:
                if not await self._replay(link, member):
                    return
            if member.ended or self._links.get(room) is not link:
                if not member.ended:
                    member.abort(_feed_lost(room, "the room's subscription was lost while joining"))
                return
            members = self._rooms.setdefault(room, {})
            members[member] = None
        except BrokerError as exc:
            member.abort(_not_accepted(exc))
            return
        finally:
            link.joining -= 1
            self._release_if_unused(room)
        log.info("%s joined room %s (%d members here)", member.name, room, len(members), extra={"identity": member.name, "room": room})
        if len(members) <= self._announce_max and (len(members) == 1 or self.announces(member.name)):
            await self._publish(member, room, "", Kind.JOIN)

    async def accept(self, member: Member, room: str, text: str) -> None:
        """Accepted = stored by JetStream; otherwise the sender's stream ends with UNAVAILABLE."""
        await self.enter(member, room)
        if not member.ended:
            await self._publish(member, room, text, Kind.MESSAGE)

    def leave_all(self, member: Member) -> None:
        for room in sorted(member.rooms):
            members = self._rooms.get(room)
            if members is None or members.pop(member, "absent") == "absent":
                continue
            if not members:
                del self._rooms[room]
                self._release_if_unused(room)
            if len(members) < self._announce_max and self.announces(member.name):
                self._spawn(self._announce_leave(member.name, room))
        member.rooms.clear()

    async def close(self) -> None:
        """Unsubscribe every room and wait for pending announcements (bounded by the broker's timeouts)."""
        for task in list(self._tasks):
            await asyncio.gather(task, return_exceptions=True)
        for room in list(self._links):
            link = self._links.pop(room)
            await self._unsubscribe(link)
        await self._shared.close()

    # -- internals ------------------------------------------------------------

    def _link(self, room: str) -> _RoomLink:
        link = self._links.get(room)
        if link is None:
            link = self._links[room] = _RoomLink(room, asyncio.get_running_loop().create_future())
            self._spawn(self._subscribe(link))
        return link

    async def _subscribe(self, link: _RoomLink) -> None:
        room = link.room

        def deliver(event_id: int, event: bytes) -> None:
            if self._links.get(room) is not link:
                return  # a subscription being replaced or closed
            for held in link.holding.values():
                held.append((event_id, event))
            self._deliver(room, event_id, event)

        try:
            sub = await self._shared.subscribe(room, deliver, on_lost=lambda exc: self._lose(link, exc))
        except BrokerError as exc:
            if self._links.get(room) is link:
                del self._links[room]
            link.ready.set_exception(exc)
            link.ready.exception()  # retrieved: the joiners see it through shield()
            return
        link.ready.set_result(sub)
        if self._links.get(room) is not link:  # everyone left while it was being made
            await self._unsubscribe(link)

    def _lose(self, link: _RoomLink, exc: BrokerError) -> None:
        """The subscription may have skipped events: end the room's local streams so they resume."""
        room = link.room
        if self._links.get(room) is link:
            del self._links[room]
        refusal = _feed_lost(room, str(exc))
        for member in list(self._rooms.get(room, ())) + list(link.holding):
            member.abort(refusal)
        self._spawn(self._unsubscribe(link))

    async def _replay(self, link: _RoomLink, member: Member) -> bool:
        """Queue the room's history after member.resume_after, then what arrived meanwhile; False if refused."""
        assert member.resume_after is not None
        held: list[tuple[int, bytes]] = []
        link.holding[member] = held
        try:
            history = await self._shared.history(link.room, member.resume_after)
        except OutOfRange as gap:
            log.info("resume refused for %s in room %s: OUT_OF_RANGE (oldest held %s)", member.name, link.room, gap.oldest)
            member.abort(history_gone(str(gap), gap.resume_from))
            return False
        finally:
            link.holding.pop(member, None)
        last = history[-1][0] if history else member.resume_after
        member.replay([event for _, event in history] + [event for event_id, event in held if event_id > last])
        return True

    async def _publish(self, member: Member, room: str, text: str, kind: int) -> None:
        event = _event(room, member.name, text, kind)
        try:
            await self._shared.publish(room, event, msg_id=f"{self._replica}-{next(self._counter)}")
        except BrokerError as exc:
            log.warning("room %s: %s from %s not accepted: %s", room, Kind.Name(kind), member.name, exc)  # type: ignore[arg-type]
            member.abort(_not_accepted(exc))

    async def _announce_leave(self, name: str, room: str) -> None:
        try:
            await self._shared.publish(room, _event(room, name, "", Kind.LEAVE), msg_id=f"{self._replica}-{next(self._counter)}")
        except BrokerError as exc:
            log.warning("room %s: LEAVE of %s not announced: %s", room, name, exc)

    def _release_if_unused(self, room: str) -> None:
        link = self._links.get(room)
        if link is not None and not self._rooms.get(room) and link.joining == 0 and not link.holding:
            del self._links[room]
            if link.ready.done():
                self._spawn(self._unsubscribe(link))

    async def _unsubscribe(self, link: _RoomLink) -> None:
        if not link.ready.done() or link.ready.exception() is not None:
            return
        sub = link.ready.result()
        await sub.unsubscribe()
        forget = getattr(self._shared, "forget", None)
        if forget is not None:
            forget(sub)

    def _spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _event(room: str, sender: str, text: str, kind: int) -> bytes:
    return chat_pb2.ChatEvent(
        room=room, sender=sender, text=text, sent_at_unix_ms=time.time_ns() // 1_000_000, kind=kind  # type: ignore[arg-type]
    ).SerializeToString()


def _not_accepted(exc: BrokerError) -> Refusal:
    return Refusal(grpc.StatusCode.UNAVAILABLE, Reason.BROKER_UNAVAILABLE, f"not accepted by the broker ({BROKER_NAME}): {exc}")


def _feed_lost(room: str, reason: str) -> Refusal:
    return Refusal(
        grpc.StatusCode.UNAVAILABLE,
        Reason.FEED_LOST,
        f"room {room}: this replica lost its {BROKER_NAME} feed ({reason}); reconnect with last-event-id to resume",
    )
