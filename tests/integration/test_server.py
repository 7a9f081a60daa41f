"""The server end to end: real certificates, a real server on 127.0.0.1:0, real clients."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from securechat._gen import chat_pb2
from securechat.client import check_health, open_channel, open_chat, say_hello, who_am_i
from securechat.errors import ConnectError
from securechat.protocol import Reason, reason_of

Kind = chat_pb2.ChatEvent.Kind
STEP = 5.0  # seconds any single step may take before the test fails


async def next_event(events, *, kind: int | None = Kind.MESSAGE) -> chat_pb2.ChatEvent:
    """The next event of `kind` (None: any kind) from an open chat iterator."""
    while True:
        event = await asyncio.wait_for(anext(events), STEP)
        if kind is None or event.kind == kind:
            return event


async def test_say_hello_under_mtls_names_the_certificate(deployment, start):
    """SayHello answers with the certificate's identity, not the payload's name."""
    server = await start()
    async with open_channel(deployment.client("alice", server.port)) as channel:
        assert await say_hello(channel, "mallory") == "Hello, alice!"


async def test_say_hello_under_server_only_tls_uses_the_payload_name(deployment, start):
    """With mtls: false there is no client certificate, so the request's name is used."""
    server = await start(tls={"mtls": False})
    config = deployment.client("anon", server.port, tls={"cert": None, "key": None})
    async with open_channel(config) as channel:
        assert await say_hello(channel, "carol") == "Hello, carol!"


async def test_who_am_i_reports_the_certificate(deployment, start):
    """WhoAmI returns the name, serial and expiry of the presented certificate."""
    server = await start()
    cert = deployment.store.cert_path("alice")
    from securechat import pki

    alice = pki.load_certificate(cert)
    async with open_channel(deployment.client("alice", server.port)) as channel:
        identity = await who_am_i(channel)
    assert identity.name == "alice"
    assert identity.serial == f"{alice.serial_number:x}"
    assert identity.not_after == alice.not_valid_after_utc.isoformat()
    assert identity.spiffe_id == ""


async def test_who_am_i_without_client_certificate_is_unauthenticated(deployment, start):
    """Under server-only TLS WhoAmI has nobody to name: UNAUTHENTICATED."""
    server = await start(tls={"mtls": False})
    config = deployment.client("anon", server.port, tls={"cert": None, "key": None})
    async with open_channel(config) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.stub.WhoAmI(chat_pb2.WhoAmIRequest(), timeout=STEP)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "WhoAmI needs mutual TLS" in caught.value.details()


async def test_chat_round_trip_under_mtls(deployment, start):
    """Posting joins the room and the sender's own copy comes back as the acknowledgement."""
    server = await start()
    async with open_chat(deployment.client("alice", server.port)) as chat:
        events = aiter(chat)
        await chat.send("hello", room="lobby")
        joined = await next_event(events, kind=Kind.JOIN)
        echo = await next_event(events)
    assert (joined.room, joined.sender) == ("lobby", "alice")
    assert (echo.room, echo.sender, echo.text) == ("lobby", "alice", "hello")
    assert int(echo.id) > int(joined.id)
    assert echo.sent_at_unix_ms > 0


async def test_chat_round_trip_under_server_only_tls(deployment, start):
    """With mtls: false chat works and members are anonymous."""
    server = await start(tls={"mtls": False})
    config = deployment.client("anon", server.port, tls={"cert": None, "key": None})
    async with open_chat(config) as chat:
        events = aiter(chat)
        await chat.send("hi")
        echo = await next_event(events)
    assert (echo.room, echo.sender, echo.text) == ("general", "anonymous", "hi")


async def test_sender_comes_from_certificate_not_metadata(deployment, start):
    """Metadata claiming another identity changes nothing: sender is the certificate's name."""
    server = await start()
    config = deployment.client("bob", server.port)
    async with open_chat(config, metadata=(("sender", "alice"), ("x-identity", "alice"))) as chat:
        events = aiter(chat)
        await chat.send("who am I?")
        echo = await next_event(events)
    assert echo.sender == "bob"


async def test_two_members_see_the_same_order_and_another_room_sees_nothing(deployment, start):
    """alice and bob share a room and see every message once in one order; carol elsewhere gets none."""
    deployment.issue_client("carol")
    server = await start()
    async with (
        open_chat(deployment.client("alice", server.port)) as alice,
        open_chat(deployment.client("bob", server.port)) as bob,
        open_chat(deployment.client("carol", server.port)) as carol,
    ):
        alice_events, bob_events, carol_events = aiter(alice), aiter(bob), aiter(carol)
        await alice.join("team")
        await next_event(alice_events, kind=Kind.JOIN)
        await bob.join("team")
        await next_event(bob_events, kind=Kind.JOIN)
        await carol.join("elsewhere")
        await next_event(carol_events, kind=Kind.JOIN)
        for i in range(5):
            await alice.send(f"a{i}", room="team")
            await bob.send(f"b{i}", room="team")
        seen_by_alice = [await next_event(alice_events) for _ in range(10)]
        seen_by_bob = [await next_event(bob_events) for _ in range(10)]
        assert [e.id for e in seen_by_alice] == [e.id for e in seen_by_bob]
        assert sorted(e.text for e in seen_by_alice) == sorted([f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)])
        assert {e.sender for e in seen_by_alice} == {"alice", "bob"}
        assert [int(e.id) for e in seen_by_alice] == sorted(int(e.id) for e in seen_by_alice)
        # carol's next event is her own echo: nothing from 'team' reached her.
        await carol.send("anyone?", room="elsewhere")
        event = await next_event(carol_events, kind=None)
        assert (event.room, event.sender, event.text) == ("elsewhere", "carol", "anyone?")


async def test_join_and_leave_are_announced(deployment, start):
    """A member who joins is announced to the room; one who disconnects is announced as leaving."""
    server = await start()
    async with open_chat(deployment.client("alice", server.port)) as alice:
        events = aiter(alice)
        await alice.join("general")
        await next_event(events, kind=Kind.JOIN)
        async with open_chat(deployment.client("bob", server.port)) as bob:
            await bob.join("general")
            joined = await next_event(events, kind=Kind.JOIN)
            assert joined.sender == "bob"
        left = await next_event(events, kind=Kind.LEAVE)
        assert (left.sender, left.room) == ("bob", "general")


async def test_disconnected_member_leaves_every_room(deployment, start):
    """After a stream ends, its member is in no room."""
    server = await start()
    async with open_chat(deployment.client("alice", server.port)) as alice:
        events = aiter(alice)
        for room in ("one", "two", "three"):
            await alice.join(room)
            await next_event(events, kind=Kind.JOIN)
        assert server.service.open_streams == 1
    for _ in range(100):
        if server.service.open_streams == 0:
            break
        await asyncio.sleep(0.02)
    assert server.service.open_streams == 0
    assert server.service._hub.room_count == 0


async def test_half_close_delivers_everything_then_ends_ok(deployment, start):
    """A client that stops sending still gets every accepted event, then the stream ends OK."""
    server = await start()
    async with open_chat(deployment.client("alice", server.port)) as alice:
        for i in range(20):
            await alice.send(f"m{i}")
        await alice.done_writing()
        texts = [event.text async for event in alice if event.kind == Kind.MESSAGE]
    assert texts == [f"m{i}" for i in range(20)]


@pytest.mark.parametrize(
    ("message", "code", "reason", "text"),
    [
        (chat_pb2.ChatMessage(room="bad room!", text="x"), grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_ROOM, "room name 'bad room!' is invalid"),
        (chat_pb2.ChatMessage(room="r", text="x" * 4097), grpc.StatusCode.INVALID_ARGUMENT, Reason.TEXT_TOO_LONG, "the limit max_text_length is 4096"),
    ],
)
async def test_limits_end_the_call_naming_the_limit(deployment, start, message, code, reason, text):
    """Breaking a limit ends the stream with the right status, its reason in trailing metadata, and a message naming the limit."""
    server = await start()
    async with open_channel(deployment.client("alice", server.port)) as channel:
        call = channel.stub.Chat()
        await call.write(message)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
    assert caught.value.code() is code
    assert reason_of(caught.value) is reason
    assert dict(caught.value.trailing_metadata())["securechat-refusal"] == reason.value
    assert text in caught.value.details()


async def test_rooms_per_stream_limit(deployment, start):
    """Joining more rooms than max_rooms_per_stream ends the stream with RESOURCE_EXHAUSTED."""
    server = await start(limits={"max_rooms_per_stream": 2})
    async with open_channel(deployment.client("alice", server.port)) as channel:
        call = channel.stub.Chat()
        for room in ("a", "b", "c"):
            await call.write(chat_pb2.ChatMessage(room=room))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(caught.value) is Reason.TOO_MANY_ROOMS
    assert "the limit max_rooms_per_stream is 2" in caught.value.details()


async def test_health_and_reflection_are_served(deployment, start):
    """grpc.health.v1 says SERVING for the server and ChatService; reflection lists the services."""
    server = await start()
    async with open_channel(deployment.client("alice", server.port)) as channel:
        assert await check_health(channel) == "SERVING"
        assert await check_health(channel, "securechat.v1.ChatService") == "SERVING"
        assert await check_health(channel, "no.such.Service") == "SERVICE_UNKNOWN"
        stub = reflection_pb2_grpc.ServerReflectionStub(channel.grpc_channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        reply = await asyncio.wait_for(anext(aiter(call)), STEP)
    names = {service.name for service in reply.list_services_response.service}
    assert {"securechat.v1.ChatService", "grpc.health.v1.Health"} <= names


async def test_plaintext_health_port_serves_health_only(deployment, start):
    """health_port answers grpc.health.v1 without TLS and nothing else."""
    server = await start(health_port=0)
    assert server.health_port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.health_port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=STEP)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        hello = channel.unary_unary("/securechat.v1.ChatService/SayHello")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await hello(b"", timeout=STEP)
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_stop_turns_health_not_serving_and_ends_streams_with_unavailable(deployment, start):
    """On shutdown open streams get what was accepted, then UNAVAILABLE telling them to reconnect."""
    server = await start()
    async with open_chat(deployment.client("alice", server.port)) as alice:
        events = aiter(alice)
        await alice.send("before")
        await next_event(events)
        await server.stop(grace=2)
        with pytest.raises(ConnectError, match="server is shutting down; reconnect"):
            await next_event(events)
    reply = await server.health.Check(health_pb2.HealthCheckRequest(), None)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_allow_list_refuses_other_identities(deployment, start):
    """authz.allow admits alice; bob is identified but not allowed: PERMISSION_DENIED naming him."""
    server = await start(authz={"allow": ["alice"]})
    async with open_channel(deployment.client("alice", server.port)) as channel:
        assert await say_hello(channel) == "Hello, alice!"
    async with open_channel(deployment.client("bob", server.port)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.stub.SayHello(chat_pb2.HelloRequest(), timeout=STEP)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(caught.value) is Reason.NOT_ALLOWED
    assert "identity 'bob' is not allowed" in caught.value.details()
