"""Chat servers as replicas sharing rooms through a real nats-server (JetStream, mTLS), loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from nats_support import NatsServer
from serve_process import ServeProcess

from securechat._gen import chat_pb2
from securechat.client import ChatSession, open_chat
from securechat.config import load_server_config
from securechat.errors import ConnectError
from securechat.server.app import start_server

Kind = chat_pb2.ChatEvent.Kind
SECURECHAT = [sys.executable, "-m", "securechat"]
TIMEOUT = 15.0


def broker_section(nats_server: NatsServer, replica: str, **overrides: Any) -> dict[str, Any]:
    cert, key = nats_server.pki.clients[replica]
    section: dict[str, Any] = {
        "type": "nats",
        "servers": [nats_server.url],
        "tls": {"ca": str(nats_server.pki.ca), "cert": str(cert), "key": str(key)},
        "publish_timeout": "2s",
        "connect_timeout": "3s",
        "reconnect_wait": "100ms",
        "retention": {"max_age": "1h", "max_bytes": 16 << 20},
    }
    section.update(overrides)
    return section


class Inbox:
    """Every event a chat stream receives, read in the background; `final` is how the stream ended."""

    def __init__(self, session: ChatSession) -> None:
        self.session = session
        self.events: list[chat_pb2.ChatEvent] = []
        self.final: BaseException | None = None
        self.done = asyncio.Event()
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for event in self.session:
                self.events.append(event)
        except (ConnectError, grpc.aio.AioRpcError) as exc:
            self.final = exc
        finally:
            self.done.set()

    def messages(self) -> list[tuple[str, str, str]]:
        return [(e.id, e.sender, e.text) for e in self.events if e.kind == Kind.MESSAGE]

    async def wait_for(self, predicate: Callable[[Inbox], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {self.messages()} final={self.final}")
            await asyncio.sleep(0.02)

    async def wait_texts(self, *texts: str) -> None:
        await self.wait_for(lambda box: set(texts) <= {t for _, _, t in box.messages()}, f"messages {texts}")


@contextlib.asynccontextmanager
async def chatting(deployment: Any, identity: str, port: int, *, last_event_id: str | None = None) -> AsyncIterator[Inbox]:
    config = deployment.client(identity, port, name=f"{identity}-{port}.yaml")
    metadata = [("last-event-id", last_event_id)] if last_event_id else []
    async with open_chat(config, metadata=metadata) as session:
        inbox = Inbox(session)
        try:
            yield inbox
        finally:
            session.cancel()
            await inbox.done.wait()


@pytest.fixture
def serve_processes() -> Iterator[Callable[[Path, str], ServeProcess]]:
    started: list[ServeProcess] = []

    def run(cwd: Path, config: str) -> ServeProcess:
        process = ServeProcess(cwd, config, listen=None)
        started.append(process)
        return process

    yield run
    for process in started:
        process.kill()


async def test_members_on_two_replicas_see_one_order(nats_server: NatsServer, deployment, start) -> None:
    """alice on replica A and bob on replica B, both sending: both see the same events, ids = stream sequence."""
    a = await start(broker=broker_section(nats_server, "replica-a"))
    b = await start(deployment.server(broker=broker_section(nats_server, "replica-b")))
    async with chatting(deployment, "alice", a.port) as alice, chatting(deployment, "bob", b.port) as bob:
        await alice.session.join("general")
        await alice.wait_for(lambda box: any(e.kind == Kind.JOIN for e in box.events), "alice's JOIN")
        await bob.session.join("general")
        await alice.wait_for(lambda box: sum(e.kind == Kind.JOIN for e in box.events) == 2, "bob's JOIN on A")
        for n in range(10):
            await alice.session.send(f"a{n}", room="general")
            await bob.session.send(f"b{n}", room="general")
        texts = [f"{who}{n}" for n in range(10) for who in "ab"]
        await alice.wait_texts(*texts)
        await bob.wait_texts(*texts)
    seen_by_bob = [(e.id, e.kind, e.sender, e.text) for e in bob.events]
    seen_by_alice = [(e.id, e.kind, e.sender, e.text) for e in alice.events]
    assert seen_by_bob == seen_by_alice[1:]  # alice also saw her own JOIN, before bob was there
    ids = [int(e.id) for e in alice.events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert seen_by_alice[:2] == [(str(ids[0]), Kind.JOIN, "alice", ""), (str(ids[1]), Kind.JOIN, "bob", "")]


async def test_resume_on_another_replica_after_a_kill(nats_server: NatsServer, deployment, start, serve_processes) -> None:
    """Replica A (a `securechat serve` process) is SIGKILLed mid-chat; alice resumes on B with last-event-id: exactly what she missed."""
    deployment.server_yaml("a.yaml", broker=broker_section(nats_server, "replica-a"))
    a = serve_processes(deployment.root, "a.yaml")
    a_port = int(a.wait_for(r"listening on 127\.0\.0\.1:(\d+)").group(1))
    b = await start(deployment.server(broker=broker_section(nats_server, "replica-b")))
    async with chatting(deployment, "bob", b.port) as bob:
        await bob.session.join("general")
        async with chatting(deployment, "alice", a_port) as alice:
            await alice.session.send("hello from A", room="general")
            await alice.wait_texts("hello from A")  # alice is in the room on A
            await bob.session.send("hi alice", room="general")
            await alice.wait_texts("hello from A", "hi alice")
            last_seen = alice.events[-1].id
            a.kill()
            await alice.done.wait()
            assert alice.final is not None  # told, not silently stalled
        missed = [f"missed-{n}" for n in range(5)]
        for text in missed:
            await bob.session.send(text, room="general")
        await bob.wait_texts(*missed)
        async with chatting(deployment, "alice", b.port, last_event_id=last_seen) as back:
            await back.session.join("general")
            await back.wait_texts(*missed)
            await back.session.send("back on B", room="general")
            await back.wait_texts("back on B")
            await bob.wait_texts("back on B")
    replayed = [(e.sender, e.text) for e in back.events if e.kind == Kind.MESSAGE]
    assert replayed == [("bob", text) for text in missed] + [("alice", "back on B")]
    ids = [int(e.id) for e in back.events]
    assert len(ids) == len(set(ids)) and ids == sorted(ids)
    assert min(ids) > int(last_seen)
    assert [e.id for e in bob.events if e.id in {x.id for x in back.events}] == [e.id for e in back.events]


async def test_nats_restart_mid_chat(nats_server: NatsServer, deployment, start) -> None:
    """NATS restarts: a send during the outage ends the sender's stream with UNAVAILABLE naming the broker; replicas reconnect; nothing accepted is lost."""
    a = await start(broker=broker_section(nats_server, "replica-a"))
    b = await start(deployment.server(broker=broker_section(nats_server, "replica-b")))
    async with chatting(deployment, "bob", b.port) as bob:
        await bob.session.join("general")
        async with chatting(deployment, "alice", a.port) as alice:
            await alice.session.send("before", room="general")
            await bob.wait_texts("before")
            last_seen = alice.events[-1].id
            nats_server.stop()
            deadline = time.monotonic() + TIMEOUT
            while a.service._hub._shared.connected:  # noqa: SLF001 - waiting for the replica to notice
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            await alice.session.send("during", room="general")
            await alice.done.wait()
        assert isinstance(alice.final, ConnectError)
        # UNAVAILABLE, as the client words it, with the server's reason.
        assert re.match(r"server unavailable at localhost:\d+: not accepted by the broker \(NATS JetStream\): room general: message not accepted", str(alice.final))
        nats_server.start()
        deadline = time.monotonic() + TIMEOUT
        while not (a.service._hub._shared.connected and b.service._hub._shared.connected):  # noqa: SLF001
            assert time.monotonic() < deadline, "the replicas did not reconnect to NATS by themselves"
            await asyncio.sleep(0.02)
        async with chatting(deployment, "alice", a.port, last_event_id=last_seen) as again:
            # The replicas reconnect by themselves; a send may need a moment while JetStream comes back.
            await again.session.send("after", room="general")
            await again.wait_texts("after")
            await bob.wait_texts("after")
    assert [t for _, _, t in bob.messages()] == ["before", "after"]  # "during" was refused, never delivered
    assert bob.final is None or "CANCELLED" in str(bob.final)


def test_serve_refused_by_nats_with_a_foreign_certificate(deployment, nats_server: NatsServer) -> None:
    """`securechat serve` whose broker client certificate is from another CA exits 1 with one line naming NATS."""
    deployment.server_yaml("intruder.yaml", broker=broker_section(nats_server, "intruder", connect_timeout="2s"))
    done = subprocess.run(
        [*SECURECHAT, "serve", "--config", "intruder.yaml"], cwd=deployment.root, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    assert re.match(r"error: cannot connect to NATS at tls://127\.0\.0\.1:\d+: \[SSL: TLSV1_ALERT_UNKNOWN_CA\]", errors[0]), errors[0]


async def test_server_config_without_broker_stays_in_memory(deployment, start) -> None:
    """No broker section: the in-memory hub, no NATS client loaded by the server."""
    running = await start()
    assert running.config.broker is None
    assert type(running.service._hub).__name__ == "RoomHub"  # noqa: SLF001


def test_plaintext_broker_url_refused_without_insecure(deployment, nats_server: NatsServer) -> None:
    """A nats:// URL is a config error unless broker.insecure is true."""
    from securechat.errors import ConfigError

    path = deployment.server_yaml("plain.yaml", broker={"type": "nats", "servers": ["nats://127.0.0.1:4222"]})
    with pytest.raises(ConfigError, match=r"plain\.yaml: broker\.servers"):
        load_server_config(path)


async def test_start_server_refused_leaves_no_connection(deployment, nats_server: NatsServer) -> None:
    """start_server raises BrokerUnavailable for a foreign certificate before any port opens."""
    from securechat.errors import BrokerUnavailable

    config = deployment.server(broker=broker_section(nats_server, "intruder", connect_timeout="2s"))
    with pytest.raises(BrokerUnavailable, match="cannot connect to NATS"):
        await start_server(config)
