"""The server's collector (server/collector.py) against a real server: ended streams' cycles do not wait.

The automatic collector is off during these tests (`gc.disable()`, as good
as the server's young threshold of 50,000 at this scale), so whatever
collects the garbage is the server's `Collector`. The garbage is counted
by what every server call leaves in a reference cycle, however it ends:
grpc's `_HandlerCallDetails` (the method name and metadata) and the
closure of its cython method lookup, which refer to each other.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator

import grpc
import pytest

from securechat._gen import chat_pb2
from securechat.client import open_channel
from securechat.server.collector import CollectionPolicy, Collector

STEP = 10.0
STREAMS = 120  # above CollectionPolicy.every_ends (100)
LIMITS = {
    "max_streams_per_identity": 200,
    "max_concurrent_streams": 200,
    "max_messages_per_second": 1000,
    "message_burst": 1000,
}


def calls_alive() -> int:
    """gRPC server calls whose details are still in memory (live, or garbage in a cycle)."""
    return sum(1 for o in gc.get_objects() if type(o).__name__ == "_HandlerCallDetails")


@pytest.fixture
def gc_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + STEP
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def end(calls) -> None:
    """Half-close every call and read it to its status: OK for all."""
    for call in calls:
        await call.done_writing()

    async def drain(call) -> grpc.StatusCode:
        async for _ in call:  # the status comes after the events (the room's JOIN)
            pass
        return await call.code()

    codes = await asyncio.wait_for(asyncio.gather(*(drain(call) for call in calls)), STEP)
    assert set(codes) == {grpc.StatusCode.OK}


async def open_and_end(deployment, server, count: int) -> None:
    """Open `count` chat streams over one channel, see them all joined, then end them (half-close: OK)."""
    async with open_channel(deployment.client("alice", server.port)) as channel:
        calls = [channel.stub.Chat() for _ in range(count)]
        for n, call in enumerate(calls):
            await call.write(chat_pb2.ChatMessage(room=f"churn-{n}"))
        await wait_for(lambda: server.service.open_streams == count, f"{count} open streams")
        await end(calls)
        await wait_for(lambda: server.metrics.calls_ended >= count, f"{count} ended streams")


async def test_ended_streams_are_collected_after_every_ends(deployment, start, gc_off):
    """120 streams end: the collector runs within a check or two, and their calls' cycles are gone."""
    server = await start(limits=LIMITS)
    assert server.collector is not None
    await open_and_end(deployment, server, STREAMS)
    await wait_for(lambda: server.collector.stats.collections >= 1, "a collection")
    stats = server.collector.stats
    assert stats.full_collections == 0
    assert stats.collected > STREAMS  # each ended call left several objects in cycles
    assert calls_alive() < 10
    assert server.metrics is not None
    young = server.metrics.registry.get_sample_value("securechat_gc_collections_total", {"kind": "young"})
    assert young == stats.collections


async def test_without_the_collector_ended_streams_wait_in_cycles(deployment, start, gc_off):
    """The twin: the same streams with the collector stopped leave their cycles until a collection."""
    server = await start(limits=LIMITS)
    assert server.collector is not None
    await server.collector.stop()
    await open_and_end(deployment, server, STREAMS)
    await asyncio.sleep(2 * CollectionPolicy().check_seconds)
    assert calls_alive() >= STREAMS
    assert server.collector.stats.collections == 0
    gc.collect()
    assert calls_alive() < 10


async def test_fewer_ended_streams_are_collected_after_max_wait(deployment, start, gc_off):
    """Three streams end and nothing more: a collection once max_wait_seconds have passed, not before."""
    server = await start(limits=LIMITS)
    ends = server.metrics
    assert ends is not None
    clock = [0.0]
    collector = Collector(lambda: ends.calls_ended, clock=lambda: clock[0])
    async with open_channel(deployment.client("alice", server.port)) as channel:
        calls = [channel.stub.Chat() for _ in range(3)]
        for call in calls:
            await call.write(chat_pb2.ChatMessage(room="quiet"))
        await wait_for(lambda: server.service.open_streams == 3, "3 open streams")
        assert not collector.collect_if_due()  # nothing ended yet
        await end(calls)
    await wait_for(lambda: ends.calls_ended >= 3, "3 ended streams")
    assert not collector.collect_if_due()  # the first of fewer than every_ends: the wait starts
    clock[0] = CollectionPolicy().max_wait_seconds - 0.1
    assert not collector.collect_if_due()
    assert calls_alive() >= 3
    clock[0] = CollectionPolicy().max_wait_seconds
    assert collector.collect_if_due()
    assert calls_alive() < 3
    assert not collector.collect_if_due()  # nothing new since


def test_every_full_every_th_collection_is_a_full_one() -> None:
    """Young collections (generations 0-1), and a full one every full_every-th time."""
    ended = [0]
    collector = Collector(lambda: ended[0], policy=CollectionPolicy(every_ends=1, full_every=3))
    generations: list[int] = []

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            generations.append(info["generation"])

    gc.callbacks.append(watch)
    try:
        for _ in range(6):
            ended[0] += 1
            assert collector.collect_if_due()
    finally:
        gc.callbacks.remove(watch)
    assert generations == [1, 1, 2, 1, 1, 2]
    assert collector.stats.collections == 6
    assert collector.stats.full_collections == 2
    assert collector.stats.max_pause_seconds > 0


async def test_every_chat_stream_is_counted_once_however_it_ends(deployment, start):
    """calls_ended counts each end once (what the collector waits for); calls_refused only the server's refusals.

    Ends: half-closed (OK), cancelled by the client, a malformed last-event-id
    (INVALID_ARGUMENT), an id from before this run (OUT_OF_RANGE, refused at
    open) and over max_streams_per_identity (RESOURCE_EXHAUSTED).
    """
    server = await start(limits={"max_streams_per_identity": 2})
    metrics = server.metrics
    assert metrics is not None
    async with open_channel(deployment.client("alice", server.port)) as channel:
        held = [channel.stub.Chat() for _ in range(2)]
        for call in held:
            await call.write(chat_pb2.ChatMessage(room="held"))
        await wait_for(lambda: server.service.open_streams == 2, "2 open streams")
        over = channel.stub.Chat()
        await over.write(chat_pb2.ChatMessage(room="held"))
        assert await over.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        await end(held)  # 2 x OK
        cancelled = channel.stub.Chat()
        await cancelled.write(chat_pb2.ChatMessage(room="gone"))
        await wait_for(lambda: server.service.open_streams == 1, "the stream to be cancelled open")
        cancelled.cancel()
        await wait_for(lambda: server.service.open_streams == 0, "the cancelled stream to end")
        for resume, code in (("abc", grpc.StatusCode.INVALID_ARGUMENT), ("1", grpc.StatusCode.OUT_OF_RANGE)):
            call = channel.stub.Chat(metadata=(("last-event-id", resume),))
            await call.write(chat_pb2.ChatMessage(room="r"))
            assert await call.code() is code
    await wait_for(lambda: metrics.calls_ended >= 6, "6 ended streams")
    await asyncio.sleep(0.2)  # nothing else is still on its way
    assert metrics.calls_ended == 6
    assert metrics.calls_refused == 3
    ended = {
        code: metrics.registry.get_sample_value("securechat_streams_ended_total", {"code": code})
        for code in ("OK", "CANCELLED", "INVALID_ARGUMENT", "OUT_OF_RANGE", "RESOURCE_EXHAUSTED")
    }
    assert ended == {"OK": 2, "CANCELLED": 1, "INVALID_ARGUMENT": 1, "OUT_OF_RANGE": 1, "RESOURCE_EXHAUSTED": 1}
