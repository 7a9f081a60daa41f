"""limits.buffered_writes (server/core_writes.py) against a real mTLS server: batches leave in few TCP segments.

The segment count is read from the server sockets' TCP_INFO, so the tests
show the buffer hint at work, not just that nothing broke: the same replay
written with the switch off takes a segment per event. A resume's replay is
the batch: 200 events queued for one member at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from pathlib import Path

import grpc

from securechat._gen import chat_pb2
from securechat.client import open_channel
from securechat.protocol import LAST_EVENT_ID
from securechat.server.core_writes import MAX_HELD, CoreWrites, PublicWriter

Kind = chat_pb2.ChatEvent.Kind
EVENTS = 200
STEP = 10.0
TCPI_SEGS_OUT = 136  # offset of tcpi_segs_out in Linux's struct tcp_info (since 4.2)
LIMITS = {"max_messages_per_second": 100_000, "message_burst": 100_000}


def segments_sent(port: int) -> dict[str, int]:
    """Segments sent so far by each of this process's established TCP sockets whose local port is PORT, by inode."""
    inodes = set()
    # gRPC's sockets are dual-stack: 127.0.0.1 shows up v4-mapped in tcp6.
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(fields[9])
    counts = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            with socket.socket(fileno=os.dup(int(fd))) as sock:
                info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
            counts[link[8:-1]] = struct.unpack_from("I", info, TCPI_SEGS_OUT)[0]
    return counts


async def replay_through(start, deployment, *, buffered: bool) -> tuple[list[int], int]:
    """Alice posts EVENTS messages; bob resumes from 0 and gets them as one replay. (ids bob got, server segments it took)."""
    running = await start(limits={**LIMITS, "buffered_writes": buffered})
    async with open_channel(deployment.client("alice", running.port)) as alice:
        call = alice.stub.Chat()
        for i in range(EVENTS):
            await call.write(chat_pb2.ChatMessage(room="r", text=f"m{i}"))
        echoes: list[int] = []
        while len(echoes) < EVENTS:
            event = await asyncio.wait_for(call.read(), STEP)
            if event.kind == Kind.MESSAGE:
                echoes.append(int(event.id))
        call.cancel()
    async with open_channel(deployment.client("bob", running.port)) as bob:
        await bob.stub.WhoAmI(chat_pb2.WhoAmIRequest())  # the connection is up: count from here
        before = segments_sent(running.port)
        call = bob.stub.Chat(metadata=((LAST_EVENT_ID, str(echoes[0] - 1)),))
        await call.write(chat_pb2.ChatMessage(room="r"))
        ids: list[int] = []
        while len(ids) < EVENTS:
            event = await asyncio.wait_for(call.read(), STEP)
            if event.kind == Kind.MESSAGE:
                ids.append(int(event.id))
        after = segments_sent(running.port)
        call.cancel()
    segments = sum(after[inode] - count for inode, count in before.items() if inode in after)
    return ids, segments


async def test_the_installed_grpcio_passes_the_self_test_and_chat_holds_writes(start):
    """With the default config the self-test passes: Chat streams get a HeldWriter."""
    running = await start()
    assert running.service.core_writes.enabled
    assert running.service.core_writes.problem is None


async def test_buffered_writes_false_turns_held_writes_off_without_a_warning(start, caplog):
    """limits.buffered_writes false: no self-test, no warning, public writes, and the reason is the switch."""
    with caplog.at_level(logging.WARNING, logger="securechat.server.core_writes"):
        running = await start(limits={"buffered_writes": False})
    assert not running.service.core_writes.enabled
    assert running.service.core_writes.problem == "limits.buffered_writes is false"
    assert caplog.records == []


async def test_a_server_that_is_not_running_fails_the_self_test_with_one_warning(caplog):
    """The failing twin: against a stopped server the self-test fails, says why in one WARNING, and writes are public."""
    server = grpc.aio.server()
    server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await server.stop(None)
    with caplog.at_level(logging.WARNING, logger="securechat.server.core_writes"):
        writes = await CoreWrites.start(server)
    assert not writes.enabled
    assert writes.problem == "AioServer.is_running() is not True for the started server"
    (record,) = caplog.records
    assert record.getMessage() == (
        f"limits.buffered_writes: grpcio {grpc.__version__} fails the self-test "
        "(AioServer.is_running() is not True for the started server); Chat writes each event with context.write"
    )
    assert isinstance(writes.writer(object()), PublicWriter)  # type: ignore[arg-type]


async def test_a_replay_leaves_in_few_segments_with_buffered_writes(start, deployment):
    """200 queued events: all arrive in order, in about one segment per MAX_HELD events."""
    ids, segments = await replay_through(start, deployment, buffered=True)
    assert ids == sorted(ids) and len(set(ids)) == EVENTS
    assert segments <= 4 * (EVENTS // MAX_HELD + 2), f"{segments} segments for {EVENTS} events"


async def test_with_buffered_writes_off_the_same_replay_takes_a_segment_per_event(start, deployment):
    """The failing twin: limits.buffered_writes false writes each event on its own, a segment each."""
    ids, segments = await replay_through(start, deployment, buffered=False)
    assert ids == sorted(ids) and len(set(ids)) == EVENTS
    assert segments >= EVENTS // 2, f"{segments} segments for {EVENTS} events"



async def held_writes_around_a_stop(*, stop_first: bool) -> tuple[str, int]:
    """A Chat-like handler whose writer is asked to write a batch of 3 with the server running or after server.stop() returned: (outcome, held)."""
    server = grpc.aio.server()
    outcome: dict[str, object] = {}
    stopped = asyncio.Event()
    writes: list[CoreWrites] = []

    async def handler(request: bytes, context: grpc.aio.ServicerContext) -> None:
        writer = writes[0].writer(context)
        await writer.write([b"first"])
        if stop_first:
            with contextlib.suppress(asyncio.CancelledError):  # server.stop(None) cancels the call
                await asyncio.sleep(STEP)
            await stopped.wait()
        try:
            await writer.write([b"a", b"b", b"c"])
            outcome["result"] = "written"
        except Exception as exc:  # grpc's own refusal, raised by context.write
            outcome["result"] = f"{type(exc).__name__}: {exc}"

    handler_set = grpc.method_handlers_generic_handler("t.T", {"W": grpc.unary_stream_rpc_method_handler(handler)})
    server.add_generic_rpc_handlers((handler_set,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    writes.append(await CoreWrites.start(server))
    assert writes[0].enabled
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_stream("/t.T/W")(b"")
        assert await asyncio.wait_for(call.read(), STEP) == b"first"
        if stop_first:
            await server.stop(None)
            stopped.set()
        else:
            assert [await asyncio.wait_for(call.read(), STEP) for _ in range(3)] == [b"a", b"b", b"c"]
        for _ in range(100):
            if "result" in outcome:
                break
            await asyncio.sleep(0.01)
    await server.stop(None)
    return str(outcome["result"]), writes[0].tally.held


async def test_a_held_batch_while_the_server_runs_is_written_with_two_events_held():
    """The passing twin: the server runs, so a batch of 3 holds the first two in core and all arrive in order."""
    assert await held_writes_around_a_stop(stop_first=False) == ("written", 2)


async def test_after_server_stop_a_batch_goes_to_context_write_which_refuses_it():
    """After server.stop() nothing is sent with the hint: context.write gets the batch and raises grpc's own error."""
    assert await held_writes_around_a_stop(stop_first=True) == ("_ServerStoppedError: Server already stopped.", 0)
