"""Full-size connection floods (issue 13) and a good client's SayHello latency during each, against no attack, in one run.

    .venv/bin/python benchmarks/floods.py [--seconds 10] [--silent 10050] [--resets 50000] [--idle-streams 10000] [--watches 20000]

One in-process server with the default limits (max_connections 10,000,
max_handshakes 1,000, handshake_timeout_seconds 5, max_concurrent_streams
100, max_resets_per_second 100, health_max_streams 64). For each attack the
good client (bob, its own connection) calls SayHello every 20 ms for
--seconds; it reports p50/p99 in ms, failures, and the ratio to the
no-attack baseline measured first in the same run. Prints one JSON object.
Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "hostile"))
from flood_clients import RawH2, silent_connections, tls_context  # noqa: E402

from securechat import pki  # noqa: E402
from securechat.client import open_channel, say_hello  # noqa: E402
from securechat.config import load_client_config, load_server_config  # noqa: E402
from securechat.errors import SecureChatError  # noqa: E402
from securechat.server.app import raise_open_file_limit, start_server  # noqa: E402


def _deployment(root: Path) -> None:
    ca = pki.create_ca()
    store = pki.CertStore(root / "certs")
    store.write_ca(ca)
    store.write_leaves([pki.issue_server_cert(ca, "server"), pki.issue_client_cert(ca, "alice"), pki.issue_client_cert(ca, "bob")])
    tls = {"cert": "certs/server.pem", "key": "certs/server-key.pem", "client_ca": "certs/ca.pem"}
    (root / "server.yaml").write_text(yaml.safe_dump({"listen": "127.0.0.1:0", "tls": tls, "health_port": 0}))


async def _probe(root: Path, port: int, seconds: float) -> dict[str, float | int | None]:
    (root / "bob.yaml").write_text(
        yaml.safe_dump({"target": f"localhost:{port}", "tls": {"ca": "certs/ca.pem", "cert": "certs/bob.pem", "key": "certs/bob-key.pem"}})
    )
    config = load_client_config(root / "bob.yaml")
    latencies: list[float] = []
    failures = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            async with open_channel(config) as channel:
                while time.monotonic() < end:
                    started = time.monotonic()
                    await say_hello(channel, timeout=5.0)
                    latencies.append(time.monotonic() - started)
                    await asyncio.sleep(0.02)
        except SecureChatError:
            failures += 1
            await asyncio.sleep(0.1)
    latencies.sort()
    return {
        "calls": len(latencies),
        "failures": failures,
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 2) if latencies else None,
    }


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--silent", type=int, default=10_050)
    parser.add_argument("--resets", type=int, default=50_000)
    parser.add_argument("--idle-streams", type=int, default=10_000)
    parser.add_argument("--watches", type=int, default=20_000)
    args = parser.parse_args()
    raise_open_file_limit()
    root = Path(tempfile.mkdtemp(prefix="floods-"))
    _deployment(root)
    server = await start_server(load_server_config(root / "server.yaml"))
    port, certs = server.port, root / "certs"
    report: dict[str, object] = {"parameters": vars(args), "limits": {k: v for k, v in vars(server.config.limits).items()}}
    results: dict[str, dict[str, object]] = {}
    results["no attack"] = await _probe(root, port, args.seconds)

    async def during(name: str, attack, cleanup=None) -> None:
        outcome: dict[str, object] = {}
        thread = threading.Thread(target=lambda: outcome.update(attack() or {}), daemon=True)
        thread.start()
        await asyncio.sleep(0.5)
        result = await _probe(root, port, args.seconds)
        thread.join(60)
        if cleanup is not None:
            cleanup()
        result["attack"] = outcome
        result["closed_by_guard"] = dict(server.guards[0].closed)
        result["rss_mb_max"] = _rss_mb()
        results[name] = result
        await asyncio.sleep(1.0)

    held: list = []

    def silent() -> dict[str, object]:
        held.extend(silent_connections(port, args.silent))
        return {"connections": len(held)}

    await during("silent TCP connections", silent, lambda: [sock.close() for sock in held])

    def rapid_reset() -> dict[str, object]:
        client = RawH2(port, context=tls_context(certs))
        outcome = client.rapid_reset(args.resets, per_second=args.resets / args.seconds)
        client.close()
        return {"streams_sent": outcome.streams, "closed_by_server": outcome.closed_by_server, "seconds": round(outcome.seconds, 2)}

    await during("HTTP/2 rapid reset (one connection)", rapid_reset)

    idle: list[RawH2] = []

    def idle_streams() -> dict[str, object]:
        client = RawH2(port, context=tls_context(certs))
        idle.append(client)
        outcome = client.idle_streams(args.idle_streams)
        return {"streams_sent": outcome.streams, "refused": outcome.refused}

    await during("idle streams on one connection", idle_streams, lambda: [c.close() for c in idle])

    watchers: list[RawH2] = []

    def watches() -> dict[str, object]:
        refused = sent = 0
        for _ in range(max(1, args.watches // 1000)):
            try:
                client = RawH2(server.health_port, context=None)
            except OSError:
                continue
            watchers.append(client)
            outcome = client.idle_streams(min(1000, args.watches))
            sent += outcome.streams
            refused += outcome.refused
        return {"watch_streams_sent": sent, "refused": refused, "open_on_health_port": server.health_cap.open if server.health_cap else None}

    await during("Watch flood on the health port", watches, lambda: [c.close() for c in watchers])
    base = results["no attack"]
    for name, result in results.items():
        if name != "no attack" and result.get("p99_ms") and base.get("p99_ms"):
            result["p50_ratio"] = round(float(result["p50_ms"]) / float(base["p50_ms"]), 2)  # type: ignore[arg-type]
            result["p99_ratio"] = round(float(result["p99_ms"]) / float(base["p99_ms"]), 2)  # type: ignore[arg-type]
    report["results"] = results
    await server.stop(0)
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    asyncio.run(main())
