"""Connection floods from unauthenticated or abusive clients (issue 13), scaled down, each beside its passing twin.

Real servers on 127.0.0.1:0, raw TCP and raw HTTP/2 (`flood_clients`) on one
side, securechat's own client as the good client on the other. Full-size
attacks and the good client's latency under them: benchmarks/floods.py.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import urllib.error
import urllib.request

import grpc
import pytest
from flood_clients import RawH2, closed_by_server, silent_connections, tls_context
from grpc_health.v1 import health_pb2, health_pb2_grpc

from securechat._gen import chat_pb2
from securechat.client import open_channel, say_hello
from securechat.errors import SecureChatError
from securechat.protocol import Reason, reason_of
from securechat.server import metrics as metrics_module
from securechat.server.connections import ConnectionGuard, GuardLimits

STEP = 5.0


async def good_hello(deployment, port: int, *, within: float = STEP) -> float:
    """Seconds until a fresh SayHello as bob succeeds, trying again until WITHIN; raises the last error."""
    started = time.monotonic()
    while True:
        try:
            async with open_channel(deployment.client("bob", port)) as channel:
                assert await say_hello(channel, timeout=1.0) == "Hello, bob!"
            return time.monotonic() - started
        except SecureChatError:
            if time.monotonic() - started > within:
                raise
            await asyncio.sleep(0.1)


async def wait_until(predicate, seconds: float = STEP) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return predicate()


# -- silent TCP connections (no TLS ClientHello) ---------------------------------


async def test_silent_connections_beyond_max_handshakes_are_closed_and_a_client_gets_in(deployment, start, caplog):
    """40 silent connections against max_connections 20 + max_handshakes 5: the oldest are closed, bob is served."""
    caplog.set_level(logging.WARNING, logger="securechat.server.connections")
    # A handshake deadline far away: only the guard can make room here.
    server = await start(limits={"max_connections": 20, "max_handshakes": 5, "handshake_timeout_seconds": 60})
    silent = await asyncio.to_thread(silent_connections, server.port, 40)
    try:
        assert await good_hello(deployment, server.port, within=6.0) < 6.0
        assert await wait_until(lambda: server.guards[0].handshaking <= 5)
        assert server.guards[0].closed["handshake"] >= 15
        assert closed_by_server(silent) >= 30  # 15 refused by core's cap at once, the rest closed by the guard
        assert "have not completed the TLS handshake (limits.max_handshakes 5): closed the" in caplog.text
    finally:
        for sock in silent:
            sock.close()


async def test_with_the_guard_switched_off_only_cores_cap_applies(deployment, start, caplog):
    """limits.connection_guard false: the same 40 silent connections are left open (core refuses beyond its cap), and it is logged."""
    caplog.set_level(logging.WARNING, logger="securechat.server.app")
    server = await start(
        limits={"max_connections": 20, "max_handshakes": 5, "handshake_timeout_seconds": 60, "connection_guard": False}
    )
    assert "limits.connection_guard is false" in caplog.text
    silent = await asyncio.to_thread(silent_connections, server.port, 40)
    try:
        await asyncio.sleep(2.5)  # two polls a running guard would have made
        assert server.guards[0].closed["handshake"] == 0
        assert closed_by_server(silent) <= 15  # only what core's cap (max_connections + max_handshakes = 25) refused
    finally:
        for sock in silent:
            sock.close()


async def test_a_few_silent_connections_within_max_handshakes_are_left_to_the_deadline(deployment, start):
    """Twin: 3 silent connections under max_handshakes 5 stay open (until the deadline) and bob is served at once."""
    server = await start(limits={"max_connections": 20, "max_handshakes": 5, "handshake_timeout_seconds": 60})
    silent = await asyncio.to_thread(silent_connections, server.port, 3)
    try:
        assert await good_hello(deployment, server.port, within=0.0) < 1.0
        await asyncio.sleep(2.5)  # two polls of the guard
        assert closed_by_server(silent) == 0
        assert server.guards[0].closed["handshake"] == 0
        assert server.guards[0].handshaking == 3
    finally:
        for sock in silent:
            sock.close()


async def test_a_handshake_not_finished_within_the_deadline_is_closed(deployment, start):
    """handshake_timeout_seconds 1: silent connections are closed by gRPC after about a second, not 120 s."""
    server = await start(limits={"handshake_timeout_seconds": 1})
    silent = await asyncio.to_thread(silent_connections, server.port, 5)
    try:
        started = time.monotonic()
        assert await wait_until(lambda: closed_by_server(silent) == 5, seconds=4.0)
        assert 0.5 < time.monotonic() - started < 4.0
        assert await good_hello(deployment, server.port, within=0.0) < 1.0
    finally:
        for sock in silent:
            sock.close()


# -- HTTP/2 rapid reset and idle streams -----------------------------------------


async def test_rapid_reset_closes_the_connection_and_others_are_served(deployment, start, caplog):
    """alice sends HEADERS+RST_STREAM 2,000/s: her connection is closed within seconds, bob is served meanwhile."""
    caplog.set_level(logging.WARNING, logger="securechat.server.connections")
    server = await start(limits={"max_resets_per_second": 20})  # 200 in 10 s
    attacker = await asyncio.to_thread(RawH2, server.port, context=tls_context(deployment.root / "certs"))
    try:
        attack = asyncio.create_task(asyncio.to_thread(attacker.rapid_reset, 20_000, per_second=2000))
        await asyncio.sleep(0.5)
        assert await good_hello(deployment, server.port, within=3.0) < 3.0
        outcome = await asyncio.wait_for(attack, 15)
    finally:
        attacker.close()
    assert outcome.closed_by_server
    assert outcome.streams < 20_000
    assert server.guards[0].closed["resets"] == 1
    assert "its client reset" in caplog.text
    assert "limits.max_resets_per_second 20 allows 200" in caplog.text


async def test_a_client_cancelling_a_few_calls_keeps_its_connection(deployment, start):
    """Twin: 100 resets in a burst, under the limit of 200 in 10 s: the connection stays open."""
    server = await start(limits={"max_resets_per_second": 20})
    client = await asyncio.to_thread(RawH2, server.port, context=tls_context(deployment.root / "certs"))
    try:
        outcome = await asyncio.to_thread(client.rapid_reset, 100)
        await asyncio.sleep(2.5)  # two polls of the guard
        await asyncio.to_thread(client._read, wait=0.2)
        assert not outcome.closed_by_server
        assert not client.outcome.closed_by_server
        assert server.guards[0].closed["resets"] == 0
    finally:
        client.close()


@pytest.mark.parametrize(("streams", "refused"), [(10, 0), (60, 50)])
async def test_streams_beyond_max_concurrent_streams_are_refused(deployment, start, streams, refused):
    """A client ignoring SETTINGS_MAX_CONCURRENT_STREAMS (10) gets REFUSED_STREAM beyond it; within it, nothing is refused."""
    server = await start(limits={"max_concurrent_streams": 10})
    client = await asyncio.to_thread(RawH2, server.port, context=tls_context(deployment.root / "certs"))
    try:
        outcome = await asyncio.to_thread(client.idle_streams, streams)
    finally:
        client.close()
    assert outcome.streams == streams
    assert outcome.refused == refused
    assert not outcome.closed_by_server


# -- the plaintext health port ---------------------------------------------------


async def test_health_port_caps_open_calls(deployment, start):
    """health_max_streams 5: five Watch streams are served, the sixth is refused with too-many-streams; Check works again after."""
    server = await start(health_port=0, limits={"health_max_streams": 5})
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.health_port}")
    stub = health_pb2_grpc.HealthStub(channel)
    watches = [stub.Watch(health_pb2.HealthCheckRequest(service="")) for _ in range(5)]
    try:
        for watch in watches:
            assert (await asyncio.wait_for(watch.read(), STEP)).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=STEP)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason_of(refused.value) is Reason.TOO_MANY_STREAMS
        assert "the limit health_max_streams is 5" in refused.value.details()
        watches.pop().cancel()
        assert await wait_until(lambda: server.health_cap.open == 4)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=STEP)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        for watch in watches:
            watch.cancel()
        await channel.close()


async def test_health_port_caps_connections(deployment, start):
    """health_max_connections 4: a fifth TCP connection is closed at once by gRPC; within the cap, a probe is served."""
    server = await start(health_port=0, limits={"health_max_connections": 4, "handshake_timeout_seconds": 60})
    silent = await asyncio.to_thread(silent_connections, server.health_port, 3)
    try:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.health_port}")
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=STEP)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        extra = await asyncio.to_thread(silent_connections, server.health_port, 1)
        silent += extra
        assert await wait_until(lambda: closed_by_server(extra) == 1, seconds=2.0)
        assert closed_by_server(silent[:3]) == 0
        await channel.close()
    finally:
        for sock in silent:
            sock.close()


# -- the metrics port ------------------------------------------------------------


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=STEP) as reply:  # noqa: S310 - loopback
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize(
    ("path", "status", "text"),
    [("/metrics", 200, "securechat_streams 0.0"), ("/", 404, "metrics are at /metrics"), ("/metrics/../x", 404, "not found")],
)
async def test_metrics_port_serves_metrics_only(deployment, start, path, status, text):
    """GET /metrics is Prometheus text; every other path is 404."""
    server = await start(metrics_port=0)
    got_status, body = await asyncio.to_thread(_get, server.metrics_port, path)
    assert (got_status, text in body) == (status, True)


async def test_metrics_port_bounds_and_closes_idle_connections(deployment, start, monkeypatch):
    """metrics_max_connections 3: idle connections beyond are answered 503, the idle ones closed after REQUEST_SECONDS; /metrics then works."""
    monkeypatch.setattr(metrics_module, "REQUEST_SECONDS", 1.0)
    server = await start(metrics_port=0, limits={"metrics_max_connections": 3})
    port = server.metrics_port
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    await asyncio.sleep(0.3)
    extra = socket.create_connection(("127.0.0.1", port))
    try:
        extra.settimeout(STEP)
        assert (await asyncio.to_thread(extra.recv, 100)).startswith(b"HTTP/1.1 503")
        assert await wait_until(lambda: closed_by_server(idle) == 3, seconds=3.0)
        status, body = await asyncio.to_thread(_get, port, "/metrics")
        assert status == 200 and "securechat_connections_closed" in body
    finally:
        for sock in [*idle, extra]:
            sock.close()


async def refused_streams(deployment, port: int, count: int) -> int:
    """alice holds one chat stream and opens COUNT more, each refused (max_streams_per_identity 1); how many were refused."""
    async with open_channel(deployment.client("alice", port)) as alice:
        held = alice.stub.Chat()
        await held.write(chat_pb2.ChatMessage(room="r", text="hi"))
        while (await asyncio.wait_for(held.read(), STEP)).text != "hi":  # its JOIN first
            pass
        refused = 0
        for _ in range(count):
            call = alice.stub.Chat()
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await asyncio.wait_for(call.read(), STEP)
            refused += error.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        held.cancel()
    return refused


async def test_refusals_by_the_server_do_not_set_off_the_reset_scan(deployment, start):
    """40 streams the server refuses (RESOURCE_EXHAUSTED) in a window that allows 20 resets: no socket is read, none closed."""
    server = await start(limits={"max_resets_per_second": 2, "max_streams_per_identity": 1})
    await asyncio.sleep(1.5)  # the guard's first poll: what fails from here on is counted
    assert await refused_streams(deployment, server.port, 40) == 40
    await asyncio.sleep(2.5)  # two polls of the guard
    assert server.guards[0].scans == 0
    assert server.guards[0].closed["resets"] == 0
    assert await good_hello(deployment, server.port) < STEP


async def test_resets_beside_refusals_still_set_off_the_scan_and_close_the_resetting_connection(deployment, start):
    """Twin: the same refusals, and 100 client resets on another connection: the guard reads the sockets and closes that one."""
    server = await start(limits={"max_resets_per_second": 2, "max_streams_per_identity": 1})
    await asyncio.sleep(1.5)  # the guard's first poll: what fails from here on is counted
    assert await refused_streams(deployment, server.port, 40) == 40
    client = await asyncio.to_thread(RawH2, server.port, context=tls_context(deployment.root / "certs"))
    try:
        await asyncio.to_thread(client.rapid_reset, 100)
        assert await wait_until(lambda: server.guards[0].closed["resets"] == 1, 2 * STEP)
    finally:
        client.close()
    assert server.guards[0].scans >= 1


class CostlyGate(ConnectionGuard):
    """A guard whose server-wide read costs COST seconds of CPU more, as channelz's does with many connections."""

    cost = 0.0

    def _read_gate(self, now: float) -> bool:
        end = time.thread_time() + self.cost
        while time.thread_time() < end:
            pass
        return super()._read_gate(now)


@pytest.mark.parametrize(("cost", "reads"), [(0.0, 6), (0.02, 3), (0.1, 2)])
async def test_the_reset_gate_is_paced_by_its_own_cost(deployment, start, cost, reads):
    """Six polls a second apart read the gate every time when it is cheap, every ~2 s at 20 ms, every 5 s at 100 ms."""
    server = await start()
    limits = GuardLimits(max_handshakes=64, handshake_timeout_seconds=10.0, max_resets_per_second=100, cap=1000)
    guard = CostlyGate(name="test", port=server.port, server_id=server.guards[0]._server_id, limits=limits)
    guard.cost = cost
    for now in range(6):
        guard.poll(now=float(now))
    assert guard.gate_reads == reads
