"""The quarantined ordered-consumer seed (securechat.broker.ordered_restart) under forced restarts, on a real nats-server.

Each round deletes every room feed's consumer on the server (what a NATS
node restart or a lost heartbeat does), waits until nats-py has made a new
one, and publishes more events. With the seed on or off (the config
switch), every room must get exactly its events, once, in order; with the
seed on, no restart re-reads what the feed had seen; off (the public
path), the first restart of a feed that had delivered nothing re-reads
the room's history -- dropped, but read. FAULTS_RESTART_ROUNDS raises the
round count for a longer stress.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import nats.js.errors
import pytest
from conftest import MakeBroker

from securechat._gen import chat_pb2
from securechat.broker import ordered_restart
from securechat.broker.jetstream import JetStreamBroker, RoomSubscription

Kind = chat_pb2.ChatEvent.Kind
ROUNDS = int(os.environ.get("FAULTS_RESTART_ROUNDS", "6"))
ROOMS = 4
HISTORY = 40  # events per room before the feeds subscribe


def _event(room: str, text: str) -> bytes:
    return chat_pb2.ChatEvent(room=room, sender="alice", text=text, kind=Kind.MESSAGE).SerializeToString()


async def _consumer_name(broker: JetStreamBroker, sub: RoomSubscription) -> str | None:
    try:
        return str((await sub._sub.consumer_info()).name)
    except (nats.js.errors.NotFoundError, nats.errors.TimeoutError, asyncio.TimeoutError):
        return None


async def _restart(broker: JetStreamBroker, subs: list[RoomSubscription]) -> None:
    """Delete each feed's consumer on the server; return once nats-py has recreated every one."""
    before = {}
    for sub in subs:
        name = await _consumer_name(broker, sub)
        assert name is not None
        before[sub.room] = name
        await broker._js.delete_consumer(broker.config.stream, name)
    deadline = time.monotonic() + 10
    for sub in subs:
        while (await _consumer_name(broker, sub)) in (None, before[sub.room]):
            assert time.monotonic() < deadline, f"room {sub.room}: nats-py did not recreate its consumer"
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("seed", [True, False], ids=["seeded", "public-path"])
async def test_forced_restarts_deliver_once_in_order(make_broker: MakeBroker, seed: bool) -> None:
    broker = await make_broker("replica-a", heartbeat_seconds=0.1, seed_ordered_restart=seed)
    assert broker.seeds_restarts is seed
    rooms = [f"room{i}" for i in range(ROOMS)]
    for room in rooms:
        for n in range(HISTORY):
            await broker.publish(room, _event(room, f"old {n}"), msg_id=f"{room}-old-{n}")
    got: dict[str, list[int]] = {room: [] for room in rooms}
    subs = [await broker.subscribe(room, lambda i, _d, room=room: got[room].append(i)) for room in rooms]
    sent: dict[str, list[int]] = {room: [] for room in rooms}
    try:
        for round_ in range(ROUNDS):
            await _restart(broker, subs)
            for room in rooms:
                for n in range(2):
                    sent[room].append(await broker.publish(room, _event(room, f"r{round_}.{n}"), msg_id=f"{room}-{round_}-{n}"))
            deadline = time.monotonic() + 10
            while any(len(got[room]) < len(sent[room]) for room in rooms):
                assert time.monotonic() < deadline, f"round {round_}: feeds behind: {[(r, len(got[r]), len(sent[r])) for r in rooms]}"
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # anything late would show up as a repeat or an extra
        assert got == sent  # each room: exactly its new events, once, in stream order
        assert all(sub.lost is None for sub in subs)
        repeats = sum(sub.repeats for sub in subs)
        if seed:
            assert repeats == 0
        else:
            assert repeats >= ROOMS * HISTORY  # the first restart re-read each room from sequence 1
    finally:
        for sub in subs:
            await sub.unsubscribe()


async def test_self_test_failing_turns_the_seed_off(make_broker: MakeBroker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A nats-py whose restart path no longer reads the field: the broker says so once and runs the public path."""
    from nats.js.client import JetStreamContext

    async def activity_check(self: object) -> None:  # a restart path that keeps its point elsewhere
        return None

    assert ordered_restart.self_test() is None
    monkeypatch.setattr(JetStreamContext._JSI, "activity_check", activity_check)
    assert ordered_restart.self_test() == "nats-py's JetStreamContext._JSI.activity_check no longer restarts from _sseq"
    with caplog.at_level(logging.WARNING, logger="securechat.broker.jetstream"):
        broker = await make_broker("replica-a")
    assert broker.seeds_restarts is False
    assert (
        "broker: nats-py's JetStreamContext._JSI.activity_check no longer restarts from _sseq; room feeds use the public path "
        "(a restarted feed re-reads its room from the start). Set broker.seed_ordered_restart: false to silence this."
    ) in caplog.messages
    got: list[int] = []
    first = await broker.publish("r", _event("r", "a"), msg_id="a")
    sub = await broker.subscribe("r", lambda i, _d: got.append(i), after_id=0)
    try:
        deadline = time.monotonic() + 5
        while got != [first]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        await sub.unsubscribe()


async def test_switch_off_needs_no_self_test(make_broker: MakeBroker, caplog: pytest.LogCaptureFixture) -> None:
    """broker.seed_ordered_restart: false: no seed, no warning."""
    with caplog.at_level(logging.WARNING, logger="securechat.broker.jetstream"):
        broker = await make_broker("replica-a", seed_ordered_restart=False)
    assert broker.seeds_restarts is False
    assert not [m for m in caplog.messages if "seed_ordered_restart" in m]
