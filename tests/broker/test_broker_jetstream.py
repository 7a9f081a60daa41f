"""JetStreamBroker against a real nats-server with JetStream and mutual TLS (loopback, bounded)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from conftest import MakeBroker
from nats_support import NatsServer

from securechat._gen import chat_pb2
from securechat.broker.jetstream import JetStreamBroker, stamp_id
from securechat.errors import BrokerUnavailable, OutOfRange

Kind = chat_pb2.ChatEvent.Kind


def event(room: str, sender: str, text: str) -> chat_pb2.ChatEvent:
    return chat_pb2.ChatEvent(room=room, sender=sender, text=text, sent_at_unix_ms=int(time.time() * 1000), kind=Kind.MESSAGE)


class Inbox:
    """What one replica's subscription delivered: (id, parsed ChatEvent) in arrival order."""

    def __init__(self) -> None:
        self.events: list[tuple[int, chat_pb2.ChatEvent]] = []

    def __call__(self, event_id: int, data: bytes) -> None:
        self.events.append((event_id, chat_pb2.ChatEvent.FromString(data)))

    @property
    def texts(self) -> list[str]:
        return [item.text for _, item in self.events]

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"got {len(self.events)} of {count} events within {timeout}s: {self.texts}")
            await asyncio.sleep(0.01)


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_two_replicas_see_one_order_per_room(make_broker: MakeBroker) -> None:
    """Members on two replicas get every event of a room once, in the same order, with the stream sequence as id."""
    a, b = await make_broker("replica-a"), await make_broker("replica-b")
    on_a, on_b = Inbox(), Inbox()
    await a.subscribe("general", on_a)
    await b.subscribe("general", on_b)
    other = Inbox()
    await b.subscribe("other", other)

    async def post(broker: JetStreamBroker, sender: str, count: int) -> list[int]:
        return [await broker.publish("general", event("general", sender, f"{sender}-{n}"), msg_id=f"{sender}-{n}") for n in range(count)]

    ids_a, ids_b = await asyncio.gather(post(a, "alice", 20), post(b, "bob", 20))
    await a.publish("other", event("other", "carol", "elsewhere"), msg_id="carol-0")
    await on_a.wait_for(40)
    await on_b.wait_for(40)
    await other.wait_for(1)

    assert on_a.events == on_b.events
    ids = [event_id for event_id, _ in on_a.events]
    assert ids == sorted(ids) and len(set(ids)) == 40
    assert sorted(ids) == sorted(ids_a + ids_b)
    assert [item.id for _, item in on_a.events] == [str(event_id) for event_id in ids]
    assert [t for t in on_a.texts if t.startswith("alice")] == [f"alice-{n}" for n in range(20)]
    assert other.texts == ["elsewhere"]


async def test_retried_publish_is_stored_once(make_broker: MakeBroker) -> None:
    """Publishing twice with the same msg_id returns the first id and stores one event; a new msg_id is a new event."""
    a, b = await make_broker("replica-a"), await make_broker("replica-b")
    inbox = Inbox()
    await a.subscribe("general", inbox)
    first = await a.publish("general", event("general", "alice", "hello"), msg_id="alice/1")
    again = await b.publish("general", event("general", "alice", "hello"), msg_id="alice/1")
    other = await a.publish("general", event("general", "alice", "hello"), msg_id="alice/2")
    await inbox.wait_for(2)
    await asyncio.sleep(0.2)

    assert again == first
    assert other == first + 1
    assert [event_id for event_id, _ in inbox.events] == [first, other]
    assert [event_id for event_id, _ in await b.history("general", 0)] == [first, other]


async def test_history_after_an_id(make_broker: MakeBroker) -> None:
    """history(room, after_id) returns that room's events after the id, ids stamped; other rooms are not mixed in."""
    a = await make_broker("replica-a")
    ids = []
    for n in range(6):
        room = "general" if n % 2 == 0 else "ops.eu"
        ids.append((room, await a.publish(room, event(room, "alice", f"m{n}"), msg_id=f"m{n}")))
    general = [event_id for room, event_id in ids if room == "general"]

    history = await a.history("general", general[0])
    assert [event_id for event_id, _ in history] == general[1:]
    parsed = [chat_pb2.ChatEvent.FromString(data) for _, data in history]
    assert [(item.id, item.text) for item in parsed] == [(str(general[1]), "m2"), (str(general[2]), "m4")]
    assert [event_id for event_id, _ in await a.history("ops.eu", 0)] == [event_id for room, event_id in ids if room == "ops.eu"]
    assert await a.history("general", ids[-1][1]) == []
    assert await a.history("empty-room", 0) == []


async def test_history_refuses_a_bad_room_name(make_broker: MakeBroker) -> None:
    """A room name that is not [A-Za-z0-9][A-Za-z0-9._-]{0,63} never becomes a subject (no '*' or '>' wildcards)."""
    a = await make_broker("replica-a")
    for room in ("*", ">", "a b", ".hidden", "x" * 65, ""):
        with pytest.raises(ValueError, match="is not allowed"):
            await a.history(room, 0)


async def test_out_of_range_names_the_oldest_id_held(make_broker: MakeBroker) -> None:
    """With max_msgs_per_room 3, resuming before the room's oldest held event is OutOfRange naming that id; from there it works."""
    a = await make_broker("replica-a", retention={"max_age": "1h", "max_msgs_per_room": 3})
    quiet = await a.publish("quiet", event("quiet", "bob", "only"), msg_id="q")
    ids = [await a.publish("general", event("general", "alice", f"m{n}"), msg_id=f"m{n}") for n in range(6)]

    with pytest.raises(OutOfRange, match=f"the oldest id still held is {ids[3]}") as caught:
        await a.history("general", ids[1])
    assert (caught.value.room, caught.value.after_id, caught.value.oldest) == ("general", ids[1], ids[3])
    # The twin: after oldest - 1 nothing is missing.
    assert [event_id for event_id, _ in await a.history("general", ids[2])] == ids[3:]
    # A room below its cap lost nothing: the stream still holds its first event.
    assert [event_id for event_id, _ in await a.history("quiet", 0)] == [quiet]
    with pytest.raises(OutOfRange, match="was never issued here"):
        await a.history("general", ids[-1] + 100)
    with pytest.raises(OutOfRange, match=f"oldest id still held is {ids[3]}"):
        await a.subscribe("general", Inbox(), after_id=0)


async def test_out_of_range_when_the_stream_dropped_by_age(make_broker: MakeBroker) -> None:
    """Events removed by max_age make an older resume id OutOfRange; the oldest id is the stream's first held sequence."""
    a = await make_broker("replica-a", retention={"max_age": "1s"}, duplicate_window="1s")
    old = await a.publish("general", event("general", "alice", "old"), msg_id="old")
    await asyncio.sleep(1.3)
    new = await a.publish("general", event("general", "alice", "new"), msg_id="new")
    # JetStream expires by age on its own timer; wait until it has.
    deadline = time.monotonic() + 5
    while (await a.oldest_id("general"))[0] <= old and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    with pytest.raises(OutOfRange) as caught:
        await a.history("general", old - 1)
    assert caught.value.oldest == new
    assert [event_id for event_id, _ in await a.history("general", old)] == [new]


async def test_subscribe_after_an_id_delivers_history_then_live(make_broker: MakeBroker) -> None:
    """subscribe(after_id=N) hands over the held events after N, then live ones, without a gap or a repeat."""
    a, b = await make_broker("replica-a"), await make_broker("replica-b")
    ids = [await a.publish("general", event("general", "alice", f"m{n}"), msg_id=f"m{n}") for n in range(4)]
    inbox = Inbox()
    await b.subscribe("general", inbox, after_id=ids[1])
    ids.append(await a.publish("general", event("general", "alice", "m4"), msg_id="m4"))
    await inbox.wait_for(3)
    await asyncio.sleep(0.1)
    assert [event_id for event_id, _ in inbox.events] == ids[2:]


async def test_nats_restart_mid_stream(make_broker: MakeBroker, nats_server: NatsServer) -> None:
    """NATS stops and starts on the same port and store: publishes during the outage raise, accepted events are kept, replicas reconnect by themselves."""
    a, b = await make_broker("replica-a"), await make_broker("replica-b")
    inbox = Inbox()
    await b.subscribe("general", inbox)
    before = [await a.publish("general", event("general", "alice", f"before-{n}"), msg_id=f"b{n}") for n in range(3)]
    await inbox.wait_for(3)

    nats_server.stop()
    await wait_until(lambda: not a.connected, 5, "replica-a to notice the outage")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="message not accepted: not connected to NATS") as caught:
        await a.publish("general", event("general", "alice", "during"), msg_id="during")
    assert caught.value.maybe_accepted is False
    assert time.monotonic() - started < 0.5  # told at once, not after a timeout

    nats_server.start()
    await wait_until(lambda: a.connected and b.connected, 10, "both replicas to reconnect")
    after = []
    for n in range(3):
        # JetStream may need a moment after the restart; publish retries inside publish_timeout.
        after.append(await a.publish("general", event("general", "alice", f"after-{n}"), msg_id=f"a{n}"))
    await inbox.wait_for(6, timeout=10)
    await asyncio.sleep(0.2)

    assert inbox.texts == [f"before-{n}" for n in range(3)] + [f"after-{n}" for n in range(3)]
    assert [event_id for event_id, _ in inbox.events] == before + after
    assert [event_id for event_id, _ in await b.history("general", 0)] == before + after
    assert nats_server.starts == 2


async def test_publish_unconfirmed_when_nats_is_gone_mid_request(make_broker: MakeBroker, nats_server: NatsServer) -> None:
    """A publish whose request may have left before NATS vanished ends with maybe_accepted=True after publish_timeout, never hangs."""
    a = await make_broker("replica-a", publish_timeout="500ms")
    await a.publish("general", event("general", "alice", "first"), msg_id="first")
    nats_server.stop(kill=True)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        # The kill may or may not have been noticed yet: either answer is a clear error.
        await a.publish("general", event("general", "alice", "second"), msg_id="second")
    assert time.monotonic() - started < 2.0
    assert "not accepted" in str(caught.value) or caught.value.maybe_accepted


async def test_replica_with_a_foreign_certificate_is_refused(make_broker: MakeBroker, nats_server: NatsServer) -> None:
    """A replica whose client certificate comes from another CA cannot connect: NATS refuses the TLS handshake."""
    intruder = await make_broker("intruder", start=False, connect_timeout="1s")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=r"cannot connect to NATS at tls://127\.0\.0\.1:\d+: \[SSL: TLSV1_ALERT_UNKNOWN_CA\]"):
        await intruder.start()
    assert time.monotonic() - started < 0.9  # a TLS refusal ends the attempt at once, before connect_timeout
    assert not intruder.connected
    assert "TLS handshake error" in nats_server.log_tail(50)
    # The twin: a replica with our certificate connects and works.
    ok = await make_broker("replica-b")
    assert await ok.publish("general", event("general", "bob", "hi"), msg_id="hi") >= 1


async def test_nats_server_name_is_checked(make_broker: MakeBroker) -> None:
    """The NATS server certificate must cover the name we connect to: a wrong server_name is refused by our TLS check."""
    wrong = await make_broker("replica-a", start=False, connect_timeout="1s", server_name="evil.example")
    with pytest.raises(BrokerUnavailable, match="certificate verify failed: Hostname mismatch, certificate is not valid for 'evil.example'"):
        await wrong.start()


def test_stamp_id_sets_the_id_without_parsing() -> None:
    """stamp_id appends the id field: the bytes parse as the same event with that id."""
    data = event("general", "alice", "hi").SerializeToString()
    stamped = chat_pb2.ChatEvent.FromString(stamp_id(data, 42))
    assert (stamped.id, stamped.text, stamped.sender) == ("42", "hi", "alice")
