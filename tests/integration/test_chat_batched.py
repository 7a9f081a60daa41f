"""ChatBatched against a real mTLS server on 127.0.0.1:0: Chat's semantics, events in batches.

Each test drives the RPC through grpc's own generated stub, so what is
checked is the wire: ChatEventBatch responses, status codes and the
`securechat-refusal` trailing metadata.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from securechat._gen import chat_pb2, chat_pb2_grpc
from securechat.client import open_channel
from securechat.protocol import LAST_EVENT_ID, Reason, reason_of
from securechat.server.service import MAX_BATCH_BYTES
from securechat.tls.credentials import channel_credentials
from securechat.tls.material import load_client_material

Kind = chat_pb2.ChatEvent.Kind
STEP = 5.0
FAST = {"max_messages_per_second": 100_000, "message_burst": 100_000}


async def next_batch(call: grpc.aio.StreamStreamCall) -> chat_pb2.ChatEventBatch:
    batch = await asyncio.wait_for(call.read(), STEP)
    assert batch is not grpc.aio.EOF, "the stream ended early"
    return batch


async def messages(call: grpc.aio.StreamStreamCall, count: int) -> tuple[list[chat_pb2.ChatEvent], list[int]]:
    """Read until COUNT MESSAGE events have arrived; return them and the size of every batch read."""
    got: list[chat_pb2.ChatEvent] = []
    sizes: list[int] = []
    while len(got) < count:
        batch = await next_batch(call)
        sizes.append(len(batch.events))
        got += [event for event in batch.events if event.kind == Kind.MESSAGE]
    return got, sizes


async def final_status(call: grpc.aio.StreamStreamCall) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    return caught.value


async def test_a_quiet_room_gets_one_event_per_batch(deployment, start):
    """Send, wait for the echo, send again: every batch holds exactly the one new event."""
    server = await start(limits={"announce_max_members": 0})
    async with open_channel(deployment.client("alice", server.port)) as channel:
        call = channel.stub.ChatBatched()
        sizes = []
        for text in ("one", "two", "three"):
            await call.write(chat_pb2.ChatMessage(room="r", text=text))
            batch = await next_batch(call)
            sizes.append(len(batch.events))
            assert batch.events[0].text == text
            assert batch.events[0].sender == "alice"
        call.cancel()
    assert sizes == [1, 1, 1]


async def test_replayed_history_arrives_in_one_batch_in_order(deployment, start):
    """A resume queues the room's history at once: it leaves as one batch, oldest first, only ids after the point."""
    server = await start(limits={"announce_max_members": 0, **FAST})
    async with open_channel(deployment.client("alice", server.port)) as channel:
        call = channel.stub.ChatBatched()
        for i in range(30):
            await call.write(chat_pb2.ChatMessage(room="r", text=f"m{i}"))
        sent, _ = await messages(call, 30)
        call.cancel()
        resumed = channel.stub.ChatBatched(metadata=((LAST_EVENT_ID, sent[9].id),))
        await resumed.write(chat_pb2.ChatMessage(room="r"))
        batch = await next_batch(resumed)
        resumed.cancel()
    assert [event.text for event in batch.events] == [f"m{i}" for i in range(10, 30)]
    assert [event.id for event in batch.events] == [event.id for event in sent[10:]]


async def test_a_replay_larger_than_the_batch_limit_is_split_in_order(deployment, start):
    """Over MAX_BATCH_BYTES of history leaves as several batches, each within the limit, nothing lost or reordered."""
    server = await start(limits={"announce_max_members": 0, "max_text_length": 8000, "history_size": 200, **FAST})
    text = "z" * 7000
    count = MAX_BATCH_BYTES * 3 // len(text)  # about three batches' worth
    async with open_channel(deployment.client("alice", server.port)) as channel:
        call = channel.stub.ChatBatched()
        await call.write(chat_pb2.ChatMessage(room="r"))
        for i in range(count):
            await call.write(chat_pb2.ChatMessage(room="r", text=f"{i:04d}{text}"))
        sent, _ = await messages(call, count)
        call.cancel()
        resumed = channel.stub.ChatBatched(metadata=((LAST_EVENT_ID, str(int(sent[0].id) - 1)),))
        await resumed.write(chat_pb2.ChatMessage(room="r"))
        batches = []
        while sum(len(b.events) for b in batches) < count:
            batches.append(await next_batch(resumed))
        resumed.cancel()
    assert len(batches) >= 3
    assert all(batch.ByteSize() <= MAX_BATCH_BYTES for batch in batches)
    assert [event.id for batch in batches for event in batch.events] == [event.id for event in sent]


async def test_a_replay_within_the_batch_limit_is_one_batch(deployment, start):
    """The twin: the same big events, fewer than fill MAX_BATCH_BYTES, come back as one batch."""
    server = await start(limits={"announce_max_members": 0, "max_text_length": 8000, "history_size": 200, **FAST})
    text = "z" * 7000
    count = MAX_BATCH_BYTES // len(text) // 2
    async with open_channel(deployment.client("alice", server.port)) as channel:
        call = channel.stub.ChatBatched()
        for i in range(count):
            await call.write(chat_pb2.ChatMessage(room="r", text=f"{i:04d}{text}"))
        sent, _ = await messages(call, count)
        call.cancel()
        resumed = channel.stub.ChatBatched(metadata=((LAST_EVENT_ID, str(int(sent[0].id) - 1)),))
        await resumed.write(chat_pb2.ChatMessage(room="r"))
        batch = await next_batch(resumed)
        resumed.cancel()
    assert [event.id for event in batch.events] == [event.id for event in sent]


async def test_mixed_room_of_chat_and_chatbatched_members_sees_one_order(deployment, start):
    """alice on Chat and bob on ChatBatched, both posting: each gets every message once, in the same order, same ids."""
    server = await start(**{"limits": FAST})
    async with open_channel(deployment.client("alice", server.port)) as a, open_channel(deployment.client("bob", server.port)) as b:
        alice = a.stub.Chat()
        bob = b.stub.ChatBatched()
        await alice.write(chat_pb2.ChatMessage(room="r"))
        assert (await asyncio.wait_for(alice.read(), STEP)).sender == "alice"  # alice's own JOIN: she is in
        await bob.write(chat_pb2.ChatMessage(room="r"))
        assert (await asyncio.wait_for(alice.read(), STEP)).sender == "bob"  # bob's JOIN: both are in
        assert [(e.kind, e.sender) for e in (await next_batch(bob)).events] == [(Kind.JOIN, "bob")]
        for i in range(40):
            await (alice if i % 2 else bob).write(chat_pb2.ChatMessage(room="r", text=f"{i}"))
        alice_got = []
        while len(alice_got) < 40:
            event = await asyncio.wait_for(alice.read(), STEP)
            if event.kind == Kind.MESSAGE:
                alice_got.append(event)
        bob_got, _ = await messages(bob, 40)
        alice.cancel()
        bob.cancel()
    assert [(e.id, e.sender, e.text) for e in bob_got] == [(e.id, e.sender, e.text) for e in alice_got]
    assert [int(e.id) for e in bob_got] == sorted(int(e.id) for e in bob_got)
    for sender, parity in (("bob", 0), ("alice", 1)):
        assert [e.text for e in bob_got if e.sender == sender] == [str(i) for i in range(40) if i % 2 == parity]


async def test_join_and_leave_are_announced_to_a_batched_member(deployment, start):
    """bob on ChatBatched sees alice (on Chat) join and leave, with ids, as Chat members do."""
    server = await start()
    async with open_channel(deployment.client("bob", server.port)) as b:
        bob = b.stub.ChatBatched()
        await bob.write(chat_pb2.ChatMessage(room="r"))
        assert [(e.kind, e.sender) for e in (await next_batch(bob)).events] == [(Kind.JOIN, "bob")]
        async with open_channel(deployment.client("alice", server.port)) as a:
            alice = a.stub.Chat()
            await alice.write(chat_pb2.ChatMessage(room="r"))
            assert [(e.kind, e.sender) for e in (await next_batch(bob)).events] == [(Kind.JOIN, "alice")]
            alice.cancel()
        left = (await next_batch(bob)).events
        bob.cancel()
    assert [(e.kind, e.sender) for e in left] == [(Kind.LEAVE, "alice")]
    assert left[0].id.isdigit()


async def test_resume_too_old_through_chatbatched_is_out_of_range_with_its_reason(deployment, start):
    """With history_size 2, resuming three messages back ends ChatBatched with OUT_OF_RANGE, history-gone."""
    server = await start(limits={"history_size": 2, "announce_max_members": 0})
    async with open_channel(deployment.client("alice", server.port)) as channel:
        call = channel.stub.ChatBatched()
        for text in ("a", "b", "c", "d"):
            await call.write(chat_pb2.ChatMessage(room="r", text=text))
        sent, _ = await messages(call, 4)
        call.cancel()
        resumed = channel.stub.ChatBatched(metadata=((LAST_EVENT_ID, sent[0].id),))
        await resumed.write(chat_pb2.ChatMessage(room="r"))
        error = await final_status(resumed)
    assert error.code() is grpc.StatusCode.OUT_OF_RANGE
    assert reason_of(error) is Reason.HISTORY_GONE
    assert f"the oldest id still held for room 'r' is {sent[2].id}" in error.details()


async def test_resume_within_history_through_chatbatched_is_accepted(deployment, start):
    """The twin: resuming from the oldest held id replays what follows it."""
    server = await start(limits={"history_size": 2, "announce_max_members": 0})
    async with open_channel(deployment.client("alice", server.port)) as channel:
        call = channel.stub.ChatBatched()
        for text in ("a", "b", "c", "d"):
            await call.write(chat_pb2.ChatMessage(room="r", text=text))
        sent, _ = await messages(call, 4)
        call.cancel()
        resumed = channel.stub.ChatBatched(metadata=((LAST_EVENT_ID, sent[2].id),))
        await resumed.write(chat_pb2.ChatMessage(room="r"))
        batch = await next_batch(resumed)
        resumed.cancel()
    assert [event.text for event in batch.events] == ["d"]


@pytest.mark.parametrize(
    ("limits", "message", "code", "reason", "text"),
    [
        ({}, chat_pb2.ChatMessage(room="no spaces"), grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_ROOM, "room name 'no spaces' is invalid"),
        (
            {"max_text_length": 3},
            chat_pb2.ChatMessage(room="r", text="four"),
            grpc.StatusCode.INVALID_ARGUMENT,
            Reason.TEXT_TOO_LONG,
            "text is 4 characters; the limit max_text_length is 3",
        ),
        (
            {"max_rooms_per_stream": 1},
            chat_pb2.ChatMessage(room="second"),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            Reason.TOO_MANY_ROOMS,
            "the limit max_rooms_per_stream is 1",
        ),
    ],
    ids=["invalid-room", "text-too-long", "too-many-rooms"],
)
async def test_refusals_through_chatbatched_carry_code_reason_and_message(deployment, start, limits, message, code, reason, text):
    """Each refusal ends ChatBatched as it ends Chat: the status code, the securechat-refusal reason, the message."""
    server = await start(limits={"announce_max_members": 0, **limits})
    async with open_channel(deployment.client("alice", server.port)) as channel:
        call = channel.stub.ChatBatched()
        await call.write(chat_pb2.ChatMessage(room="first"))
        await call.write(message)
        error = await final_status(call)
    assert error.code() is code
    assert reason_of(error) is reason
    assert text in error.details()


async def test_messages_within_the_limits_through_chatbatched_are_delivered(deployment, start):
    """The twin of the refusals: a valid room, text at max_text_length and a second room within the limit all pass."""
    server = await start(limits={"announce_max_members": 0, "max_text_length": 3, "max_rooms_per_stream": 2})
    async with open_channel(deployment.client("alice", server.port)) as channel:
        call = channel.stub.ChatBatched()
        await call.write(chat_pb2.ChatMessage(room="first"))
        await call.write(chat_pb2.ChatMessage(room="second", text="abc"))
        got, _ = await messages(call, 1)
        call.cancel()
    assert [(e.room, e.text) for e in got] == [("second", "abc")]


async def test_rate_limit_through_chatbatched_is_resource_exhausted(deployment, start):
    """Posting past the burst ends ChatBatched with RESOURCE_EXHAUSTED, rate-limited, naming the limit."""
    server = await start(limits={"max_messages_per_second": 1, "message_burst": 3})
    async with open_channel(deployment.client("alice", server.port)) as channel:
        call = channel.stub.ChatBatched()
        for i in range(5):
            await call.write(chat_pb2.ChatMessage(room="r", text=str(i)))
        error = await final_status(call)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(error) is Reason.RATE_LIMITED
    assert "the limit max_messages_per_second is 1 (message_burst 3)" in error.details()


async def test_rate_within_the_burst_through_chatbatched_is_accepted(deployment, start):
    """The twin: as many messages as the burst allows all come back, in order."""
    server = await start(limits={"max_messages_per_second": 1, "message_burst": 3, "announce_max_members": 0})
    async with open_channel(deployment.client("alice", server.port)) as channel:
        call = channel.stub.ChatBatched()
        for i in range(3):
            await call.write(chat_pb2.ChatMessage(room="r", text=str(i)))
        got, _ = await messages(call, 3)
        call.cancel()
    assert [e.text for e in got] == ["0", "1", "2"]


async def test_batched_member_that_stops_reading_is_cut_off_as_a_slow_consumer(deployment, start):
    """A ChatBatched client that never reads ends as a slow consumer; a Chat member of the room gets every message."""
    server = await start(limits={"queue_size": 8, "announce_max_members": 0, **FAST})
    config = deployment.client("bob", server.port)
    # No BDP probing: the stalled client's receive window stays small, so
    # HTTP/2 flow control soon holds the server's writes back.
    stalled_channel = grpc.aio.secure_channel(
        str(config.target), channel_credentials(load_client_material(config)), options=[("grpc.http2.bdp_probe", 0)]
    )
    async with stalled_channel, open_channel(deployment.client("alice", server.port)) as a:
        stalled = chat_pb2_grpc.ChatServiceStub(stalled_channel).ChatBatched()
        await stalled.write(chat_pb2.ChatMessage(room="r"))
        alice = a.stub.Chat()
        await alice.write(chat_pb2.ChatMessage(room="r"))
        text = "y" * 4000
        sent = 0
        while not stalled.done() and sent < 2000:
            await alice.write(chat_pb2.ChatMessage(room="r", text=f"{sent}{text}"))
            assert (await asyncio.wait_for(alice.read(), STEP)).text.startswith(f"{sent}y")
            sent += 1
        error = await final_status(stalled)
        alice.cancel()
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(error) is Reason.SLOW_CONSUMER
    assert error.details().endswith(" events behind; resume with last-event-id")


@pytest.mark.parametrize(("caller", "allowed"), [("alice", False), ("bob", True)])
async def test_an_authz_rule_for_chat_also_decides_chatbatched(deployment, start, caller, allowed):
    """authz.methods {Chat: [bob]}: alice's ChatBatched is PERMISSION_DENIED (not-allowed), bob's is served."""
    server = await start(authz={"methods": {"Chat": ["bob"]}}, limits={"announce_max_members": 0})
    async with open_channel(deployment.client(caller, server.port)) as channel:
        call = channel.stub.ChatBatched()
        await call.write(chat_pb2.ChatMessage(room="r", text="hi"))
        if allowed:
            got, _ = await messages(call, 1)
            call.cancel()
            assert got[0].sender == caller
        else:
            error = await final_status(call)
            assert error.code() is grpc.StatusCode.PERMISSION_DENIED
            assert reason_of(error) is Reason.NOT_ALLOWED
            assert error.details() == (
                "identity 'alice' is not allowed to call /securechat.v1.ChatService/ChatBatched"
                " by authz.methods['/securechat.v1.ChatService/Chat']"  # the rule that decided, as written in the file
            )
