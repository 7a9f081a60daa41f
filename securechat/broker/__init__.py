"""The broker: where a room's events get their ids, order and history.

    (config)      the broker: section is securechat.config.broker (BrokerConfig, memory | nats)
    subjects.py   room name <-> one NATS subject token ('.' and '_' escaped)
    tls.py        ssl.SSLContext for the mTLS link to NATS (our CA, a client cert per replica)
    events.py     Stored (what a publish returns) and stamp_id (an event's id set without parsing it)
    jetstream.py  JetStreamBroker: publish (idempotent per msg_id), history, live subscriptions
    ordered_restart.py  the one private nats-py field (an ordered consumer's restart point), quarantined

`Broker` below is the one boundary the chat server programs against; the
in-memory broker (`securechat.server.broker.InMemoryBroker`: a single
server, no extra process) and JetStreamBroker (replicas sharing rooms
through NATS JetStream) both fit it, so the shared-room hub
(`securechat.server.shared.SharedRoomHub`) runs over either. The in-memory
broker also offers a synchronous fast path (`LocalBroker` in
`securechat.server.broker`: accept and deliver in one call, no coroutine
per message), which the single server's `RoomHub` uses. Library code:
never prints; errors are BrokerError / BrokerUnavailable / OutOfRange from
`securechat.errors`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from securechat.broker.events import Stored, stamp_id
from securechat.broker.subjects import room_subject, room_token, token_room, validate_room
from securechat.config.broker import BrokerConfig, BrokerTls, Retention, load_broker_config, parse_broker
from securechat.errors import BrokerError, BrokerUnavailable, OutOfRange


class Subscription(Protocol):
    last_id: int

    async def unsubscribe(self) -> None: ...


class Broker(Protocol):
    """What the chat server needs from a broker. Ids are increasing ints; events are serialized ChatEvents.

    `send` stores one event (without id) and returns once it is on its way:
    events sent one after another from one task are stored in that order,
    and the future tells when (and as which id) it was stored, or why not.
    `deliver` callbacks run on the event loop, in id order, and must not block.
    """

    async def start(self) -> None: ...

    async def send(self, room: str, event: bytes, *, msg_id: str) -> asyncio.Future[Stored]: ...

    async def history(self, room: str, after_id: int) -> list[tuple[int, bytes]]: ...

    async def subscribe(
        self,
        room: str,
        deliver: Callable[[int, bytes], None],
        *,
        after_id: int | None = None,
        on_lost: Callable[[BrokerError], None] | None = None,
    ) -> Subscription: ...

    async def close(self) -> None: ...


__all__ = [
    "Broker",
    "BrokerConfig",
    "BrokerError",
    "BrokerTls",
    "BrokerUnavailable",
    "OutOfRange",
    "Retention",
    "Stored",
    "Subscription",
    "load_broker_config",
    "parse_broker",
    "room_subject",
    "room_token",
    "stamp_id",
    "token_room",
    "validate_room",
]
