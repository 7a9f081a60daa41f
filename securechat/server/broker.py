"""Where accepted events get their ids and are kept for resume, in this process.

`InMemoryBroker` (the default, one server) fits the one `Broker` protocol
(`securechat.broker.Broker`: send, history, subscribe), so the shared-room
hub runs over it as over NATS JetStream. For the single server's hot path it
also offers `LocalBroker`, the same work in plain calls:

    broker.attach(deliver)                    once: deliver(room, id, event_bytes)
    broker.publish(room, sender, text, kind, msg_id=...)  accept: assign an id, keep, deliver
    broker.replay(room, after)                history of `room` after id `after`
    broker.accepted(sender, msg_id)           (room, id, event_bytes) if that client_msg_id was accepted

Idempotent sends: `publish` with a msg_id (the client's `client_msg_id`)
remembers what it was accepted as, per sender, for `idempotency_window`
seconds (at most `idempotency_ids` of them, oldest forgotten first), so the
hub can answer a repeat with the original event instead of accepting it
again. That memory lives as long as the process: a server that is killed
and started again accepts a repeat of a message from its previous run anew.

`publish` delivers synchronously, so the order in which `RoomHub` hands
events to members is the id order, and accepting a message costs no
coroutine. A remote broker delivers from its subscription instead; its ids
are its stream sequence (see `securechat.server.shared`).

Ids are integers that increase for the whole server run. They start at the
run's start time in microseconds, so a later run's ids are above an earlier
run's and an id from a previous run is recognised as "older than the history
held" (OUT_OF_RANGE) instead of being mistaken for a recent one.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from securechat._gen import chat_pb2
from securechat.broker import Broker
from securechat.broker.events import Stored, stamp_id
from securechat.errors import BrokerError, OutOfRange

Deliver = Callable[[str, int, bytes], None]
RoomDeliver = Callable[[int, bytes], None]


class HistoryGap(Exception):
    """Events after the requested id are no longer held: resuming would leave a gap."""

    def __init__(
        self, room: str, after: int, oldest: int | None, reason: str, *, resume_from: int | None = None
    ) -> None:
        self.room = room
        self.after = after
        self.oldest = oldest
        self.resume_from = oldest - 1 if oldest is not None else resume_from
        """The last-event-id that gets everything still held, accepting the gap before it."""
        held = (
            f"the oldest id still held for room '{room}' is {oldest}"
            if oldest is not None
            else f"no events of room '{room}' are held"
        )
        super().__init__(
            f"last-event-id {after} {reason}: {held}. Rejoin without last-event-id; events in between are lost."
        )


class LocalBroker(Broker, Protocol):
    """A `Broker` in this process that also accepts and delivers in plain calls: RoomHub's fast path."""

    @property
    def resume_floor(self) -> int:
        """The oldest last-event-id this run can resume after."""
        ...

    @property
    def last_id(self) -> int: ...

    def attach(self, deliver: Deliver) -> None: ...

    def publish(self, room: str, sender: str, text: str, kind: int, *, msg_id: str = "") -> None: ...

    def replay(self, room: str, after: int) -> list[bytes]: ...

    def accepted(self, sender: str, msg_id: str) -> tuple[str, int, bytes] | None: ...


class AcceptedIds:
    """(sender, client_msg_id) -> (room, id, event bytes) it was accepted as, for `window` seconds, at most `capacity`.

    Entries are added in time order with one window, so the oldest is always
    first: expiry and the capacity bound both pop from the front.
    """

    def __init__(self, *, window: float, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._capacity = capacity
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, str, int, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, sender: str, msg_id: str) -> tuple[str, int, bytes] | None:
        entry = self._entries.get((sender, msg_id))
        if entry is None or entry[0] < self._clock():
            return None
        return entry[1], entry[2], entry[3]

    def add(self, sender: str, msg_id: str, room: str, event_id: int, event: bytes) -> None:
        if self._window <= 0 or self._capacity <= 0:
            return
        now = self._clock()
        entries = self._entries
        while entries and (len(entries) >= self._capacity or next(iter(entries.values()))[0] < now):
            entries.popitem(last=False)
        entries[(sender, msg_id)] = (now + self._window, room, event_id, event)


@dataclass(eq=False)
class LocalSubscription:
    """One `subscribe` of the in-memory broker: `deliver` gets the room's events until `unsubscribe`."""

    broker: InMemoryBroker
    room: str
    deliver: RoomDeliver
    last_id: int

    async def unsubscribe(self) -> None:
        self.broker._unsubscribe(self)


class _RoomHistory:
    __slots__ = ("ids", "events", "dropped_through", "creator")

    def __init__(self, size: int, creator: str) -> None:
        self.creator = creator  # whose event started this history: who pays when one must go
        self.ids: deque[int] = deque(maxlen=size)
        self.events: deque[bytes] = deque(maxlen=size)
        self.dropped_through = 0  # the newest id that fell out of this history


class InMemoryBroker:
    """Ids from one counter; the last `history_size` events of up to `history_rooms` rooms.

    When a new room's history would make history_rooms + 1, one room's
    history is dropped: the least recently used room *of the identity that
    started the most histories held* (issue 13: one identity joining 1,152
    empty rooms evicted a real room's history). An identity creating rooms in
    bulk thus evicts its own; it can drop another's only while it holds no
    more rooms than that other identity does. Ties go to the room used
    longest ago.
    """

    def __init__(
        self,
        *,
        history_size: int,
        history_rooms: int,
        first_id: int | None = None,
        idempotency_window: float = 600.0,
        idempotency_ids: int = 100_000,
    ) -> None:
        self._history_size = history_size
        self._history_rooms = history_rooms
        self.first_id = time.time_ns() // 1000 if first_id is None else first_id
        self._next_id = self.first_id
        self._rooms: OrderedDict[str, _RoomHistory] = OrderedDict()
        self._by_creator: dict[str, OrderedDict[str, None]] = {}  # identity -> its rooms' histories, least recent first
        self._forgotten_through = 0  # the newest id of any room whose history was dropped whole
        self._attached: Deliver = _nowhere
        self._deliver: Deliver = _nowhere  # _attached, or _deliver_all while there are subscriptions
        self._subscribers: dict[str, dict[LocalSubscription, None]] = {}
        self._accepted = AcceptedIds(window=idempotency_window, capacity=idempotency_ids)

    @property
    def last_id(self) -> int:
        return self._next_id - 1

    def attach(self, deliver: Deliver) -> None:
        self._attached = deliver
        self._deliver = self._deliver_all if self._subscribers else deliver

    def publish(self, room: str, sender: str, text: str, kind: int, *, msg_id: str = "") -> None:
        """Accept one event: the next id, kept in history, delivered; remembered under MSG_ID if given."""
        event_id = self._next_id
        self._next_id += 1
        event = chat_pb2.ChatEvent(
            id=str(event_id),
            room=room,
            sender=sender,
            text=text,
            sent_at_unix_ms=time.time_ns() // 1_000_000,
            kind=kind,  # type: ignore[arg-type]
        ).SerializeToString()
        self._keep(room, sender, event_id, event)
        if msg_id:
            self._accepted.add(sender, msg_id, room, event_id, event)
        self._deliver(room, event_id, event)

    def accepted(self, sender: str, msg_id: str) -> tuple[str, int, bytes] | None:
        """What SENDER's MSG_ID was accepted as (room, id, event), if within the window."""
        return self._accepted.get(sender, msg_id)

    @property
    def resume_floor(self) -> int:
        """The oldest last-event-id this run can resume after: the id before its first event (older ids are from before it)."""
        return self.first_id - 1

    def replay(self, room: str, after: int) -> list[bytes]:
        """The events of `room` with ids above `after`, oldest first; HistoryGap if some are gone."""
        history, start = self._after(room, after)
        return [] if history is None else [history.events[i] for i in range(start, len(history.ids))]

    def _after(self, room: str, after: int) -> tuple[_RoomHistory | None, int]:
        """`room`'s history and the index of its first event above `after`; HistoryGap if some are gone."""
        history = self._rooms.get(room)
        oldest = history.ids[0] if history and history.ids else None
        if after > self.last_id:
            raise HistoryGap(
                room, after, oldest, f"is newer than every event of this server run (the latest is {self.last_id})"
            )
        if after < self.resume_floor:
            raise HistoryGap(room, after, oldest, "is from before this server started", resume_from=self.resume_floor)
        if history is None:
            if after < self._forgotten_through:
                # Whatever this room had up to the newest forgotten id is gone; after it nothing is missed.
                raise HistoryGap(
                    room, after, None, "is older than the history kept", resume_from=self._forgotten_through
                )
            return None, 0
        if after < history.dropped_through:
            raise HistoryGap(room, after, oldest, "is older than the history kept")
        ids = history.ids
        # Ids are increasing: walk back from the newest, since a resuming
        # client is usually only a few events behind.
        start = len(ids)
        while start > 0 and ids[start - 1] > after:
            start -= 1
        return history, start

    # -- the Broker protocol (securechat.broker.Broker) ---------------------------

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        self._subscribers.clear()
        self._deliver = self._attached

    async def send(self, room: str, event: bytes, *, msg_id: str) -> asyncio.Future[Stored]:
        """Store and deliver one serialized ChatEvent (without id) now; the future is already done.

        `msg_id` is not remembered: nothing between this broker and its caller
        can fail and be retried.
        """
        sender = chat_pb2.ChatEvent.FromString(event).sender
        event_id = self._next_id
        self._next_id += 1
        event = stamp_id(event, event_id)
        self._keep(room, sender, event_id, event)
        self._deliver_all(room, event_id, event)
        stored: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        stored.set_result(Stored(event_id))
        return stored

    async def history(self, room: str, after_id: int) -> list[tuple[int, bytes]]:
        """(id, event) of `room` above `after_id`, oldest first; OutOfRange if some are gone."""
        try:
            history, start = self._after(room, after_id)
        except HistoryGap as gap:
            raise self._out_of_range(gap) from None
        if history is None:
            return []
        return [(history.ids[i], history.events[i]) for i in range(start, len(history.ids))]

    async def subscribe(
        self,
        room: str,
        deliver: RoomDeliver,
        *,
        after_id: int | None = None,
        on_lost: Callable[[BrokerError], None] | None = None,
    ) -> LocalSubscription:
        """Deliver `room`'s events: those after `after_id` first (if given), then live ones. Nothing is ever lost here."""
        held = await self.history(room, after_id) if after_id is not None else []
        sub = LocalSubscription(self, room, deliver, self.last_id)
        for event_id, event in held:
            deliver(event_id, event)
        self._subscribers.setdefault(room, {})[sub] = None
        self._deliver = self._deliver_all
        return sub

    def _unsubscribe(self, sub: LocalSubscription) -> None:
        subs = self._subscribers.get(sub.room)
        if subs is not None:
            subs.pop(sub, None)
            if not subs:
                del self._subscribers[sub.room]
        if not self._subscribers:
            self._deliver = self._attached

    def _deliver_all(self, room: str, event_id: int, event: bytes) -> None:
        if self._attached is not _nowhere:
            self._attached(room, event_id, event)
        for sub in list(self._subscribers.get(room, ())):
            sub.last_id = event_id
            sub.deliver(event_id, event)

    def _out_of_range(self, gap: HistoryGap) -> OutOfRange:
        if gap.after > self.last_id:
            return OutOfRange(gap.room, gap.after, gap.oldest or self.last_id + 1, newest=self.last_id)
        if gap.oldest is not None:
            return OutOfRange(gap.room, gap.after, gap.oldest)
        return OutOfRange(gap.room, gap.after, gap.resume_from + 1 if gap.resume_from is not None else self.last_id + 1)

    def _keep(self, room: str, sender: str, event_id: int, event: bytes) -> None:
        history = self._rooms.get(room)
        if history is None:
            if len(self._rooms) >= self._history_rooms:
                self._drop(self._eviction_victim())
            history = self._rooms[room] = _RoomHistory(self._history_size, sender)
            self._by_creator.setdefault(sender, OrderedDict())[room] = None
        else:
            self._rooms.move_to_end(room)
            self._by_creator[history.creator].move_to_end(room)
        if self._history_size == 0:
            history.dropped_through = event_id
            return
        if len(history.ids) == self._history_size:
            history.dropped_through = history.ids[0]
        history.ids.append(event_id)
        history.events.append(event)

    def _eviction_victim(self) -> str:
        """The least recently used room of the identity holding the most histories (ties: the oldest room)."""
        order = {room: rank for rank, room in enumerate(self._rooms)} if len(self._by_creator) > 1 else None
        heaviest = max(
            self._by_creator.values(),
            key=lambda rooms: (len(rooms), -order[next(iter(rooms))] if order is not None else 0),
        )
        return next(iter(heaviest))

    def _drop(self, room: str) -> None:
        dropped = self._rooms.pop(room)
        rooms = self._by_creator[dropped.creator]
        del rooms[room]
        if not rooms:
            del self._by_creator[dropped.creator]
        self._forgotten_through = max(
            self._forgotten_through, dropped.ids[-1] if dropped.ids else dropped.dropped_through
        )

    @property
    def history_creators(self) -> dict[str, int]:
        """identity -> how many of the held histories it started."""
        return {name: len(rooms) for name, rooms in self._by_creator.items()}


def _nowhere(room: str, event_id: int, event: bytes) -> None:
    raise RuntimeError("InMemoryBroker.publish before attach(): a RoomHub attaches itself when it is made")
