"""deploy/nats: nats-server itself accepts both configs (`nats-server -t`) with certificates from securechat."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from securechat import pki

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "broker"))
from nats_support import nats_server_binary  # noqa: E402


@pytest.fixture
def nats_tls(tmp_path: Path, pki_ca: pki.CertificateAuthority) -> Path:
    """ca.pem, nats.pem and route.pem as the configs name them (route.pem: a peer certificate, serverAuth + clientAuth)."""
    store = pki.CertStore(tmp_path / "tls")
    store.write_ca(pki_ca)
    store.write_leaves(
        [
            pki.issue_server_cert(pki_ca, "nats", sans=["nats", "nats-0.nats", "localhost", "127.0.0.1"]),
            pki.issue_peer_cert(pki_ca, "route", sans=["nats-0.nats", "nats-1.nats", "nats-2.nats", "127.0.0.1"]),
        ]
    )
    return tmp_path / "tls"


@pytest.mark.parametrize("name", ["nats-server.conf", "cluster.conf"])
def test_nats_config_is_valid(tmp_path: Path, nats_tls: Path, name: str) -> None:
    """The config parses and its TLS files load (verify: true with our CA), paths rewritten to a temp dir."""
    text = (ROOT / "deploy" / "nats" / name).read_text(encoding="utf-8")
    assert "verify: true" in text and "jetstream" in text
    text = text.replace("/etc/nats/tls", str(nats_tls)).replace("/data/jetstream", str(tmp_path / "js")).replace("/var/run/nats", str(tmp_path))
    config = tmp_path / name
    config.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [str(nats_server_binary()), "-t", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"NATS_SERVER_NAME": "nats-0", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout + result.stderr


def test_cluster_routes_are_mutual_tls() -> None:
    """Routes between nodes verify certificates both ways, like clients."""
    text = (ROOT / "deploy" / "nats" / "cluster.conf").read_text(encoding="utf-8")
    cluster = text[text.index("cluster {") :]
    assert "verify: true" in cluster.split("routes:")[0]
    assert all(f"tls://nats-{n}.nats:6222" in cluster for n in range(3))


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _run_cluster(tmp_path: Path, tls: Path) -> list[str]:
    """Start cluster.conf as three loopback nodes; return each node's log once routes settle (bounded)."""
    ports = _free_ports(6)
    client_ports, route_ports = ports[:3], ports[3:]
    template = (ROOT / "deploy" / "nats" / "cluster.conf").read_text(encoding="utf-8")
    processes, logs = [], []
    try:
        for n in range(3):
            text = template.replace("/etc/nats/tls", str(tls)).replace("/data/jetstream", str(tmp_path / f"js{n}"))
            text = text.replace("/var/run/nats", str(tmp_path / f"run{n}")).replace("http_port: 8222", "")
            text = text.replace("host: 0.0.0.0", "host: 127.0.0.1").replace("port: 4222", f"port: {client_ports[n]}")
            text = text.replace("port: 6222", f"port: {route_ports[n]}")
            for k in range(3):
                text = text.replace(f"tls://nats-{k}.nats:6222", f"tls://127.0.0.1:{route_ports[k]}")
            (tmp_path / f"run{n}").mkdir()
            config = tmp_path / f"node{n}.conf"
            config.write_text(text, encoding="utf-8")
            log = tmp_path / f"node{n}.log"
            logs.append(log)
            processes.append(
                subprocess.Popen(
                    [str(nats_server_binary()), "--config", str(config), "--log", str(log)],
                    env={"NATS_SERVER_NAME": f"nats-{n}", "PATH": "/usr/bin:/bin"},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            texts = [log.read_text(encoding="utf-8", errors="replace") if log.exists() else "" for log in logs]
            # A JetStream metadata leader needs a quorum of routed nodes: the routes work.
            if any("metadata leader" in text or "handshake error" in text for text in texts):
                break
            time.sleep(0.1)
        time.sleep(0.3)
        return [log.read_text(encoding="utf-8", errors="replace") if log.exists() else "" for log in logs]
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)


def test_cluster_routes_form_with_peer_certificates(tmp_path: Path, nats_tls: Path) -> None:
    """cluster.conf as three real nodes on loopback: with `certs peer` route certificates every node routes to both others."""
    logs = _run_cluster(tmp_path, nats_tls)
    assert any("metadata leader" in text for text in logs), logs[0][-2000:]
    assert not any("handshake error" in text for text in logs)


def test_cluster_routes_refuse_server_only_certificates(tmp_path: Path, pki_ca: pki.CertificateAuthority, nats_tls: Path) -> None:
    """The failing twin: serverAuth-only route certificates are refused by the accepting node (incompatible key usage)."""
    store = pki.CertStore(nats_tls)
    store.write_leaves([pki.issue_server_cert(pki_ca, "route", sans=["127.0.0.1"])], force=True)
    logs = _run_cluster(tmp_path, nats_tls)
    assert any("incompatible key usage" in text for text in logs)
    assert not any("metadata leader" in text for text in logs)
