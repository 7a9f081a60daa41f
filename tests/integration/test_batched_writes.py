"""BatchWriter against a real grpc.aio server: every event arrives, in order, in few TCP segments.

The segment count is read from the server socket's TCP_INFO, so the test
shows the buffer hint at work, not just that nothing broke: the same batch
written event by event (the fallback path) takes a segment per event.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from pathlib import Path

import grpc

from securechat._gen import chat_pb2, chat_pb2_grpc
from securechat.server.writes import MAX_BUFFERED, BatchWriter, batching_supported

EVENTS = 200
STEP = 5.0
TCPI_SEGS_OUT = 136  # offset of tcpi_segs_out in Linux's struct tcp_info (since 4.2)


def segments_sent(port: int) -> int:
    """Segments sent so far by this process's established TCP socket whose local port is `port`."""
    inodes = set()
    # gRPC's sockets are dual-stack: 127.0.0.1 shows up v4-mapped in tcp6.
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(fields[9])
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            with socket.socket(fileno=os.dup(int(fd))) as sock:
                info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
            return struct.unpack_from("I", info, TCPI_SEGS_OUT)[0]
    raise AssertionError(f"no established socket on port {port}")


async def write_a_batch(*, buffered: bool) -> tuple[list[str], int, bool]:
    """Serve one Chat that writes EVENTS events as one batch; return the ids read, the segments it took, and whether it batched."""
    events = [chat_pb2.ChatEvent(id=str(i), room="r", text="x" * 40).SerializeToString() for i in range(EVENTS)]
    seen: dict[str, object] = {}
    port = 0

    async def chat(requests, context):
        await anext(requests)  # the client's first message: the connection is up
        before = segments_sent(port)
        writer = BatchWriter(context, buffered=buffered)
        seen["batching"] = writer.batching
        await writer.write(events[:1])  # the headers and a first event, as a stream's first batch
        await writer.write(events[1:])
        await anext(requests)  # the client's second message: it has read every event
        seen["segments"] = segments_sent(port) - before

    handler = grpc.method_handlers_generic_handler(
        "securechat.v1.ChatService",
        {"Chat": grpc.stream_stream_rpc_method_handler(chat, request_deserializer=chat_pb2.ChatMessage.FromString)},
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = chat_pb2_grpc.ChatServiceStub(channel).Chat()
            await call.write(chat_pb2.ChatMessage(room="r"))
            ids = [(await asyncio.wait_for(call.read(), STEP)).id for _ in range(EVENTS)]
            await call.write(chat_pb2.ChatMessage(room="r"))
            await call.done_writing()
            assert await asyncio.wait_for(call.code(), STEP) is grpc.StatusCode.OK
    finally:
        await server.stop(grace=None)
    return ids, seen["segments"], seen["batching"]


def test_the_pinned_grpcio_supports_buffered_writes():
    """If a grpcio upgrade removes the internals BatchWriter uses, this fails instead of fan-out quietly slowing down."""
    assert batching_supported()


async def test_a_batch_arrives_whole_and_in_order_in_few_segments():
    """200 events written as one batch: all arrive in order, in about one segment per MAX_BUFFERED events."""
    ids, segments, batching = await write_a_batch(buffered=True)
    assert batching
    assert ids == [str(i) for i in range(EVENTS)]
    assert segments <= 4 * (EVENTS // MAX_BUFFERED + 2), f"{segments} segments for {EVENTS} events"


async def test_written_event_by_event_the_same_batch_takes_a_segment_each():
    """The failing twin: without the buffer hint each event is its own write and its own segment."""
    ids, segments, batching = await write_a_batch(buffered=False)
    assert not batching
    assert ids == [str(i) for i in range(EVENTS)]
    assert segments >= EVENTS // 2, f"{segments} segments for {EVENTS} events"
