"""securechat vs a bare grpc.aio server on the paths beside the fan-out.

A report, never a test: JSON on stdout. Runs alternate securechat and the
baseline (benchmarks/baseline_server.py) with the same certificates, A/B/A/B,
and report medians and ratios:

- unary: SayHello with C calls in flight on one connection (requests/s, p50/p99);
- handshakes: a new connection + full mTLS handshake + SayHello, sequential and K at once;
- join: time for N chat streams (N/10 connections) to connect and join one room (each
  then posts to a room of its own: its echo proves the join was handled);
- storm: S streams over S/10 connections connected and joined, the server
  restarted, every stream reconnecting at once with last-event-id; time to
  50/99/100% resumed, and any CANCELLED shedding. The load client is
  benchmarks/go/storm (built from Debian's Go packages, as benchmarks/gofanout
  builds the Go fan-out server) so that it is not the bottleneck; without Go,
  this process's event loop (`--storm-client python`).

securechat runs as a user would run it: mTLS, logging at info, metrics on.

    python -m benchmarks.paths                    # all of it, 3 rounds
    python -m benchmarks.paths --only unary --rounds 5
    python -m benchmarks.paths --only storm --storm-streams 10000 --storm-profile /tmp/storm.txt
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from benchmarks import load
from benchmarks.load import Pki, ServerProcess, channel, make_pki, proc_cpu_seconds
from securechat._gen import chat_pb2, chat_pb2_grpc
from securechat.protocol import RESUME_FROM_KEY, Reason, refusal_reason

KINDS = ("securechat", "baseline")
GO_STORM: Path | None = None  # benchmarks/go/storm, built once per run
ATTEMPTS = 8
"""Calls a storm client makes to get back: one refused with the new run's resume point, then retries."""


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


async def unary(kind: str, material: Pki, seconds: float, concurrency: int) -> dict:
    server = ServerProcess(kind, material, log_level="info")
    try:
        async with channel(material, server.port, 0) as ch:
            stub = chat_pb2_grpc.ChatServiceStub(ch)
            for _ in range(200):  # warm up both sides
                await stub.SayHello(chat_pb2.HelloRequest(name="x"))
            latencies: list[float] = []
            deadline = time.perf_counter() + seconds

            async def worker() -> None:
                while (start := time.perf_counter()) < deadline:
                    await stub.SayHello(chat_pb2.HelloRequest(name="x"))
                    latencies.append(time.perf_counter() - start)

            cpu0, t0 = proc_cpu_seconds(server.pid), time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed, cpu = time.perf_counter() - t0, proc_cpu_seconds(server.pid) - cpu0
        return {
            "kind": kind,
            "requests_per_second": round(len(latencies) / elapsed),
            "p50_ms": round(_pct(latencies, 50) * 1e3, 2),
            "p99_ms": round(_pct(latencies, 99) * 1e3, 2),
            "server_cpu_us_per_call": round(cpu / len(latencies) * 1e6, 1),
        }
    finally:
        server.stop()


async def handshakes(kind: str, material: Pki, seconds: float, parallel: int, identities: int = 0) -> dict:
    server = ServerProcess(kind, material, log_level="info")
    # 0: every client certificate in turn (a fleet of new clients: each certificate is new
    # to the server); N: N certificates over and over (clients reconnecting).
    pool = identities or len(material.clients)
    try:
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker(index: int) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                # A new channel is a new TCP connection and a full mTLS handshake.
                async with channel(material, server.port, (index + done) % pool) as ch:
                    await chat_pb2_grpc.ChatServiceStub(ch).SayHello(chat_pb2.HelloRequest(name="x"))
                done += 1

        cpu0, t0 = proc_cpu_seconds(server.pid), time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(parallel)))
        elapsed, cpu = time.perf_counter() - t0, proc_cpu_seconds(server.pid) - cpu0
        return {
            "kind": kind,
            "parallel": parallel,
            "handshakes_per_second": round(done / elapsed, 1),
            "server_cpu_ms_per_handshake": round(cpu / max(done, 1) * 1e3, 2),
        }
    finally:
        server.stop()


async def join(kind: str, material: Pki, streams: int) -> dict:
    server = ServerProcess(kind, material, log_level="info")
    channels = [channel(material, server.port, c) for c in range(max(1, streams // 10))]
    try:
        started = time.perf_counter()
        calls = []
        for index in range(streams):
            call = chat_pb2_grpc.ChatServiceStub(channels[index % len(channels)]).Chat()
            calls.append(call)

        async def enter(index: int, call: grpc.aio.StreamStreamCall) -> None:
            # Join the shared room, then post to a room of this stream's own:
            # both servers handle a stream's messages in order, so the echo
            # of the second proves the join was done, at O(N) cost in all.
            await call.write(chat_pb2.ChatMessage(room="bench", text=""))
            await call.write(chat_pb2.ChatMessage(room=f"s{index}", text="joined"))
            async for event in call:
                if event.kind == chat_pb2.ChatEvent.MESSAGE and event.text == "joined":
                    return

        await asyncio.wait_for(asyncio.gather(*(enter(i, call) for i, call in enumerate(calls))), 120)
        return {"kind": kind, "streams": streams, "join_seconds": round(time.perf_counter() - started, 3)}
    finally:
        for ch in channels:
            await ch.close()
        server.stop()


def _storm_client(choice: str) -> Path | None:
    """The Go storm client (benchmarks/go/storm), built once per run; None: use the Python one."""
    global GO_STORM
    if choice == "python":
        return None
    from benchmarks import gofanout

    missing = gofanout.missing_tools()
    if missing:
        if choice == "go":
            raise RuntimeError(f"--storm-client go: {', '.join(missing)} not installed; run scripts/install-deps.sh go as root")
        print(f"storm: Go client unavailable ({', '.join(missing)} missing): the Python client it is", file=sys.stderr)
        return None
    if GO_STORM is None:
        GO_STORM = gofanout.build(Path(tempfile.mkdtemp(prefix="securechat-storm-go-")), "storm")
    return GO_STORM


async def storm(material: Pki, streams: int, *, client: str = "auto", method: str = "ChatBatched", profile: str = "") -> dict:
    """S streams joined; the server restarted; all reconnect at once with last-event-id (securechat only).

    CLIENT: "go" (benchmarks/go/storm, a process of its own that is not the
    bottleneck), "python" (this process's event loop), or "auto" (Go when it
    can be built). METHOD: ChatBatched (what securechat's client opens) or
    Chat. PROFILE: a py-spy profile of the server's reconnect phase.
    """
    go = _storm_client(client)
    # Every stream posts to a room of its own: keep the history of all of them, or rooms
    # forgotten meanwhile send resuming clients back again (history_rooms, default 1,000).
    limits = f", history_rooms: {streams + 16}"
    server = ServerProcess("securechat", material, log_level="info", limits=limits)
    port = server.port
    connections = max(1, streams // 10)
    try:
        if go is not None:
            joined = await _go_storm(go, material, port, "join", streams, connections, method)
            if joined["done"] != streams:
                raise RuntimeError(f"storm: only {joined['done']} of {streams} streams joined: {joined.get('failures')}")
        else:
            python_ids = await _python_join(material, port, streams, connections, method)
    finally:
        server.stop()
    server = ServerProcess("securechat", material, log_level="info", port=port, limits=limits)
    spy = _profile(server.pid, profile) if profile else None
    cpu0, client0 = proc_cpu_seconds(server.pid), time.process_time()
    try:
        if go is not None:
            result = await _go_storm(go, material, port, "rejoin", streams, connections, method)
            done_at, outcomes, client_cpu = result["seconds"], result["outcomes"], result["cpu_seconds"]
        else:
            done_at, outcomes = await _python_rejoin(material, port, python_ids, connections, method)
            client_cpu = time.process_time() - client0
        server_cpu = proc_cpu_seconds(server.pid) - cpu0
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        server.stop()
    return {
        "client": "go" if go is not None else "python",
        "method": method,
        "streams": streams,
        "connections": connections,
        "resumed": len(done_at),
        # Of the reconnect phase alone: the load client shares the machine's cores with the server.
        "rejoin_server_cpu_seconds": round(server_cpu, 1),
        "rejoin_client_cpu_seconds": round(client_cpu, 1),
        "outcomes": outcomes,
        "cancelled": outcomes.get("CANCELLED", 0),
        "seconds_to_50_percent": round(_pct(done_at, 50), 2),
        "seconds_to_99_percent": round(_pct(done_at, 99), 2),
        "seconds_to_100_percent": round(max(done_at), 2) if len(done_at) == streams else None,
        **({"failures": result.get("failures", [])} if go is not None and result.get("failures") else {}),
    }


def _profile(pid: int, path: str) -> subprocess.Popen[bytes]:
    """py-spy recording PID (its native threads too) into PATH until interrupted."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    command = [spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--output", path, *(["--native"] if os.environ.get("STORM_PROFILE_NATIVE") else ["--nonblocking"])]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _go_storm(binary: Path, material: Pki, port: int, mode: str, streams: int, connections: int, method: str) -> dict:
    """Run the Go storm client in MODE (join, then rejoin with the ids join wrote) and return its report."""
    certs = material.root / "storm-clients"
    if not certs.is_dir():
        certs.mkdir(mode=0o700)
        for index, (key, cert) in enumerate(material.clients[:connections]):
            (certs / f"c{index}.pem").write_bytes(cert)
            (certs / f"c{index}-key.pem").write_bytes(key)
    command = [
        str(binary),
        *("-mode", mode, "-target", f"localhost:{port}", "-ca", str(material.ca), "-clients", str(certs)),
        *("-connections", str(connections), "-streams", str(streams), "-ids", str(material.root / "storm-ids"), "-method", method),
    ]
    proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"storm client ({mode}) exited with {proc.returncode}")
    return json.loads(out)


def _events(method: str, call: grpc.aio.StreamStreamCall) -> AsyncIterator[chat_pb2.ChatEvent]:
    """CALL's events, one at a time, from Chat's events or ChatBatched's batches."""

    async def flat() -> AsyncIterator[chat_pb2.ChatEvent]:
        async for response in call:
            if method == "Chat":
                yield response
            else:
                for event in response.events:
                    yield event

    return flat()


def _open(stub: chat_pb2_grpc.ChatServiceStub, method: str, metadata: tuple = ()) -> grpc.aio.StreamStreamCall:
    return (stub.Chat if method == "Chat" else stub.ChatBatched)(metadata=metadata)


async def _python_join(material: Pki, port: int, streams: int, connections: int, method: str) -> list[str]:
    """Every stream joins "storm" and posts to a room of its own; the id of each echo (streams stay open until all are in)."""
    channels = [channel(material, port, c) for c in range(connections)]
    last_ids: list[str] = [""] * streams
    try:

        async def first_join(index: int) -> None:
            call = _open(chat_pb2_grpc.ChatServiceStub(channels[index % connections]), method)
            await call.write(chat_pb2.ChatMessage(room="storm", text=""))
            await call.write(chat_pb2.ChatMessage(room=f"s{index}", text="joined"))
            async for event in _events(method, call):
                if event.kind == chat_pb2.ChatEvent.MESSAGE and event.text == "joined":
                    last_ids[index] = event.id
                    break

        await asyncio.wait_for(asyncio.gather(*(first_join(i) for i in range(streams))), 300)
    finally:
        for ch in channels:
            await ch.close()
    return last_ids


async def _python_rejoin(
    material: Pki, port: int, last_ids: list[str], connections: int, method: str
) -> tuple[list[float], dict[str, int]]:
    """Every stream at once reopens with its last-event-id, acts on history-gone, rejoins; seconds until each was back.

    A stream that is back stays open (as a client's would) until all are.
    """
    started = time.perf_counter()
    channels = [channel(material, port, c) for c in range(connections)]
    done_at: list[float] = []
    outcomes: dict[str, int] = {}
    back: list[grpc.aio.StreamStreamCall] = []

    async def rejoin(index: int) -> None:
        resume = last_ids[index]
        stub = chat_pb2_grpc.ChatServiceStub(channels[index % connections])
        for _ in range(ATTEMPTS):
            call = _open(stub, method, (("last-event-id", resume),))
            events = _events(method, call)
            with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError, StopAsyncIteration):
                await call.write(chat_pb2.ChatMessage(room="storm", text=""))
                # A single server answers an accepted stream with its headers at
                # once and refuses a resume id from before its run (after the
                # first message) without them: post only once the headers came,
                # since a write in flight when a refusal arrives hides it (grpc.aio
                # reports INTERNAL instead).
                await call.initial_metadata()
                if call.done():
                    raise StopAsyncIteration
                await call.write(chat_pb2.ChatMessage(room=f"s{index}", text="back"))
                async for event in events:
                    if event.kind == chat_pb2.ChatEvent.MESSAGE and event.text == "back":
                        done_at.append(time.perf_counter() - started)
                        back.append(call)
                        return
            code = await call.code()
            outcomes[code.name] = outcomes.get(code.name, 0) + 1
            trailing = tuple(await call.trailing_metadata() or ())
            point = dict(trailing).get(RESUME_FROM_KEY)
            if refusal_reason(trailing) is Reason.HISTORY_GONE and point is not None:
                resume = str(point)  # the new run's first event: nothing of it is missed
                continue
            if code is grpc.StatusCode.INTERNAL:  # a write raced a refusal and hid it: ask again
                continue
            return

    try:
        await asyncio.wait_for(asyncio.gather(*(rejoin(i) for i in range(len(last_ids)))), 300)
    finally:
        for call in back:
            call.cancel()
        for ch in channels:
            await ch.close()
    return done_at, outcomes


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


async def report(args: argparse.Namespace) -> dict:
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="securechat-paths-") as tmp:
        material = make_pki(Path(tmp), max(args.join_streams // 10, args.storm_streams // 10, args.parallel, 1))
        phases = args.only.split(",") if args.only else ["unary", "handshakes", "join", "storm"]
        for phase in phases:
            if phase == "storm":
                results["storm"] = await storm(
                    material, args.storm_streams, client=args.storm_client, method=args.storm_method, profile=args.storm_profile
                )
                print(json.dumps({"storm": results["storm"]}), file=sys.stderr, flush=True)
                continue
            runs: dict[str, list[dict]] = {kind: [] for kind in KINDS}
            for _ in range(args.rounds):
                for kind in KINDS:
                    if phase == "unary":
                        run = await unary(kind, material, args.seconds, args.concurrency)
                    elif phase == "handshakes":
                        run = {
                            "sequential": await handshakes(kind, material, args.seconds, 1, args.handshake_identities),
                            "concurrent": await handshakes(
                                kind, material, args.seconds, args.parallel, args.handshake_identities
                            ),
                        }
                    else:
                        run = await join(kind, material, args.join_streams)
                    runs[kind].append(run)
                    print(json.dumps({phase: run}), file=sys.stderr, flush=True)
            results[phase] = {"runs": runs, "summary": _summary(phase, runs)}
    return results


def _median(runs: list[dict], *path: str) -> float:
    values = []
    for run in runs:
        for key in path[:-1]:
            run = run[key]
        values.append(run[path[-1]])
    return statistics.median(values)


def _summary(phase: str, runs: dict[str, list[dict]]) -> dict:
    ours, bare = runs["securechat"], runs["baseline"]
    if phase == "unary":
        return {
            "requests_per_second": {"securechat": _median(ours, "requests_per_second"), "baseline": _median(bare, "requests_per_second")},
            "ratio": _ratio(_median(ours, "requests_per_second"), _median(bare, "requests_per_second")),
            "p99_ratio": _ratio(_median(ours, "p99_ms"), _median(bare, "p99_ms")),
            "cpu_per_call_ratio": _ratio(_median(ours, "server_cpu_us_per_call"), _median(bare, "server_cpu_us_per_call")),
        }
    if phase == "handshakes":
        return {
            label: {
                "securechat": _median(ours, label, "handshakes_per_second"),
                "baseline": _median(bare, label, "handshakes_per_second"),
                "ratio": _ratio(_median(ours, label, "handshakes_per_second"), _median(bare, label, "handshakes_per_second")),
            }
            for label in ("sequential", "concurrent")
        }
    return {
        "join_seconds": {"securechat": _median(ours, "join_seconds"), "baseline": _median(bare, "join_seconds")},
        "ratio_longer": _ratio(_median(ours, "join_seconds"), _median(bare, "join_seconds")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="securechat vs bare grpc.aio: unary, handshakes, join (JSON on stdout).")
    parser.add_argument("--only", help="comma-separated phases: unary,handshakes,join,storm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=64, help="unary calls in flight")
    parser.add_argument("--parallel", type=int, default=8, help="concurrent handshakes")
    parser.add_argument(
        "--handshake-identities",
        type=int,
        default=0,
        help="client certificates the handshakes cycle through (0: all, each new to the server; 8: clients reconnecting)",
    )
    parser.add_argument("--join-streams", type=int, default=100)
    parser.add_argument("--storm-streams", type=int, default=10_000, help="streams (over a tenth as many connections) in the storm")
    parser.add_argument(
        "--storm-client",
        choices=("auto", "go", "python"),
        default="auto",
        help="the storm's load client: Go (benchmarks/go/storm, built from Debian's packages), this Python process, or Go when it builds",
    )
    parser.add_argument("--storm-method", choices=("ChatBatched", "Chat"), default="ChatBatched", help="what the storm's clients open")
    parser.add_argument("--storm-profile", default="", help="FILE: a py-spy profile (raw, collapsed stacks) of the server's reconnect phase")
    parser.add_argument("--server-limits", default="", help='more `limits:` keys for securechat, e.g. "connection_guard: false"')
    args = parser.parse_args()
    load.SERVER_LIMITS = args.server_limits
    started = time.perf_counter()
    results = asyncio.run(report(args))
    print(
        json.dumps(
            {
                "parameters": vars(args),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "grpcio": grpc.__version__},
                "results": results,
                "seconds": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
