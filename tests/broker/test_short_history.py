"""A resume whose history read comes back short of what the replica's own feed delivered (the soak's seed 3).

After a quorum loss, a resuming member's history came from a JetStream
node (the leader included) that had not applied the room's newest events
yet, while this replica's feed had already delivered them to the room's
other members: the member got the prefix, then live events, and missed
7 in between, silently. The read is compared with the feed now. The
short read is made here by a JetStreamBroker whose history drops its
newest events for a number of reads (what a lagging node returns), on a
real nats-server; everything else is real.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
from conftest import broker_yaml
from nats_support import NatsServer

from securechat._gen import chat_pb2
from securechat.broker import load_broker_config
from securechat.broker.jetstream import JetStreamBroker
from securechat.protocol import Reason
from securechat.server.rooms import Member
from securechat.server.shared import SharedRoomHub


class LaggingHistory(JetStreamBroker):
    """history() leaves out its newest `drop` events for the next `short_reads` reads."""

    drop = 0
    short_reads = 0

    async def history(self, room: str, after_id: int) -> list[tuple[int, bytes]]:
        events = await super().history(room, after_id)
        if self.short_reads > 0:
            self.short_reads -= 1
            return events[: max(0, len(events) - self.drop)]
        return events


def texts(raw: list[bytes]) -> list[str]:
    return [chat_pb2.ChatEvent.FromString(item).text for item in raw]


async def _setup(tmp_path: Path, nats_server: NatsServer) -> tuple[LaggingHistory, SharedRoomHub, Member, list[int]]:
    config = load_broker_config(broker_yaml(tmp_path / "replica.yaml", nats_server, "replica-a"))
    assert config is not None
    broker = LaggingHistory(config, name="replica-a", heartbeat_seconds=0.5)
    await broker.start()
    hub = SharedRoomHub(broker, announce_max_members=0, replica="a")
    alice = Member("alice", queue_size=1000)
    await hub.enter(alice, "r")
    for n in range(5):
        assert await hub.accept(alice, "r", f"m{n}")
    got: list[bytes] = []
    deadline = time.monotonic() + 10
    while len(got) < 5:
        assert time.monotonic() < deadline, texts(got)
        got += await asyncio.wait_for(alice.next_events(), 5)
    ids = [int(chat_pb2.ChatEvent.FromString(item).id) for item in got]
    return broker, hub, alice, ids


async def test_a_short_history_is_read_again(tmp_path: Path, nats_server: NatsServer) -> None:
    broker, hub, _, ids = await _setup(tmp_path, nats_server)
    try:
        broker.drop, broker.short_reads = 2, 3  # m3 and m4 missing from three reads, as from a lagging node
        bob = Member("bob", queue_size=1000, resume_after=ids[0])
        await hub.enter(bob, "r")
        assert bob.refusal is None
        assert texts(await asyncio.wait_for(bob.next_events(), 5)) == ["m1", "m2", "m3", "m4"]  # complete, once
        assert broker.short_reads == 0
    finally:
        await hub.close()


async def test_a_history_that_stays_short_is_refused_not_silent(tmp_path: Path, nats_server: NatsServer) -> None:
    """The twin: a node that does not catch up within the retries: UNAVAILABLE, and the client resumes later."""
    broker, hub, _, ids = await _setup(tmp_path, nats_server)
    try:
        broker.drop, broker.short_reads = 2, 100
        bob = Member("bob", queue_size=1000, resume_after=ids[0])
        await hub.enter(bob, "r")
        assert bob.refusal is not None
        assert bob.refusal.code is grpc.StatusCode.UNAVAILABLE and bob.refusal.reason is Reason.BROKER_UNAVAILABLE
        assert bob.refusal.message == (
            "not accepted by the broker (NATS JetStream): reading the history of room r: it came back without events "
            f"this replica has delivered (up to {ids[-1]}; a NATS node is catching up). Try again shortly."
        )
    finally:
        await hub.close()
