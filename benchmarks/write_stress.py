"""Stress of limits.buffered_writes (server/core_writes.py): races against held writes, counting crashes.

A fault run, not a speed benchmark: no lock, no timing. The parent process
starts worker processes one after another until it has run --iterations
iterations (or --max-seconds passed) and reports every worker that did not
exit 0: killed by a signal (SIGSEGV, SIGABRT: a crash in gRPC core), or a
Python failure. Each worker runs, per iteration, a real securechat server
(start_server, held writes on, the self-test passed) and, in the same process,
12 Chat streams over 3 TCP connections to it in one room: two of them post
bursts of small and large events, so that members' queues hold batches and
held sends are in flight, while the iteration does one of:

    stop-grace   RunningServer.stop with a grace of 0, 10 or 50 ms (streams drain, then UNAVAILABLE)
    stop-now     grpc's server.stop(None): every call cancelled at once, no draining
    cancel       half of the streams cancelled by their clients, then stop
    disconnect   one or two of the TCP connections killed (shutdown(2) on the client's socket), then stop
    slow         one connection's streams stop reading: HTTP/2 flow control holds their writes
                 until the queue overflows (slow-consumer abort of a writer blocked in a write), then stop
    all          all of the above in one iteration, then stop-now

Every reading stream checks that the MESSAGE ids it receives increase
(never reordered). A worker prints its counts as one JSON line; the parent
prints one JSON report: iterations, crashes (with each one's signal and
the end of its stderr), order violations, hangs, held sends, per action.

    python -m benchmarks.write_stress --iterations 5000            # the long run (README)
    python -m benchmarks.write_stress --iterations 400 --max-seconds 45   # what CI runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc

from securechat._gen import chat_pb2, chat_pb2_grpc

ACTIONS = ("stop-grace", "stop-now", "cancel", "disconnect", "slow", "all")
CONNECTIONS = 3
STREAMS_PER_CONNECTION = 4
SENDERS = 2
STEP = 10.0  # no single await of an iteration may take longer: beyond it the iteration counts as a hang
ITERATIONS_PER_WORKER = 100
Kind = chat_pb2.ChatEvent.Kind
SERVER_YAML = """listen: 127.0.0.1:0
{transport}
log: {{level: error}}
grace_seconds: 0.05
limits: {{max_messages_per_second: 1000000, message_burst: 1000000, queue_size: 64,
         max_streams_per_identity: 1000, connection_guard: false, buffered_writes: true}}
"""
TLS = "tls: {cert: certs/server.pem, key: certs/server-key.pem, mtls: false}"


# --------------------------------------------------------------------------- one worker process


class Member:
    """One client stream: reads (unless slow) and checks order."""

    def __init__(self, call: grpc.aio.StreamStreamCall, counts: Counter[str]) -> None:
        self.call = call
        self.counts = counts
        self.reading = asyncio.Event()
        self.reading.set()
        self.last = 0

    async def read(self) -> None:
        try:
            await self._read()
        except grpc.aio.AioRpcError as exc:
            self.counts[f"ended_{exc.code().name}"] += 1
        except (asyncio.CancelledError, grpc.aio.UsageError):
            pass

    async def _read(self) -> None:
        async for event in self.call:
            if event.kind == Kind.MESSAGE:
                event_id = int(event.id)
                if event_id <= self.last:
                    self.counts["order_violations"] += 1
                self.last = event_id
                self.counts["events_read"] += 1
            await self.reading.wait()

    async def post(self, rng: random.Random) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError, grpc.aio.UsageError):
            for burst in range(1_000_000):
                for i in range(rng.randint(5, 40)):
                    text = "x" * (3000 if rng.random() < 0.3 else 20)
                    await self.call.write(chat_pb2.ChatMessage(room="s", text=f"{burst}.{i} {text}"))
                await asyncio.sleep(rng.random() * 0.003)


def _client_sockets(port: int) -> list[int]:
    """File descriptors of this process's established TCP sockets connected to PORT (the clients' ends)."""
    inodes = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes.add(fields[9])
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}")[8:-1] in inodes:
                fds.append(int(fd))
    return fds


def _kill_connections(port: int, rng: random.Random, counts: Counter[str]) -> None:
    """shutdown(2) one or two client connections: the server's peer is gone mid-write (a duplicate fd; core still owns its own)."""
    fds = _client_sockets(port)
    for fd in rng.sample(fds, min(len(fds), rng.randint(1, 2))):
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
            counts["connections_killed"] += 1


async def _iteration(
    config_path: Path, rng: random.Random, action: str, counts: Counter[str], ca_pem: bytes | None
) -> None:
    from securechat.config import load_server_config
    from securechat.server.app import start_server

    running = await start_server(load_server_config(config_path))
    if not running.service.core_writes.enabled:
        raise SystemExit(f"held writes are off: {running.service.core_writes.problem}")
    options = [("grpc.use_local_subchannel_pool", 1)]
    if ca_pem is None:
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=options) for _ in range(CONNECTIONS)]
    else:  # server-only TLS: the held data goes through the TLS frame protector too
        credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
        channels = [
            grpc.aio.secure_channel(f"localhost:{running.port}", credentials, options=options)
            for _ in range(CONNECTIONS)
        ]
    members: list[Member] = []
    tasks: list[asyncio.Task[None]] = []
    stopped = False
    try:
        for channel in channels:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            for _ in range(STREAMS_PER_CONNECTION):
                member = Member(stub.Chat(), counts)
                await asyncio.wait_for(member.call.write(chat_pb2.ChatMessage(room="s")), STEP)
                members.append(member)
                tasks.append(asyncio.create_task(member.read()))
        tasks += [asyncio.create_task(members[i * STREAMS_PER_CONNECTION].post(rng)) for i in range(SENDERS)]
        await asyncio.sleep(rng.random() * 0.03)
        if action in ("slow", "all"):
            for member in members[-STREAMS_PER_CONNECTION:]:  # the connection without senders
                member.reading.clear()
            await asyncio.sleep(0.02 + rng.random() * 0.05)
        if action in ("cancel", "all"):
            for member in rng.sample(members, len(members) // 2):
                member.call.cancel()
            await asyncio.sleep(rng.random() * 0.02)
        if action in ("disconnect", "all"):
            _kill_connections(running.port, rng, counts)
            await asyncio.sleep(rng.random() * 0.02)
        if action in ("stop-now", "all"):
            await asyncio.wait_for(running.server.stop(None), STEP)
        await asyncio.wait_for(running.stop(grace=rng.choice((0.0, 0.01, 0.05))), STEP)
        stopped = True
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), STEP)
        for channel in channels:
            await asyncio.wait_for(channel.close(), STEP)
        if not stopped:
            await asyncio.wait_for(running.stop(grace=0), STEP)
        counts["held_sends"] += running.service.core_writes.tally.held


def _write_config(root: Path, tls: bool) -> bytes | None:
    """server.yaml in ROOT (and a CA + server certificate when TLS); the CA's PEM for clients, or None."""
    ca_pem = None
    if tls:
        from securechat import pki

        ca = pki.create_ca()
        store = pki.CertStore(root / "certs")
        store.write_ca(ca)
        store.write_leaves([pki.issue_server_cert(ca, "server")])
        ca_pem = store.ca_cert_path.read_bytes()
    (root / "server.yaml").write_text(SERVER_YAML.format(transport=TLS if tls else "insecure: true"))
    return ca_pem


async def _worker(
    iterations: int, seed: int, crash: bool = False, actions_run: tuple[str, ...] = ACTIONS, tls: bool = False
) -> dict[str, object]:
    rng = random.Random(seed)  # noqa: S311 - a reproducible schedule, not a secret
    counts: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="securechat-write-stress-") as tmp:
        ca_pem = _write_config(Path(tmp), tls)
        config = Path(tmp) / "server.yaml"
        for _ in range(iterations):
            action = rng.choice(actions_run)
            try:
                await _iteration(config, rng, action, counts, ca_pem)
            except asyncio.TimeoutError:
                counts["hangs"] += 1
            actions[action] += 1
            if crash:  # --crash: the harness's own check that a crash is seen and reported
                os.kill(os.getpid(), signal.SIGSEGV)
    return {"iterations": iterations, "actions": dict(actions), **counts}


def worker_main(
    iterations: int, seed: int, crash: bool = False, actions: tuple[str, ...] = ACTIONS, tls: bool = False
) -> None:
    faulthandler.enable()  # a crash prints where Python was, then dies by the same signal
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    print(json.dumps(asyncio.run(_worker(iterations, seed, crash, actions, tls))), flush=True)


# --------------------------------------------------------------------------- the parent


def run(
    iterations: int,
    max_seconds: float,
    seed: int,
    *,
    crash: bool = False,
    actions: tuple[str, ...] = ACTIONS,
    tls: bool = False,
) -> dict[str, object]:
    """Workers one after another until ITERATIONS ran or MAX_SECONDS passed; crashes and counts."""
    started = time.monotonic()
    done = 0
    workers = 0
    crashes: list[dict[str, object]] = []
    totals: Counter[str] = Counter()
    ran: Counter[str] = Counter()
    root = Path(__file__).resolve().parent.parent
    while done < iterations and time.monotonic() - started < max_seconds:
        batch = min(ITERATIONS_PER_WORKER, iterations - done)
        command = [sys.executable, "-m", "benchmarks.write_stress", "--worker", "--iterations", str(batch)]
        command += ["--seed", str(seed + workers), "--actions", ",".join(actions)]
        command += [*(["--crash"] if crash else []), *(["--tls"] if tls else [])]
        proc = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=max(120.0, 20.0 * batch))
        workers += 1
        done += batch
        if proc.returncode != 0:
            name = signal.Signals(-proc.returncode).name if proc.returncode < 0 else f"exit {proc.returncode}"
            crashes.append({"seed": seed + workers - 1, "how": name, "stderr_tail": proc.stderr[-2000:]})
            continue
        stats = json.loads(proc.stdout.strip().splitlines()[-1])
        ran.update(stats.pop("actions"))
        stats.pop("iterations")
        totals.update(stats)
    return {
        "parameters": {
            "iterations": iterations,
            "max_seconds": max_seconds,
            "seed": seed,
            "actions": list(actions),
            "tls": tls,
            "grpcio": grpc.__version__,
        },
        "iterations": done,
        "workers": workers,
        "crashes": len(crashes),
        "crash_details": crashes,
        "actions": dict(ran),
        "order_violations": totals["order_violations"],
        "hangs": totals["hangs"],
        "held_sends": totals["held_sends"],
        "events_read": totals["events_read"],
        "connections_killed": totals["connections_killed"],
        "streams_ended": {
            key.removeprefix("ended_"): value for key, value in sorted(totals.items()) if key.startswith("ended_")
        },
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Race server stop, cancel, disconnect and slow consumers against held writes."
    )
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--actions", default=",".join(ACTIONS), help=f"comma-separated, from {', '.join(ACTIONS)}")
    parser.add_argument("--tls", action="store_true", help="server-only TLS between the streams and the server")
    parser.add_argument(
        "--crash", action="store_true", help="each worker kills itself with SIGSEGV (checks the harness)"
    )
    args = parser.parse_args()
    actions = tuple(action for action in args.actions.split(",") if action)
    unknown = set(actions) - set(ACTIONS)
    if unknown or not actions:
        parser.error(
            f"--actions: unknown {', '.join(sorted(unknown)) or '(none given)'}; choose from {', '.join(ACTIONS)}"
        )
    if args.worker:
        worker_main(args.iterations, args.seed, args.crash, actions, args.tls)
        return
    print(
        json.dumps(
            run(args.iterations, args.max_seconds, args.seed, crash=args.crash, actions=actions, tls=args.tls), indent=2
        )
    )


if __name__ == "__main__":
    main()
