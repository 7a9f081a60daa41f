"""Real processes for the fault checker: a NATS JetStream cluster, securechat servers, and a TCP proxy.

Everything listens on 127.0.0.1. Ports are chosen once per run, so a
process restarted after a fault comes back where its peers expect it: a
NATS node keeps its route and client ports and its store directory, a
securechat server keeps its listen port. Processes are started with
`start_new_session=True` and are only ever signalled by their own pid.

    Cluster(root, nodes=3)            nats-server nodes with routes and clients on mutual TLS
    ServerProcess(root, name, ...)    `securechat serve` (a replica over the cluster, or one in-memory server)
    Proxy()                           one front port per client; drop or stall that client's connections
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from securechat import pki

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "broker"))
from nats_support import nats_server_binary  # noqa: E402

SECURECHAT = [sys.executable, "-m", "securechat"]
STREAM = "FAULTS"


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 right now (bound to port 0, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class Certificates:
    """The run's PKI on disk: one CA, NATS server and route certificates, replica and client identities."""

    dir: Path
    clients: tuple[str, ...]
    replicas: tuple[str, ...]

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    def pair(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}.pem", self.dir / f"{name}-key.pem"


def issue_certificates(directory: Path, *, clients: Sequence[str], replicas: Sequence[str]) -> Certificates:
    """A fresh CA and every leaf the run needs, written with securechat's own store."""
    ca = pki.create_ca()
    store = pki.CertStore(directory)
    store.write_ca(ca)
    loopback = ["localhost", "127.0.0.1"]
    leaves = [
        pki.issue_server_cert(ca, "server", sans=loopback),
        pki.issue_server_cert(ca, "nats", sans=loopback),
        pki.issue_peer_cert(ca, "route", sans=loopback),
        pki.issue_client_cert(ca, "harness"),
        *(pki.issue_client_cert(ca, name) for name in replicas),
    ]
    store.write_leaves(leaves)
    if clients:
        store.issue_clients(ca, list(clients))
    return Certificates(dir=directory, clients=tuple(clients), replicas=tuple(replicas))


class Process:
    """One child process with a log file; signalled by pid only."""

    def __init__(self, name: str, log_file: Path) -> None:
        self.name = name
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False  # SIGSTOPped
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self, args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        assert not self.running, f"{self.name} is already running"
        with self.log_file.open("ab") as log:
            log.write(f"\n--- start {self.starts + 1} at {time.time():.3f} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        self.stopped = False

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signum)
            if signum == signal.SIGSTOP:
                self.stopped = True
            elif signum == signal.SIGCONT:
                self.stopped = False

    async def wait_exit(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.proc is not None and self.proc.poll() is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        return None if self.proc is None else self.proc.returncode

    async def kill(self) -> None:
        """SIGKILL (a stopped process dies too) and reap it."""
        if self.running:
            self.signal(signal.SIGKILL)
            await self.wait_exit(10)

    async def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGCONT if stopped, SIGTERM, wait; SIGKILL after `timeout`."""
        if not self.running:
            return None if self.proc is None else self.proc.returncode
        if self.stopped:
            self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        code = await self.wait_exit(timeout)
        if code is None:
            await self.kill()
        return code

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_since_start(self) -> str:
        return self.log_text().rsplit("--- start ", 1)[-1]


# -- NATS ----------------------------------------------------------------------


@dataclass
class NatsNode:
    index: int
    client_port: int
    route_port: int
    root: Path
    process: Process

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.client_port}"


class Cluster:
    """A JetStream cluster of `nodes` nats-server processes, mutual TLS for clients and routes (deploy/nats/cluster.conf on loopback)."""

    def __init__(self, root: Path, certs: Certificates, *, nodes: int = 3) -> None:
        self.root = root
        self.certs = certs
        ports = free_ports(2 * nodes)
        self.nodes = [
            NatsNode(i, ports[2 * i], ports[2 * i + 1], root / f"nats-{i}", Process(f"nats-{i}", root / f"nats-{i}.log"))
            for i in range(nodes)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def _config(self, node: NatsNode) -> str:
        routes = "\n".join(f'    "tls://127.0.0.1:{other.route_port}"' for other in self.nodes if other is not node)
        certs = self.certs
        return f"""
server_name: n{node.index}
host: 127.0.0.1
port: {node.client_port}
tls {{
  cert_file: "{certs.dir}/nats.pem"
  key_file: "{certs.dir}/nats-key.pem"
  ca_file: "{certs.ca}"
  verify: true
  timeout: 2
}}
cluster {{
  name: faults
  host: 127.0.0.1
  port: {node.route_port}
  no_advertise: true
  tls {{
    cert_file: "{certs.dir}/route.pem"
    key_file: "{certs.dir}/route-key.pem"
    ca_file: "{certs.ca}"
    verify: true
    timeout: 2
  }}
  routes: [
{routes}
  ]
}}
jetstream {{
  store_dir: "{node.root}/jetstream"
  max_memory_store: 64MB
  max_file_store: 512MB
}}
"""

    def start_node(self, node: NatsNode) -> None:
        node.root.mkdir(parents=True, exist_ok=True)
        config = node.root / "nats.conf"
        config.write_text(self._config(node), encoding="utf-8")
        node.process.spawn([str(nats_server_binary()), "--config", str(config)])

    async def start(self, timeout: float = 60.0) -> None:
        for node in self.nodes:
            self.start_node(node)
        await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Until a replicated stream can be created and written: the meta leader and a stream leader exist."""
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            try:
                await self.ensure_stream()
                return
            except Exception as exc:  # noqa: BLE001 - retried until the cluster forms
                last = exc
                await asyncio.sleep(0.5)
        raise RuntimeError(f"the NATS cluster did not form within {timeout}s: {last!r}")

    async def connect(self) -> Any:
        import nats

        cert, key = self.certs.pair("harness")
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.certs.ca))
        context.load_cert_chain(str(cert), str(key))
        async def quiet(*_: object) -> None:
            """nats-py logs every refused connect with a traceback; while the cluster forms those are expected."""

        return await nats.connect(
            servers=self.urls, tls=context, connect_timeout=2, max_reconnect_attempts=2, allow_reconnect=True, error_cb=quiet, disconnected_cb=quiet
        )

    async def ensure_stream(self) -> None:
        """Create, write and delete a throwaway replicated stream: proof that JetStream has its leaders."""
        from nats.js import api

        nc = await self.connect()
        try:
            js = nc.jetstream(timeout=3)
            await js.add_stream(api.StreamConfig(name="READY", subjects=["harness.ready"], storage=api.StorageType.MEMORY, num_replicas=len(self.nodes)))
            await js.publish("harness.ready", b"", timeout=3)
            await js.delete_stream("READY")
        finally:
            await nc.close()

    async def consumer_count(self) -> int:
        """Consumers on the stream now (the soak watches that it stays flat)."""
        nc = await self.connect()
        try:
            info = await nc.jetstream(timeout=3).stream_info(STREAM)
            return int(info.state.consumer_count)
        finally:
            await nc.close()

    async def stop(self) -> None:
        for node in self.nodes:
            await node.process.terminate(timeout=5)


# -- securechat servers --------------------------------------------------------------


class ServerProcess:
    """`securechat serve`: a replica over the cluster, or (cluster None) one in-memory server. Fixed port across restarts."""

    def __init__(self, root: Path, certs: Certificates, name: str, *, cluster: Cluster | None, limits: dict[str, Any]) -> None:
        self.name = name
        self.port, self.metrics_port = free_ports(2)
        self.process = Process(name, root / f"{name}.log")
        config: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}",
            "tls": {"cert": str(certs.dir / "server.pem"), "key": str(certs.dir / "server-key.pem"), "client_ca": str(certs.ca)},
            "limits": limits,
            "grace_seconds": 2,
            "metrics_port": self.metrics_port,
            "log": {"level": "info"},
        }
        if cluster is not None:
            cert, key = certs.pair(name)
            config["broker"] = {
                "type": "nats",
                "servers": cluster.urls,
                "tls": {"ca": str(certs.ca), "cert": str(cert), "key": str(key)},
                "stream": STREAM,
                "replicas": len(cluster.nodes),
                "publish_timeout": "3s",
                "connect_timeout": "3s",
                "reconnect_wait": "200ms",
                "duplicate_window": "10m",
                "retention": {"max_age": "1h", "max_bytes": 256 << 20},
            }
        self.config_file = root / f"{name}.yaml"
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        command = [*SECURECHAT, "serve", "--config", str(self.config_file)]
        probe = os.environ.get("FAULTS_MEMHOOK")  # benchmarks.soak --memhook DIR: a memory probe per replica
        if probe:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
            out = Path(probe) / f"{self.name}.memhook.jsonl"
            options = os.environ.get("FAULTS_MEMHOOK_OPTIONS", "--every 60").split()
            command = [sys.executable, "-m", "benchmarks.memhook", str(out), *options, "--", *command[3:]]
        self.process.spawn(command, env=env)

    async def wait_listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "listening on" in self.process.log_since_start():
                return
            if not self.process.running:
                raise RuntimeError(f"{self.name} exited with {self.process.proc.returncode if self.process.proc else '?'}:\n{self.process.log_since_start()[-3000:]}")
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen within {timeout}s:\n{self.process.log_since_start()[-3000:]}")

    def metric(self, name: str) -> float | None:
        """One sample from the server's Prometheus endpoint (loopback)."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as response:  # noqa: S310 - loopback http
                text = response.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def rss_kb(self) -> int | None:
        return _proc_status(self.process, "VmRSS")

    def open_fds(self) -> int | None:
        if not self.process.running or self.process.proc is None:
            return None
        try:
            return len(os.listdir(f"/proc/{self.process.proc.pid}/fd"))
        except OSError:
            return None


def _proc_status(process: Process, key: str) -> int | None:
    if not process.running or process.proc is None:
        return None
    try:
        for line in Path(f"/proc/{process.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# -- proxy ---------------------------------------------------------------------------------


@dataclass(eq=False)
class _Pipe:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    backend: str
    stalled_until: list[float] = field(default_factory=lambda: [0.0, 0.0])  # [to server, to client]


class Proxy:
    """A loopback TCP proxy in its own thread: one front port per client, round-robin over live backends.

    `drop(label)` resets every connection of that front (RST, like a broken
    network path); `stall(label, seconds, down_only=...)` stops forwarding
    its bytes for a while (what a congested or frozen path looks like), then
    lets them through. Backends are (name, port); a backend that refuses the
    connection is skipped.
    """

    def __init__(self, backends: Sequence[tuple[str, int]]) -> None:
        self.backends = list(backends)
        self._next = 0
        self._pipes: dict[str, set[_Pipe]] = {}
        self._servers: list[asyncio.base_events.Server] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        self.connections = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._ready.set()
        self._loop.run_forever()

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def front(self, label: str) -> int:
        """Open a front port for `label`; its connections go to the backends."""

        async def open_front() -> int:
            server = await asyncio.start_server(lambda r, w: self._handle(label, r, w), "127.0.0.1", 0)
            self._servers.append(server)
            return int(server.sockets[0].getsockname()[1])

        self._pipes.setdefault(label, set())
        port: int = self._call(open_front())
        return port

    async def _handle(self, label: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Cancelled at close(): end quietly (asyncio's server callback would log a cancelled handler as an error).
        with contextlib.suppress(asyncio.CancelledError):
            await self._forward(label, reader, writer)

    async def _forward(self, label: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for attempt in range(len(self.backends)):
            name, port = self.backends[(self._next + attempt) % len(self.backends)]
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
            except (OSError, asyncio.TimeoutError):
                continue
            self._next = (self._next + attempt + 1) % len(self.backends)
            self.connections += 1
            pipe = _Pipe(writer, up_writer, name)
            self._pipes[label].add(pipe)
            try:
                await asyncio.gather(self._copy(reader, up_writer, pipe, 0), self._copy(up_reader, writer, pipe, 1))
            finally:
                self._pipes[label].discard(pipe)
            return
        _reset(writer)

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pipe: _Pipe, direction: int) -> None:
        try:
            while data := await reader.read(65536):
                while (wait := pipe.stalled_until[direction] - time.monotonic()) > 0:
                    await asyncio.sleep(min(wait, 0.05))
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side ended: end both, so neither end waits on a half-open pipe.
            for end in (pipe.client, pipe.upstream):
                with contextlib.suppress(OSError, RuntimeError):
                    end.close()

    def drop(self, label: str) -> int:
        """Reset every connection of `label`; returns how many."""

        async def drop_all() -> int:
            pipes = list(self._pipes.get(label, ()))
            for pipe in pipes:
                _reset(pipe.client)
                _reset(pipe.upstream)
            return len(pipes)

        dropped: int = self._call(drop_all())
        return dropped

    def stall(self, label: str, seconds: float, *, down_only: bool = False) -> int:
        """Hold `label`'s bytes for `seconds` (only server -> client with down_only); returns how many connections."""

        async def stall_all() -> int:
            until = time.monotonic() + seconds
            pipes = list(self._pipes.get(label, ()))
            for pipe in pipes:
                pipe.stalled_until[1] = until
                if not down_only:
                    pipe.stalled_until[0] = until
            return len(pipes)

        stalled: int = self._call(stall_all())
        return stalled

    def close(self) -> None:
        async def close_all() -> None:
            for server in self._servers:
                server.close()
            for pipes in self._pipes.values():
                for pipe in list(pipes):
                    _reset(pipe.client)
                    _reset(pipe.upstream)
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._call(close_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer sees a reset, not an orderly end."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError, RuntimeError):
        writer.close()
