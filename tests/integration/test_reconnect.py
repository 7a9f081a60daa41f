"""The Python client API reconnects by itself and resumes: real server, real streams cut under it."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from securechat._gen import chat_pb2
from securechat.client import open_chat
from securechat.client.reconnect import Backoff, Refused, ResumeGap, ResumeMarks, reconnecting_chat
from securechat.errors import ConnectError
from securechat.protocol import Reason, Refusal
from securechat.server.app import start_server

Kind = chat_pb2.ChatEvent.Kind
STEP = 5.0
FAST = Backoff(initial=0.05, maximum=0.2, max_attempts=20)


async def messages(events, count: int) -> list[chat_pb2.ChatEvent]:
    out: list[chat_pb2.ChatEvent] = []
    while len(out) < count:
        try:
            event = await asyncio.wait_for(anext(events), STEP)
        except TimeoutError:
            raise AssertionError(f"only {len(out)} of {count} messages came: {[e.text for e in out]}") from None
        if event.kind == Kind.MESSAGE:
            out.append(event)
    return out


async def test_reconnecting_session_survives_cuts(deployment, start):
    """Two cuts of every stream while bob (also reconnecting) posts 60 messages: alice gets each once, in order."""
    server = await start(limits={"max_messages_per_second": 10_000, "message_burst": 10_000})
    async with (
        reconnecting_chat(deployment.client("alice", server.port), backoff=FAST) as alice,
        reconnecting_chat(deployment.client("bob", server.port), backoff=FAST) as bob,
    ):
        alice_events, bob_events = aiter(alice), aiter(bob)
        await alice.join("r")
        await asyncio.wait_for(anext(alice_events), STEP)  # alice's own JOIN: she is in the room
        await bob.join("r")
        for i in range(60):
            if i in (20, 40):
                server.service.end_all_streams(Refusal(grpc.StatusCode.UNAVAILABLE, Reason.SHUTTING_DOWN, "cut for the test"))
            await bob.send(str(i), room="r")
            await asyncio.sleep(0.005)
        seen = await messages(alice_events, 60)
        echoes = await messages(bob_events, 60)
        assert alice.reconnects >= 2
        await asyncio.sleep(0.3)
        extra = list(alice._events._queue)
        assert not [e for e in extra if e.kind == Kind.MESSAGE]  # nothing twice
    assert [int(e.text) for e in seen] == list(range(60))
    assert [int(e.id) for e in seen] == sorted(int(e.id) for e in seen)
    assert [e.id for e in seen] == [e.id for e in echoes]
    assert bob.unacknowledged == []


async def test_restart_is_reported_as_a_gap_and_nothing_after_it_is_missed(deployment, start):
    """After a server restart the old ids are gone: on_gap hears OUT_OF_RANGE, and what the new run got before we came back arrives."""
    server = await start()
    port = server.port
    gaps: list[ResumeGap] = []
    slow = Backoff(initial=0.6, maximum=0.6, jitter=0.0, max_attempts=20)  # bob posts before alice is back
    async with reconnecting_chat(deployment.client("alice", port), backoff=slow, on_gap=gaps.append) as alice:
        events = aiter(alice)
        await alice.send("before", room="r")
        assert (await messages(events, 1))[0].text == "before"
        await server.stop(grace=0.5)
        restarted = await start_server(deployment.server(listen=f"127.0.0.1:{port}"))
        try:
            async with open_chat(deployment.client("bob", port)) as bob:
                await bob.send("while alice was away", room="r")
                async for event in bob:
                    if event.kind == Kind.MESSAGE:
                        break  # bob's echo: the new run accepted it
            assert alice.reconnects >= 1  # she was still waiting to come back
            await alice.send("after", room="r")
            assert [e.text for e in await messages(events, 2)] == ["while alice was away", "after"]
        finally:
            await restarted.stop(grace=0)
    assert len(gaps) == 1
    assert "is from before this server started" in str(gaps[0])
    assert gaps[0].resume_from is not None  # securechat-resume-from: where the new run's history starts


async def test_without_on_gap_a_lost_history_raises_resume_gap(deployment, start):
    """The failing twin: with no on_gap the session ends with ResumeGap naming the oldest id held."""
    server = await start(limits={"history_size": 1, "announce_max_members": 0, "queue_size": 1000})
    async with reconnecting_chat(deployment.client("alice", server.port), backoff=FAST) as alice:
        events = aiter(alice)
        await alice.send("0", room="r")
        await messages(events, 1)
        await server.stop(grace=0.2)
        with pytest.raises(ConnectError):
            await messages(events, 1)


async def test_a_refused_room_is_dropped_and_the_session_goes_on(deployment, start):
    """INVALID_ARGUMENT invalid-room: that room (and its message) is dropped, reported by reason, and chat goes on."""
    server = await start()
    statuses = []
    async with reconnecting_chat(deployment.client("alice", server.port), backoff=FAST, on_status=statuses.append) as alice:
        events = aiter(alice)
        await alice.send("first", room="r")
        assert [e.text for e in await messages(events, 1)] == ["first"]
        await alice.send("x", room="bad room!")
        await alice.send("after", room="r")
        assert [e.text for e in await messages(events, 1)] == ["after"]
        assert alice.rooms == ("r",)
    refused = [s for s in statuses if isinstance(s, Refused)]
    assert [(s.reason, s.code, s.room, s.text) for s in refused] == [
        (Reason.INVALID_ROOM, grpc.StatusCode.INVALID_ARGUMENT, "bad room!", "x")
    ]
    assert refused[0].message.startswith("room name 'bad room!' is invalid")


async def test_a_too_long_message_is_dropped_and_the_next_is_delivered(deployment, start):
    """INVALID_ARGUMENT text-too-long: the refused line is reported and dropped; the lines around it arrive once."""
    server = await start(limits={"max_text_length": 10})
    statuses = []
    async with reconnecting_chat(deployment.client("alice", server.port), backoff=FAST, on_status=statuses.append) as alice:
        events = aiter(alice)
        await alice.send("one", room="r")
        await alice.send("x" * 11, room="r")
        await alice.send("two", room="r")
        assert [e.text for e in await messages(events, 2)] == ["one", "two"]
        assert alice.unacknowledged == []
    refused = [s for s in statuses if isinstance(s, Refused)]
    assert [(s.reason, s.room, s.text) for s in refused] == [(Reason.TEXT_TOO_LONG, "r", "x" * 11)]


async def test_not_allowed_is_not_retried(deployment, start):
    """The failing twin: PERMISSION_DENIED not-allowed ends the session at once, explained."""
    server = await start(authz={"allow": ["bob"]})
    async with reconnecting_chat(deployment.client("alice", server.port), backoff=FAST) as alice:
        events = aiter(alice)
        with pytest.raises(ConnectError, match="server refused the call: identity 'alice' is not allowed") as raised:
            await alice.join("r")  # may already see the refusal: the session has ended
            await messages(events, 1)
        assert raised.value.reason is Reason.NOT_ALLOWED
        assert alice.reconnects <= 1  # gRPC may first report the abort as INTERNAL when it races our write


def test_resume_marks_wait_for_every_room_to_settle():
    """While a resumed room's replay may still arrive, other rooms' events do not move its mark."""
    marks = ResumeMarks()
    marks.join("a")
    marks.join("b")
    for event_id, room in ((10, "a"), (11, "b"), (12, "a")):
        assert marks.accept(chat_pb2.ChatEvent(id=str(event_id), room=room, kind=Kind.MESSAGE), "me")
    assert marks.reconnecting() == 12
    # Resumed: a's replay may interleave with b's live events.
    assert marks.accept(chat_pb2.ChatEvent(id="20", room="b", kind=Kind.MESSAGE), "me")
    assert not marks.accept(chat_pb2.ChatEvent(id="12", room="a", kind=Kind.MESSAGE), "me")  # a repeat
    assert marks.reconnecting() == 12
    marks.accept(chat_pb2.ChatEvent(id="21", room="a", sender="me", kind=Kind.JOIN), "me")
    marks.accept(chat_pb2.ChatEvent(id="22", room="b", sender="me", kind=Kind.JOIN), "me")
    marks.accept(chat_pb2.ChatEvent(id="23", room="b", kind=Kind.MESSAGE), "me")
    assert marks.reconnecting() == 23
