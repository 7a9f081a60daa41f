"""Idempotent sends across replicas: the same client_msg_id through two replicas is stored once (JetStream's duplicate window)."""

from __future__ import annotations

import asyncio

from nats_support import NatsServer
from test_replicas import broker_section

from securechat._gen import chat_pb2
from securechat.broker.jetstream import stamp_id
from securechat.client import open_chat
from securechat.server.shared import client_msg_key

Kind = chat_pb2.ChatEvent.Kind
STEP = 10.0


async def next_message(events) -> chat_pb2.ChatEvent:
    while True:
        event = await asyncio.wait_for(anext(events), STEP)
        if event.kind == Kind.MESSAGE:
            return event


async def test_a_resend_through_another_replica_is_stored_once(nats_server: NatsServer, deployment, start) -> None:
    """alice posts m-1 on A, then the same m-1 on B: her echo on B is the original id; bob on B gets it once."""
    a = await start(broker=broker_section(nats_server, "replica-a"))
    b = await start(deployment.server(broker=broker_section(nats_server, "replica-b")))
    async with open_chat(deployment.client("bob", b.port, name="bob-b.yaml")) as bob:
        bob_events = aiter(bob)
        await bob.join("general")
        async with open_chat(deployment.client("alice", a.port, name="alice-a.yaml")) as alice:
            await alice.send("once", room="general", client_msg_id="m-1")
            first = await next_message(bob_events)
        async with open_chat(deployment.client("alice", b.port, name="alice-b.yaml")) as alice:
            alice_events = aiter(alice)
            await alice.send("once", room="general", client_msg_id="m-1")
            echo = await next_message(alice_events)
            await alice.send("next", room="general", client_msg_id="m-2")
            assert (await next_message(alice_events)).text == "next"
        assert (echo.id, echo.sender, echo.text, echo.room) == (first.id, "alice", "once", "general")
        assert (await next_message(bob_events)).text == "next"  # not "once" again


async def test_without_an_id_the_resend_is_stored_twice(nats_server: NatsServer, deployment, start) -> None:
    """The failing twin: no client_msg_id, so each replica's publish has its own Nats-Msg-Id and both are stored."""
    a = await start(broker=broker_section(nats_server, "replica-a"))
    b = await start(deployment.server(broker=broker_section(nats_server, "replica-b")))
    async with open_chat(deployment.client("bob", b.port, name="bob-b.yaml")) as bob:
        bob_events = aiter(bob)
        await bob.join("general")
        for port, name in ((a.port, "alice-a.yaml"), (b.port, "alice-b.yaml")):
            async with open_chat(deployment.client("alice", port, name=name)) as alice:
                await alice.send("again", room="general", client_msg_id="")
                await next_message(aiter(alice))
        first, second = await next_message(bob_events), await next_message(bob_events)
    assert (first.text, second.text) == ("again", "again") and int(second.id) > int(first.id)


async def test_store_reports_a_duplicate_and_event_reads_the_original(make_broker) -> None:
    """JetStreamBroker.store: the second publish of a msg_id returns the first id, duplicate=True; event(id) is it, id stamped."""
    broker = await make_broker("replica-a")
    event = chat_pb2.ChatEvent(room="r", sender="alice", text="hi", kind=Kind.MESSAGE).SerializeToString()
    key = client_msg_key("alice", "m-1")
    first = await broker.store("r", event, msg_id=key)
    again = await broker.store("r", event, msg_id=key)
    other = await broker.store("r", event, msg_id=client_msg_key("bob", "m-1"))
    assert (first.duplicate, again.duplicate, again.id, other.duplicate) == (False, True, first.id, False)
    assert await broker.event(first.id) == stamp_id(event, first.id)


def test_the_msg_id_is_one_per_identity_and_id() -> None:
    """Stable across replicas, distinct per identity, a valid header whatever the names contain."""
    assert client_msg_key("alice", "m-1") == client_msg_key("alice", "m-1")
    assert len({client_msg_key("alice", "m-1"), client_msg_key("bob", "m-1"), client_msg_key("alice\nm", "-1")}) == 3
    assert client_msg_key("a\r\nb", "x y").isascii() and " " not in client_msg_key("a\r\nb", "x y")


def test_the_duplicate_window_defaults_to_ten_minutes_or_the_retention(tmp_path) -> None:
    """broker.duplicate_window: 10 minutes by default, never longer than retention.max_age (JetStream refuses that)."""
    import yaml

    from securechat.broker import load_broker_config

    def window(**broker: object) -> float:
        path = tmp_path / "server.yaml"
        base = {"type": "nats", "servers": ["tls://127.0.0.1:4222"], "tls": {"ca": "ca.pem", "cert": "c.pem", "key": "k.pem"}}
        path.write_text(yaml.safe_dump({"broker": {**base, **broker}}), encoding="utf-8")
        config = load_broker_config(path)
        assert config is not None
        return config.duplicate_window_seconds

    assert window() == 600.0
    assert window(retention={"max_age": "5m"}) == 300.0
    assert window(duplicate_window="30m") == 1800.0


async def test_the_ordered_consumer_restarts_after_where_it_started(make_broker) -> None:
    """The one private nats-py field we set (securechat.broker.ordered_restart): the restart point is the subscription's start, not 0.

    Fails when a nats-py upgrade moves the field; the start-up self-test then turns the seed off (test_ordered_restart.py).
    """
    from securechat.broker import ordered_restart

    broker = await make_broker("replica-a")
    assert broker.seeds_restarts and ordered_restart.self_test() is None
    event = chat_pb2.ChatEvent(room="r", sender="alice", text="hi", kind=Kind.MESSAGE).SerializeToString()
    last = await broker.publish("r", event, msg_id="seed-1")
    sub = await broker.subscribe("r", lambda event_id, data: None)
    try:
        assert sub.last_id == last
        assert sub._sub._sub._jsi._sseq == last
        assert ordered_restart.seed(object(), 5) is False  # and a subscription without it is reported, not crashed on
    finally:
        await sub.unsubscribe()


async def test_a_replica_does_not_claim_one_order(nats_server: NatsServer, deployment, start) -> None:
    """No securechat-order: global from a replica: its rooms come from separate subscriptions, so the client keeps per-room marks."""
    from securechat.client.reconnect import reconnecting_chat

    a = await start(broker=broker_section(nats_server, "replica-a"))
    async with reconnecting_chat(deployment.client("alice", a.port, name="alice-order.yaml")) as alice:
        events = aiter(alice)
        await alice.send("hello", room="general")
        while (await asyncio.wait_for(anext(events), STEP)).kind != Kind.MESSAGE:
            pass
        assert alice.marks.global_order is False
