"""RSS of a server under connection churn, by cyclic-GC policy: what closed sessions hold until a collection.

    .venv/bin/python -m benchmarks.gc_churn --sessions 1600 > gc_churn.json

One in-process securechat server (in memory, mTLS) and short sessions
against it, 50 at a time: open a channel, post one message, wait for its
echo, close. After every 200 sessions the process's RSS is sampled. The
policies, each in a fresh subprocess: the server as it runs
(`securechat.server.app.GC_THRESHOLDS` and its `Collector`, which
collects after every 100 ended streams), the thresholds alone (the server
before the collector), Python's default (700, 10, 10) without the
collector, and the thresholds plus a full `gc.collect()` every 200
sessions. The client channels live in the same process, so absolute
numbers include them; the policies differ only in when cycles are
collected. With --sessions beyond 1,600 it also shows whether what remains
after collections levels off. A diagnostic for the soak (README "Soak");
prints JSON, never fails a build.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ("server", "thresholds-only", "python-default", "thresholds+collect")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _run(policy: str, sessions: int, root: Path) -> list[dict[str, Any]]:
    sys.path.insert(0, str(ROOT / "tests" / "faults"))
    from fault_procs import issue_certificates

    from securechat.client.chat import open_chat
    from securechat.config import load_client_config, load_server_config
    from securechat.server.app import GC_THRESHOLDS, start_server

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
    server = await start_server(load_server_config(server_yaml))
    assert server.collector is not None
    if policy != "server":
        await server.collector.stop()
    gc.freeze()
    gc.set_threshold(*((700, 10, 10) if policy == "python-default" else GC_THRESHOLDS))
    cert, key = certs.pair("alice")
    client_yaml = root / "alice.yaml"
    client_yaml.write_text(f"target: localhost:{server.port}\ntls: {{ca: {certs.ca}, cert: {cert}, key: {key}}}\n", encoding="utf-8")
    config = load_client_config(client_yaml)

    async def session(n: int) -> None:
        async with open_chat(config) as chat:
            await chat.send(f"s{n}", room=f"r{n % 50}")
            async for event in chat:
                if event.text == f"s{n}":
                    break

    samples = [{"sessions": 0, "rss_mb": round(_rss_mb(), 1)}]
    done = 0
    while done < sessions:
        await asyncio.gather(*(session(done + k) for k in range(50)))
        done += 50
        if done % 200 == 0:
            if policy == "thresholds+collect":
                gc.collect()
            samples.append({"sessions": done, "rss_mb": round(_rss_mb(), 1), "gc_count": list(gc.get_count())})
    stats = server.collector.stats
    samples.append({"collector": {"collections": stats.collections, "full": stats.full_collections,
                                  "pause_ms_total": round(stats.pause_seconds * 1000, 1),
                                  "pause_ms_max": round(stats.max_pause_seconds * 1000, 2), "collected": stats.collected}})
    await server.stop(0)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1600)
    parser.add_argument("--policy", choices=POLICIES, help="run one policy in this process (used by the parent run)")
    args = parser.parse_args(argv)
    if args.policy:
        with tempfile.TemporaryDirectory(prefix="securechat-gc-churn-") as raw:
            print(json.dumps(asyncio.run(_run(args.policy, args.sessions, Path(raw)))))
        return 0
    result: dict[str, Any] = {"sessions": args.sessions}
    for policy in POLICIES:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.gc_churn", "--policy", policy, "--sessions", str(args.sessions)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        result[policy] = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
