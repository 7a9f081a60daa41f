"""A bounded soak: mixed traffic with churn and faults over the cluster; are RSS, fds, tasks and consumers flat?

    .venv/bin/python -m benchmarks.soak --minutes 30 --seed 1 > soak.json

Three replicas over a 3-node NATS JetStream cluster (tests/faults), the
checker's clients sending all along, plus churners: identities that open a
session, join a room, post a few messages and leave, over and over. Faults
from the seed that keep the replicas' processes (drops, stalls, slow
consumers, SIGSTOP, NATS node restarts, losing quorum); killing a replica
would restart its RSS and fd series, so the fault checker covers those.

Every --every seconds it samples, per replica: RSS (KiB), open fds, asyncio
tasks (securechat_event_loop_tasks) and open streams; and the stream's
JetStream consumer count. After a warm-up (the first --warmup fraction) it
fits a least-squares line to each and reports its slope per hour and the
change over the measured span relative to the mean. At the end the checker
runs over the clients' logs as in any fault run. Prints JSON; never fails a build.

Tasks follow the streams a replica holds, so `tasks_beyond_streams` fits
tasks = a + b * streams and reports the slope of what streams do not
explain. JetStream's duplicate window (10 minutes here) fills in the NATS
nodes, not in the replicas: each node's RSS is sampled too, with the slope
over its last run (nodes are restarted by faults). `--memhook DIR` runs
every replica under benchmarks.memhook (objects by type and gc
generations every minute; tracemalloc and malloc_trim on request), to tell
a leak from memory that is waiting for a collection or held by the allocator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "faults"))

from fault_checker import ClientRecord, check  # noqa: E402
from fault_procs import _proc_status  # noqa: E402
from fault_run import Deployment, RunOptions, _drain, _save_logs, client_rooms, schedule  # noqa: E402

from securechat.client.reconnect import reconnecting_chat  # noqa: E402
from securechat.config import load_client_config  # noqa: E402
from securechat.errors import ConnectError  # noqa: E402

SOAK_FAULTS = ("drop", "stall", "slow-consumer", "replica-stop", "nats-restart", "nats-quorum")
SERIES = ("rss_kb", "fds", "tasks", "streams")


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, value) per second."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var if var else 0.0


async def churn(deployment: Deployment, names: list[str], rooms: list[str], stop: asyncio.Event, rng: random.Random, counts: dict[str, int]) -> None:
    """Sessions that come and go: open, join, post a few messages, wait for their echoes, leave."""
    while not stop.is_set():
        name = rng.choice(names)
        config = load_client_config(deployment.clients_dir / f"{name}.yaml")
        try:
            async with reconnecting_chat(config) as chat:
                room = rng.choice(rooms)
                await chat.join(room)
                for n in range(rng.randint(1, 5)):
                    await chat.send(f"{name} churn {counts['sessions']}.{n}", room=room)
                deadline = time.monotonic() + 5
                while chat.unacknowledged and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            counts["sessions"] += 1
        except (ConnectError, OSError) as exc:
            counts["failed"] += 1
            counts["last_error"] = str(exc)[:200]  # type: ignore[assignment]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(0.1, 0.5))


async def soak(minutes: float, seed: int, every: float, warmup: float, root: Path) -> dict[str, Any]:
    duration = minutes * 60
    churners = [f"ch{i:02d}" for i in range(6)]
    options = RunOptions(seed=seed, mode="cluster", duration=duration, kinds=SOAK_FAULTS, pace=(0.3, 1.0))
    rooms = client_rooms(options)
    deployment = Deployment(root, options, extra_clients=churners)
    samples: list[dict[str, Any]] = []
    counts: dict[str, int] = {"sessions": 0, "failed": 0}
    stop = asyncio.Event()
    faults_done = 0
    drained = False
    started = time.monotonic()
    try:
        await deployment.start()
        deployment.add_clients(rooms)
        await asyncio.wait_for(asyncio.gather(*(c.joined.wait() for c in deployment.clients.values())), 60)
        room_names = sorted({room for mine in rooms.values() for room in mine})
        churn_task = asyncio.ensure_future(churn(deployment, churners, room_names, stop, random.Random(f"churn-{seed}"), counts))  # noqa: S311

        async def faults() -> None:
            nonlocal faults_done
            rng = random.Random(f"targets-{seed}")  # noqa: S311 - a seeded schedule, not security
            for fault in schedule(options):
                if time.monotonic() - started > duration:
                    return
                await asyncio.sleep(fault.pause)
                await deployment.inject(fault, rooms, rng)
                faults_done += 1

        fault_task = asyncio.ensure_future(faults())
        while time.monotonic() - started < duration:
            sample: dict[str, Any] = {"t": round(time.monotonic() - started, 1)}
            for name, server in deployment.servers.items():
                sample[name] = {
                    "rss_kb": server.rss_kb(),
                    "fds": server.open_fds(),
                    "tasks": server.metric("securechat_event_loop_tasks"),
                    "streams": server.metric("securechat_streams"),
                    # The server's collector (server/collector.py): collections so far and their summed pause.
                    "gc": [server.metric(f'securechat_gc_{what}_total{{kind="{kind}"}}') for what in ("collections", "pause_seconds") for kind in ("young", "full")],
                }
            if deployment.cluster is not None:  # JetStream's duplicate window (10 minutes) fills here, not in the replicas
                sample["nats"] = {f"nats-{node.index}": [_proc_status(node.process, "VmRSS"), node.process.starts] for node in deployment.cluster.nodes}
            with contextlib.suppress(Exception):
                sample["consumers"] = await asyncio.wait_for(deployment.cluster.consumer_count(), 5)  # type: ignore[union-attr]
            samples.append(sample)
            await asyncio.sleep(every)
        stop.set()
        fault_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fault_task
        await churn_task
        await deployment.heal()
        for client in deployment.clients.values():
            client.stop_sending()
        drained = await _drain(deployment, 60)
    finally:
        cut = {name: len(client.log) for name, client in deployment.clients.items()}  # before the closes' LEAVEs
        await deployment.stop()
        _save_logs(root, deployment, [])
    records = [ClientRecord(c.name, tuple(c.rooms), tuple(c.log[: cut[c.name]]), tuple(c.unacknowledged)) for c in deployment.clients.values()]
    report = check(records, outside_senders=frozenset(churners))
    measured = [s for s in samples if s["t"] >= warmup * duration]
    trends: dict[str, Any] = {}
    for name in deployment.servers:
        for series in SERIES:
            points = [(s["t"], float(s[name][series])) for s in measured if s.get(name, {}).get(series) is not None]
            if points:
                mean = sum(v for _, v in points) / len(points)
                per_second = slope(points)
                span = points[-1][0] - points[0][0]
                half = len(points) // 2
                trends[f"{name}.{series}"] = {
                    "first": points[0][1], "last": points[-1][1], "mean": round(mean, 1),
                    "slope_per_hour": round(per_second * 3600, 2),
                    "change_over_span_pct": round(100 * per_second * span / mean, 2) if mean else 0.0,
                    # A line that levels off: its second half's slope is near 0 while the first's is not.
                    "first_half": {"mean": round(sum(v for _, v in points[:half]) / max(half, 1), 1), "slope_per_hour": round(slope(points[:half]) * 3600, 2)},
                    "second_half": {"mean": round(sum(v for _, v in points[half:]) / max(len(points) - half, 1), 1), "slope_per_hour": round(slope(points[half:]) * 3600, 2)},
                }
        # Tasks follow the streams a replica holds (clients move between
        # replicas with the faults): the part streams do not explain is what
        # must stay flat. tasks = a + b * streams, fitted; the residual's slope.
        pairs = [
            (s["t"], float(s[name]["tasks"]), float(s[name]["streams"]))
            for s in measured
            if s.get(name, {}).get("tasks") is not None and s.get(name, {}).get("streams") is not None
        ]
        if len(pairs) > 2:
            per_stream = slope([(streams, tasks) for _, tasks, streams in pairs])
            residual = [(t, tasks - per_stream * streams) for t, tasks, streams in pairs]
            trends[f"{name}.tasks_beyond_streams"] = {
                "tasks_per_stream": round(per_stream, 2),
                "slope_per_hour": round(slope(residual) * 3600, 2),
            }
    consumers = [(s["t"], float(s["consumers"])) for s in measured if "consumers" in s]
    if consumers:
        trends["jetstream.consumers"] = {
            "first": consumers[0][1], "last": consumers[-1][1], "max": max(v for _, v in consumers),
            "slope_per_hour": round(slope(consumers) * 3600, 2),
        }
    for index in range(3 if deployment.cluster is not None else 0):
        node = f"nats-{index}"
        runs = [(s["t"], float(s["nats"][node][0]), s["nats"][node][1]) for s in measured if (s.get("nats") or {}).get(node, [None])[0]]
        if len(runs) > 2:
            # A node restarted by a fault starts its series again: the slope is fitted over its last run.
            last_run = [(t, rss) for t, rss, starts in runs if starts == runs[-1][2]]
            trends[f"{node}.rss_kb"] = {
                "max": max(rss for _, rss, _ in runs),
                "last": runs[-1][1],
                "starts": runs[-1][2],
                "last_run_seconds": round(last_run[-1][0] - last_run[0][0], 1),
                "last_run_slope_per_hour": round(slope(last_run) * 3600, 2),
            }
    collections = {}
    for name in deployment.servers:
        last_gc = [s[name]["gc"] for s in samples if name in s and None not in s[name].get("gc", [None])]
        if last_gc:
            young, full, young_s, full_s = last_gc[-1]
            collections[name] = {"young": young, "full": full, "pause_ms_mean": round(1000 * (young_s + full_s) / max(young + full, 1), 2)}
    return {
        "parameters": {"minutes": minutes, "seed": seed, "every_seconds": every, "warmup_fraction": warmup, "clients": options.clients, "churners": len(churners), "faults": list(SOAK_FAULTS)},
        "faults_injected": faults_done,
        "churn_sessions": counts["sessions"],
        "churn_failures": counts["failed"],
        "drained": drained,
        "checker": report.as_dict(),
        "trends": trends,
        "gc_collections": collections,
        "samples": samples,
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--every", type=float, default=15.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=0.2, help="fraction of the run left out of the trends")
    parser.add_argument("--keep", type=Path, help="keep the run's logs (clients.jsonl, every process's log) in this directory")
    parser.add_argument("--memhook", type=Path, help="run each replica under benchmarks.memhook, writing REPLICA.memhook.jsonl here (slower; for finding leaks)")
    parser.add_argument("--memhook-options", default="--every 60", help="options for benchmarks.memhook, e.g. '--every 30 --frames 0 --trim'")
    args = parser.parse_args(argv)
    if args.memhook:
        args.memhook.mkdir(parents=True, exist_ok=True)
        os.environ["FAULTS_MEMHOOK"] = str(args.memhook.resolve())
        os.environ["FAULTS_MEMHOOK_OPTIONS"] = args.memhook_options
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(soak(args.minutes, args.seed, args.every, args.warmup, args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="securechat-soak-") as raw:
            result = asyncio.run(soak(args.minutes, args.seed, args.every, args.warmup, Path(raw)))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
