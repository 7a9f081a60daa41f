"""One fault-checker run: a seeded schedule of faults over real processes, then the checker.

    result = await run(RunOptions(seed=7, mode="cluster", duration=20), root=tmp_path)
    assert result.report.ok, result.summary()

The schedule (which faults, on what, for how long, in which order, and
each client's rooms and pace) comes from `random.Random(seed)` alone, so a
failing seed replays the same faults from its number. The interleaving
with real processes is not replayed exactly: timing on a shared machine
varies, which is why a seed that fails once is kept and run again.

Modes:
- cluster: a 3-node NATS JetStream cluster (mutual TLS, routes too), 3
  securechat replicas over it (stream replicas: 3), the proxy in front.
- single: one in-memory securechat server behind the proxy.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fault_checker import ClientRecord, Report, check
from fault_clients import Client
from fault_procs import Cluster, Proxy, ServerProcess, issue_certificates

CLUSTER_FAULTS = ("replica-kill", "replica-stop", "replica-term", "nats-restart", "nats-quorum", "drop", "stall", "slow-consumer")
FLOOD = tuple(int(x) for x in __import__("os").environ.get("FAULTS_FLOOD", "1500,2500").split(","))
SINGLE_FAULTS = ("server-kill", "server-term", "drop", "stall", "slow-consumer")
# The harness's server limits: small queues so a stalled reader becomes a slow
# consumer quickly, and rate limits out of the way of the flood.
LIMITS = {"queue_size": 64, "history_size": 4096, "max_messages_per_second": 2000, "message_burst": 4000, "max_streams_per_identity": 64}


@dataclass(frozen=True)
class RunOptions:
    seed: int
    mode: str = "cluster"  # or "single"
    duration: float = 20.0  # seconds of faults (setup and the final drain come on top)
    clients: int = 12
    rooms: int = 3
    replicas: int = 3
    pace: tuple[float, float] = (0.2, 0.8)  # seconds between one client's sends
    kinds: tuple[str, ...] = ()  # restrict the schedule to these fault kinds (default: all of the mode)
    drain_timeout: float = 45.0


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str
    seconds: float  # how long it lasts (down, stopped, stalled)
    pause: float  # quiet time before it
    extra: str = ""


def schedule(options: RunOptions) -> list[Fault]:
    """The run's faults, from the seed alone."""
    rng = random.Random(f"faults-{options.seed}-{options.mode}")  # noqa: S311 - a seeded schedule, not security
    kinds = options.kinds or (CLUSTER_FAULTS if options.mode == "cluster" else SINGLE_FAULTS)
    replicas = [f"replica-{i}" for i in range(options.replicas)] if options.mode == "cluster" else ["server"]
    clients = client_names(options)
    faults: list[Fault] = []
    elapsed = 0.0
    while elapsed < options.duration:
        kind = rng.choice(kinds)
        pause = rng.uniform(0.5, 2.5)
        if kind in ("replica-kill", "replica-term", "server-kill", "server-term"):
            fault = Fault(kind, rng.choice(replicas), rng.uniform(0.2, 2.0), pause)
        elif kind == "replica-stop":
            fault = Fault(kind, rng.choice(replicas), rng.uniform(0.5, 3.0), pause)
        elif kind == "nats-restart":
            fault = Fault(kind, f"nats-{rng.randrange(3)}", rng.uniform(0.5, 3.0), pause)
        elif kind == "nats-quorum":
            first, second = rng.sample(range(3), 2)
            fault = Fault(kind, f"nats-{first},nats-{second}", rng.uniform(1.0, 4.0), pause)
        elif kind == "drop":
            fault = Fault(kind, ",".join(rng.sample(clients, rng.randint(1, max(1, len(clients) // 3)))), 0.0, pause)
        elif kind == "stall":
            fault = Fault(kind, rng.choice(clients), rng.uniform(0.5, 3.0), pause)
        else:  # slow-consumer: its reader stalls while another member floods one of its rooms
            fault = Fault(kind, rng.choice(clients), rng.uniform(2.0, 4.0), pause, extra=str(rng.randint(FLOOD[0], FLOOD[1])))
        faults.append(fault)
        elapsed += pause + fault.seconds + 1.0
    return faults


def client_names(options: RunOptions) -> list[str]:
    return [f"c{index:02d}" for index in range(options.clients)]


def client_rooms(options: RunOptions) -> dict[str, list[str]]:
    """Each client in one or two rooms; every room has at least two members."""
    rng = random.Random(f"rooms-{options.seed}")  # noqa: S311 - a seeded schedule, not security
    rooms = [f"room-{index}" for index in range(options.rooms)]
    plan: dict[str, list[str]] = {}
    for index, name in enumerate(client_names(options)):
        mine = [rooms[index % len(rooms)]]
        if rng.random() < 0.5:
            other = rng.choice(rooms)
            if other not in mine:
                mine.append(other)
        plan[name] = mine
    return plan


@dataclass
class InjectedFault:
    kind: str
    target: str
    seconds: float
    started: float
    ended: float = 0.0
    note: str = ""


@dataclass
class RunResult:
    options: RunOptions
    report: Report
    faults: list[InjectedFault]
    recovery: dict[str, list[float]]  # kind -> seconds to recover, one per fault
    records: list[ClientRecord] = field(default_factory=list)
    seconds: float = 0.0
    reconnects: int = 0
    drained: bool = True
    samples: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> str:
        """The long mode's summary: faults, messages, breaches, p99 time to recover per kind."""
        r = self.report
        lines = [
            f"seed {self.options.seed}, mode {self.options.mode}, a {self.options.duration:g}-second fault schedule ({self.seconds:.0f} s in all with setup and drain), {r.clients} clients",
            "",
            "| measure | value |",
            "|---|---|",
            f"| faults injected | {len(self.faults)} ({', '.join(f'{kind} {count}' for kind, count in sorted(self.fault_counts().items()))}) |",
            f"| messages sent / acknowledged / delivered | {r.sent:,} / {r.acknowledged:,} / {r.delivered:,} |",
            f"| duplicates (accepted twice / received twice) | {r.duplicates} / {r.duplicate_deliveries} |",
            f"| losses (events / messages) | {r.losses} / {r.lost_messages} |",
            f"| unreported gaps | {r.unreported_gaps} |",
            f"| reported gaps (OUT_OF_RANGE) / events in them | {r.reported_gaps} / {r.reported_gap_events} |",
            f"| told duplicates (in-memory server killed) | {r.told_duplicates} |",
            f"| unacknowledged at the end (reported) | {r.unacknowledged_reported} |",
            f"| client reconnects | {self.reconnects} |",
            f"| violations | {len(r.violations)} |",
            "",
            "| fault | count | p50 s to recover | p99 s to recover | max |",
            "|---|---|---|---|---|",
        ]
        for kind, values in sorted(self.recovery.items()):
            if values:
                lines.append(f"| {kind} | {len(values)} | {_quantile(values, 0.5):.2f} | {_quantile(values, 0.99):.2f} | {max(values):.2f} |")
        return "\n".join(lines)

    def fault_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for fault in self.faults:
            counts[fault.kind] = counts.get(fault.kind, 0) + 1
        return counts

    def summary(self) -> str:
        return self.table() + "\n\nviolations:\n" + "\n".join(self.report.violations[:30])

    def as_dict(self) -> dict[str, Any]:
        return {
            "options": asdict(self.options),
            "report": self.report.as_dict(),
            "faults": [asdict(fault) for fault in self.faults],
            "recovery_p99_seconds": {kind: round(_quantile(v, 0.99), 3) for kind, v in self.recovery.items() if v},
            "recovery_seconds": {kind: [round(x, 3) for x in v] for kind, v in self.recovery.items()},
            "seconds": round(self.seconds, 1),
            "reconnects": self.reconnects,
            "drained": self.drained,
        }


def _quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile: with few faults of a kind, p99 is their maximum."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


class Deployment:
    """The processes of one run and the faults that can be done to them."""

    def __init__(self, root: Path, options: RunOptions, *, extra_clients: tuple[str, ...] | list[str] = ()) -> None:
        self.root = root
        self.clients_dir = root
        self.options = options
        self.extra_clients = list(extra_clients)  # identities outside the checker (the soak's churners)
        names = client_names(options) + self.extra_clients
        replicas = [f"replica-{i}" for i in range(options.replicas)] if options.mode == "cluster" else []
        self.certs = issue_certificates(root / "certs", clients=names, replicas=replicas)
        self.cluster = Cluster(root, self.certs) if options.mode == "cluster" else None
        if self.cluster is not None:
            self.servers = {name: ServerProcess(root, self.certs, name, cluster=self.cluster, limits=LIMITS) for name in replicas}
        else:
            self.servers = {"server": ServerProcess(root, self.certs, "server", cluster=None, limits=LIMITS)}
        self.proxy = Proxy([(name, server.port) for name, server in self.servers.items()])
        self.clients: dict[str, Client] = {}

    async def start(self) -> None:
        if self.cluster is not None:
            await self.cluster.start()
        for server in self.servers.values():
            server.start()
        for server in self.servers.values():
            await server.wait_listening()

    def add_clients(self, rooms: dict[str, list[str]]) -> None:
        seed = self.options.seed
        for name in self.extra_clients:
            cert, key = self.certs.pair(name)
            config = {"target": f"localhost:{self.proxy.front(name)}", "tls": {"ca": str(self.certs.ca), "cert": str(cert), "key": str(key)}}
            (self.clients_dir / f"{name}.yaml").write_text(json.dumps(config), encoding="utf-8")
        for name, mine in rooms.items():
            port = self.proxy.front(name)
            rng = random.Random(f"client-{seed}-{name}")  # noqa: S311 - a seeded schedule, not security
            client = Client(name, mine, port=port, certs=self.certs, root=self.root, rng=rng, pace=self.options.pace)
            self.clients[name] = client
            client.start()

    async def heal(self) -> None:
        """Everything back up: stopped processes continued, dead ones started."""
        for server in self.servers.values():
            if server.process.stopped:
                server.process.signal(signal.SIGCONT)
        if self.cluster is not None:
            for node in self.cluster.nodes:
                if node.process.stopped:
                    node.process.signal(signal.SIGCONT)
                if not node.process.running:
                    self.cluster.start_node(node)
            await self.cluster.wait_ready()
        for server in self.servers.values():
            if not server.process.running:
                server.start()
        for server in self.servers.values():
            await server.wait_listening()

    async def inject(self, fault: Fault, rooms: dict[str, list[str]], rng: random.Random) -> str:
        kind = fault.kind
        if kind in ("replica-kill", "server-kill"):
            server = self.servers[fault.target]
            await server.process.kill()
            await asyncio.sleep(fault.seconds)
            server.start()
            await server.wait_listening()
        elif kind in ("replica-term", "server-term"):
            server = self.servers[fault.target]
            code = await server.process.terminate(timeout=15)
            await asyncio.sleep(fault.seconds)
            server.start()
            await server.wait_listening()
            return f"exit {code}"
        elif kind == "replica-stop":
            process = self.servers[fault.target].process
            process.signal(signal.SIGSTOP)
            await asyncio.sleep(fault.seconds)
            process.signal(signal.SIGCONT)
        elif kind in ("nats-restart", "nats-quorum"):
            assert self.cluster is not None
            nodes = [self.cluster.nodes[int(name.rsplit("-", 1)[1])] for name in fault.target.split(",")]
            for node in nodes:
                await node.process.kill()
            await asyncio.sleep(fault.seconds)
            for node in nodes:
                self.cluster.start_node(node)
            await self.cluster.wait_ready()
        elif kind == "drop":
            dropped = sum(self.proxy.drop(name) for name in fault.target.split(","))
            return f"{dropped} connections"
        elif kind == "stall":
            stalled = self.proxy.stall(fault.target, fault.seconds)
            await asyncio.sleep(fault.seconds)
            return f"{stalled} connections"
        elif kind == "slow-consumer":
            room = rng.choice(rooms[fault.target])
            flooders = [name for name, mine in rooms.items() if room in mine and name != fault.target]
            flooder = rng.choice(flooders)
            self.proxy.stall(fault.target, fault.seconds, down_only=True)
            self.clients[flooder].burst(room, int(fault.extra))
            await asyncio.sleep(fault.seconds)
            return f"{flooder} floods {room}"
        else:
            raise ValueError(f"unknown fault kind {kind}")
        return ""

    async def stop(self) -> None:
        for client in self.clients.values():
            await client.close()
        self.proxy.close()
        for server in self.servers.values():
            await server.process.terminate(timeout=10)
        if self.cluster is not None:
            await self.cluster.stop()


async def run(options: RunOptions, *, root: Path, sample: Any = None) -> RunResult:
    """Set up, inject the seed's faults for options.duration, heal, drain, check."""
    started = time.monotonic()
    faults = schedule(options)
    rooms = client_rooms(options)
    rng = random.Random(f"targets-{options.seed}")  # noqa: S311 - a seeded schedule, not security
    deployment = Deployment(root, options)
    injected: list[InjectedFault] = []
    samples: list[dict[str, Any]] = []
    drained = False
    try:
        await deployment.start()
        deployment.add_clients(rooms)
        await asyncio.wait_for(asyncio.gather(*(client.joined.wait() for client in deployment.clients.values())), 60)
        await asyncio.sleep(1.0)
        fault_start = time.monotonic()
        for fault in faults:
            if time.monotonic() - fault_start > options.duration:
                break
            await asyncio.sleep(fault.pause)
            record = InjectedFault(fault.kind, fault.target, fault.seconds, time.monotonic())
            injected.append(record)
            record.note = await deployment.inject(fault, rooms, rng)
            record.ended = time.monotonic()
            if sample is not None:
                samples.append(await sample(deployment))
        await deployment.heal()
        for client in deployment.clients.values():
            client.stop_sending()
        drained = await _drain(deployment, options.drain_timeout)
    finally:
        # What each client had when the run ended: closing the sessions one
        # by one publishes LEAVEs that the clients closed before cannot get.
        cut = {name: len(client.log) for name, client in deployment.clients.items()}
        await deployment.stop()
        _save_logs(root, deployment, injected)
    records = [
        ClientRecord(name=c.name, rooms=tuple(c.rooms), log=tuple(c.log[: cut[c.name]]), unacknowledged=tuple(c.unacknowledged))
        for c in deployment.clients.values()
    ]
    # No duplicate is allowed in either mode: a single server's restart makes the client report, not resend.
    report = check(records)
    if not drained:
        report.violations.append(f"the run did not settle within {options.drain_timeout:g}s after the faults (messages still unacknowledged or undelivered)")
    result = RunResult(
        options=options,
        report=report,
        faults=injected,
        recovery=_recovery(injected, deployment.clients.values()),
        records=records,
        seconds=time.monotonic() - started,
        reconnects=sum(c.reconnects for c in deployment.clients.values()),
        drained=drained,
        samples=samples,
    )
    (root / "result.json").write_text(json.dumps(result.as_dict(), indent=1), encoding="utf-8")
    return result


async def _drain(deployment: Deployment, timeout: float) -> bool:
    """Until every send is echoed (each client's last ones included), then two quiet seconds for deliveries in flight.

    Every client sends its final messages after the faults are healed, so
    its own final echo proves it is connected again; what others had
    accepted before reaches it in order before that echo, or its session
    reported a gap. Waiting for everyone to receive everything instead
    would wait forever for events inside a reported gap.
    """
    deadline = time.monotonic() + timeout
    clients = list(deployment.clients.values())
    while time.monotonic() < deadline:
        if all(client.pending == 0 and {client.final_text(client.name, room) for room in client.rooms} <= set(client.acked) for client in clients):
            quiet_since, seen = time.monotonic(), sum(len(client.log) for client in clients)
            while time.monotonic() - quiet_since < 2.0 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                now_seen = sum(len(client.log) for client in clients)
                if now_seen != seen:
                    quiet_since, seen = time.monotonic(), now_seen
            return all(client.pending == 0 for client in clients)
        await asyncio.sleep(0.2)
    return False


def _recovery(faults: list[InjectedFault], clients: Any) -> dict[str, list[float]]:
    """Per fault: until every client that sent afterwards had its first send after the fault's start echoed."""
    recovery: dict[str, list[float]] = {}
    clients = list(clients)
    for fault in faults:
        worst: float | None = None
        for client in clients:
            after = [(at, text) for text, at in client.sent_at.items() if at >= fault.started]
            if not after:
                continue
            at, text = min(after)
            acked = client.acked.get(text)
            if acked is None:
                continue
            worst = max(worst or 0.0, acked - fault.started)
        if worst is not None:
            recovery.setdefault(fault.kind, []).append(worst)
    return recovery


def _save_logs(root: Path, deployment: Deployment, faults: list[InjectedFault]) -> None:
    """Every client's log and the faults, for reading a failing seed afterwards."""
    with (root / "clients.jsonl").open("w", encoding="utf-8") as out:
        for client in deployment.clients.values():
            out.write(json.dumps({"name": client.name, "rooms": client.rooms, "unacknowledged": client.unacknowledged, "log": client.log}) + "\n")
    (root / "faults.json").write_text(json.dumps([asdict(fault) for fault in faults], indent=1), encoding="utf-8")
