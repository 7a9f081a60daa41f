"""securechat load report: fan-out vs a baseline, unary, handshakes, mTLS vs plaintext, issuance.

A report, never a test: it prints one JSON document with its parameters and
results, and a Markdown table on stderr. Everything runs on loopback and is
bounded in time and size.

    python -m benchmarks.load --quick    # N=100 and 1,000; a couple of minutes
    python -m benchmarks.load --full     # adds N=10,000 streams; longer phases
    python -m benchmarks.load --cluster --streams 100,1000   # 1 replica in memory vs 2 replicas + NATS

Fan-out: one server process (securechat, or benchmarks/baseline_server.py),
one room, N streams with distinct client certificates over N/10 connections
(10 streams per connection and certificate), S of them posting. Each message
carries its sender's sequence number and send time. Reported: deliveries/s
while senders keep a small window of messages in flight; p50/p99 delivery
latency at a light fixed rate; messages lost (every stream must get every
accepted message); stream connect time; server RSS per stream and server CPU
seconds per delivery, both read from /proc for the server's pid. Runs
alternate securechat and baseline (A/B/A/B) and report medians and ratios;
the p99 pools every round's latency phase (--light-seconds each, 10 s by
default), because one short round's p99 rests on a handful of messages.

--cluster: the same fan-out against one securechat replica in memory and
against two replicas sharing the room through a local nats-server (JetStream,
mTLS), N streams and the senders split over both replicas, alternating, in
the same run; reports the ratio, p99, lost, and the CPU cores each process
used (servers, nats-server, the load client): where the time goes.

--client go: the load comes from benchmarks/go/fanload (built from Debian's
Go packages by benchmarks/gofanout.py) instead of this process: the same
phases, about 1.5 us of CPU per delivery against the Python client's 15. The
default with --cluster: there the one-process Python client (0.8 of a core)
was the bottleneck, so the run measured it, not the replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc

from securechat import pki
from securechat._gen import chat_pb2, chat_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
STREAMS_PER_CONNECTION = 10
JOIN_BATCH = 500  # streams opened at once; see _fan_out
# The latency phase offers at most this many deliveries/s: about a quarter of
# what the baseline sustains here (~21,000/s at N=1,000), so "light" stays
# light at large N. At 20,000/s (the earlier cap) both servers ran near
# saturation and p99 measured the load client's queue, not delivery.
LIGHT_DELIVERIES = 5_000
Kind = chat_pb2.ChatEvent.Kind
# Servers a fan-out report can run. "-batched": the same securechat server,
# the load client opening ChatBatched instead of Chat. "securechat-public":
# securechat with limits.buffered_writes false (Chat's public context.write
# path). "securechat-before": the securechat of the checkout given with
# --before (same Python, same load).
SERVER_KINDS = (
    "securechat",
    "securechat-public",
    "securechat-batched",
    "securechat-before",
    "securechat-before-batched",
    "baseline",
    "grpc-go",
)
GO_SERVER: Path | None = None  # built once per report by benchmarks/gofanout.py
GO_CLIENT: Path | None = None  # --client go: benchmarks/go/fanload, built once per report
BEFORE: Path | None = None
SERVER_LIMITS = ""  # --server-limits: more `limits:` keys for this securechat's servers, e.g. "connection_guard: false"


# --------------------------------------------------------------------------- the machine under test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def proc_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Pki:
    root: Path
    ca: Path
    cert: Path
    key: Path
    clients: list[tuple[bytes, bytes]]  # (key, cert) PEM per client identity
    ca_pem: bytes


def make_pki(root: Path, clients: int) -> Pki:
    ca = pki.create_ca()
    store = pki.CertStore(root / "certs")
    store.write_ca(ca)
    store.write_leaves(
        [
            pki.issue_server_cert(ca, "server"),
            # For --cluster: the NATS server and one NATS client certificate per replica.
            pki.issue_server_cert(ca, "nats", sans=["localhost", "127.0.0.1"]),
            *(pki.issue_client_cert(ca, f"replica-{r}") for r in "ab"),
        ]
    )
    issued = [pki.issue_client_cert(ca, f"c{i}") for i in range(clients)]
    pems = [(pki.private_key_pem(leaf.key), pki.certificate_pem(leaf.cert)) for leaf in issued]
    certs = root / "certs"
    return Pki(root, certs / "ca.pem", certs / "server.pem", certs / "server-key.pem", pems, store.ca_cert_path.read_bytes())


class ServerProcess:
    """securechat or the baseline, in its own process on a free loopback port."""

    def __init__(
        self,
        kind: str,
        material: Pki,
        *,
        tls: bool = True,
        broker: str = "",
        log_level: str = "warning",
        port: int | None = None,
        limits: str = "",
    ) -> None:
        self.kind = kind
        self.port = port or free_port()
        listen = f"127.0.0.1:{self.port}"
        env = None
        if kind == "grpc-go":
            if GO_SERVER is None:
                raise RuntimeError("grpc-go server not built")
            command = [str(GO_SERVER), "-listen", listen]
            if tls:
                command += ["-cert", str(material.cert), "-key", str(material.key), "-ca", str(material.ca)]
        elif kind.startswith("securechat"):
            config = material.root / f"bench-{self.port}.yaml"
            tls_part = (
                f"tls: {{cert: {material.cert}, key: {material.key}, client_ca: {material.ca}}}\n" if tls else "insecure: true\n"
            )
            public = ", buffered_writes: false" if kind == "securechat-public" else ""
            if SERVER_LIMITS and not kind.startswith("securechat-before"):
                public += f", {SERVER_LIMITS}"
            config.write_text(
                f"listen: {listen}\n{tls_part}log: {{level: {log_level}}}\n"
                "limits: {max_messages_per_second: 1000000, message_burst: 1000000, queue_size: 4096, "
                f"history_size: 4096, max_streams_per_identity: 100{public}{limits}}}\n" + broker
            )
            command = [sys.executable, "-m", "securechat", "serve", "--config", str(config)]
            if kind.startswith("securechat-before"):
                # The same load against another checkout's server (e.g. main before a change), in the same run.
                if BEFORE is None:
                    raise RuntimeError("--before DIR not given")
                env = {**os.environ, "PYTHONPATH": str(BEFORE)}
        else:
            command = [sys.executable, str(ROOT / "benchmarks" / "baseline_server.py"), "--listen", listen]
            if tls:
                command += ["--cert", str(material.cert), "--key", str(material.key), "--ca", str(material.ca)]
        # BENCH_SERVER_LOG=FILE keeps the server's own log (warnings only) for a post-mortem.
        log = open(os.environ["BENCH_SERVER_LOG"], "ab") if os.environ.get("BENCH_SERVER_LOG") else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(command, cwd=BEFORE if env else ROOT, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"{kind} server did not start")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def channel(material: Pki, port: int, client: int, *, tls: bool = True) -> grpc.aio.Channel:
    target = f"localhost:{port}"
    # Each benchmark connection is its own TCP connection: no subchannel sharing.
    options = [("grpc.use_local_subchannel_pool", 1)]
    if not tls:
        return grpc.aio.insecure_channel(target, options=options)
    key, cert = material.clients[client]
    credentials = grpc.ssl_channel_credentials(root_certificates=material.ca_pem, private_key=key, certificate_chain=cert)
    return grpc.aio.secure_channel(target, credentials, options=options)


# --------------------------------------------------------------------------- fan-out


class Stream:
    __slots__ = ("call", "received", "latencies", "record", "joined", "sizes")

    def __init__(self, call: grpc.aio.StreamStreamCall, sizes: Counter[int]) -> None:
        self.call = call
        self.received = 0
        self.latencies: list[float] = []
        self.record = False
        self.joined = asyncio.Event()
        self.sizes = sizes  # events per response received, of the current phase

    def _take(self, event: chat_pb2.ChatEvent) -> None:
        if event.kind != Kind.MESSAGE:
            return
        self.received += 1
        if self.received == 1:
            self.joined.set()
        if self.record:
            sent_ns = int(event.text.split(" ", 2)[1])
            self.latencies.append((time.time_ns() - sent_ns) / 1e6)

    async def pump(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for event in self.call:
                self.sizes[1] += 1
                self._take(event)

    async def pump_batches(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for batch in self.call:
                self.sizes[len(batch.events)] += 1
                for event in batch.events:
                    self._take(event)


def _open(kind: str, ch: grpc.aio.Channel, sizes: Counter[int]) -> Stream:
    stub = chat_pb2_grpc.ChatServiceStub(ch)
    return Stream(stub.ChatBatched() if kind.endswith("-batched") else stub.Chat(), sizes)


def _size_summary(sizes: Counter[int]) -> dict:
    """Events per response: how many responses, their mean and percentiles (weighted by response)."""
    total = sum(sizes.values())
    if not total:
        return {"responses": 0}
    ordered = sorted(sizes.items())

    def pct(p: float) -> int:
        rank, seen = total * p / 100, 0
        for size, count in ordered:
            seen += count
            if seen >= rank:
                return size
        return ordered[-1][0]

    events = sum(size * count for size, count in ordered)
    return {
        "responses": total,
        "mean": round(events / total, 2),
        "p50": pct(50),
        "p90": pct(90),
        "p99": pct(99),
        "max": ordered[-1][0],
        "share_of_single_event_responses": round(sizes.get(1, 0) / total, 3),
    }


async def fan_out(
    kind: str,
    material: Pki,
    n: int,
    senders: int,
    seconds: float,
    rate: float,
    *,
    tls: bool = True,
    light_seconds: float | None = None,
    samples: list[float] | None = None,
) -> dict:
    server = ServerProcess(kind, material, tls=tls)
    try:
        return await _fan_out([server], material, n, senders, seconds, rate, tls=tls, light_seconds=light_seconds, samples=samples)
    finally:
        server.stop()


async def _fan_out(
    servers: list[ServerProcess],
    material: Pki,
    n: int,
    senders: int,
    seconds: float,
    rate: float,
    *,
    tls: bool,
    extra_pids: dict[str, int] | None = None,
    light_seconds: float | None = None,
    samples: list[float] | None = None,
) -> dict:
    """N streams over N/10 connections; connection c goes to servers[c % len(servers)], so streams and senders alternate replicas.

    The light phase lasts LIGHT_SECONDS (default: SECONDS); its latencies are
    added to SAMPLES when given, so rounds can be pooled. With --client go
    (and TLS) the Go load client does the same from its own process.
    """
    server = servers[0]
    pids = [s.pid for s in servers]
    connections = max(1, n // STREAMS_PER_CONNECTION)
    if len(servers) > 1:
        connections = max(connections, 2 * senders)
    if GO_CLIENT is not None and tls:
        return await _go_fan_out(servers, material, n, connections, senders, seconds, rate, extra_pids, light_seconds, samples)
    rss_idle = sum(proc_rss_bytes(pid) for pid in pids)
    started = time.perf_counter()
    channels = [channel(material, servers[i % len(servers)].port, i % len(material.clients), tls=tls) for i in range(connections)]
    streams: list[Stream] = []
    pumps: list[asyncio.Task] = []
    batched = server.kind.endswith("-batched")
    joining: Counter[int] = Counter()
    # Streams arrive in batches, each confirmed joined before the next opens.
    # gRPC core queues calls the application has not picked up yet and sheds
    # that queue beyond `grpc.server.max_pending_requests` (1,000) with random
    # early drops up to the hard limit (3,000), answering a bare CANCELLED;
    # opening 2,000+ streams in one burst measured that load shedding (on any
    # grpc.aio server, the baseline too), not the server holding the streams.
    give_up = time.perf_counter() + 300
    for batch_start in range(0, n, JOIN_BATCH):
        batch = [_open(server.kind, channels[i % connections], joining) for i in range(batch_start, min(n, batch_start + JOIN_BATCH))]
        streams += batch
        await asyncio.gather(*(s.call.write(chat_pb2.ChatMessage(room="bench")) for s in batch))
        pumps += [asyncio.create_task(s.pump_batches() if batched else s.pump()) for s in batch]
        # A stream has joined when a probe message comes back to it; probe until all have.
        while not all(s.joined.is_set() for s in batch):
            if time.perf_counter() > give_up:
                raise RuntimeError(f"only {sum(s.joined.is_set() for s in streams)} of {n} streams joined")
            await streams[0].call.write(chat_pb2.ChatMessage(room="bench", text=f"-1 {time.time_ns()} probe"))
            # Every probe goes to every joined stream: keep probing to a few
            # thousand deliveries/s so that it does not starve the joins.
            await asyncio.sleep(max(0.1, len(streams) / 4000))
    connect_seconds = time.perf_counter() - started
    await asyncio.sleep(0.5)  # let the last probes arrive
    rss_streams = sum(proc_rss_bytes(pid) for pid in pids)
    loaded: Counter[int] = Counter()
    for s in streams:
        s.received = 0
        s.sizes = loaded
    posted = 0

    async def send_window(sender: Stream, deadline: float, window: int) -> int:
        sent = 0
        base = sender.received
        while time.perf_counter() < deadline:
            while sent - (sender.received - base) >= window:
                await asyncio.sleep(0.0005)
                if time.perf_counter() >= deadline:
                    return sent
            await sender.call.write(chat_pb2.ChatMessage(room="bench", text=f"{sent} {time.time_ns()} x"))
            sent += 1
        return sent

    # Throughput: each sender keeps up to `window` messages in flight. A
    # sender's own copy counts all messages of the room, so with S senders
    # the window is shared; it is small enough that queues never overflow.
    before = sum(s.received for s in streams)
    extra = extra_pids or {}
    cpu0 = {pid: proc_cpu_seconds(pid) for pid in [*pids, *extra.values()]}
    profiler = _start_profile(server, n, seconds)
    client0, t0 = time.process_time(), time.perf_counter()
    sent = await asyncio.gather(*(send_window(streams[i], t0 + seconds, 8 * senders) for i in range(senders)))
    posted += sum(sent)
    await _drain(streams, posted, max(30.0, posted * n / 5000))
    elapsed = time.perf_counter() - t0
    client_cpu = time.process_time() - client0
    spent = {pid: proc_cpu_seconds(pid) - cpu0[pid] for pid in cpu0}
    if profiler is not None:
        profiler.wait()
    deliveries = sum(s.received for s in streams) - before

    # Latency at a light fixed offered rate.
    light_sizes: Counter[int] = Counter()
    for s in streams:
        s.record = True
        s.sizes = light_sizes
    interval = senders / rate
    light = 0
    t1 = time.perf_counter()
    while time.perf_counter() - t1 < (light_seconds or seconds):
        for i in range(senders):
            await streams[i].call.write(chat_pb2.ChatMessage(room="bench", text=f"{light} {time.time_ns()} light"))
            light += 1
        await asyncio.sleep(interval)
    posted += light
    await _drain(streams, posted, max(30.0, posted * n / 5000))
    latencies = sorted(x for s in streams for x in s.latencies)
    if samples is not None:
        samples.extend(latencies)
    lost = sum(posted - s.received for s in streams)
    for s in streams:
        s.call.cancel()
    for task in pumps:
        task.cancel()
    await asyncio.gather(*pumps, return_exceptions=True)
    await asyncio.gather(*(c.close() for c in channels))
    return _report(
        servers,
        spent=spent,
        extra=extra,
        elapsed=elapsed,
        client_cpu=client_cpu,
        sent=sum(sent),
        deliveries=deliveries,
        streams=n,
        connections=connections,
        senders=senders,
        tls=tls,
        p50=_pct(latencies, 50),
        p99=_pct(latencies, 99),
        rate=rate,
        light_seconds=light_seconds or seconds,
        lost=lost,
        connect_seconds=connect_seconds,
        rss_per_stream=(rss_streams - rss_idle) / n,
        loaded=loaded,
        light_sizes=light_sizes,
    )


def _report(
    servers: list[ServerProcess],
    *,
    spent: dict[int, float],
    extra: dict[str, int],
    elapsed: float,
    client_cpu: float,
    sent: int,
    deliveries: int,
    streams: int,
    connections: int,
    senders: int,
    tls: bool,
    p50: float,
    p99: float,
    rate: float,
    light_seconds: float,
    lost: int,
    connect_seconds: float,
    rss_per_stream: float,
    loaded: Counter[int],
    light_sizes: Counter[int],
) -> dict:
    """One fan-out run's report, whichever client made the load; SPENT: CPU seconds per pid over the throughput phase."""
    pids = [s.pid for s in servers]
    # Where the time goes in the throughput phase: CPU seconds per wall second of each process.
    cpu_share = {f"server-{i}": round(spent[pid] / elapsed, 2) for i, pid in enumerate(pids)}
    cpu_share |= {name: round(spent[pid] / elapsed, 2) for name, pid in extra.items()}
    cpu_share["load-client"] = round(client_cpu / elapsed, 2)
    cpu = sum(spent[pid] for pid in pids)
    return {
        "server": servers[0].kind,
        "replicas": len(servers),
        "cpu_cores_used": cpu_share,
        "messages_per_second": round(sent / elapsed),
        "streams": streams,
        "connections": connections,
        "senders": senders,
        "tls": tls,
        "deliveries_per_second": round(deliveries / elapsed),
        "server_cpu_us_per_delivery": round(cpu / max(deliveries, 1) * 1e6, 3),
        "latency_ms_p50": round(p50, 2),
        "latency_ms_p99": round(p99, 2),
        "light_rate_msgs_per_second": rate,
        "light_phase_seconds": light_seconds,
        "lost": lost,
        "connect_seconds": round(connect_seconds, 2),
        "server_rss_kb_per_stream": round(rss_per_stream / 1024, 1),
        "events_per_response_under_load": _size_summary(loaded),
        "events_per_response_light": _size_summary(light_sizes),
    }


async def _go_fan_out(
    servers: list[ServerProcess],
    material: Pki,
    n: int,
    connections: int,
    senders: int,
    seconds: float,
    rate: float,
    extra_pids: dict[str, int] | None,
    light_seconds: float | None,
    samples: list[float] | None,
) -> dict:
    """_fan_out's load from benchmarks/go/fanload: the same phases, the servers' CPU read between its phase lines."""
    assert GO_CLIENT is not None
    pids = [s.pid for s in servers]
    certs = material.root / "go-clients"
    certs.mkdir(exist_ok=True)
    for i, (key, cert) in enumerate(material.clients[:connections]):
        if not (certs / f"c{i}.pem").exists():
            (certs / f"c{i}-key.pem").write_bytes(key)
            (certs / f"c{i}.pem").write_bytes(cert)
    batched = servers[0].kind.endswith("-batched")
    command = [str(GO_CLIENT), "-addrs", ",".join(f"127.0.0.1:{s.port}" for s in servers), "-ca", str(material.ca)]
    command += ["-certs", str(certs), "-streams", str(n), "-connections", str(connections), "-senders", str(senders)]
    command += ["-window", str(8 * senders), "-seconds", str(seconds), "-light-rate", str(rate)]
    command += ["-light-seconds", str(light_seconds or seconds), "-join-batch", str(JOIN_BATCH), f"-batched={str(batched).lower()}"]
    rss_idle = sum(proc_rss_bytes(pid) for pid in pids)
    client = await asyncio.create_subprocess_exec(*command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, limit=1 << 24)
    assert client.stdin is not None and client.stdout is not None

    async def line(tag: str) -> dict:
        assert client.stdout is not None
        text = (await asyncio.wait_for(client.stdout.readline(), 600)).decode()
        if not text.startswith(tag + " "):
            raise RuntimeError(f"Go load client: expected {tag!r}, got {text[:200]!r} (exit {client.returncode})")
        return json.loads(text[len(tag) + 1 :])

    async def go_on() -> None:
        assert client.stdin is not None
        client.stdin.write(b"go\n")
        await client.stdin.drain()

    try:
        joined = await line("joined")
        rss_streams = sum(proc_rss_bytes(pid) for pid in pids)
        extra = extra_pids or {}
        cpu0 = {pid: proc_cpu_seconds(pid) for pid in [*pids, *extra.values()]}
        await go_on()
        loaded = await line("throughput")
        spent = {pid: proc_cpu_seconds(pid) - cpu0[pid] for pid in cpu0}
        await go_on()
        done = await line("done")
    finally:
        if client.returncode is None:
            client.kill()
        await client.wait()
    if samples is not None:
        samples.extend(done["latencies_ms"])
    report = _report(
        servers,
        spent=spent,
        extra=extra,
        elapsed=loaded["elapsed"],
        client_cpu=loaded["client_cpu_seconds"],
        sent=loaded["sent"],
        deliveries=loaded["deliveries"],
        streams=n,
        connections=connections,
        senders=senders,
        tls=True,
        p50=done["p50_ms"],
        p99=done["p99_ms"],
        rate=rate,
        light_seconds=light_seconds or seconds,
        lost=done["lost"],
        connect_seconds=joined["connect_seconds"],
        rss_per_stream=(rss_streams - rss_idle) / n,
        loaded=Counter({int(k): v for k, v in loaded["sizes"].items()}),
        light_sizes=Counter({int(k): v for k, v in done["light_sizes"].items()}),
    )
    return report | {"load_client": "go", "streams_ended_by_the_server": done["ended"]}


def _start_profile(server: ServerProcess, n: int, seconds: float) -> subprocess.Popen[bytes] | None:
    """With BENCH_PROFILE=DIR: a native py-spy profile of a Python server's throughput phase, as collapsed stacks in DIR."""
    out = os.environ.get("BENCH_PROFILE")
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not out or server.kind == "grpc-go" or not Path(py_spy).exists():
        return None
    path = Path(out) / f"{server.kind}-{n}-{server.port}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [py_spy, "record", "--native", "--threads", "--rate", "250", "--format", "raw"]
    command += ["--duration", str(max(1, int(seconds))), "--pid", str(server.pid), "-o", str(path)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _drain(streams: list[Stream], posted: int, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline and any(s.received < posted for s in streams):
        await asyncio.sleep(0.05)


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


# --------------------------------------------------------------------------- unary and handshakes


async def unary(material: Pki, seconds: float, concurrency: int) -> dict:
    server = ServerProcess("securechat", material)
    try:
        async with channel(material, server.port, 0) as ch:
            stub = chat_pb2_grpc.ChatServiceStub(ch)
            await stub.SayHello(chat_pb2.HelloRequest())
            done = 0
            deadline = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    await stub.SayHello(chat_pb2.HelloRequest())
                    done += 1

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return {"say_hello_per_second": round(done / (time.perf_counter() - t0)), "concurrency": concurrency}
    finally:
        server.stop()


async def handshakes(material: Pki, seconds: float, concurrency: int) -> dict:
    server = ServerProcess("securechat", material)
    try:
        results = {}
        for label, parallel in (("sequential", 1), ("concurrent", concurrency)):
            done = 0
            deadline = time.perf_counter() + seconds

            async def worker(index: int, deadline: float = deadline) -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    # A new channel is a new TCP connection and a full mTLS handshake.
                    async with channel(material, server.port, (index + done) % len(material.clients)) as ch:
                        await chat_pb2_grpc.ChatServiceStub(ch).SayHello(chat_pb2.HelloRequest())
                    done += 1

            t0 = time.perf_counter()
            await asyncio.gather(*(worker(i) for i in range(parallel)))
            results[f"mtls_handshakes_per_second_{label}"] = round(done / (time.perf_counter() - t0), 1)
        results["handshake_concurrency"] = concurrency
        return results
    finally:
        server.stop()


# --------------------------------------------------------------------------- issuance


def issuance(root: Path, clients: int, rounds: int = 3) -> dict:
    """`securechat certs` (1 CA + 1 server + `clients` clients in one call) vs an openssl CLI loop.

    securechat runs ROUNDS times (median reported, every round listed), each
    into a new directory kept until the end, so one unlucky sub-second run
    does not decide the ratio. The openssl loop runs once; at ~35 s it
    averages out such noise by itself.

    Where ROOT is matters on ext4: allocating an inode skips, one by one,
    those freed recently in the same block group (`recently_deleted` in
    fs/ext4/ialloc.c; on the development VM "recently" lasted minutes).
    Under a /tmp where a test or benchmark run just deleted thousands of
    files, 2,000 creates take 1-1.5 s instead of 0.05 s. Set TMPDIR to a
    quiet directory to measure the tools rather than that; the directory
    used is reported.
    """
    cli = [sys.executable, "-m", "securechat", "certs"]
    names = [f"client{i}" for i in range(clients)]
    rounds_seconds = []
    for round_number in range(rounds):
        ours = root / f"issue-securechat-{round_number}"
        os.sync()  # flush what earlier phases left (deleted temp dirs) so neither side pays for it
        t0 = time.perf_counter()
        for args in (["init"], ["server", "server"], ["client", *names]):
            subprocess.run([*cli, *args, "--dir", str(ours)], check=True, capture_output=True)
        rounds_seconds.append(round(time.perf_counter() - t0, 3))
    securechat_seconds = statistics.median(rounds_seconds)

    theirs = root / "issue-openssl"
    theirs.mkdir()
    script = f"""
set -e
cd {theirs}
openssl ecparam -name prime256v1 -genkey -noout -out ca-key.pem
openssl req -x509 -new -key ca-key.pem -sha256 -days 3650 -subj /CN=bench-ca -out ca.pem 2>/dev/null
printf 'extendedKeyUsage=serverAuth\\nsubjectAltName=DNS:localhost,IP:127.0.0.1\\n' > server.ext
printf 'extendedKeyUsage=clientAuth\\n' > client.ext
issue() {{
  openssl ecparam -name prime256v1 -genkey -noout -out "$1-key.pem"
  openssl req -new -key "$1-key.pem" -subj "/CN=$1" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 397 -sha256 -extfile "$2" -out "$1.pem" 2>/dev/null
}}
issue server server.ext
for i in $(seq 0 {clients - 1}); do issue client$i client.ext; done
"""
    os.sync()
    t0 = time.perf_counter()
    subprocess.run([shutil.which("bash") or "/bin/bash", "-c", script], check=True)
    openssl_seconds = time.perf_counter() - t0
    return {
        "issuance_clients": clients,
        "securechat_certs_seconds": round(securechat_seconds, 2),
        "securechat_certs_seconds_rounds": rounds_seconds,
        "openssl_loop_seconds": round(openssl_seconds, 2),
        "issuance_speedup": round(openssl_seconds / securechat_seconds, 1),
        "issuance_directory": str(root),
    }


# --------------------------------------------------------------------------- the report


async def report(args: argparse.Namespace) -> dict:
    global GO_CLIENT
    sizes = [int(x) for x in args.streams.split(",")]
    with tempfile.TemporaryDirectory(prefix="securechat-bench-") as tmp:
        root = Path(tmp)
        clients = 1 if args.issuance_only else max(max(sizes) // STREAMS_PER_CONNECTION, args.handshake_concurrency, 1)
        material = make_pki(root, clients)
        results: dict = {"fan_out": [], "ab": []}
        if args.client == "go":
            from benchmarks import gofanout

            GO_CLIENT = gofanout.build(root / "go", "fanload")  # asked for by name: no fallback
        if args.cluster:
            return {"cluster": await cluster_report(args, material, sizes)}
        kinds = [] if args.issuance_only else _fan_out_kinds(args, root, results)
        for n in [] if args.issuance_only else sizes:
            runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
            samples: dict[str, list[float]] = {kind: [] for kind in kinds}
            compared = n <= args.ab_max_streams
            rounds = args.rounds if compared else 1
            # Round-robin (A/B/C/D, A/B/C/D, ...): slow drifts of the shared machine hit every server alike.
            order = kinds * rounds if compared else [kinds[0]]
            # "Light" load stays light at large N: at most LIGHT_DELIVERIES deliveries/s offered.
            light_rate = min(args.light_rate, LIGHT_DELIVERIES / n)
            for kind in order:
                run = await fan_out(
                    kind, material, n, args.senders, args.seconds, light_rate, light_seconds=args.light_seconds, samples=samples[kind]
                )
                runs[kind].append(run)
                results["fan_out"].append(run)
                print(json.dumps(run), file=sys.stderr, flush=True)
            if compared and len(kinds) > 1:
                results["ab"].append(_compare(n, runs, samples))
                print(_table(results["ab"][-1]), file=sys.stderr, flush=True)
        if args.issuance_only:
            return {"issuance": issuance(root, args.issue)}
        if args.fan_out_only:
            return results
        plain = await fan_out("securechat", material, sizes[0], args.senders, args.seconds, args.light_rate, tls=False)
        secure = await fan_out("securechat", material, sizes[0], args.senders, args.seconds, args.light_rate, tls=True)
        results["mtls_vs_plaintext"] = {
            "streams": sizes[0],
            "plaintext_deliveries_per_second": plain["deliveries_per_second"],
            "mtls_deliveries_per_second": secure["deliveries_per_second"],
            "ratio": round(secure["deliveries_per_second"] / plain["deliveries_per_second"], 2),
            "plaintext_cpu_us_per_delivery": plain["server_cpu_us_per_delivery"],
            "mtls_cpu_us_per_delivery": secure["server_cpu_us_per_delivery"],
        }
        results["unary"] = await unary(material, args.seconds, 32)
        results["handshakes"] = await handshakes(material, args.seconds, args.handshake_concurrency)
        if shutil.which("openssl"):
            results["issuance"] = issuance(root, args.issue)
    return results


CLUSTER_BROKER = """broker:
  type: nats
  servers: [tls://localhost:{port}]
  tls: {{ca: {certs}/ca.pem, cert: {certs}/replica-{replica}.pem, key: {certs}/replica-{replica}-key.pem}}
  stream: BENCH{run}
  retention: {{max_age: 10m, max_bytes: 67108864}}
"""


async def cluster_fan_out(material: Pki, n: int, senders: int, seconds: float, rate: float, run: int) -> dict:
    """NATS JetStream + 2 replicas; N streams and the senders split over both replicas."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))  # the demo drivers import each other by bare name
    from demo_cluster import start_nats

    shutil.rmtree(material.root / "jetstream", ignore_errors=True)  # each run starts from an empty store
    nats, port = start_nats(material.root, echo=False)
    servers: list[ServerProcess] = []
    try:
        for replica in "ab":
            broker = CLUSTER_BROKER.format(port=port, certs=material.root / "certs", replica=replica, run=run)
            servers.append(ServerProcess("securechat+nats", material, broker=broker))
        return await _fan_out(servers, material, n, senders, seconds, rate, tls=True, extra_pids={"nats-server": nats.pid})
    finally:
        for server in servers:
            server.stop()
        nats.terminate()
        nats.wait(10)


async def cluster_report(args: argparse.Namespace, material: Pki, sizes: list[int]) -> list[dict]:
    """For each N: one replica in memory vs two replicas + NATS, alternating, medians and the ratio."""
    comparisons = []
    run = 0
    for n in sizes:
        single, cluster = [], []
        for _ in range(args.rounds):
            single.append(await fan_out("securechat", material, n, args.senders, args.seconds, args.light_rate))
            print(json.dumps(single[-1]), file=sys.stderr, flush=True)
            run += 1
            cluster.append(await cluster_fan_out(material, n, args.senders, args.seconds, args.light_rate, run))
            print(json.dumps(cluster[-1]), file=sys.stderr, flush=True)
        one = statistics.median(r["deliveries_per_second"] for r in single)
        two = statistics.median(r["deliveries_per_second"] for r in cluster)
        comparisons.append(
            {
                "streams": n,
                "rounds": args.rounds,
                "single_in_memory_deliveries_per_second": one,
                "two_replicas_nats_deliveries_per_second": two,
                "ratio": round(two / one, 2),
                "single_p99_ms": statistics.median(r["latency_ms_p99"] for r in single),
                "cluster_p99_ms": statistics.median(r["latency_ms_p99"] for r in cluster),
                "single_lost": sum(r["lost"] for r in single),
                "cluster_lost": sum(r["lost"] for r in cluster),
                "single_cpu_cores_used": single[len(single) // 2]["cpu_cores_used"],
                "cluster_cpu_cores_used": cluster[len(cluster) // 2]["cpu_cores_used"],
                "runs": {"single": single, "cluster": cluster},
            }
        )
    return comparisons


def _fan_out_kinds(args: argparse.Namespace, root: Path, results: dict) -> list[str]:
    """The servers to compare, in round order; builds the grpc-go one (skipped, with the reason, if it cannot be built)."""
    global GO_SERVER, BEFORE
    kinds = [kind.strip() for kind in args.servers.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in SERVER_KINDS]
    if unknown:
        raise SystemExit(f"--servers: unknown {', '.join(unknown)}; choose from {', '.join(SERVER_KINDS)}")
    if any(kind.startswith("securechat-before") for kind in kinds):
        if not args.before:
            raise SystemExit("--servers securechat-before needs --before DIR (a checkout of the securechat to compare with)")
        BEFORE = Path(args.before).resolve()
    if "grpc-go" in kinds:
        from benchmarks import gofanout

        try:
            GO_SERVER = gofanout.build(root / "go")
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            results["skipped"] = {"grpc-go": str(exc)}
            print(f"load: skipping grpc-go: {exc}", file=sys.stderr)
            kinds.remove("grpc-go")
    return kinds


def _compare(n: int, runs: dict[str, list[dict]], samples: dict[str, list[float]]) -> dict:
    """Medians over the rounds per server, ratios against the bare baseline and grpc-go; p99 over every light phase pooled.

    A round's p99 at N=1,000 is decided by its slowest few messages (about
    one in a hundred deliveries), so it swings by +-25% between rounds; the
    pooled p99 rests on all rounds' messages. Per-round values are listed too.
    """
    servers = {}
    for kind, kind_runs in runs.items():
        if not kind_runs:
            continue
        servers[kind] = {
            "deliveries_per_second": statistics.median(run["deliveries_per_second"] for run in kind_runs),
            "cpu_us_per_delivery": statistics.median(run["server_cpu_us_per_delivery"] for run in kind_runs),
            "p99_ms": round(_pct(sorted(samples[kind]), 99), 2),
            "p50_ms": round(_pct(sorted(samples[kind]), 50), 2),
            "p99_ms_per_round": [run["latency_ms_p99"] for run in kind_runs],
            "lost": sum(run["lost"] for run in kind_runs),
            "cpu_us_per_delivery_per_round": [run["server_cpu_us_per_delivery"] for run in kind_runs],
            "events_per_response_under_load": kind_runs[len(kind_runs) // 2]["events_per_response_under_load"],
            "events_per_response_light": kind_runs[len(kind_runs) // 2]["events_per_response_light"],
        }
    for reference in ("baseline", "grpc-go"):
        if reference not in servers:
            continue
        ref = servers[reference]
        for row in servers.values():
            row[f"cpu_vs_{reference}"] = round(row["cpu_us_per_delivery"] / ref["cpu_us_per_delivery"], 2)
            row[f"deliveries_vs_{reference}"] = round(row["deliveries_per_second"] / ref["deliveries_per_second"], 2)
    return {"streams": n, "rounds": max(len(r) for r in runs.values()), "servers": servers}


def _table(comparison: dict) -> str:
    """One Markdown table of a comparison (stderr), the shape of README's Performance table."""
    lines = [
        f"N={comparison['streams']}, medians of {comparison['rounds']} rounds",
        "| server | deliveries/s | CPU µs/delivery | vs bare | vs grpc-go | p99 ms light | events/response load p50/p99/max | lost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, row in comparison["servers"].items():
        load = row["events_per_response_under_load"]
        lines.append(
            f"| {kind} | {row['deliveries_per_second']:,} | {row['cpu_us_per_delivery']} | {row.get('cpu_vs_baseline', '—')} "
            f"| {row.get('cpu_vs_grpc-go', '—')} | {row['p99_ms']} | {load.get('p50')}/{load.get('p99')}/{load.get('max')} | {row['lost']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="securechat load report (JSON on stdout).")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="N=100,1000; 3 s phases; 2 A/B rounds (the default)")
    mode.add_argument("--full", action="store_true", help="N=100,1000,10000; 8 s phases; 3 A/B rounds")
    parser.add_argument("--streams", help="comma-separated stream counts")
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--light-rate", type=float, default=20.0, help="messages/s offered in the latency phase")
    parser.add_argument(
        "--light-seconds", type=float, default=10.0, help="length of each A/B round's latency phase (p99 needs many messages)"
    )
    parser.add_argument("--ab-max-streams", type=int, default=1000, help="largest N also run against the other servers")
    parser.add_argument(
        "--servers",
        default="securechat,securechat-batched,baseline,grpc-go",
        help=f"fan-out servers compared, round-robin (the first runs alone above --ab-max-streams): {', '.join(SERVER_KINDS)}",
    )
    parser.add_argument("--before", help="a securechat checkout whose server runs as securechat-before[-batched]")
    parser.add_argument(
        "--server-limits", default="", help='more limits: keys for securechat servers (not --before), e.g. "connection_guard: false"'
    )
    parser.add_argument("--handshake-concurrency", type=int, default=16)
    parser.add_argument("--issue", type=int, default=1000, help="client certificates in the issuance comparison")
    parser.add_argument("--issuance-only", action="store_true", help="only the issuance comparison (securechat certs vs openssl)")
    parser.add_argument("--fan-out-only", action="store_true", help="skip unary, handshakes, mTLS vs plaintext and issuance")
    parser.add_argument(
        "--client",
        choices=("python", "go"),
        help="the fan-out load client: this process (python; the default) or benchmarks/go/fanload, about a tenth of "
        "its CPU per delivery (the default with --cluster, where the Python client was what the run measured)",
    )
    parser.add_argument(
        "--cluster", action="store_true", help="only: one replica in memory vs 2 replicas + NATS JetStream, same N, alternating"
    )
    args = parser.parse_args()
    global SERVER_LIMITS
    SERVER_LIMITS = args.server_limits
    args.client = args.client or ("go" if args.cluster else "python")
    args.streams = args.streams or ("100,1000,10000" if args.full else "100,1000")
    args.seconds = args.seconds or (8.0 if args.full else 3.0)
    args.rounds = args.rounds or (3 if args.full else 2)
    started = time.perf_counter()
    results = asyncio.run(report(args))
    document = {
        "parameters": {k: v for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "grpcio": grpc.__version__, "platform": platform.platform()},
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
