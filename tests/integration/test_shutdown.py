"""SIGTERM in the middle of a busy chat: every accepted message reaches every member, exit 0."""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest
from serve_process import ServeProcess as Server

from securechat._gen import chat_pb2
from securechat.client import open_channel

Kind = chat_pb2.ChatEvent.Kind
pytestmark = pytest.mark.slow


async def member(
    deployment, port: int, identity: str, *, post: bool, joined: asyncio.Event, go: asyncio.Event
) -> tuple[list[int], list[int], grpc.aio.AioRpcError]:
    """One stream in room 'busy': (ids of messages received, ids of own echoes, final status)."""
    received: list[int] = []
    echoes: list[int] = []
    async with open_channel(deployment.client(identity, port)) as channel:
        call = channel.stub.Chat()
        await call.write(chat_pb2.ChatMessage(room="busy"))

        async def send() -> None:
            await go.wait()
            for i in range(100_000):
                try:
                    await call.write(chat_pb2.ChatMessage(room="busy", text=f"{identity} {i}"))
                except (grpc.aio.UsageError, grpc.aio.AioRpcError):
                    return
                await asyncio.sleep(0.002)

        sender = asyncio.create_task(send()) if post else None
        try:
            async for event in call:
                if event.kind == Kind.JOIN and event.sender == identity:
                    joined.set()
                if event.kind == Kind.MESSAGE:
                    received.append(int(event.id))
                    if event.sender == identity:
                        echoes.append(int(event.id))
        except grpc.aio.AioRpcError as exc:
            return received, echoes, exc
        finally:
            if sender is not None:
                sender.cancel()
    raise AssertionError(f"{identity}'s stream ended without a status")


async def test_sigterm_in_a_busy_chat_delivers_every_accepted_message_and_exits_0(deployment):
    """Four members, two posting every 2 ms; SIGTERM: each member got every accepted message, then UNAVAILABLE."""
    for name in ("carol", "dave"):
        deployment.issue_client(name)
    deployment.server_yaml(grace_seconds=10, limits={"max_messages_per_second": 10_000, "message_burst": 10_000})
    server = await asyncio.to_thread(Server, deployment.root)
    try:
        joins = [asyncio.Event() for _ in range(4)]
        go = asyncio.Event()
        names = [("alice", True), ("bob", True), ("carol", False), ("dave", False)]
        tasks = [
            asyncio.create_task(member(deployment, server.port, name, post=post, joined=joined, go=go))
            for (name, post), joined in zip(names, joins, strict=True)
        ]
        for joined in joins:
            await asyncio.wait_for(joined.wait(), 10)
        go.set()
        await asyncio.sleep(1.0)
        server.proc.send_signal(signal.SIGTERM)
        results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
        code = await asyncio.to_thread(server.proc.wait, 30)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    accepted = set().union(*(set(received) for received, _, _ in results))
    assert len(accepted) > 50
    for (name, posting), (received, echoes, status) in zip(names, results, strict=True):
        assert set(received) == accepted, f"{name} missed {sorted(accepted - set(received))[:5]}"
        assert received == sorted(received), f"{name} got events out of order"
        assert len(received) == len(set(received)), f"{name} got an event twice"
        assert set(echoes) <= accepted
        if posting and status.code() is grpc.StatusCode.INTERNAL:
            # grpc.aio quirk: a client write racing the server's final status
            # fails locally ("execute_batch: SendMessageOperation") and the call
            # then reports INTERNAL instead of the status the server sent.
            # Delivery was checked above; the notice is checked on the readers.
            assert status.details() == "Internal error from Core"
            continue
        assert status.code() is grpc.StatusCode.UNAVAILABLE
        assert status.details() == "server is shutting down; reconnect to continue"
    assert code == 0
    assert any("SIGTERM received" in line for line in server.lines)
