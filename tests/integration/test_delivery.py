"""Delivery, resume and limits against a real mTLS server on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest

from securechat.protocol import Reason, reason_of, resume_from
from securechat._gen import chat_pb2, chat_pb2_grpc
from securechat.client import open_channel, open_chat
from securechat.errors import ConnectError
from securechat.tls.material import load_client_material
from securechat.tls.credentials import channel_credentials

Kind = chat_pb2.ChatEvent.Kind
STEP = 5.0


async def next_event(events, *, kind: int | None = Kind.MESSAGE) -> chat_pb2.ChatEvent:
    while True:
        event = await asyncio.wait_for(anext(events), STEP)
        if kind is None or event.kind == kind:
            return event


async def final_status(call) -> grpc.aio.AioRpcError:
    """Read `call` to its end and return the error it ended with."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    return caught.value


async def test_resume_with_last_event_id_misses_nothing_and_repeats_nothing(deployment, start):
    """bob leaves after event X; alice posts; bob resumes after X and gets exactly the later messages."""
    server = await start()
    async with open_chat(deployment.client("alice", server.port)) as alice:
        alice_events = aiter(alice)
        await alice.send("one", room="r")
        await next_event(alice_events)
        async with open_chat(deployment.client("bob", server.port)) as bob:
            bob_events = aiter(bob)
            await bob.send("two", room="r")
            last = await next_event(bob_events)
        for text in ("three", "four"):
            await alice.send(text, room="r")
        await next_event(alice_events)
        await next_event(alice_events)
        await next_event(alice_events)
        async with open_chat(deployment.client("bob", server.port), metadata=(("last-event-id", last.id),)) as bob:
            bob_events = aiter(bob)
            await bob.join("r")
            seen = [await next_event(bob_events) for _ in range(2)]
            await alice.send("five", room="r")
            seen.append(await next_event(bob_events))
    assert [e.text for e in seen] == ["three", "four", "five"]
    assert all(int(e.id) > int(last.id) for e in seen)


async def test_resume_too_old_is_out_of_range_naming_the_oldest_id(deployment, start):
    """With history_size 2 a resume point three messages back ends the call with OUT_OF_RANGE."""
    server = await start(limits={"history_size": 2, "announce_max_members": 0})
    async with open_chat(deployment.client("alice", server.port)) as alice:
        events = aiter(alice)
        sent = []
        for text in ("a", "b", "c", "d"):
            await alice.send(text, room="r")
            sent.append(await next_event(events))
    async with open_channel(deployment.client("bob", server.port)) as channel:
        call = channel.stub.Chat(metadata=(("last-event-id", sent[0].id),))
        await call.write(chat_pb2.ChatMessage(room="r"))
        error = await final_status(call)
    assert error.code() is grpc.StatusCode.OUT_OF_RANGE
    assert reason_of(error) is Reason.HISTORY_GONE
    assert resume_from(error) == int(sent[2].id) - 1
    assert f"the oldest id still held for room 'r' is {sent[2].id}" in error.details()


async def test_after_a_restart_resume_from_gets_every_message_of_the_new_run(deployment, start):
    """An id from the previous run: OUT_OF_RANGE with securechat-resume-from; resuming from it misses nothing since."""
    before = await start()
    async with open_chat(deployment.client("alice", before.port)) as alice:
        events = aiter(alice)
        await alice.send("before the restart", room="r")
        last = await next_event(events)
    await before.stop(grace=0)
    after = await start()
    async with open_chat(deployment.client("bob", after.port)) as bob:
        bob_events = aiter(bob)
        await bob.send("while alice was away", room="r")
        await next_event(bob_events)
    async with open_channel(deployment.client("alice", after.port)) as channel:
        call = channel.stub.Chat(metadata=(("last-event-id", last.id),))
        await call.write(chat_pb2.ChatMessage(room="r"))
        error = await final_status(call)
        assert error.code() is grpc.StatusCode.OUT_OF_RANGE
        assert reason_of(error) is Reason.HISTORY_GONE
        point = resume_from(error)
        assert point is not None and point > int(last.id)  # the new run's ids start above the old run's
        call = channel.stub.Chat(metadata=(("last-event-id", str(point)),))
        await call.write(chat_pb2.ChatMessage(room="r"))
        replayed = await next_event(aiter(call))
        call.cancel()
    assert replayed.text == "while alice was away"


async def test_an_id_from_before_this_run_is_refused_at_open_and_joins_nothing(deployment, start):
    """The refusal comes before any join: no JOIN/LEAVE of the refused stream reaches the room, no stream stays open."""
    before = await start()
    async with open_chat(deployment.client("alice", before.port)) as alice:
        await alice.send("before the restart", room="r")
        last = await next_event(aiter(alice))
    await before.stop(grace=0)
    after = await start()
    async with open_chat(deployment.client("bob", after.port)) as bob:
        bob_events = aiter(bob)
        await bob.join("r")
        first = await next_event(bob_events, kind=Kind.JOIN)  # bob's JOIN: the new run's first event
        async with open_channel(deployment.client("alice", after.port)) as channel:
            call = channel.stub.Chat(metadata=(("last-event-id", last.id),))
            await call.write(chat_pb2.ChatMessage(room="r"))
            error = await final_status(call)
        assert after.service.open_streams == 1  # bob's
        assert after.service._hub.room_size("r") == 1
        await bob.send("only bob", room="r")
        assert (await next_event(bob_events, kind=None)).text == "only bob"  # no JOIN or LEAVE of alice before it
    assert error.code() is grpc.StatusCode.OUT_OF_RANGE
    assert reason_of(error) is Reason.HISTORY_GONE
    assert resume_from(error) == int(first.id) - 1
    assert error.details() == (
        f"last-event-id {last.id} is from before this server started: the oldest id this server run holds is "
        f"{first.id} or later. Resume after {int(first.id) - 1} (securechat-resume-from) or rejoin without "
        "last-event-id; events in between are lost."
    )


async def test_a_refused_stream_that_writes_nothing_is_refused_too(deployment, start):
    """A resuming stream that never writes is not left open: it gets the same refusal (after FIRST_MESSAGE_SECONDS)."""
    server = await start()
    old = str(server.service._hub._broker.first_id - 10)
    async with open_channel(deployment.client("alice", server.port)) as channel:
        error = await final_status(channel.stub.Chat(metadata=(("last-event-id", old),)))
        batched = await final_status(channel.stub.ChatBatched(metadata=(("last-event-id", old),)))
    for refused in (error, batched):
        assert refused.code() is grpc.StatusCode.OUT_OF_RANGE
        assert reason_of(refused) is Reason.HISTORY_GONE
        assert resume_from(refused) == server.service._hub._broker.first_id - 1
    assert server.service.open_streams == 0


async def test_resume_point_that_is_not_an_id_is_invalid_argument(deployment, start):
    """A last-event-id that is not a decimal id ends the call at once with INVALID_ARGUMENT."""
    server = await start()
    async with open_channel(deployment.client("alice", server.port)) as channel:
        call = channel.stub.Chat(metadata=(("last-event-id", "yesterday"),))
        error = await final_status(call)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "last-event-id 'yesterday' is not an event id" in error.details()


async def test_message_rate_limit_is_resource_exhausted_naming_the_limit(deployment, start):
    """Posting faster than the identity's token bucket allows ends the stream with RESOURCE_EXHAUSTED."""
    server = await start(limits={"max_messages_per_second": 1, "message_burst": 3})
    async with open_channel(deployment.client("alice", server.port)) as channel:
        call = channel.stub.Chat()
        for i in range(5):
            await call.write(chat_pb2.ChatMessage(room="r", text=str(i)))
        error = await final_status(call)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(error) is Reason.RATE_LIMITED
    assert "the limit max_messages_per_second is 1 (message_burst 3)" in error.details()


async def test_rate_within_the_burst_is_accepted(deployment, start):
    """The failing twin: as many messages as the burst allows all come back."""
    server = await start(limits={"max_messages_per_second": 1, "message_burst": 3})
    async with open_chat(deployment.client("alice", server.port)) as alice:
        events = aiter(alice)
        for i in range(3):
            await alice.send(str(i), room="r")
        assert [(await next_event(events)).text for _ in range(3)] == ["0", "1", "2"]


async def test_streams_per_identity_limit(deployment, start):
    """A third stream for alice with max_streams_per_identity 2 is refused; bob still gets one."""
    server = await start(limits={"max_streams_per_identity": 2})
    async with open_channel(deployment.client("alice", server.port)) as channel:
        calls = [channel.stub.Chat() for _ in range(2)]
        for call in calls:
            await call.write(chat_pb2.ChatMessage(room="r"))
            await asyncio.wait_for(call.read(), STEP)
        error = await final_status(channel.stub.Chat())
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "identity 'alice' already has 2 open chat streams; the limit max_streams_per_identity is 2" in error.details()
        async with open_chat(deployment.client("bob", server.port)) as bob:
            await bob.send("hi", room="r")
            assert (await next_event(aiter(bob))).text == "hi"
        for call in calls:
            call.cancel()


async def test_connection_limit_is_logged_and_named(deployment, start, caplog):
    """With max_connections 1 a second connection's stream is refused and the log says the limit was reached."""
    server = await start(limits={"max_connections": 1})
    async with open_chat(deployment.client("alice", server.port)) as alice:
        await alice.join("r")
        await next_event(aiter(alice), kind=Kind.JOIN)
        async with open_channel(deployment.client("bob", server.port)) as channel:
            error = await final_status(channel.stub.Chat())
    # gRPC core may refuse the TCP connection itself (UNAVAILABLE) or we refuse the stream.
    assert error.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
    if error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
        assert "the limit max_connections is 1" in error.details()
    assert "connection limit reached" in caplog.text


async def test_message_larger_than_max_message_bytes_is_resource_exhausted(deployment, start):
    """A request above limits.max_message_bytes is refused by gRPC with both sizes in the message."""
    server = await start(limits={"max_message_bytes": 1024, "max_text_length": 100_000})
    async with open_channel(deployment.client("alice", server.port)) as channel:
        call = channel.stub.Chat()
        await call.write(chat_pb2.ChatMessage(room="r", text="x" * 2000))
        error = await final_status(call)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "vs. 1024" in error.details()


async def test_client_names_max_message_bytes_when_the_server_refuses_a_big_message(deployment, start):
    """The Python client (and so the CLI) turns gRPC's size refusal into one line naming the server's limit."""
    server = await start(limits={"max_message_bytes": 1024, "max_text_length": 100_000})
    async with open_chat(deployment.client("alice", server.port)) as alice:
        events = aiter(alice)
        await alice.send("x" * 2000, room="r")
        with pytest.raises(ConnectError, match=r"^server refused a \d+-byte message: its limit is 1024 bytes \(limits\.max_message_bytes"):
            while True:
                await next_event(events)


async def test_a_message_within_max_message_bytes_is_delivered(deployment, start):
    """The failing twin: just under the limit, the message comes back as the sender's echo."""
    server = await start(limits={"max_message_bytes": 1024, "max_text_length": 100_000})
    async with open_chat(deployment.client("alice", server.port)) as alice:
        events = aiter(alice)
        await alice.send("x" * 900, room="r")
        assert (await next_event(events)).text == "x" * 900


async def test_member_that_stops_reading_is_cut_off_and_the_room_goes_on(deployment, start):
    """A client that never reads ends as a slow consumer; another member gets every message."""
    server = await start(limits={"queue_size": 8, "announce_max_members": 0, "max_messages_per_second": 100_000, "message_burst": 100_000})
    config = deployment.client("bob", server.port)
    material = load_client_material(config)
    # No BDP probing: the stalled client's receive window stays small, so
    # HTTP/2 flow control soon holds the server's writes back.
    stalled_channel = grpc.aio.secure_channel(str(config.target), channel_credentials(material), options=[("grpc.http2.bdp_probe", 0)])
    async with stalled_channel, open_chat(deployment.client("alice", server.port)) as alice:
        stalled = chat_pb2_grpc.ChatServiceStub(stalled_channel).Chat()
        await stalled.write(chat_pb2.ChatMessage(room="r"))
        events = aiter(alice)
        await alice.join("r")
        text = "y" * 4000
        sent = 0
        while not stalled.done() and sent < 2000:
            await alice.send(f"{sent}{text}", room="r")
            assert (await next_event(events)).text.startswith(f"{sent}y")
            sent += 1
        error = await final_status(stalled)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(error) is Reason.SLOW_CONSUMER
    assert error.details().startswith("slow consumer: ")
    assert error.details().endswith(" events behind; resume with last-event-id")


async def test_metrics_endpoint_counts_messages_and_deliveries(deployment, start):
    """metrics_port serves Prometheus text with accepted messages and deliveries counted."""
    server = await start(metrics_port=0)
    async with open_chat(deployment.client("alice", server.port)) as alice, open_chat(deployment.client("bob", server.port)) as bob:
        await alice.join("r")
        await bob.join("r")
        await next_event(aiter(bob), kind=Kind.JOIN)
        await alice.send("hi", room="r")
        await next_event(aiter(bob))
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        body = (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=STEP).read())).decode()  # noqa: S310
    assert "securechat_messages_accepted_total 1.0" in body
    assert "securechat_streams 2.0" in body
    assert "securechat_fan_out_seconds_bucket" in body
    assert "hi" not in body.split("securechat_")[-1]
