"""Rooms shared by several replicas: `Rooms` over a remote broker (NATS JetStream).

`SharedRoomHub` composes the same membership and local fan-out as the single
server's hub (`securechat.server.rooms.Rooms`: one deque append per member
per event) with any `securechat.broker.Broker` -- JetStreamBroker in
production; the in-memory broker fits too -- whose calls are async:

- Accepting a message = JetStream stored it. `accept` sends the ChatEvent
  (without id) with a msg_id unique to this accepted message (replica id +
  counter), so the broker's retries are deduplicated, and does not wait for
  the acknowledgement: up to PUBLISH_WINDOW of a stream's messages are in
  flight at once, in the order the stream sent them (waiting for each ack
  left one message in flight per sender, and each replica writing every
  event to every member on its own). The id is the stream sequence. If a
  message is not stored, the SENDER's stream ends with UNAVAILABLE naming
  the broker: never a silent drop. The sender's echo, delivered like
  everyone's from the subscription, is its ack.
- Idempotent sends: a message with a `client_msg_id` is sent with a msg_id
  derived from the sender's identity and that id (`client_msg_key`), the
  same on every replica, so JetStream's duplicate window
  (`broker.duplicate_window`) stores a resend once, whichever replica it
  reaches. A repeat is answered with the original event, to its sender only
  and only if its stream does not already carry it (`Member.since`), read
  back from JetStream by id.
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
import hashlib
import itertools
import logging
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc

from securechat._gen import chat_pb2
from securechat.broker import Broker, OutOfRange, Stored, Subscription
from securechat.errors import BrokerError, BrokerUnavailable
from securechat.protocol import Reason, Refusal, history_gone
from securechat.server.rooms import FanOutObserver, Kind, Member, Presence, Rooms

log = logging.getLogger(__name__)

BROKER_NAME = "NATS JetStream"
PUBLISH_WINDOW = 64  # a stream's messages in flight to JetStream at once (sent in order, acknowledged later)
_REPLAY_ATTEMPTS = 10  # history reads that may come back short of what the room's feed delivered
_REPLAY_RETRY_SECONDS = 0.1


@dataclass(eq=False)
class _RoomLink:
    """This replica's live subscription to one room."""

    room: str
    ready: asyncio.Future[Subscription]
    holding: dict[Member, list[tuple[int, bytes]]] = field(default_factory=dict)
    joining: int = 0  # members waiting for `ready` or for their history


class SharedRoomHub:
    """`Rooms` (membership and local fan-out) with ids, order and history from a shared broker."""

    remote = True

    def __init__(
        self,
        broker: Broker,
        *,
        announce_max_members: int,
        on_fan_out: FanOutObserver | None = None,
        replica: str | None = None,
    ) -> None:
        self._local = Rooms(on_fan_out=on_fan_out)
        self._announce_max = announce_max_members
        self._shared = broker
        self._links: dict[str, _RoomLink] = {}
        self._replica = replica or uuid.uuid4().hex[:12]
        self._counter = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._windows: dict[Member, asyncio.Semaphore] = {}  # per stream: messages sent, not yet acknowledged
        self.presence: Presence | None = None

    def room_size(self, room: str) -> int:
        return self._local.size(room)

    @property
    def room_count(self) -> int:
        return self._local.count

    def members(self) -> set[Member]:
        return self._local.members()

    def refuse_resume(self, after: int) -> Refusal | None:
        """None: the broker's history is per room (decided on join), and its ids span server runs."""
        return None

    def announces(self, identity: str) -> bool:
        """Whether a JOIN/LEAVE of IDENTITY is announced now (`presence`: its budget; always without one)."""
        return self.presence is None or self.presence(identity)

    # The in-memory entry points do not apply: the service awaits enter/accept.
    def join(self, member: Member, room: str) -> None:
        raise TypeError("SharedRoomHub.join: await enter() instead")

    def post(self, member: Member, room: str, text: str, client_msg_id: str = "") -> bool:
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
            size, _ = self._local.add(member, room)
            # From here on the subscription hands this member every event after
            # its last one (after resume_after, the replay and held events did).
            member.since[room] = member.resume_after if member.resume_after is not None else link.ready.result().last_id
        except BrokerError as exc:
            member.abort(_not_accepted(exc))
            return
        finally:
            link.joining -= 1
            self._release_if_unused(room)
        log.info(
            "%s joined room %s (%d members here)",
            member.name,
            room,
            size,
            extra={"identity": member.name, "room": room},
        )
        if size <= self._announce_max and (size == 1 or self.announces(member.name)):
            await self._publish(member, room, "", Kind.JOIN)

    async def accept(self, member: Member, room: str, text: str, client_msg_id: str = "") -> bool:
        """Send a message to JetStream; if it is not stored, the sender's stream ends with UNAVAILABLE. False if not sent.

        Does not wait for JetStream's acknowledgement: up to PUBLISH_WINDOW of
        a stream's messages are in flight at once, sent in the order read.
        """
        if room not in member.rooms:
            await self.enter(member, room)
        if member.ended:
            return False
        msg_id = client_msg_key(member.name, client_msg_id) if client_msg_id else self._msg_id()
        window = self._windows.get(member)
        if window is None:
            window = self._windows[member] = asyncio.Semaphore(PUBLISH_WINDOW)
        await window.acquire()
        try:
            stored = await self._shared.send(room, _event(room, member.name, text, Kind.MESSAGE), msg_id=msg_id)
        except BrokerError as exc:
            window.release()
            self._not_stored(member, room, Kind.MESSAGE, exc)
            return False

        def done(stored: asyncio.Future[Stored]) -> None:
            window.release()
            exc = (
                stored.exception()
                if not stored.cancelled()
                else BrokerError("the broker was closed before it answered")
            )
            if exc is not None:
                self._not_stored(member, room, Kind.MESSAGE, exc)
            elif stored.result().duplicate:
                self._spawn(self._repeat(member, room, stored.result().id))

        stored.add_done_callback(done)
        return True

    async def _repeat(self, member: Member, room: str, event_id: int) -> None:
        """A resend of a stored message: its sender gets the original event, unless its stream already carries it."""
        if member.ended or (room in member.rooms and event_id > member.since.get(room, event_id)):
            return
        read = getattr(self._shared, "event", None)  # JetStreamBroker; the in-memory broker never reports a duplicate
        if read is None:
            return
        try:
            event: bytes = await read(event_id)
        except BrokerError as exc:
            self._not_stored(member, room, Kind.MESSAGE, exc)
            return
        log.debug("%s repeated an accepted message: echoing event %d again", member.name, event_id)
        member.offer(event)

    def leave_all(self, member: Member) -> None:
        for room in sorted(member.rooms):
            left = self._local.remove(member, room)
            if left is None:
                continue
            if not left:
                self._release_if_unused(room)
            if left < self._announce_max and self.announces(member.name):
                self._spawn(self._announce_leave(member.name, room))
        member.rooms.clear()
        self._windows.pop(member, None)

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
            self._local.deliver(room, event_id, event)

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
        for member in list(self._local.of(room) or ()) + list(link.holding):
            member.abort(refusal)
        self._spawn(self._unsubscribe(link))

    async def _replay(self, link: _RoomLink, member: Member) -> bool:
        """Queue the room's history after member.resume_after, then what arrived meanwhile; False if refused.

        Events the room's feed delivered before the holding began must be in
        the history: a read that ends before the newest of them came from a
        JetStream replica (or a just-elected leader) that had not applied
        them yet, and is read again, then refused as unavailable (the soak's
        seed 3 lost 7 events that way after a quorum loss, fix 5's check
        notwithstanding: the leader it asks had not applied them either).
        """
        assert member.resume_after is not None
        held: list[tuple[int, bytes]] = []
        link.holding[member] = held
        # What this replica's feed had already handed to the room's members.
        seen = int(getattr(link.ready.result(), "delivered_id", 0) or 0)
        try:
            for attempt in range(_REPLAY_ATTEMPTS):
                history = await self._shared.history(link.room, member.resume_after)
                if seen <= member.resume_after or (history and history[-1][0] >= seen):
                    break
                log.info(
                    "room %s: history after %d reached %s, not %d that this replica has delivered; reading again",
                    link.room,
                    member.resume_after,
                    history[-1][0] if history else "nothing",
                    seen,
                )
                await asyncio.sleep(_REPLAY_RETRY_SECONDS * (attempt + 1))
            else:
                raise BrokerUnavailable(
                    f"reading the history of room {link.room}: it came back without events this replica has delivered "
                    f"(up to {seen}; a NATS node is catching up). Try again shortly."
                )
        except OutOfRange as gap:
            log.info(
                "resume refused for %s in room %s: OUT_OF_RANGE (oldest held %s)", member.name, link.room, gap.oldest
            )
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
            await (await self._shared.send(room, event, msg_id=self._msg_id()))
        except BrokerError as exc:
            self._not_stored(member, room, kind, exc)

    def _not_stored(self, member: Member, room: str, kind: int, exc: BaseException) -> None:
        log.warning("room %s: %s from %s not accepted: %s", room, Kind.Name(kind), member.name, exc)
        member.abort(_not_accepted(exc) if isinstance(exc, BrokerError) else _not_accepted(BrokerError(str(exc))))

    def _msg_id(self) -> str:
        return f"{self._replica}-{next(self._counter)}"

    async def _announce_leave(self, name: str, room: str) -> None:
        try:
            await (await self._shared.send(room, _event(room, name, "", Kind.LEAVE), msg_id=self._msg_id()))
        except BrokerError as exc:
            log.warning("room %s: LEAVE of %s not announced: %s", room, name, exc)

    def _release_if_unused(self, room: str) -> None:
        link = self._links.get(room)
        if link is not None and not self._local.size(room) and link.joining == 0 and not link.holding:
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

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def client_msg_key(identity: str, client_msg_id: str) -> str:
    """The Nats-Msg-Id of IDENTITY's message CLIENT_MSG_ID: the same on every replica, one per (identity, id).

    A hash, so neither the certificate's name nor the client's id has to be
    a valid header value, and one identity's ids cannot collide with another's.
    """
    digest = hashlib.sha256(f"{identity}\n{client_msg_id}".encode()).hexdigest()
    return f"client-{digest[:40]}"


def _event(room: str, sender: str, text: str, kind: int) -> bytes:
    return chat_pb2.ChatEvent(
        room=room,
        sender=sender,
        text=text,
        sent_at_unix_ms=time.time_ns() // 1_000_000,
        kind=kind,  # type: ignore[arg-type]
    ).SerializeToString()


def _not_accepted(exc: BrokerError) -> Refusal:
    return Refusal(
        grpc.StatusCode.UNAVAILABLE, Reason.BROKER_UNAVAILABLE, f"not accepted by the broker ({BROKER_NAME}): {exc}"
    )


def _feed_lost(room: str, reason: str) -> Refusal:
    return Refusal(
        grpc.StatusCode.UNAVAILABLE,
        Reason.FEED_LOST,
        f"room {room}: this replica lost its {BROKER_NAME} feed ({reason}); reconnect with last-event-id to resume",
    )
