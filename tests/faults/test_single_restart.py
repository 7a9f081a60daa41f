"""A single in-memory server SIGKILLed after accepting a message whose echo never reached its sender (real processes).

The server forgets the `client_msg_id`s it accepted when it dies. alice's
message reaches bob, her own echo is held in the proxy, the server is
killed and started again on the same port: resending would post it a
second time to bob. The session must not resend it but report it
(`Unconfirmed`): delivered once, or the sender is told. The twin: the
same held echo with the connection dropped and the server alive -- the
session resends with the same id, the server answers with the original,
bob still has it once and alice has her echo.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from fault_clients import CHANNEL_OPTIONS, HARNESS_BACKOFF
from fault_procs import Proxy, ServerProcess, issue_certificates
from fault_run import LIMITS

from securechat._gen import chat_pb2
from securechat.client.channel import Channel
from securechat.client.reconnect import HistoryLost, ReconnectingChat, SessionStatus, Unconfirmed
from securechat.config import load_client_config
from securechat.tls.credentials import channel_credentials
from securechat.tls.material import load_client_material

ROOM = "general"


@dataclass
class Member:
    chat: ReconnectingChat
    events: list[chat_pb2.ChatEvent] = field(default_factory=list)
    statuses: list[SessionStatus] = field(default_factory=list)

    def texts(self) -> list[str]:
        return [e.text for e in self.events if e.kind == chat_pb2.ChatEvent.Kind.MESSAGE]


async def _until(predicate: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


@pytest.fixture
async def single(tmp_path: Path) -> AsyncIterator[tuple[ServerProcess, Proxy, dict[str, Member]]]:
    certs = issue_certificates(tmp_path / "certs", clients=["alice", "bob"], replicas=[])
    server = ServerProcess(tmp_path, certs, "server", cluster=None, limits=LIMITS)
    server.start()
    await server.wait_listening()
    proxy = Proxy([("server", server.port)])
    members: dict[str, Member] = {}
    channels: list[grpc.aio.Channel] = []
    readers: list[asyncio.Task[None]] = []
    try:
        for name in ("alice", "bob"):
            cert, key = certs.pair(name)
            config_file = tmp_path / f"{name}.yaml"
            config_file.write_text(
                f"target: localhost:{proxy.front(name)}\ntls: {{ca: {certs.ca}, cert: {cert}, key: {key}}}\n", encoding="utf-8"
            )
            config = load_client_config(config_file)
            material = load_client_material(config)
            assert material is not None
            raw = grpc.aio.secure_channel(str(config.target), channel_credentials(material), options=CHANNEL_OPTIONS)
            channels.append(raw)
            member = Member(ReconnectingChat(Channel(config, material, raw), backoff=HARNESS_BACKOFF, on_gap=None, on_status=None))
            member.chat._on_status = member.statuses.append

            async def read(member: Member = member) -> None:
                async for event in member.chat:
                    member.events.append(event)

            readers.append(asyncio.ensure_future(read()))
            await member.chat.join(ROOM)
            members[name] = member
        await _until(lambda: all(any(e.kind == chat_pb2.ChatEvent.Kind.JOIN and e.sender == n for e in m.events) for n, m in members.items()), "joined")
        yield server, proxy, members
    finally:
        for member in members.values():
            await member.chat.close()
        for reader in readers:
            reader.cancel()
        for raw in channels:
            await raw.close()
        proxy.close()
        await server.process.terminate(timeout=10)


async def _send_with_echo_held(proxy: Proxy, members: dict[str, Member], text: str) -> None:
    """alice sends TEXT while her downstream is held: bob gets it, alice's echo waits in the proxy."""
    alice, bob = members["alice"], members["bob"]
    proxy.stall("alice", 30.0, down_only=True)
    await alice.chat.send(text, room=ROOM)
    await _until(lambda: text in bob.texts(), "bob received the message")
    assert (ROOM, text) in alice.chat.unacknowledged


@pytest.mark.timeout(120)
async def test_sigkilled_single_server_the_sender_is_told_not_resent(single: tuple[ServerProcess, Proxy, dict[str, Member]]) -> None:
    server, proxy, members = single
    alice, bob = members["alice"], members["bob"]
    await _send_with_echo_held(proxy, members, "before the kill")
    await server.process.kill()  # SIGKILL: the accepted ids die with the process
    proxy.drop("alice")  # the held echo goes with the connection
    proxy.drop("bob")
    server.start()
    await server.wait_listening()
    await _until(lambda: any(isinstance(s, HistoryLost) for s in alice.statuses), "alice resumed on the new run")
    await alice.chat.send("after the restart", room=ROOM)
    await _until(lambda: "after the restart" in bob.texts() and "after the restart" in alice.texts(), "the next message")
    await asyncio.sleep(0.5)  # a late resend would show up by now
    assert bob.texts().count("before the kill") == 1  # delivered once (by the killed run), never twice
    assert "before the kill" not in alice.texts()  # her echo died with the connection; she is told instead:
    told = [s for s in alice.statuses if isinstance(s, Unconfirmed)]
    assert [(s.room, s.text) for s in told] == [(ROOM, "before the kill")] and told[0].client_msg_id
    assert alice.statuses.index(told[0]) > next(i for i, s in enumerate(alice.statuses) if isinstance(s, HistoryLost))
    assert alice.chat.unconfirmed == [(ROOM, "before the kill")] and alice.chat.unacknowledged == []


@pytest.mark.timeout(120)
async def test_dropped_connection_same_server_resends_once(single: tuple[ServerProcess, Proxy, dict[str, Member]]) -> None:
    """The twin: the server still remembers the id, so the session resends it and gets the original as its echo."""
    _, proxy, members = single
    alice, bob = members["alice"], members["bob"]
    await _send_with_echo_held(proxy, members, "held echo")
    proxy.drop("alice")
    await _until(lambda: "held echo" in alice.texts(), "alice's echo after the resend")
    await alice.chat.send("next", room=ROOM)
    await _until(lambda: "next" in bob.texts(), "the next message")
    assert bob.texts().count("held echo") == 1 and alice.texts().count("held echo") == 1
    assert alice.chat.unacknowledged == [] and alice.chat.unconfirmed == []
    assert not any(isinstance(s, Unconfirmed) for s in alice.statuses)


def test_the_chat_command_says_which_line_may_not_have_been_delivered() -> None:
    """`securechat chat` prints an Unconfirmed status as one error line naming the room and the text (inert)."""
    from securechat.cli.chat import View

    view = View(me="alice", show_ids=False, interactive=False, unicode=True)
    line = "".join(text for _, text in view.status(Unconfirmed("general", "hi\x1b[2J", "id-1")))
    assert line == (
        'error: may not have been delivered to [general]: "hi\\x1b[2J" was sent before the server restarted and never'
        " confirmed; it was not resent (it could show twice). Send it again if it is missing."
    )
