"""JetStreamBroker.send: a stream's messages in flight together, stored in the order sent (real nats-server, mTLS)."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import MakeBroker
from nats_support import NatsServer
from test_broker_jetstream import Inbox, event, wait_until

from securechat.broker import Stored
from securechat.errors import BrokerUnavailable


async def test_sends_in_flight_together_are_stored_in_the_order_sent(make_broker: MakeBroker) -> None:
    """50 sends without waiting between them: ids increase in send order, the subscription sees the same order."""
    a, b = await make_broker("replica-a"), await make_broker("replica-b")
    inbox = Inbox()
    await b.subscribe("general", inbox)
    pending = [await a.send("general", event("general", "alice", f"m{n}").SerializeToString(), msg_id=f"m{n}") for n in range(50)]
    assert not all(future.done() for future in pending)  # none waited for its ack before the next was sent
    stored = await asyncio.gather(*pending)
    await inbox.wait_for(50)

    ids = [item.id for item in stored]
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert inbox.texts == [f"m{n}" for n in range(50)]
    assert [event_id for event_id, _ in inbox.events] == ids


async def test_a_repeated_msg_id_is_stored_once(make_broker: MakeBroker) -> None:
    """send deduplicates like publish: the second send of a msg_id resolves to the first one's id, marked duplicate."""
    a = await make_broker("replica-a")
    first = await (await a.send("general", event("general", "alice", "hello").SerializeToString(), msg_id="alice/1"))
    again = await (await a.send("general", event("general", "alice", "hello").SerializeToString(), msg_id="alice/1"))
    other = await (await a.send("general", event("general", "alice", "hello").SerializeToString(), msg_id="alice/2"))

    assert first == Stored(first.id, duplicate=False)
    assert again == Stored(first.id, duplicate=True)
    assert other == Stored(first.id + 1, duplicate=False)
    assert [event_id for event_id, _ in await a.history("general", 0)] == [first.id, other.id]


async def test_send_while_disconnected_is_refused_at_once(make_broker: MakeBroker, nats_server: NatsServer) -> None:
    """With NATS gone, send raises BrokerUnavailable (nothing sent) at once; its connected twin is stored."""
    a = await make_broker("replica-a")
    stored = await (await a.send("general", event("general", "alice", "before").SerializeToString(), msg_id="before"))
    assert stored.id >= 1

    nats_server.stop()
    await wait_until(lambda: not a.connected, 5, "replica-a to notice the outage")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="message not accepted: not connected to NATS") as caught:
        await a.send("general", event("general", "alice", "during").SerializeToString(), msg_id="during")
    assert caught.value.maybe_accepted is False
    assert time.monotonic() - started < 0.5


async def test_an_unanswered_send_fails_as_unconfirmed(make_broker: MakeBroker, nats_server: NatsServer) -> None:
    """A send whose message left before NATS vanished fails after publish_timeout as maybe accepted, never hangs."""
    a = await make_broker("replica-a", publish_timeout="500ms")
    await (await a.send("general", event("general", "alice", "first").SerializeToString(), msg_id="first"))
    nats_server.stop(kill=True)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        # The kill may or may not have been noticed when send runs: either answer is a clear error.
        await (await a.send("general", event("general", "alice", "second").SerializeToString(), msg_id="second"))
    assert time.monotonic() - started < 2.0
    assert "not accepted" in str(caught.value) or caught.value.maybe_accepted
