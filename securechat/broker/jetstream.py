"""Rooms shared by several replicas through NATS JetStream (nats-py).

One stream per deployment (`broker.stream`), one subject per room
(`securechat.broker.subjects`). A replica publishes each accepted event and
delivers to its local members what JetStream hands back, so every member on
every replica sees one order per room.

- Event ids are the stream's sequence numbers: increasing, unique per deployment.
- `publish` is idempotent per `msg_id` (the `Nats-Msg-Id` header, deduplicated
  by JetStream within `broker.duplicate_window`): a retry returns the first
  publish's id and stores nothing twice.
- `publish` never drops silently: it returns the id once JetStream acknowledged
  the event, or raises BrokerUnavailable. While disconnected it raises at once
  (nats-py's reconnect buffer is disabled with pending_size=0, so nothing is
  queued to appear later); a request that was sent but not acknowledged is
  retried with the same msg_id until `broker.publish_timeout`.
- `history(room, after_id)` and `subscribe(room, ..., after_id=...)` raise
  OutOfRange when the room may have lost events after `after_id` (see
  `oldest_id`).

What "the oldest id still held" means here. Ids are stream-wide sequences,
while rooms interleave in the stream, and JetStream does not record which
subject a removed message had. Retention only ever removes the oldest
messages -- stream-wide for max_age / max_bytes / max_msgs, per room for
max_msgs_per_room -- so what a room still holds is always a suffix of its
events. Hence, for a room:

    oldest = stream first_seq                 (normally)
    oldest = the room's first held sequence   (when the room is at max_msgs_per_room,
                                               the only case a room loses events
                                               while the stream's first_seq stays)

Resuming after `after_id >= oldest - 1` is complete; an older `after_id` is
OUT_OF_RANGE. This is conservative: when the room had no events in the
removed range the client is still told (it rejoins), never left with a gap.
`oldest` never decreases, so checking it after reading history proves the
read was complete. An `after_id` above the stream's last sequence was never
issued (the stream was recreated): OutOfRange as well.

Not handled here: membership and fan-out to members (RoomHub's job), and
the server's mapping of these errors to gRPC status codes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api

from securechat._gen import chat_pb2
from securechat.broker import ordered_restart
from securechat.broker.events import Stored, stamp_id
from securechat.broker.subjects import room_subject, room_subject_prefix, validate_room
from securechat.broker.tls import client_context
from securechat.config.broker import BrokerConfig
from securechat.errors import BrokerError, BrokerUnavailable, OutOfRange

__all__ = ["MSG_ID_HEADER", "Deliver", "JetStreamBroker", "OnLost", "RoomSubscription", "Stored", "stamp_id"]

log = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
# JetStream API error code for "stream name already in use with a different configuration".
_STREAM_NAME_IN_USE = 10058
_HISTORY_BATCH = 256
_NEWEST_RECHECKS = 10  # a lagging stream leader must catch up within about this many rechecks
_NEWEST_RECHECK_SECONDS = 0.2
_HISTORY_ATTEMPTS = 10  # reads of a room's history that may come back short from a lagging replica
_HISTORY_RETRY_SECONDS = 0.1

Deliver = Callable[[int, bytes], None]
OnLost = Callable[[BrokerError], None]


@dataclass(eq=False)
class RoomSubscription:
    """Live events of one room for one replica, in stream order; `unsubscribe()` ends it.

    `last_id` is the id of the last event handed to `deliver` (or the id the
    subscription started after). `lost` is set, and `on_lost` called once,
    when the subscription can no longer promise a gap-free sequence; the
    server should then end its members' streams so they resume elsewhere.
    """

    room: str
    last_id: int
    _deliver: Deliver
    _on_lost: OnLost | None
    _sub: Any = None
    _held: list[tuple[int, bytes]] | None = field(default_factory=list)
    lost: BrokerError | None = None
    repeats: int = 0  # events handed over again by a consumer restart, and dropped here
    delivered_id: int = 0  # the newest event of the room this feed has delivered (0: none yet)

    async def unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                log.debug("unsubscribing from room %s: %s", self.room, exc)

    @property
    def active(self) -> bool:
        return self._sub is not None and self.lost is None

    def _lose(self, error: BrokerError) -> None:
        if self.lost is None:
            self.lost = error
            log.warning("room %s: live subscription lost: %s", self.room, error)
            if self._on_lost is not None:
                self._on_lost(error)

    async def _on_msg(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        # nats-py's ordered consumer restarts after the last sequence it saw;
        # the check also drops anything a restart would hand over twice.
        if seq <= self.last_id or self.lost is not None:
            self.repeats += seq <= self.last_id
            return
        self.last_id = self.delivered_id = seq
        event = stamp_id(msg.data, seq)
        if self._held is not None:  # still checking the resume range
            self._held.append((seq, event))
            return
        try:
            self._deliver(seq, event)
        except Exception:
            log.exception("room %s: deliver(%d) failed", self.room, seq)
            self._lose(BrokerError(f"room {self.room}: delivering event {seq} failed; see the log."))

    def _release(self) -> None:
        held, self._held = self._held or [], None
        for seq, event in held:
            self._deliver(seq, event)


class JetStreamBroker:
    """The NATS JetStream broker of one replica: publish, history, live subscriptions."""

    def __init__(self, config: BrokerConfig, *, name: str | None = None, heartbeat_seconds: float = 2.0) -> None:
        if config.type != "nats":
            raise ValueError(f"JetStreamBroker needs broker.type nats, got {config.type!r}")
        self.config = config
        self.name = name
        self._heartbeat = heartbeat_seconds
        self._nc = NATS()
        self._js: Any = None
        self._subs: set[RoomSubscription] = set()
        self._connected = asyncio.Event()
        self._last_error: BaseException | None = None
        self._checks: set[asyncio.Task[None]] = set()
        self._tls_refused: asyncio.Future[ssl.SSLError] | None = None
        self.seeds_restarts = False  # the quarantined ordered-consumer seed is in use (see ordered_restart)

    # -- lifecycle ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._nc.is_connected

    async def start(self) -> None:
        """Connect (bounded by broker.connect_timeout) and create or update the stream."""
        cfg = self.config
        options: dict[str, Any] = {
            "servers": list(cfg.servers),
            "name": self.name,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,  # never give up: the chat server outlives NATS restarts
            "reconnect_time_wait": cfg.reconnect_wait_seconds,
            "connect_timeout": cfg.connect_timeout_seconds,
            # No reconnect buffer: a publish while disconnected fails at once
            # instead of being queued and stored after we told the sender no.
            "pending_size": 0,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "closed_cb": self._on_closed,
        }
        if not cfg.insecure:
            options["tls"] = client_context(cfg)
            if cfg.tls is not None and cfg.tls.server_name:
                options["tls_hostname"] = cfg.tls.server_name
        where = ", ".join(cfg.servers)
        self._tls_refused = asyncio.get_running_loop().create_future()
        connect = asyncio.ensure_future(self._nc.connect(**options))
        try:
            # With max_reconnect_attempts=-1 nats-py retries the first connect
            # forever; bound it, and stop at once on a TLS refusal (a wrong CA
            # or name does not fix itself by retrying).
            waiting: set[asyncio.Future[Any]] = {connect, self._tls_refused}
            done, _ = await asyncio.wait(
                waiting, timeout=cfg.connect_timeout_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            if connect not in done:
                connect.cancel()
                await asyncio.gather(connect, return_exceptions=True)
                raise self._tls_refused.result() if self._tls_refused.done() else asyncio.TimeoutError()
            connect.result()
        except (asyncio.TimeoutError, OSError, nats.errors.Error) as exc:
            reason = _describe(self._last_error or exc)
            await self._close_quietly()
            raise BrokerUnavailable(
                f"cannot connect to NATS at {where}: {reason}. Check that nats-server is running there, that its "
                f"certificate is signed by broker.tls.ca and that it trusts this replica's certificate ({cfg.source.name}: broker)."
            ) from exc
        self._tls_refused = None  # from now on a TLS error is one more reason to reconnect
        self.seeds_restarts = self._check_seeding()
        self._connected.set()
        self._js = self._nc.jetstream(timeout=cfg.connect_timeout_seconds)
        await self._ensure_stream()
        log.info(
            "broker: connected to NATS at %s, stream %s",
            self._nc.connected_url.netloc if self._nc.connected_url else where,
            cfg.stream,
        )

    def _check_seeding(self) -> bool:
        if not self.config.seed_ordered_restart:
            return False
        problem = ordered_restart.self_test()
        if problem is not None:
            log.warning(
                "broker: %s; room feeds use the public path (a restarted feed re-reads its room from the start). "
                "Set broker.seed_ordered_restart: false to silence this.",
                problem,
            )
            return False
        return True

    async def close(self) -> None:
        """Unsubscribe everything and close the connection."""
        for sub in list(self._subs):
            await sub.unsubscribe()
        self._subs.clear()
        for task in list(self._checks):
            task.cancel()
        self._connected.clear()  # a close we asked for is not an outage to warn about
        await self._close_quietly()

    async def _close_quietly(self) -> None:
        # Bounded: while nats-py is reconnecting to a server whose TLS
        # handshake failed, its close() waits for a transport that never
        # reports closed (tests/broker/test_broker_tls_core.py).
        try:
            await asyncio.wait_for(self._nc.close(), self.config.connect_timeout_seconds)
        except asyncio.TimeoutError:
            log.debug(
                "closing the NATS connection: no answer within %gs; left to exit", self.config.connect_timeout_seconds
            )
        except (nats.errors.Error, OSError) as exc:
            log.debug("closing the NATS connection: %s", exc)

    def _stream_config(self) -> api.StreamConfig:
        cfg, keep = self.config, self.config.retention
        return api.StreamConfig(
            name=cfg.stream,
            description="securechat rooms: one subject per room, event id = stream sequence",
            subjects=[f"{room_subject_prefix(cfg.stream)}.*"],
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD,  # drop the oldest, never refuse a new event
            storage=api.StorageType.FILE,
            num_replicas=cfg.replicas,
            max_age=keep.max_age_seconds or 0,
            max_bytes=keep.max_bytes or -1,
            max_msgs=keep.max_msgs or -1,
            max_msgs_per_subject=keep.max_msgs_per_room or -1,
            duplicate_window=cfg.duplicate_window_seconds,
            allow_direct=True,
        )

    async def _ensure_stream(self) -> None:
        stream = self._stream_config()
        try:
            await self._js.add_stream(stream)
        except nats.js.errors.APIError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise self._api_error(f"creating stream {stream.name}", exc) from exc
            # Another config (an older replica, or a change of retention): this one wins.
            try:
                await self._js.update_stream(stream)
            except nats.js.errors.Error as update_exc:
                raise self._api_error("updating the stream's retention", update_exc) from update_exc
            log.info("broker: updated stream %s to this config's retention", stream.name)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise self._unavailable(f"creating stream {stream.name}", exc) from exc

    # -- publish -----------------------------------------------------------------

    async def publish(self, room: str, event: bytes | chat_pb2.ChatEvent, *, msg_id: str) -> int:
        """Store one event (without id) for `room`; return its id. Idempotent per `msg_id`.

        Raises BrokerUnavailable (maybe_accepted False when nothing was sent)
        and BrokerError when NATS refuses the message.
        """
        return (await self.store(room, event, msg_id=msg_id)).id

    async def store(self, room: str, event: bytes | chat_pb2.ChatEvent, *, msg_id: str) -> Stored:
        """`publish`, also telling whether JetStream had already stored `msg_id` (within its duplicate window)."""
        validate_room(room)
        if not msg_id:
            raise ValueError("msg_id must not be empty: it is what makes a retried publish safe")
        if isinstance(event, chat_pb2.ChatEvent):
            if event.id:
                raise ValueError("publish an event without an id: the broker assigns it")
            event = event.SerializeToString()
        subject = room_subject(self.config.stream, room)
        headers = {MSG_ID_HEADER: msg_id}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.publish_timeout_seconds
        sent = False
        while True:
            remaining = deadline - loop.time()
            if not self._nc.is_connected:
                if not sent:
                    raise self._not_accepted(room)
                if remaining <= 0 or not await self._wait_connected(remaining):
                    raise self._unconfirmed(room)
                continue
            try:
                ack = await self._js.publish(
                    subject, event, timeout=max(remaining, 0.05), stream=self.config.stream, headers=dict(headers)
                )
            except nats.errors.OutboundBufferLimitError:
                # Disconnected between the check and the write: nothing was sent.
                if not sent:
                    raise self._not_accepted(room) from None
            except (
                asyncio.TimeoutError,
                nats.errors.TimeoutError,
                nats.errors.ConnectionClosedError,
                nats.errors.UnexpectedEOF,
            ):
                sent = True
            except (nats.js.errors.NoStreamResponseError, nats.js.errors.ServiceUnavailableError):
                pass  # JetStream is not answering yet (restarting): nothing was stored
            except nats.js.errors.APIError as exc:
                raise self._api_error(f"publishing to room {room}", exc) from exc
            else:
                if ack.duplicate:
                    log.debug("room %s: publish %s was a duplicate of event %d", room, msg_id, ack.seq)
                return Stored(ack.seq, bool(ack.duplicate))
            if loop.time() >= deadline:
                raise self._unconfirmed(room) if sent else self._not_accepted(room)
            await asyncio.sleep(min(0.05, max(deadline - loop.time(), 0)))

    def _not_accepted(self, room: str) -> BrokerUnavailable:
        return BrokerUnavailable(
            f"room {room}: message not accepted: not connected to NATS ({', '.join(self.config.servers)}); reconnecting. Send it again.",
            maybe_accepted=False,
        )

    def _unconfirmed(self, room: str) -> BrokerUnavailable:
        return BrokerUnavailable(
            f"room {room}: NATS did not confirm the message within {self.config.publish_timeout_seconds:g}s; it may still appear. "
            "Retry with the same msg_id to be sure it is stored once.",
            maybe_accepted=True,
        )

    async def _wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def event(self, event_id: int) -> bytes:
        """The stored ChatEvent with id `event_id`, id stamped (a repeated send's original, for its echo)."""
        try:
            msg = await self._js.get_msg(self.config.stream, seq=event_id, direct=True)
        except nats.js.errors.NotFoundError as exc:
            raise BrokerError(f"event {event_id} is no longer held by stream {self.config.stream}.") from exc
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise self._unavailable(f"reading event {event_id}", exc) from exc
        return stamp_id(msg.data or b"", event_id)

    # -- history and range -------------------------------------------------------

    async def oldest_id(self, room: str) -> tuple[int, int]:
        """(oldest id still held for `room`, newest id in the stream); see the module docstring."""
        subject = room_subject(self.config.stream, room)
        try:
            info = await self._js.stream_info(self.config.stream, subjects_filter=subject)
            state = info.state
            oldest = max(state.first_seq, 1)
            cap = info.config.max_msgs_per_subject
            count = (state.subjects or {}).get(subject, 0)
            if cap and cap > 0 and count >= cap:
                first = await self._js.get_msg(self.config.stream, seq=oldest, subject=subject, next=True)
                oldest = max(oldest, first.seq)
        except nats.js.errors.NotFoundError as exc:
            raise BrokerError(
                f"stream {self.config.stream} is gone from NATS; restart this replica to recreate it."
            ) from exc
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise self._unavailable(f"reading the history range of room {room}", exc) from exc
        return oldest, state.last_seq

    async def check_range(self, room: str, after_id: int) -> None:
        """Raise OutOfRange unless every event of `room` after `after_id` is still held."""
        oldest, newest = await self.oldest_id(room)
        for _ in range(_NEWEST_RECHECKS):
            if after_id <= newest:
                break
            # Right after a stream leader change the new leader may not have
            # applied the last events yet and reports an older last sequence
            # than a client has already received (the fault checker's seed 7
            # got a false history-gone that way): ask again before saying the
            # id was never issued, which is meant for a recreated stream.
            await asyncio.sleep(_NEWEST_RECHECK_SECONDS)
            oldest, newest = await self.oldest_id(room)
        if after_id > newest:
            raise OutOfRange(room, after_id, oldest, newest=newest)
        if after_id + 1 < oldest:
            raise OutOfRange(room, after_id, oldest)

    async def history(self, room: str, after_id: int) -> list[tuple[int, bytes]]:
        """Every held event of `room` with an id above `after_id`, oldest first, as (id, ChatEvent bytes).

        Raises OutOfRange when events after `after_id` are no longer held.
        """
        validate_room(room)
        if after_id < 0:
            raise ValueError("after_id must be 0 or more")
        subject = room_subject(self.config.stream, room)
        consumer = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after_id + 1,
            ack_policy=api.AckPolicy.NONE,
            filter_subject=subject,
            inactive_threshold=30.0,  # the server removes it if we vanish mid-read
            mem_storage=True,
            num_replicas=1,
        )
        # The read's consumer lives on one JetStream replica of the stream,
        # which can lag behind the leader right after a node came back; it
        # then returns a prefix of the room's history (the fault checker's
        # soak lost 79 events that way). The room's last event, asked of the
        # leader first, is where a complete read must reach.
        newest_in_room = await self._last_in_room(room, subject)
        for attempt in range(_HISTORY_ATTEMPTS):
            events = await self._read_history(room, subject, consumer)
            if newest_in_room <= after_id or (events and events[-1][0] >= newest_in_room):
                break
            log.info(
                "room %s: history after %d reached %s, not %d yet (a lagging replica); reading again",
                room,
                after_id,
                events[-1][0] if events else "nothing",
                newest_in_room,
            )
            await asyncio.sleep(_HISTORY_RETRY_SECONDS * (attempt + 1))
        else:
            raise BrokerUnavailable(
                f"reading the history of room {room}: NATS returned it only in part (up to a replica that is catching up). Try again shortly."
            )
        # After the read: `oldest` only grows, so in range now means the read was complete.
        await self.check_range(room, after_id)
        return events

    async def _last_in_room(self, room: str, subject: str) -> int:
        """The id of the room's newest event, from the stream leader (0 when it has none)."""
        try:
            last = await self._js.get_msg(self.config.stream, subject=subject)  # not direct: the leader answers
        except nats.js.errors.NotFoundError:
            return 0
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise self._unavailable(f"reading the newest event of room {room}", exc) from exc
        return int(last.seq or 0)

    async def _read_history(self, room: str, subject: str, consumer: api.ConsumerConfig) -> list[tuple[int, bytes]]:
        events: list[tuple[int, bytes]] = []
        try:
            info = await self._js.add_consumer(self.config.stream, config=consumer)
            try:
                pending = info.num_pending
                if pending:
                    pull = await self._js.pull_subscribe_bind(info.name, stream=self.config.stream)
                    try:
                        while len(events) < pending:
                            batch = await pull.fetch(
                                min(_HISTORY_BATCH, pending - len(events)), timeout=self.config.connect_timeout_seconds
                            )
                            events.extend(
                                (msg.metadata.sequence.stream, stamp_id(msg.data, msg.metadata.sequence.stream))
                                for msg in batch
                            )
                    finally:
                        await pull.unsubscribe()
            finally:
                try:
                    await self._js.delete_consumer(self.config.stream, info.name)
                except (nats.errors.Error, asyncio.TimeoutError) as exc:
                    log.debug("deleting history consumer %s: %s (it expires by itself)", info.name, exc)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise self._unavailable(f"reading the history of room {room}", exc) from exc
        return events

    # -- live subscriptions ------------------------------------------------------

    async def subscribe(
        self, room: str, deliver: Deliver, *, after_id: int | None = None, on_lost: OnLost | None = None
    ) -> RoomSubscription:
        """Deliver `room`'s events in stream order: those after `after_id` first (if given), then live ones.

        `deliver(id, chat_event_bytes)` runs on the event loop and must not
        block. Without `after_id` delivery starts with the next event stored.
        Raises OutOfRange (for `after_id`) and BrokerUnavailable.
        """
        validate_room(room)
        subject = room_subject(self.config.stream, room)
        try:
            if after_id is None:
                after_id = (await self._js.stream_info(self.config.stream)).state.last_seq
            sub = RoomSubscription(room=room, last_id=after_id, _deliver=deliver, _on_lost=on_lost)
            psub = await self._js.subscribe(
                subject,
                stream=self.config.stream,
                cb=sub._on_msg,
                ordered_consumer=True,
                idle_heartbeat=self._heartbeat,
                config=api.ConsumerConfig(
                    deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_id + 1
                ),
                # Unbounded client-side queue: nats-py drops messages that
                # overflow it (a silent gap). Flow control bounds what is in flight.
                pending_msgs_limit=0,
                pending_bytes_limit=0,
            )
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise self._unavailable(f"subscribing to room {room}", exc) from exc
        if self.seeds_restarts and not ordered_restart.seed(psub, after_id):
            log.warning(
                "broker: room %s: this subscription has no restart point to seed; a restart re-reads the room", room
            )
        sub._sub = psub
        try:
            await self.check_range(room, after_id)
        except BrokerError:
            await sub.unsubscribe()
            raise
        self._subs.add(sub)
        sub._release()
        return sub

    def forget(self, sub: RoomSubscription) -> None:
        """Stop tracking an unsubscribed subscription (RoomHub calls it after `unsubscribe`)."""
        self._subs.discard(sub)

    async def _recheck_subscriptions(self) -> None:
        # While we were away retention may have removed events a subscription
        # had not seen yet; its ordered consumer would skip them silently.
        for sub in list(self._subs):
            if not sub.active:
                continue
            try:
                await self.check_range(sub.room, sub.last_id)
            except OutOfRange as exc:
                sub._lose(exc)
            except BrokerError as exc:
                log.debug("rechecking room %s after reconnect: %s", sub.room, exc)

    # -- pipelined publish -------------------------------------------------------

    async def send(self, room: str, event: bytes, *, msg_id: str) -> asyncio.Future[Stored]:
        """Send one event (without id) for `room` now; the returned future resolves once JetStream stored it.

        `publish` waits for JetStream's acknowledgement before it returns, so
        a stream that publishes its messages one after another has one in
        flight at a time. `send` returns as soon as the message is written to
        the connection: events sent one after another reach the stream in that
        order (one connection, one stream leader), several in flight at once.
        The future resolves to the stored id, or fails as `publish` does
        (BrokerUnavailable, BrokerError). An attempt that failed without an
        answer (the connection broke, JetStream not answering yet) is retried
        through `publish` with the same msg_id, so it is still stored at most
        once; an attempt still unanswered after `broker.publish_timeout` fails
        as unconfirmed. Raises BrokerUnavailable at once when nothing was sent.
        """
        validate_room(room)
        if not msg_id:
            raise ValueError("msg_id must not be empty: it is what makes a retried publish safe")
        if not self._nc.is_connected:
            raise self._not_accepted(room)
        subject = room_subject(self.config.stream, room)
        try:
            ack = await self._js.publish_async(
                subject, event, stream=self.config.stream, headers={MSG_ID_HEADER: msg_id}
            )
        except (nats.errors.OutboundBufferLimitError, nats.errors.ConnectionClosedError):
            raise self._not_accepted(room) from None  # disconnected between the check and the write
        except nats.errors.Error as exc:
            raise self._unavailable(f"sending to room {room}", exc) from exc
        loop = asyncio.get_running_loop()
        stored: asyncio.Future[Stored] = loop.create_future()
        timer = loop.call_later(self.config.publish_timeout_seconds, ack.cancel)

        def acked(ack: asyncio.Future[api.PubAck]) -> None:
            timer.cancel()
            if stored.done():
                return
            if ack.cancelled():
                stored.set_exception(self._unconfirmed(room))
                return
            exc = ack.exception()
            if exc is None:
                result = ack.result()
                stored.set_result(Stored(result.seq, bool(result.duplicate)))
            elif isinstance(exc, nats.js.errors.APIError) and not isinstance(
                exc, nats.js.errors.ServiceUnavailableError
            ):
                stored.set_exception(self._api_error(f"publishing to room {room}", exc))
            else:
                retry = loop.create_task(self._send_again(room, event, msg_id, stored))
                self._checks.add(retry)
                retry.add_done_callback(self._checks.discard)

        ack.add_done_callback(acked)
        return stored

    async def _send_again(self, room: str, event: bytes, msg_id: str, stored: asyncio.Future[Stored]) -> None:
        try:
            event_id = await self.publish(room, event, msg_id=msg_id)
        except BrokerError as exc:
            if not stored.done():
                stored.set_exception(exc)
        except asyncio.CancelledError:  # close(): nobody will wait for it any more
            if not stored.done():
                stored.set_exception(self._unconfirmed(room))
            raise
        else:
            if not stored.done():
                stored.set_result(Stored(event_id))

    # -- connection events -------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        if isinstance(exc, ssl.SSLError) and self._tls_refused is not None and not self._tls_refused.done():
            self._tls_refused.set_result(exc)
        if isinstance(exc, nats.errors.SlowConsumerError):
            for sub in self._subs:
                if sub._sub is not None and exc.sub is not None and sub._sub._id == exc.sub._id:
                    sub._lose(BrokerError(f"room {sub.room}: this replica fell behind NATS and dropped events."))
            return
        # While start() is still connecting, its one error says it all.
        log.log(
            logging.DEBUG if self._tls_refused is not None else logging.WARNING,
            "broker: NATS error: %s",
            _describe(exc),
        )

    async def _on_disconnected(self) -> None:
        if self._connected.is_set():
            log.warning("broker: disconnected from NATS; reconnecting every %gs", self.config.reconnect_wait_seconds)
        self._connected.clear()

    async def _on_reconnected(self) -> None:
        url = self._nc.connected_url
        log.warning("broker: reconnected to NATS at %s", url.netloc if url else "?")
        self._connected.set()
        task = asyncio.get_running_loop().create_task(self._recheck_subscriptions())
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _on_closed(self) -> None:
        self._connected.clear()
        for sub in list(self._subs):
            sub._lose(BrokerUnavailable(f"room {sub.room}: the NATS connection was closed."))

    # -- errors ------------------------------------------------------------------

    def _unavailable(self, doing: str, exc: BaseException) -> BrokerUnavailable:
        return BrokerUnavailable(
            f"{doing}: NATS did not answer ({_describe(exc)}); the replica is reconnecting. Try again shortly."
        )

    def _api_error(self, doing: str, exc: nats.js.errors.Error) -> BrokerError:
        return BrokerError(
            f"{doing}: NATS refused it ({_describe(exc)}). Check the stream {self.config.stream} and the NATS server log."
        )


def _describe(exc: BaseException) -> str:
    """One line for a NATS, TLS or socket error (nats-py's str() is often empty)."""
    description = getattr(exc, "description", None)
    text = description or str(exc).strip() or exc.__class__.__name__
    if text.startswith("nats: "):
        text = text[len("nats: ") :]
    return " ".join(text.split())
