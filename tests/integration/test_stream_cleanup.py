"""A stream the client cancels leaves nothing on the server: no member, no room place, no admission count.

Found by the soak (benchmarks/soak.py): replicas ended up holding streams
whose clients had gone. The pattern that shows it: more streams on one
connection than max_concurrent_streams, all cancelled at once while the
server is still opening them.
"""

from __future__ import annotations

import asyncio

import pytest

from securechat._gen import chat_pb2
from securechat.client import open_channel

LIMITS = {"max_messages_per_second": 100_000, "message_burst": 100_000, "max_streams_per_identity": 500}


async def wait_for_no_streams(running, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.1)):
        if running.service.open_streams == 0 and running.service.admission.connections == 0:
            return
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("buffered", [True, False])
async def test_streams_cancelled_while_the_server_opens_them_leave_nothing(start, deployment, buffered):
    """120 streams over one connection (100 at a time), cancelled at once: the server ends with 0 open, 0 admitted."""
    running = await start(limits={**LIMITS, "buffered_writes": buffered})
    async with open_channel(deployment.client("alice", running.port)) as alice:
        calls = [alice.stub.Chat() for _ in range(120)]
        joins = [asyncio.ensure_future(call.write(chat_pb2.ChatMessage(room="r"))) for call in calls]
        await asyncio.wait(joins, timeout=3)
        assert running.service.open_streams >= 90  # the server had them open
        for call in calls:
            call.cancel()
    await wait_for_no_streams(running)
    assert running.service.open_streams == 0
    assert running.service.admission.connections == 0


async def test_streams_the_client_ends_itself_leave_nothing(start, deployment):
    """The twin: 20 streams that half-close one by one are ended and forgotten the same way."""
    running = await start(limits=LIMITS)
    async with open_channel(deployment.client("alice", running.port)) as alice:
        for _ in range(20):
            call = alice.stub.Chat()
            await call.write(chat_pb2.ChatMessage(room="r"))
            await call.done_writing()
            async for _event in call:
                pass
    await wait_for_no_streams(running)
    assert running.service.open_streams == 0
    assert running.service.admission.connections == 0
