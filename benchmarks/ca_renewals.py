"""Online CA renewals/s against the chat server's SayHello req/s, in the same run; then a renewal storm.

A report, never a test: JSON on stdout. The CA service (`securechat ca serve`)
and the chat server (`securechat serve`, mTLS) run as users run them, each
in its own process, logging at info to a file; the load client is this
process. Rounds alternate the three measurements and report medians:

- sayhello: SayHello on one persistent mTLS connection, C calls in flight;
- sayhello_kept_connections: SayHello over the very connections shape of
  renew_mtls_persistent (one kept mTLS connection per identity, C in
  flight), so the ratio compares a renewal with a plain call and nothing else;
- trust_bundle_mtls_kept_connections: TrustBundle (no work) on the CA's
  mTLS port in that same shape: what the CA process spends per call on
  gRPC and TLS alone;
- renew_mtls_persistent: Renew over kept mTLS connections (the CA's
  `mtls_listen`), one per identity, authenticated by the handshake
  certificate; C in flight;
- renew_proof_persistent: Renew (a fresh ECDSA key, a CSR, the proof of
  the current key) on one kept TLS connection, C in flight; each worker
  renews its identities over and over, always from the newest certificate;
- renew_new_connection: the same, but every renewal opens a new connection
  (a full TLS handshake) and closes it;
- storm: N identities (issued offline, imported by the CA at start) renew
  all at once over K connections; every reply must be a certificate (no
  refusal) and every returned serial must be in the CA's database
  afterwards (none lost). Requests are built before the clock starts, so
  the storm measures the CA, not this process's key generation.

Each renewal's new key and CSR are made before the clock starts
(`make_new_keys`: 8 per identity, used in turn; `--keys-on-the-clock` makes
them during the measurement instead): key generation is the requester's
work, on its own machine, and on this 2-core machine it would otherwise
take the CPU from the CA. The CA still parses and verifies every CSR it
gets, and the proof modes still sign each proof on the clock.

Every renewal's record is durable before its reply (SQLite WAL,
synchronous=FULL; group commit shares one fsync between the renewals that
arrive together); the run checks afterwards that every serial it received
is in the database.

    python -m benchmarks.ca_renewals                       # 3 rounds of 5 s, C=32, storm of 10,000
    python -m benchmarks.ca_renewals --rounds 1 --seconds 3 --storm 1000
    python -m benchmarks.ca_renewals --rounds 1 --storm 0 --only mtls --keep-logs /tmp/ca-logs
    BENCH_PROFILE=/tmp/prof python -m benchmarks.ca_renewals --rounds 1 --storm 0   # py-spy of the CA per phase

CPU per call is the process's user + system time over the phase divided by
its calls (`/proc/PID/stat`), for the chat server and the CA alike; the
summary's `cost_*` entries are the target's other reading (CA CPU per
renewal over the chat server's CPU per SayHello: at most 2 is the target).
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
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from securechat import pki
from securechat._gen import ca_pb2, ca_pb2_grpc, chat_pb2, chat_pb2_grpc
from securechat.ca.client import CaTarget
from securechat.ca.policy import proof_message, sign_proof

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))] if ordered else float("nan")


@dataclass
class Identity:
    name: str
    chain_pem: bytes
    key: pki.PrivateKey


class Process:
    def __init__(self, args: list[str], cwd: Path, port: int, log: Path) -> None:
        self.log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "securechat", *args], cwd=cwd, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{' '.join(args)} did not start; see {log}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


PHASES = (("renew_mtls_persistent", "mtls"), ("renew_proof_persistent", "proof"), ("renew_new_connection", "new_connection"))


def profile(pid: int, label: str, seconds: float) -> subprocess.Popen[bytes] | None:
    """With BENCH_PROFILE=DIR: a native py-spy profile of the CA process during one phase, collapsed stacks in DIR."""
    out = os.environ.get("BENCH_PROFILE")
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not out or not Path(py_spy).exists():
        return None
    path = Path(out) / f"ca-{label}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [py_spy, "record", "--native", "--threads", "--rate", "250", "--format", "raw"]
    command += ["--duration", str(max(1, int(seconds) - 1)), "--pid", str(pid), "-o", str(path)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def setup(root: Path, identities: int, storm: int) -> pki.CertStore:
    store = pki.CertStore(root / "certs")
    store.init_hierarchy()
    ca = store.load_ca()
    store.write_leaves([pki.issue_server_cert(ca, "ca-service"), pki.issue_server_cert(ca, "server"), pki.issue_client_cert(ca, "alice")])
    store.issue_clients(ca, [f"r{i}" for i in range(identities)], days=2)
    if storm:
        store.issue_clients(ca, [f"s{i}" for i in range(storm)], days=2)
    return store


def load_identities(store: pki.CertStore, prefix: str, count: int) -> list[Identity]:
    return [
        Identity(f"{prefix}{i}", store.cert_path(f"{prefix}{i}").read_bytes(), pki.load_private_key(store.key_path(f"{prefix}{i}")))
        for i in range(count)
    ]


async def sayhello(port: int, store: pki.CertStore, seconds: float, concurrency: int) -> dict[str, float]:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=store.root_cert_path.read_bytes(),
        private_key=store.key_path("alice").read_bytes(),
        certificate_chain=store.cert_path("alice").read_bytes(),
    )
    async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        for _ in range(200):
            await stub.SayHello(chat_pb2.HelloRequest())
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while (start := time.perf_counter()) < deadline:
                await stub.SayHello(chat_pb2.HelloRequest())
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return {"per_second": len(latencies) / elapsed, "p50_ms": _pct(latencies, 50) * 1e3, "p99_ms": _pct(latencies, 99) * 1e3, "calls": len(latencies)}


async def unary_over_kept(
    address: str, trust: bytes, fleet: list[list[Identity]], seconds: float, *, service: str
) -> dict[str, float]:
    """SERVICE 'sayhello' (the chat server) or 'trust_bundle' (the CA's mTLS port): plain unary calls over
    kept mTLS connections, one per identity, in the very shape of renew_mtls_persistent (same connections,
    same calls in flight), so the ratio compares a renewal with a plain call and nothing else."""
    channels: dict[int, grpc.aio.Channel] = {}
    for mine in fleet:
        for identity in mine:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=trust, private_key=pki.private_key_pem(identity.key), certificate_chain=identity.chain_pem
            )
            channels[id(identity)] = grpc.aio.secure_channel(address, credentials, options=[("grpc.use_local_subchannel_pool", 1)])
    calls = {}
    for key, channel in channels.items():
        if service == "sayhello":
            calls[key] = (chat_pb2_grpc.ChatServiceStub(channel).SayHello, chat_pb2.HelloRequest())
        else:
            calls[key] = (ca_pb2_grpc.CertificateAuthorityStub(channel).TrustBundle, ca_pb2.TrustBundleRequest())
    latencies: list[float] = []
    try:
        for method, request in calls.values():
            await method(request)  # every handshake done before the clock starts
        deadline = time.perf_counter() + seconds

        async def worker(mine: list[Identity]) -> None:
            turn = 0
            while (start := time.perf_counter()) < deadline:
                method, request = calls[id(mine[turn % len(mine)])]
                turn += 1
                await method(request)
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(worker(mine) for mine in fleet))
        elapsed = time.perf_counter() - began
    finally:
        await asyncio.gather(*(channel.close() for channel in channels.values()))
    return {"per_second": len(latencies) / elapsed, "p50_ms": _pct(latencies, 50) * 1e3, "p99_ms": _pct(latencies, 99) * 1e3, "calls": len(latencies)}


@dataclass(frozen=True)
class NewKey:
    """A requester's next key and its CSR, made before the clock starts."""

    key: pki.PrivateKey
    csr_pem: bytes
    csr_der: bytes


def make_new_keys(fleet: list[list[Identity]], per_identity: int) -> dict[int, list[NewKey]]:
    """PER_IDENTITY fresh keys and CSRs for each identity, used in turn (a key never equals the current one).

    Key generation and the CSR's signature are the requester's work, done on
    its own machine; made here before the clock starts, the load client spends
    per renewal about what it spends per SayHello (the call, and for the
    proof modes one signature by the current key), so the rates compare the
    servers. Each renewal still sends the CA a CSR it parses and verifies
    afresh; a CSR is reused by later renewals of the same identity.
    """
    keys: dict[int, list[NewKey]] = {}
    for mine in fleet:
        for identity in mine:
            made = []
            for _ in range(per_identity):
                key = pki.generate_private_key()
                csr = pki_csr(key, identity)
                made.append(NewKey(key, csr, _der(csr)))
            keys[id(identity)] = made
    return keys


async def renewals(
    target: CaTarget,
    fleet: list[list[Identity]],
    seconds: float,
    *,
    mode: str,
    serials: list[str],
    new_keys: dict[int, list[NewKey]] | None = None,
) -> dict[str, float]:
    """MODE: 'mtls' (one kept mTLS connection per identity, authenticated by its handshake certificate),
    'proof' (one kept TLS connection, the proof of the current key in each request), or
    'new_connection' (a new TLS connection and handshake for every renewal, with the proof).

    With NEW_KEYS (`make_new_keys`) each renewal takes the identity's next pre-made key and CSR;
    without, it makes a key and a CSR on the clock, as `CaClient` does."""
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.perf_counter() + seconds
    options = [("grpc.use_local_subchannel_pool", 1)]
    server_only = grpc.ssl_channel_credentials(root_certificates=target.trust_pem)
    shared = grpc.aio.secure_channel(target.address, server_only, options=options) if mode == "proof" else None
    kept: dict[int, grpc.aio.Channel] = {}
    if mode == "mtls":
        for mine in fleet:
            for identity in mine:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=target.trust_pem, private_key=pki.private_key_pem(identity.key), certificate_chain=identity.chain_pem
                )
                kept[id(identity)] = grpc.aio.secure_channel(target.address, credentials, options=options)
    turns: dict[int, int] = {}
    if kept:  # every handshake done before the clock starts: these are persistent connections
        await asyncio.gather(*(channel.channel_ready() for channel in kept.values()))
        deadline = time.perf_counter() + seconds

    def next_key(identity: Identity) -> NewKey:
        if new_keys is None:
            key = pki.generate_private_key()
            csr = pki_csr(key, identity)
            return NewKey(key, csr, _der(csr) if mode != "mtls" else b"")
        pool = new_keys[id(identity)]
        turn = turns[id(identity)] = turns.get(id(identity), -1) + 1
        return pool[turn % len(pool)]

    def proof_request(identity: Identity, new: NewKey) -> ca_pb2.RenewRequest:
        signed_at = int(time.time() * 1000)
        return ca_pb2.RenewRequest(
            csr_pem=new.csr_pem,
            current_chain_pem=identity.chain_pem,
            signature=sign_proof(identity.key, proof_message(new.csr_der, signed_at)),
            signed_at_unix_ms=signed_at,
        )

    async def worker(mine: list[Identity]) -> None:
        turn = 0
        while time.perf_counter() < deadline:
            identity = mine[turn % len(mine)]
            turn += 1
            start = time.perf_counter()
            new = next_key(identity)
            try:
                if mode == "mtls":
                    # The connection keeps the certificate it was opened with: each renewal
                    # renews that one again, as a client would until it reconnects.
                    stub = ca_pb2_grpc.CertificateAuthorityStub(kept[id(identity)])
                    reply = await stub.Renew(ca_pb2.RenewRequest(csr_pem=new.csr_pem), timeout=60)
                elif shared is not None:
                    reply = await ca_pb2_grpc.CertificateAuthorityStub(shared).Renew(proof_request(identity, new), timeout=60)
                else:
                    async with grpc.aio.secure_channel(target.address, server_only, options=options) as channel:
                        reply = await ca_pb2_grpc.CertificateAuthorityStub(channel).Renew(proof_request(identity, new), timeout=60)
            except grpc.aio.AioRpcError as exc:
                failures.append(dict(exc.trailing_metadata() or ()).get("securechat-refusal") or exc.code().name)
                continue
            latencies.append(time.perf_counter() - start)
            serials.append(reply.serial)
            if mode != "mtls":
                identity.chain_pem, identity.key = bytes(reply.certificate_chain_pem), new.key

    began = time.perf_counter()
    try:
        await asyncio.gather(*(worker(mine) for mine in fleet))
    finally:
        if shared is not None:
            await shared.close()
        await asyncio.gather(*(channel.close() for channel in kept.values()))
    elapsed = time.perf_counter() - began
    return {
        "per_second": len(latencies) / elapsed,
        "p50_ms": _pct(latencies, 50) * 1e3,
        "p99_ms": _pct(latencies, 99) * 1e3,
        "renewals": len(latencies),
        "failures": len(failures),
    }


async def storm(target: CaTarget, identities: list[Identity], connections: int, serials: list[str]) -> dict[str, object]:
    prepared = time.perf_counter()
    requests = []
    for identity in identities:
        new_key = pki.generate_private_key()
        csr = pki_csr(new_key, identity)
        der = _der(csr)
        signed_at = int(time.time() * 1000)
        requests.append(
            ca_pb2.RenewRequest(
                csr_pem=csr,
                current_chain_pem=identity.chain_pem,
                signature=sign_proof(identity.key, proof_message(der, signed_at)),
                signed_at_unix_ms=signed_at,
            )
        )
    prep_seconds = time.perf_counter() - prepared
    credentials = grpc.ssl_channel_credentials(root_certificates=target.trust_pem)
    channels = [grpc.aio.secure_channel(target.address, credentials, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(connections)]
    try:
        await asyncio.gather(*(ch.channel_ready() for ch in channels))
        stubs = [ca_pb2_grpc.CertificateAuthorityStub(ch) for ch in channels]
        outcomes: dict[str, int] = {}
        done_at: list[float] = []
        began = time.perf_counter()

        async def one(index: int, request: ca_pb2.RenewRequest) -> None:
            try:
                reply = await stubs[index % connections].Renew(request, timeout=300)
            except grpc.aio.AioRpcError as exc:
                key = dict(exc.trailing_metadata() or ()).get("securechat-refusal") or exc.code().name
                outcomes[str(key)] = outcomes.get(str(key), 0) + 1
                return
            serials.append(reply.serial)
            outcomes["ok"] = outcomes.get("ok", 0) + 1
            done_at.append(time.perf_counter() - began)

        await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
        elapsed = time.perf_counter() - began
    finally:
        await asyncio.gather(*(ch.close() for ch in channels))
    return {
        "clients": len(identities),
        "connections": connections,
        "outcomes": outcomes,
        "seconds": elapsed,
        "per_second": outcomes.get("ok", 0) / elapsed,
        "time_to_50pct_s": _pct(done_at, 50),
        "time_to_100pct_s": max(done_at) if done_at else None,
        "request_prep_seconds": prep_seconds,
    }


def pki_csr(key: pki.PrivateKey, identity: Identity) -> bytes:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from securechat.ca.client import make_csr

    leaf = x509.load_pem_x509_certificates(identity.chain_pem)[0]
    return make_csr(key, str(leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value))


def _der(csr_pem: bytes) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    return x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)


def durable(db_path: Path, serials: list[str]) -> dict[str, int]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        known = {row[0] for row in db.execute("SELECT serial FROM certificates WHERE via = 'renew'")}
    missing = [s for s in serials if s not in known]
    return {"replies": len(serials), "in_database": len(serials) - len(missing), "missing": len(missing)}


async def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="ca-bench-") as raw:
        root = Path(raw)
        identities = args.concurrency * 4
        load_before = os.getloadavg()
        started = time.perf_counter()
        store = setup(root, identities, args.storm)
        setup_seconds = time.perf_counter() - started
        ca_port, chat_port = free_port(), free_port()
        mtls_port = free_port()
        (root / "ca.yaml").write_text(
            f"listen: 127.0.0.1:{ca_port}\nmtls_listen: 127.0.0.1:{mtls_port}\ncerts: certs\ntls: {{cert: certs/ca-service.pem, key: certs/ca-service-key.pem}}\n"
            f"database: ca.db\nlog: {{level: {args.ca_log_level}}}\n"
        )
        (root / "server.yaml").write_text(
            f"listen: 127.0.0.1:{chat_port}\ntls: {{cert: certs/server.pem, key: certs/server-key.pem, client_ca: certs/root.pem}}\n"
            "log: {level: info}\n"
        )
        ca = Process(["ca", "serve", "--config", "ca.yaml"], root, ca_port, root / "ca.log")
        chat = Process(["serve", "--config", "server.yaml"], root, chat_port, root / "server.log")
        target = CaTarget(f"localhost:{ca_port}", store.root_cert_path.read_bytes())
        mtls_target = CaTarget(f"localhost:{mtls_port}", store.root_cert_path.read_bytes())
        pool = load_identities(store, "r", identities)
        fleet = [pool[i :: args.concurrency] for i in range(args.concurrency)]
        serials: list[str] = []
        rounds: list[dict[str, object]] = []
        made = time.perf_counter()
        new_keys = None if args.keys_on_the_clock else make_new_keys(fleet, args.keys_per_identity)
        keys_seconds = time.perf_counter() - made
        try:
            if args.rounds:
                await renewals(target, fleet, 1.0, mode="proof", serials=serials, new_keys=new_keys)  # warm up
            for number in range(args.rounds):
                entry: dict[str, object] = {"round": number + 1}
                chat_cpu = cpu_seconds(chat.proc.pid)
                hello = await sayhello(chat_port, store, args.seconds, args.concurrency)
                hello["server_cpu_us_per_call"] = (cpu_seconds(chat.proc.pid) - chat_cpu) / max(1, hello["calls"]) * 1e6
                entry["sayhello"] = hello
                trust = store.root_cert_path.read_bytes()
                chat_cpu = cpu_seconds(chat.proc.pid)
                kept = await unary_over_kept(f"localhost:{chat_port}", trust, fleet, args.seconds, service="sayhello")
                kept["server_cpu_us_per_call"] = (cpu_seconds(chat.proc.pid) - chat_cpu) / max(1, kept["calls"]) * 1e6
                entry["sayhello_kept_connections"] = kept
                ca_cpu = cpu_seconds(ca.proc.pid)
                bundle = await unary_over_kept(f"localhost:{mtls_port}", trust, fleet, args.seconds, service="trust_bundle")
                bundle["ca_cpu_us_per_call"] = (cpu_seconds(ca.proc.pid) - ca_cpu) / max(1, bundle["calls"]) * 1e6
                entry["trust_bundle_mtls_kept_connections"] = bundle
                for name, mode in PHASES:
                    if args.only and mode not in args.only:
                        continue
                    ca_cpu = cpu_seconds(ca.proc.pid)
                    spy = profile(ca.proc.pid, f"{name}-{number + 1}", args.seconds)
                    result = await renewals(mtls_target if mode == "mtls" else target, fleet, args.seconds, mode=mode, serials=serials, new_keys=new_keys)
                    if spy is not None:
                        spy.wait()
                    result["ca_cpu_us_per_renewal"] = (cpu_seconds(ca.proc.pid) - ca_cpu) / max(1, result["renewals"]) * 1e6
                    entry[name] = result
                rounds.append(entry)
            storm_report = None
            if args.storm:
                storm_serials: list[str] = []
                storm_report = await storm(target, load_identities(store, "s", args.storm), args.storm_connections, storm_serials)
                storm_report["durable"] = durable(root / "ca.db", storm_serials)
            durability = durable(root / "ca.db", serials)
        finally:
            ca.stop()
            chat.stop()
            if args.keep_logs:
                Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
                for log_name in ("ca.log", "server.log"):
                    shutil.copy(root / log_name, Path(args.keep_logs) / log_name)

    def median(mode: str, key: str = "per_second") -> float:
        values = [float(r[mode][key]) for r in rounds if mode in r]  # type: ignore[index,operator]
        return statistics.median(values) if values else float("nan")

    hello = median("sayhello") if rounds else float("nan")
    summary: dict[str, float] = {"sayhello_per_second": hello, "sayhello_server_cpu_us": median("sayhello", "server_cpu_us_per_call")}
    if rounds:
        summary["sayhello_kept_connections_per_second"] = median("sayhello_kept_connections")
        summary["sayhello_kept_connections_server_cpu_us"] = median("sayhello_kept_connections", "server_cpu_us_per_call")
        summary["trust_bundle_mtls_kept_connections_per_second"] = median("trust_bundle_mtls_kept_connections")
        summary["trust_bundle_mtls_kept_connections_ca_cpu_us"] = median("trust_bundle_mtls_kept_connections", "ca_cpu_us_per_call")
    for name, _mode in PHASES:
        if any(name in r for r in rounds):
            summary[f"{name}_per_second"] = median(name)
            summary[f"{name}_ca_cpu_us"] = median(name, "ca_cpu_us_per_renewal")
            summary[f"ratio_{name.removeprefix('renew_')}_to_sayhello"] = median(name) / hello
    if "renew_mtls_persistent_per_second" in summary:
        same_shape = summary["sayhello_kept_connections_per_second"]
        summary["ratio_mtls_persistent_to_sayhello_kept_connections"] = summary["renew_mtls_persistent_per_second"] / same_shape
        # The target's other reading: CPU per call, the CA's per renewal against the chat server's per SayHello.
        summary["cost_mtls_persistent_over_sayhello"] = summary["renew_mtls_persistent_ca_cpu_us"] / summary["sayhello_server_cpu_us"]
        summary["cost_mtls_persistent_over_sayhello_kept_connections"] = (
            summary["renew_mtls_persistent_ca_cpu_us"] / summary["sayhello_kept_connections_server_cpu_us"]
        )
    summary["target_ratio"] = 0.5
    return {
        "parameters": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "identities": identities,
            "storm": args.storm,
            "storm_connections": args.storm_connections,
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            "cpus": os.cpu_count(),
            "tmpdir": tempfile.gettempdir(),
            "setup_seconds": setup_seconds,
            "new_keys": "on the clock" if args.keys_on_the_clock else f"{args.keys_per_identity} per identity, made before the clock",
            "new_keys_seconds": keys_seconds,
            "ca_log_level": args.ca_log_level,
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
        "rounds": rounds,
        "median": summary if rounds else {},
        "durable": durability,
        "storm": storm_report,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--storm", type=int, default=10_000, help="clients in the renewal storm (0: none)")
    parser.add_argument("--storm-connections", type=int, default=100)
    parser.add_argument(
        "--only", action="append", choices=[mode for _, mode in PHASES], help="run only this renewal phase (repeatable)"
    )
    parser.add_argument(
        "--keys-on-the-clock",
        action="store_true",
        help="make each renewal's key and CSR during the measurement (the load client's CPU then competes with the CA's)",
    )
    parser.add_argument("--keys-per-identity", type=int, default=8, help="pre-made keys and CSRs per identity, used in turn")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the CA's and the server's logs here at the end")
    parser.add_argument("--ca-log-level", default="info", help="the CA service's log level (info: an audit line per renewal)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
