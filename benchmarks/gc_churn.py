"""RSS of a server under connection churn, by cyclic-GC policy: what ended sessions hold until a collection.

    .venv/bin/python -m benchmarks.gc_churn --sessions 1600 > gc_churn.json

One securechat server (in memory, mTLS) in its own process, and short
sessions against it from this one, 50 at a time: open a channel, post one
message, wait for its echo, close. After every 200 sessions the server
process's RSS is sampled (/proc/PID/status), so the numbers are the
server's alone. The policies, each in a fresh server process:

- `server`: as `securechat serve` runs: `gc.freeze()` after start-up,
  `app.GC_THRESHOLDS` (50,000, 10, 10) and its `Collector`
  (server/collector.py: a young collection after every 100 ended streams,
  every 10th a full one);
- `thresholds-only`: the thresholds without the collector (the server
  before it);
- `python-default`: Python's (700, 10, 10), no collector;
- `thresholds+collect`: the thresholds and a full `gc.collect()` every 200
  ended streams (the floor: nothing waits).

With --sessions beyond 1,600 it shows whether what stays after
collections levels off; `--trim` calls malloc_trim(0) in the server after
each sample (and reports the RSS after it). A diagnostic for the soak
(README "Soak"); prints JSON, never fails a build.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ("server", "thresholds-only", "python-default", "thresholds+collect")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _serve(policy: str, config_path: Path) -> None:
    """The server process: start, apply the policy, print the port, then answer 'sample' / 'trim' lines on stdin."""
    from securechat.config import load_server_config
    from securechat.server.app import GC_THRESHOLDS, start_server

    server = await start_server(load_server_config(config_path))
    assert server.collector is not None
    if policy != "server":
        await server.collector.stop()
    gc.freeze()
    gc.set_threshold(*((700, 10, 10) if policy == "python-default" else GC_THRESHOLDS))
    ended = server.metrics

    async def collect_every_200() -> None:
        seen = 0
        while True:
            await asyncio.sleep(0.1)
            if ended.calls_ended - seen >= 200:
                seen = ended.calls_ended
                gc.collect()

    if policy == "thresholds+collect":
        asyncio.ensure_future(collect_every_200())
    print(json.dumps({"port": server.port}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        answer: dict[str, Any] = {"calls_ended": ended.calls_ended, "gc_count": list(gc.get_count())}
        if line == "trim":
            before = _rss_mb(os.getpid())
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            answer["trimmed_mb"] = round(before - _rss_mb(os.getpid()), 1)
        stats = server.collector.stats
        answer["collector"] = {
            "collections": stats.collections,
            "full": stats.full_collections,
            "pause_ms_total": round(stats.pause_seconds * 1000, 1),
            "pause_ms_max": round(stats.max_pause_seconds * 1000, 2),
            "collected": stats.collected,
        }
        print(json.dumps(answer), flush=True)
    await server.stop(0)


async def _run(policy: str, sessions: int, trim: bool, root: Path) -> list[dict[str, Any]]:
    sys.path.insert(0, str(ROOT / "tests" / "faults"))
    from fault_procs import issue_certificates

    from securechat.client.chat import open_chat
    from securechat.config import load_client_config

    certs = issue_certificates(root / "certs", clients=["alice"], replicas=[])
    server_yaml = root / "server.yaml"
    server_yaml.write_text(
        yaml.safe_dump(
            {
                "listen": "127.0.0.1:0",
                "tls": {"cert": str(certs.dir / "server.pem"), "key": str(certs.dir / "server-key.pem"), "client_ca": str(certs.ca)},
                "limits": {"max_streams_per_identity": 1000, "max_messages_per_second": 100000, "message_burst": 100000},
            }
        ),
        encoding="utf-8",
    )
    child = subprocess.Popen(  # noqa: S603 - this Python, this module
        [sys.executable, "-m", "benchmarks.gc_churn", "--serve", policy, str(server_yaml)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        port = json.loads(child.stdout.readline())["port"]
        cert, key = certs.pair("alice")
        client_yaml = root / "alice.yaml"
        client_yaml.write_text(f"target: localhost:{port}\ntls: {{ca: {certs.ca}, cert: {cert}, key: {key}}}\n", encoding="utf-8")
        config = load_client_config(client_yaml)

        async def session(n: int) -> None:
            async with open_chat(config) as chat:
                await chat.send(f"s{n}", room=f"r{n % 50}")
                async for event in chat:
                    if event.text == f"s{n}":
                        break

        def ask(line: str) -> dict[str, Any]:
            child.stdin.write(line + "\n")  # type: ignore[union-attr]
            child.stdin.flush()  # type: ignore[union-attr]
            return dict(json.loads(child.stdout.readline()))  # type: ignore[union-attr]

        samples = [{"sessions": 0, "rss_mb": round(_rss_mb(child.pid), 1)}]
        done = 0
        started = time.monotonic()
        while done < sessions:
            await asyncio.gather(*(session(done + k) for k in range(50)))
            done += 50
            if done % 200 == 0:
                await asyncio.sleep(1.0)  # the collector's check (0.5 s) sees the ends
                sample: dict[str, Any] = {"sessions": done, "rss_mb": round(_rss_mb(child.pid), 1)}
                sample.update(ask("trim" if trim else "sample"))
                sample["seconds"] = round(time.monotonic() - started, 1)
                samples.append(sample)
        return samples
    finally:
        child.stdin.close()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            child.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1600)
    parser.add_argument("--policies", default=",".join(POLICIES), help=f"comma-separated, of {', '.join(POLICIES)}")
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) in the server after each sample")
    parser.add_argument("--serve", nargs=2, metavar=("POLICY", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.serve[0], Path(args.serve[1])))
        return 0
    result: dict[str, Any] = {"sessions": args.sessions, "trim": args.trim}
    for policy in args.policies.split(","):
        if policy not in POLICIES:
            raise SystemExit(f"unknown policy {policy!r}: choose from {', '.join(POLICIES)}")
        with tempfile.TemporaryDirectory(prefix="securechat-gc-churn-") as raw:
            result[policy] = asyncio.run(_run(policy, args.sessions, args.trim, Path(raw)))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
