"""securechat's clients on ChatBatched, and on Chat against a server that does not offer ChatBatched.

The server without ChatBatched is a plain grpc.aio server over the same mTLS
certificates that registers only `Chat` (as a securechat from before
ChatBatched did): gRPC core answers every other method UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest

from securechat._gen import chat_pb2
from securechat.client import open_chat
from securechat.errors import ConnectError
from securechat.protocol import Reason
from securechat.client import reconnecting_chat

Kind = chat_pb2.ChatEvent.Kind
STEP = 5.0


@dataclass
class ChatOnlyServer:
    """A bare grpc.aio ChatService with Chat alone: it echoes each message to its sender (a join as a JOIN event)."""

    port: int
    server: grpc.aio.Server
    received: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)


@pytest.fixture
async def chat_only(deployment) -> AsyncIterator[ChatOnlyServer]:
    ids = itertools.count(1)
    server = grpc.aio.server()
    state = ChatOnlyServer(0, server)

    async def chat(requests, context):
        state.methods.append("Chat")
        sender = context.auth_context()["x509_common_name"][0].decode()
        async for message in requests:
            state.received.append(message.text)
            kind = Kind.MESSAGE if message.text else Kind.JOIN
            yield chat_pb2.ChatEvent(id=str(next(ids)), room=message.room or "general", sender=sender, text=message.text, kind=kind)

    handler = grpc.method_handlers_generic_handler(
        "securechat.v1.ChatService",
        {
            "Chat": grpc.stream_stream_rpc_method_handler(
                chat, request_deserializer=chat_pb2.ChatMessage.FromString, response_serializer=chat_pb2.ChatEvent.SerializeToString
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    certs = deployment.root / "certs"
    credentials = grpc.ssl_server_credentials(
        [((certs / "server-key.pem").read_bytes(), (certs / "server.pem").read_bytes())],
        root_certificates=(certs / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    state.port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    yield state
    await server.stop(0)


async def texts(events: AsyncIterator[chat_pb2.ChatEvent], count: int) -> list[str]:
    got = []
    while len(got) < count:
        event = await asyncio.wait_for(anext(events), STEP)
        if event.kind == Kind.MESSAGE:
            got.append(event.text)
    return got


async def test_open_chat_falls_back_to_chat_when_the_server_has_no_chatbatched(deployment, chat_only):
    """Against a Chat-only server open_chat ends up on Chat before it writes: every message arrives once, in order."""
    async with open_chat(deployment.client("alice", chat_only.port)) as session:
        for text in ("one", "two", "three"):  # the first send waits for the server's answer to ChatBatched
            await session.send(text, room="r")
        got = await texts(aiter(session), 3)
        await session.send("four", room="r")
        got += await texts(aiter(session), 1)
        assert not session.batched
    assert got == ["one", "two", "three", "four"]
    assert chat_only.received == ["one", "two", "three", "four"]  # nothing sent twice
    assert chat_only.methods == ["Chat"]


async def test_open_chat_uses_chatbatched_when_the_server_offers_it(deployment, start):
    """The twin: against securechat, open_chat stays on ChatBatched and gets the same events."""
    server = await start(limits={"announce_max_members": 0})
    async with open_chat(deployment.client("alice", server.port)) as session:
        for text in ("one", "two", "three"):
            await session.send(text, room="r")
        got = await texts(aiter(session), 3)
        assert session.batched
    assert got == ["one", "two", "three"]


async def test_reconnecting_chat_falls_back_to_chat_when_the_server_has_no_chatbatched(deployment, chat_only):
    """reconnecting_chat against a Chat-only server delivers each message once over Chat."""
    async with reconnecting_chat(deployment.client("alice", chat_only.port)) as session:
        await session.send("one", room="r")
        await session.send("two", room="r")
        got = await texts(aiter(session), 2)
    assert got == ["one", "two"]
    assert [text for text in chat_only.received if text] == ["one", "two"]


async def test_reconnecting_chat_uses_chatbatched_when_the_server_offers_it(deployment, start):
    """The twin: against securechat it stays on ChatBatched."""
    server = await start(limits={"announce_max_members": 0})
    async with reconnecting_chat(deployment.client("alice", server.port)) as session:
        await session.send("one", room="r")
        await session.send("two", room="r")
        got = await texts(aiter(session), 2)
        assert session.batched
    assert got == ["one", "two"]


async def test_a_refusal_of_chatbatched_is_not_mistaken_for_a_missing_method(deployment, start):
    """PERMISSION_DENIED on ChatBatched is reported as it is, not retried on Chat (the same rule covers both)."""
    server = await start(authz={"methods": {"Chat": ["bob"]}})
    with pytest.raises(ConnectError) as caught:
        async with open_chat(deployment.client("alice", server.port)) as session:
            await session.send("hi", room="r")
            await texts(aiter(session), 1)
    assert caught.value.reason is Reason.NOT_ALLOWED
    assert "/securechat.v1.ChatService/ChatBatched" in str(caught.value)


async def test_cli_chat_works_against_a_server_without_chatbatched(deployment, chat_only):
    """`securechat chat` with piped stdin against a Chat-only server: each line sent once, its echo printed, exit 0."""
    config = deployment.client_yaml("alice", chat_only.port)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "securechat", "chat", "--config", str(config), "--room", "piped",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(b"first line\nsecond line\n"), 30)
    assert process.returncode == 0, err.decode()
    assert [line.split("alice: ", 1)[1] for line in out.decode().splitlines() if "alice: " in line] == ["first line", "second line"]
    assert [text for text in chat_only.received if text] == ["first line", "second line"]
    assert chat_only.methods == ["Chat"]
