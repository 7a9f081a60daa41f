"""A chat session that reconnects by itself and resumes with `last-event-id`.

`reconnecting_chat(config)` opens a Chat stream and keeps it going: when the
stream breaks (UNAVAILABLE, a slow-consumer cut, a reset), it waits a
bounded, jittered, exponentially growing delay, opens a new stream with
metadata `last-event-id`, rejoins every room, and resends messages whose
echo (the server's acknowledgement) had not arrived, each with the
`client_msg_id` it was first sent with: a message the server had accepted
after all is answered with its original event, not posted twice. The server replays what
was missed; events already seen are dropped, so the caller sees every event
once.

Choosing the resume point: ids increase across the whole deployment.
`ResumeMarks` keeps, per room, the id up to which that room is complete;
the resume point is the smallest of them. A room's own events advance its
mark. A single server also delivers a stream's events of all rooms in one id
order (it says so with initial metadata `securechat-order: global`), so
there an event of one room completes every other room up to its id too --
except right after a resume, while each rejoined room's history is
replayed: a room is settled when our own JOIN in it comes back, since the
server sends that after the room's history. Replicas deliver each room from
its own JetStream subscription, so rooms interleave out of id order there
and only a room's own events advance it (advancing the others lost events
when a stream broke with a room behind: found by the fault checker, seed 10).
Rooms larger than `announce_max_members` get no JOIN: they then only
advance by their own events, which is safe but may make a later resume ask
for older history than needed.

A resume point older than the server's history ends the call with
OUT_OF_RANGE; that is raised as `ResumeGap`, or, with `on_gap` (or
`on_status`), reported, and the session resumes from the oldest event the
server still holds when it says which (`securechat-resume-from` in the
trailing metadata: after a server restart, the new run's first event, so
nothing posted since the restart is missed), else from live events.

Resends and a single server's restart: a single server (it says
`securechat-order: global`) keeps the `client_msg_id`s it accepted in
memory only, so after OUT_OF_RANGE from it -- a new run, or history it
dropped -- a resent message could be posted a second time to members who
got it before. Such messages are not resent: each is reported as
`Unconfirmed` ("may not have been delivered") and listed in `unconfirmed`,
and the user decides. Delivered once, or the sender is told. Replicas keep
the ids in JetStream (`broker.duplicate_window`), so there a resend after
OUT_OF_RANGE stays safe and is made.

Refusals are acted on by their reason (`securechat-refusal` in the trailing
metadata, see securechat.protocol), never by their text:

- a refusal of one message (text too long, a room name the server refuses,
  too many rooms) drops that message or room, reports it through
  `on_status` as `Refused`, and the session goes on with the rest;
- being rate limited waits out the backoff and resends;
- a slow-consumer cut, a shutting-down or unavailable server, a lost broker
  feed: reconnect with backoff and resume (`Reconnecting`, then `Resumed`);
- anything about who we are (revoked, not allowed, no or a bad
  certificate) ends the session with the explained error.

`on_status` hears each of those as a small frozen dataclass, for a user
interface to show; library code itself never prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from securechat._gen import chat_pb2
from securechat.client.channel import Channel, open_channel, own_identity
from securechat.client.chat import new_client_msg_id
from securechat.client.stream import ChatStream
from securechat.config import ClientConfig
from securechat.errors import ConnectError
from securechat.protocol import GLOBAL_ORDER, LAST_EVENT_ID, ORDER_KEY, Reason, reason_of, resume_from, valid_room

log = logging.getLogger(__name__)

Kind = chat_pb2.ChatEvent.Kind
SETTLE_SECONDS = 2.0  # resend unechoed messages this long after a resume when no JOIN marks the replay's end


# A write to a stream that ended or was half-closed under us: the message is
# resent on the next stream if its echo never came, so it is not lost.
WRITE_FAILURES = (grpc.aio.UsageError, grpc.aio.AioRpcError, asyncio.InvalidStateError)


class ResumeGap(ConnectError):
    """The server no longer holds the events after our resume point (OUT_OF_RANGE).

    `resume_from` is the id from which the server says it holds everything
    (None when it did not say); `lost_after_ms` the send time of the newest
    event we had seen (None if none), i.e. where the gap starts.
    """

    def __init__(self, message: str, *, resume_from: int | None = None, lost_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.resume_from = resume_from
        self.lost_after_ms = lost_after_ms


# -- what the session tells a user interface (on_status) --------------------------


@dataclass(frozen=True)
class Reconnecting:
    """The stream broke; the next attempt comes after `delay` seconds."""

    attempt: int
    delay: float
    cause: str


@dataclass(frozen=True)
class Resumed:
    """A new stream is up; events after `after_id` (sent at `after_ms`) are being replayed."""

    after_id: int | None
    after_ms: int | None


@dataclass(frozen=True)
class HistoryLost:
    """The server no longer holds what we missed (a restart, or old history dropped)."""

    gap: ResumeGap


@dataclass(frozen=True)
class Refused:
    """The server refused one message or room; it was dropped and the session goes on.

    `reason` is the refusal's machine-readable reason, `message` the server's
    words, `text`/`room` what was dropped (text is None for a refused room).
    """

    reason: Reason | None
    code: grpc.StatusCode
    message: str
    room: str
    text: str | None


@dataclass(frozen=True)
class Unconfirmed:
    """A message sent before a single server restarted (or dropped its history) whose echo never came.

    The server that would remember its `client_msg_id` is gone, so it is
    not resent (a resend could post it twice); it may or may not have been
    delivered. `text` and `room` say which; sending it again is the user's call.
    """

    room: str
    text: str
    client_msg_id: str


SessionStatus = Reconnecting | Resumed | HistoryLost | Refused | Unconfirmed

# Refusals of something we sent: drop it and carry on (see the module docstring).
MESSAGE_REFUSALS = frozenset({Reason.TEXT_TOO_LONG, Reason.INVALID_ROOM, Reason.TOO_MANY_ROOMS})
# Refusals that pass: reconnect with backoff and resume.
PASSING_REFUSALS = frozenset(
    {
        Reason.SLOW_CONSUMER,
        Reason.RATE_LIMITED,
        Reason.TOO_MANY_STREAMS,
        Reason.TOO_MANY_CONNECTIONS,
        Reason.FEED_LOST,
        Reason.BROKER_UNAVAILABLE,
        Reason.SHUTTING_DOWN,
        Reason.STREAM_BROKEN,
    }
)


@dataclass(frozen=True)
class Backoff:
    """Delay before reconnect attempt n: min(maximum, initial * multiplier**n), minus up to `jitter` of it."""

    initial: float = 0.2
    maximum: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5
    max_attempts: int = 10  # consecutive failures before giving up; a delivered event resets the count

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * self.multiplier**attempt)
        return base * (1.0 - self.jitter * random.random())  # noqa: S311 - jitter, not security


class ResumeMarks:
    """Per room, the id up to which we have every event; see the module docstring."""

    def __init__(self) -> None:
        self.global_order = False  # the server delivers every room of a stream in one id order (see module docstring)
        self.complete: dict[str, int | None] = {}  # room -> all its events up to this id were seen
        self.seen: dict[str, int] = {}  # room -> newest id delivered (to drop repeats)
        self.unsettled: set[str] = set()  # rooms whose history replay may still be arriving
        self.resume_point: int | None = None

    def join(self, room: str) -> None:
        if room not in self.complete:
            known = [mark for mark in self.complete.values() if mark is not None]
            self.complete[room] = (
                max(known) if self.global_order and not self.unsettled and known else self.resume_point
            )

    def reconnecting(self) -> int | None:
        """The resume point for the next stream; every room is unsettled until its JOIN returns."""
        marks = [mark for mark in self.complete.values() if mark is not None]
        if marks and len(marks) == len(self.complete):
            self.resume_point = min(marks)
        elif marks:
            self.resume_point = min(marks) if self.resume_point is None else min(self.resume_point, *marks)
        self.unsettled = set(self.complete) if self.resume_point is not None else set()
        return self.resume_point

    def forget(self, *, resume_from: int | None = None) -> None:
        """After OUT_OF_RANGE: continue from RESUME_FROM (what the server still holds), else live events only."""
        self.resume_point = resume_from
        self.unsettled.clear()
        for room in self.complete:
            self.complete[room] = resume_from

    def leave(self, room: str) -> None:
        self.complete.pop(room, None)
        self.seen.pop(room, None)
        self.unsettled.discard(room)

    def accept(self, event: chat_pb2.ChatEvent, me: str | None) -> bool:
        """Record `event`; False if it was already delivered."""
        event_id = int(event.id)
        room = event.room
        if event_id <= self.seen.get(room, 0):
            return False
        self.seen[room] = event_id
        if event.kind == Kind.JOIN and event.sender == me:
            self.unsettled.discard(room)
        if room in self.complete:
            current = self.complete[room]
            self.complete[room] = event_id if current is None else max(current, event_id)
        if self.global_order and not self.unsettled:
            for other, mark in self.complete.items():
                if mark is None or mark < event_id:
                    self.complete[other] = event_id
        return True


def retryable(error: grpc.aio.AioRpcError) -> bool:
    """Worth reconnecting for: the stream broke or the refusal passes (by its reason, never its text)."""
    reason = reason_of(error)
    if reason is not None:
        return reason in PASSING_REFUSALS
    return error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)


class ReconnectingChat:
    """Use through `reconnecting_chat()`: `join()`, `send()`, `leave()`, and iterate for events."""

    def __init__(
        self,
        channel: Channel,
        *,
        backoff: Backoff,
        on_gap: Callable[[ResumeGap], None] | None,
        on_status: Callable[[SessionStatus], None] | None = None,
        fail_fast: bool = False,
        open_new_channel: Callable[[], contextlib.AbstractAsyncContextManager[Channel]] | None = None,
    ) -> None:
        self._channel = channel
        self._open_new_channel = open_new_channel
        self._channel_scopes: list[contextlib.AsyncExitStack] = []  # channels opened by reopen_channel()
        self._backoff = backoff
        self._on_gap = on_gap
        self._on_status = on_status
        self._fail_fast = fail_fast  # raise the first stream's failure instead of retrying it
        self._connected_once = False  # a stream has delivered an event
        self._me = own_identity(channel.material)
        self.marks = ResumeMarks()
        self._times: dict[int, int] = {}  # event id -> its sent_at_unix_ms, for the ids marks point at
        self._rooms: list[str] = []
        # [room, text, stream number it was last written on, client_msg_id, stream it was first written on]: echo not yet seen
        self._unacknowledged: list[list[Any]] = []
        self._refused: Refused | None = None  # a refused message: the first unechoed one, dropped before resending
        self._unconfirmed: list[tuple[str, str]] = []  # (room, text) not resent after a single server's OUT_OF_RANGE
        self._stream_number = 0
        self._resent = asyncio.Event()  # set unless unechoed messages wait to be resent
        # Resolved once the current stream delivered an event (its JOINs were taken), ended, or SETTLE_SECONDS passed.
        self._taken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._resent.set()
        self._call: ChatStream | None = None
        self._batched = True  # open ChatBatched until a server answers UNIMPLEMENTED; then Chat
        self._connected = asyncio.Event()
        self._events: asyncio.Queue[chat_pb2.ChatEvent | BaseException | None] = asyncio.Queue()
        self._closing = False
        self._error: BaseException | None = None  # why the session ended, if it failed
        self._write_lock = asyncio.Lock()
        self._resend_after_settle: set[str] = set()
        self._settle_timer: asyncio.TimerHandle | None = None
        self._resends: set[asyncio.Task[None]] = set()
        self.reconnects = 0
        self._runner = asyncio.create_task(self._run())

    @property
    def batched(self) -> bool:
        """True while the session uses ChatBatched; False once a server answered it UNIMPLEMENTED (then Chat)."""
        return self._call.batched if self._call is not None else self._batched

    @property
    def me(self) -> str | None:
        """Our identity, read from our own client certificate (None without one)."""
        return self._me

    @property
    def rooms(self) -> tuple[str, ...]:
        """The rooms this session is in, in the order it joined them."""
        return tuple(self._rooms)

    @property
    def unacknowledged(self) -> list[tuple[str, str]]:
        return [(entry[0], entry[1]) for entry in self._unacknowledged]

    @property
    def unconfirmed(self) -> list[tuple[str, str]]:
        """(room, text) of messages reported `Unconfirmed`: sent before a single server restarted, not resent."""
        return list(self._unconfirmed)

    async def join(self, room: str) -> None:
        if room not in self._rooms:
            self._rooms.append(room)
            self.marks.join(room)
        await self._write(chat_pb2.ChatMessage(room=room))

    async def send(self, text: str, *, room: str = "general") -> None:
        """Post `text` to `room` (joining it); it is resent after a reconnect until its echo arrives."""
        if room not in self._rooms:
            self._rooms.append(room)
            self.marks.join(room)
        message = chat_pb2.ChatMessage(room=room, text=text, client_msg_id=new_client_msg_id() if text else "")
        await self._write(message, track=bool(text) and self._me is not None)

    async def leave(self, room: str) -> None:
        """Leave ROOM: its members see us leave, and its events stop.

        The protocol has no per-room leave (a stream leaves its rooms when it
        ends), so the current stream is half-closed and the session resumes at
        once on a new one that joins every other room.
        """
        if room not in self._rooms:
            return
        self._rooms.remove(room)
        self.marks.leave(room)
        self._unacknowledged = [entry for entry in self._unacknowledged if entry[0] != room]
        await self._ready()
        self._connected.clear()  # new writes wait for the stream without ROOM
        if self._call is not None:
            with contextlib.suppress(*WRITE_FAILURES):
                await self._call.done_writing()

    async def done_writing(self) -> None:
        """Half-close: the server delivers what is accepted, then ends the stream OK."""
        self._closing = True
        await self._ready()
        if self._call is not None:
            with contextlib.suppress(*WRITE_FAILURES):
                await self._call.done_writing()

    async def reopen_channel(self) -> None:
        """Move the session onto a new channel, which re-reads the TLS files (a renewed certificate).

        The current stream is half-closed, so the server delivers what it
        accepted and ends it with OK; the session then reconnects at once on
        the new channel and resumes like after any break.
        """
        if self._open_new_channel is None:
            raise ConnectError("this chat session cannot open a new channel")
        scope = contextlib.AsyncExitStack()
        self._channel = await scope.enter_async_context(self._open_new_channel())
        self._channel_scopes.append(scope)
        self._connected.clear()  # new writes wait for the stream on the new channel
        if self._call is not None:
            with contextlib.suppress(*WRITE_FAILURES):
                await self._call.done_writing()

    async def _close_replaced_channels(self) -> None:
        """Close channels that reopen_channel() replaced, now that their stream has ended."""
        while len(self._channel_scopes) > 1:
            await self._channel_scopes.pop(0).aclose()

    async def close(self) -> None:
        self._closing = True
        if self._settle_timer is not None:
            self._settle_timer.cancel()
        for task in list(self._resends):
            task.cancel()
        self._runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._runner
        if self._call is not None:
            self._call.cancel()
        for scope in reversed(self._channel_scopes):
            await scope.aclose()

    async def __aiter__(self) -> AsyncIterator[chat_pb2.ChatEvent]:
        while (item := await self._events.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def _status(self, status: SessionStatus) -> None:
        if isinstance(status, HistoryLost) and self._on_gap is not None:
            self._on_gap(status.gap)
        if self._on_status is not None:
            self._on_status(status)

    async def _write(self, message: chat_pb2.ChatMessage, *, track: bool = False) -> None:
        # A message written to a stream that breaks is resent after the
        # reconnect if its echo never came (see _rejoin), so retrying here
        # would send it twice.
        while True:
            if track:
                await self._resent.wait()  # keep our order: earlier unechoed messages go first
            await self._ready()
            taken = self._taken
            if track and self.marks.global_order and not taken.done():
                # A single server: a message goes out only once this stream's
                # JOINs were taken (an event came back), so after a restart a
                # refused stream never carries one (see _give_up_resends).
                await asyncio.shield(taken)
                continue
            if not track or self._resent.is_set():
                break
        assert self._call is not None
        async with self._write_lock:
            if track:
                self._unacknowledged.append(
                    [message.room, message.text, self._stream_number, message.client_msg_id, self._stream_number]
                )
            with contextlib.suppress(*WRITE_FAILURES):
                await self._call.write(message)

    async def _ready(self) -> None:
        """Wait until a stream is open; raise if the session has ended for good."""
        if not self._connected.is_set():
            waiter = asyncio.ensure_future(self._connected.wait())
            await asyncio.wait((waiter, self._runner), return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                waiter.cancel()
        if self._runner.done():
            if self._error is not None:
                raise self._error  # why the session ended, explained
            raise ConnectError("the chat session has ended")

    async def _run(self) -> None:
        attempt = 0
        broken = False  # the previous stream broke: say so when the next one delivers
        try:
            while True:
                resume = self.marks.reconnecting()
                metadata = ((LAST_EVENT_ID, str(resume)),) if resume is not None else None
                call = ChatStream(self._channel.stub, metadata=metadata or (), batched=self._batched)
                self._call = call
                try:
                    await self._rejoin(call)
                    self._connected.set()
                    first = True
                    async for event in call:
                        if first:  # its initial metadata came before it
                            first = False
                            self._settle_taken()
                            self.marks.global_order = (ORDER_KEY, GLOBAL_ORDER) in tuple(
                                await call.initial_metadata() or ()
                            )
                        attempt = 0
                        self._connected_once = True
                        if broken:
                            broken = False
                            self._status(Resumed(resume, self._times.get(resume) if resume is not None else None))
                        self._deliver(event)
                    if self._closing:
                        self._events.put_nowait(None)
                        return
                    log.info("chat stream ended; reconnecting")
                    await self._close_replaced_channels()
                except grpc.aio.AioRpcError as exc:
                    self._connected.clear()
                    reason = reason_of(exc)
                    if exc.code() is grpc.StatusCode.OUT_OF_RANGE:
                        gap = ResumeGap(
                            f"could not resume: {exc.details()}",
                            resume_from=resume_from(exc),
                            lost_after_ms=self._times.get(resume) if resume is not None else None,
                        )
                        if self._on_gap is None and self._on_status is None:
                            raise gap from exc
                        self._status(HistoryLost(gap))
                        self.marks.forget(resume_from=gap.resume_from)
                        if self.marks.global_order:
                            self._give_up_resends()
                        continue
                    if reason in MESSAGE_REFUSALS and self._drop_refused(exc, reason):
                        continue  # the rest goes on, on a new stream that resumes
                    if (self._fail_fast and not self._connected_once) or not retryable(exc):
                        raise self._channel.explain(exc) from exc
                    if attempt >= self._backoff.max_attempts:
                        raise self._channel.explain(exc) from exc
                    delay = self._backoff.delay(attempt)
                    attempt += 1
                    self.reconnects += 1
                    broken = True
                    log.info(
                        "chat stream broke (%s: %s); reconnecting in %.2fs (attempt %d)",
                        exc.code().name,
                        exc.details(),
                        delay,
                        attempt,
                    )
                    self._status(Reconnecting(attempt, delay, str(self._channel.explain(exc))))
                    await asyncio.sleep(delay)
                finally:
                    self._connected.clear()
                    self._settle_taken()
                    self._batched = call.batched  # a server without ChatBatched: reconnect on Chat
        except asyncio.CancelledError:
            self._events.put_nowait(None)
            raise
        except BaseException as exc:  # handed to the reader, who raises it
            self._error = exc
            self._events.put_nowait(exc)

    def _give_up_resends(self) -> None:
        """A single server that no longer holds our history may have forgotten our ids: tell, do not resend.

        Only messages first written on an earlier stream are in doubt. The
        server reads a stream in order and refused this one at a room's JOIN,
        which `_rejoin` writes before anything else, so what was first written
        on this stream was accepted by nobody: it is resent as usual. (On a
        single server `_write` holds new messages until the stream delivered
        an event, so streams refused at their JOINs carry none, normally.)
        """
        pending = [entry for entry in self._unacknowledged if entry[4] < self._stream_number]
        if not pending:
            return
        self._unacknowledged = [entry for entry in self._unacknowledged if entry[4] >= self._stream_number]
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        self._resend_after_settle.clear()
        self._resent.set()
        for room, text, _, client_msg_id, _ in pending:
            self._unconfirmed.append((room, text))
            log.info("not resending a message to room %s: the server restarted before confirming it", room)
            self._status(Unconfirmed(room, text, client_msg_id))

    def _drop_refused(self, error: grpc.aio.AioRpcError, reason: Reason) -> bool:
        """Drop the message or room the server refused; False if there is nothing to drop (then it is fatal)."""
        details = error.details() or ""
        if reason is Reason.TEXT_TOO_LONG:
            if not self._unacknowledged:
                return False
            # The server reads in order and accepted everything before the
            # refused message: after the replay, it is the first unechoed one.
            room = self._unacknowledged[0][0]
            self._refused = Refused(reason, error.code(), details, room, None)
            return True
        # A room: the one our own rule refuses, else the newest (the one that went over a limit).
        refused_room = next(
            (room for room in self._rooms if not valid_room(room)), self._rooms[-1] if self._rooms else None
        )
        if refused_room is None:
            return False
        self._rooms.remove(refused_room)
        self.marks.leave(refused_room)
        dropped = [entry for entry in self._unacknowledged if entry[0] == refused_room]
        self._unacknowledged = [entry for entry in self._unacknowledged if entry[0] != refused_room]
        self._status(Refused(reason, error.code(), details, refused_room, dropped[0][1] if dropped else None))
        return True

    @staticmethod
    def _settle_taken_of(taken: asyncio.Future[None]) -> None:
        if not taken.done():
            taken.set_result(None)

    def _settle_taken(self) -> None:
        if not self._taken.done():
            self._taken.set_result(None)

    async def _rejoin(self, call: ChatStream) -> None:
        self._stream_number += 1
        self._settle_taken()
        self._taken = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(SETTLE_SECONDS, self._settle_taken_of, self._taken)
        async with self._write_lock:
            for room in self._rooms:
                await call.write(chat_pb2.ChatMessage(room=room))
        if not self._unacknowledged:
            return
        if self.marks.resume_point is None:
            # Nothing will be replayed: whatever was not echoed is sent again.
            self._resend_after_settle = {entry[0] for entry in self._unacknowledged}
            self._resent.clear()
            await self._resend_now()
            return
        # Accepted ones come back in the room's replay, which ends with our
        # JOIN; what is still unechoed then is resent. Rooms too large for
        # JOIN announcements are resent after SETTLE_SECONDS instead.
        self._resend_after_settle = {entry[0] for entry in self._unacknowledged}
        self._resent.clear()
        task = asyncio.get_running_loop().call_later(SETTLE_SECONDS, self._schedule_resend, None)
        self._settle_timer = task

    def _schedule_resend(self, room: str | None) -> None:
        if room is not None:
            self._resend_after_settle.discard(room)
        if room is None or not self._resend_after_settle:
            self._resend_after_settle.clear()
            if self._settle_timer is not None:
                self._settle_timer.cancel()
                self._settle_timer = None
            task = asyncio.create_task(self._resend_now())
            self._resends.add(task)
            task.add_done_callback(self._resends.discard)

    async def _resend_now(self) -> None:
        try:
            async with self._write_lock:
                if self._refused is not None and self._unacknowledged:
                    room, text = self._unacknowledged.pop(0)[:2]
                    refused, self._refused = self._refused, None
                    self._status(Refused(refused.reason, refused.code, refused.message, room, text))
                # A copy: echoes arriving while we await a write remove entries
                # from the list, and walking the list itself would then skip
                # the entry after each removed one -- never resent, never echoed
                # (found by the fault checker, seed 10).
                for entry in list(self._unacknowledged):
                    if (
                        entry[2] < self._stream_number
                        and self._call is not None
                        and any(e is entry for e in self._unacknowledged)
                    ):
                        entry[2] = self._stream_number
                        with contextlib.suppress(*WRITE_FAILURES):
                            await self._call.write(
                                chat_pb2.ChatMessage(room=entry[0], text=entry[1], client_msg_id=entry[3])
                            )
        finally:
            self._resent.set()

    def _deliver(self, event: chat_pb2.ChatEvent) -> None:
        if not self.marks.accept(event, self._me):
            return
        self._times[int(event.id)] = event.sent_at_unix_ms
        if len(self._times) > 256:
            keep = {mark for mark in self.marks.complete.values() if mark is not None}
            self._times = {event_id: ms for event_id, ms in self._times.items() if event_id in keep}
        if event.kind == Kind.MESSAGE and event.sender == self._me:
            for index, entry in enumerate(self._unacknowledged):
                if entry[0] == event.room and entry[1] == event.text:
                    del self._unacknowledged[index]
                    break
        if event.kind == Kind.JOIN and event.sender == self._me and event.room in self._resend_after_settle:
            self._schedule_resend(event.room)
        self._events.put_nowait(event)


@contextlib.asynccontextmanager
async def reconnecting_chat(
    config: ClientConfig,
    *,
    backoff: Backoff | None = None,
    on_gap: Callable[[ResumeGap], None] | None = None,
    on_status: Callable[[SessionStatus], None] | None = None,
    fail_fast: bool = False,
) -> AsyncIterator[ReconnectingChat]:
    """A Chat session that survives broken streams and server restarts; closed when the block exits.

    `on_status` hears reconnects, resumes, lost history and refused messages
    (see `SessionStatus`). With `fail_fast`, a failure before the first
    stream delivered anything (wrong port, untrusted server, refused
    certificate) is raised at once, explained, instead of being retried.
    With `tls.renew` the certificate is renewed meanwhile, and each renewal
    moves the session onto a new channel (`reopen_channel`): nothing is lost.
    """
    from securechat.client.rotation import renewing

    async with renewing(config), open_channel(config, renew=False) as channel:
        session = ReconnectingChat(
            channel,
            backoff=backoff or Backoff(),
            on_gap=on_gap,
            on_status=on_status,
            fail_fast=fail_fast,
            open_new_channel=lambda: open_channel(config, renew=False),
        )
        follower = None
        if config.tls is not None and config.tls.renew is not None:
            follower = asyncio.create_task(_follow_renewals(config, session), name="securechat-follow-renewals")
        try:
            yield session
        finally:
            if follower is not None:
                follower.cancel()
            await session.close()


async def _follow_renewals(config: ClientConfig, session: ReconnectingChat) -> None:
    from securechat.client.channel import certificate_rotations

    async for material in certificate_rotations(config):
        serial = f"{material.certificate.serial_number:x}" if material.certificate is not None else "?"
        log.info("client certificate renewed (serial %s): moving the chat onto a new connection", serial)
        await session.reopen_channel()
