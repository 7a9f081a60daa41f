"""deploy/nats: nats-server itself accepts both configs (`nats-server -t`) with certificates from securechat."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from securechat import pki

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "broker"))
from nats_support import nats_server_binary  # noqa: E402


@pytest.fixture
def nats_tls(tmp_path: Path, pki_ca: pki.CertificateAuthority) -> Path:
    """ca.pem, nats.pem and route.pem as the configs name them (route.pem: a stand-in until a peer profile exists)."""
    store = pki.CertStore(tmp_path / "tls")
    store.write_ca(pki_ca)
    store.write_leaves([pki.issue_server_cert(pki_ca, "nats", sans=["nats", "nats-0.nats", "localhost"]), pki.issue_server_cert(pki_ca, "route")])
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
