"""Idempotent sends on one server: a repeated client_msg_id is answered with the original event, never posted twice."""

from __future__ import annotations

import asyncio

import pytest

from securechat._gen import chat_pb2
from securechat.client import open_chat
from securechat.errors import ConnectError
from securechat.server.broker import AcceptedIds

Kind = chat_pb2.ChatEvent.Kind
STEP = 5.0


async def next_message(events) -> chat_pb2.ChatEvent:
    while True:
        event = await asyncio.wait_for(anext(events), STEP)
        if event.kind == Kind.MESSAGE:
            return event


async def no_message(events, seconds: float = 0.5) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(next_message(events), seconds)


async def test_a_resend_on_a_new_stream_gets_the_original_echo_and_nobody_sees_it_twice(deployment, start):
    """alice's echo is lost with her stream; she resends with the same id on a new one: her echo has the first id, bob gets it once."""
    server = await start()
    async with open_chat(deployment.client("bob", server.port)) as bob:
        bob_events = aiter(bob)
        await bob.join("r")
        async with open_chat(deployment.client("alice", server.port)) as alice:
            await alice.send("once", room="r", client_msg_id="m-1")
            first = await next_message(bob_events)
        async with open_chat(deployment.client("alice", server.port)) as alice:
            alice_events = aiter(alice)
            await alice.send("once", room="r", client_msg_id="m-1")
            echo = await next_message(alice_events)
            await alice.send("twice", room="r", client_msg_id="m-2")
            assert (await next_message(alice_events)).text == "twice"
        assert (echo.id, echo.sender, echo.text) == (first.id, "alice", "once")
        assert (await next_message(bob_events)).text == "twice"  # not "once" again


async def test_without_an_id_a_resend_is_a_second_message(deployment, start):
    """The failing twin: the same text without client_msg_id is accepted again, with a new id."""
    server = await start()
    async with open_chat(deployment.client("bob", server.port)) as bob:
        bob_events = aiter(bob)
        await bob.join("r")
        for _ in range(2):
            async with open_chat(deployment.client("alice", server.port)) as alice:
                await alice.send("again", room="r", client_msg_id="")
                await next_message(aiter(alice))
        first, second = await next_message(bob_events), await next_message(bob_events)
    assert (first.text, second.text) == ("again", "again") and int(second.id) > int(first.id)


async def test_a_repeat_on_the_same_stream_is_not_echoed_twice(deployment, start):
    """The stream already carries the original: a repeat on it adds nothing (no second copy to anyone)."""
    server = await start()
    async with open_chat(deployment.client("alice", server.port)) as alice:
        events = aiter(alice)
        await alice.send("one", room="r", client_msg_id="x")
        await alice.send("one", room="r", client_msg_id="x")
        assert (await next_message(events)).text == "one"
        await no_message(events)


async def test_ids_are_per_identity(deployment, start):
    """bob using alice's client_msg_id posts his own message: ids of one identity never suppress another's."""
    server = await start()
    async with open_chat(deployment.client("alice", server.port)) as alice:
        events = aiter(alice)
        await alice.send("from alice", room="r", client_msg_id="same")
        await next_message(events)
        async with open_chat(deployment.client("bob", server.port)) as bob:
            await bob.send("from bob", room="r", client_msg_id="same")
            assert ((await next_message(events)).sender, "from bob") == ("bob", "from bob")


async def test_the_window_is_config(deployment, start):
    """limits.idempotency_window_seconds: 0 turns it off, and a repeat is posted again."""
    server = await start(limits={"idempotency_window_seconds": 0})
    async with open_chat(deployment.client("alice", server.port)) as alice:
        events = aiter(alice)
        await alice.send("one", room="r", client_msg_id="x")
        await alice.send("one", room="r", client_msg_id="x")
        first, second = await next_message(events), await next_message(events)
    assert first.id != second.id


async def test_an_overlong_id_is_refused_with_its_reason(deployment, start):
    """client_msg_id over 128 characters: INVALID_ARGUMENT, reason bad-client-msg-id; 128 is fine."""
    server = await start()
    async with open_chat(deployment.client("alice", server.port)) as alice:
        events = aiter(alice)
        await alice.send("ok", room="r", client_msg_id="a" * 128)
        assert (await next_message(events)).text == "ok"
        await alice.send("too long", room="r", client_msg_id="a" * 129)
        with pytest.raises(ConnectError, match=r"INVALID_ARGUMENT: client_msg_id is 129 characters; at most 128"):
            await next_message(events)


async def test_open_chat_gives_every_message_an_id(deployment, start):
    """ChatSession.send returns the id it sent (a random one by default), different for every message."""
    server = await start()
    async with open_chat(deployment.client("alice", server.port)) as alice:
        ids = [await alice.send(f"m{n}", room="r") for n in range(3)]
    assert len(set(ids)) == 3 and all(len(i) == 32 for i in ids)


def test_accepted_ids_forget_after_the_window_and_beyond_capacity() -> None:
    """The in-memory table: expiry by time, the oldest dropped first at capacity."""
    now = [0.0]
    table = AcceptedIds(window=10.0, capacity=2, clock=lambda: now[0])
    table.add("alice", "a", "r", 1, b"e1")
    table.add("alice", "b", "r", 2, b"e2")
    assert table.get("alice", "a") == ("r", 1, b"e1") and table.get("bob", "a") is None
    table.add("alice", "c", "r", 3, b"e3")
    assert table.get("alice", "a") is None and len(table) == 2
    now[0] = 10.5
    assert table.get("alice", "b") is None  # past its window
    table.add("alice", "d", "r", 4, b"e4")
    assert len(table) == 1

