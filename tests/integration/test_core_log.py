"""`securechat serve` reads gRPC core's log: refused TLS handshakes logged by reason and counted, JSON logs stay JSON."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_process import ServeProcess

from securechat import pki

SERVER_YAML = """\
listen: 127.0.0.1:0
tls:
  cert: certs/server.pem
  key: certs/server-key.pem
  client_ca: certs/ca.pem
log: {level: info, format: json}
metrics_port: 0
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """quickstart's certificates, plus an expired client, a foreign CA and its client; a JSON-logging server.yaml."""
    root = tmp_path_factory.mktemp("core-log")
    done = subprocess.run(
        [sys.executable, "-m", "securechat", "quickstart", "--dir", "."], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    (root / "server.yaml").write_text(SERVER_YAML)
    store = pki.CertStore(root / "certs")
    now = pki.utc_now()
    store.write_leaf(
        "old",
        pki.issue_client_cert(store.load_ca(), "old", not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1)),
    )
    foreign = pki.CertStore(root / "foreign")
    foreign.write_ca(foreign_ca := pki.create_ca())
    foreign.write_leaf("mallory", pki.issue_client_cert(foreign_ca, "mallory"))
    return root


@pytest.fixture
def server(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServeProcess]:
    """The server, started the way a user silencing gRPC would: it still needs core's handshake lines."""
    monkeypatch.setenv("GRPC_VERBOSITY", "NONE")
    running = ServeProcess(root, listen=None)
    yield running
    assert running.stop() == 0


def _handshake(port: int, root: Path, *, trust: str = "certs/ca.pem", cert: str | None = None) -> None:
    """A TLS client with certificate CERT (if any) that trusts TRUST; reads one byte so that TLS 1.3 alerts arrive."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(root / trust)
    context.set_alpn_protocols(["h2"])
    if cert is not None:
        context.load_cert_chain(root / f"{cert}.pem", root / f"{cert}-key.pem")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.settimeout(2)
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass


def _plaintext(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        raw.settimeout(2)
        try:
            raw.recv(100)
        except OSError:
            pass


def _refusals(server: ServeProcess, count: int) -> list[dict]:
    """Wait until the server has logged COUNT refused handshakes; returns them (parsed JSON)."""
    deadline = time.monotonic() + 10
    while True:
        found = [json.loads(line) for line in list(server.lines) if "TLS handshake refused" in line]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _handshake_counts(server: ServeProcess) -> dict[str, float]:
    port = int(server.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()  # noqa: S310 - loopback
    return {m[1]: float(m[2]) for m in re.finditer(r'securechat_tls_handshake_failures_total\{reason="(\w+)"\} (\S+)', text)}


def test_each_refused_handshake_is_logged_with_its_reason_and_counted(server: ServeProcess, root: Path) -> None:
    """No cert, foreign CA, expired, wrong EKU, client refusing us, plaintext: one JSON line and one count each."""
    attempts = [
        ("no_certificate", lambda: _handshake(server.port, root)),
        ("unknown_ca", lambda: _handshake(server.port, root, cert="foreign/mallory")),
        ("expired", lambda: _handshake(server.port, root, cert="certs/old")),
        ("wrong_eku", lambda: _handshake(server.port, root, cert="certs/server")),
        ("client_rejected_server", lambda: _handshake(server.port, root, trust="foreign/ca.pem", cert="certs/alice")),
        ("not_tls", lambda: _plaintext(server.port)),
    ]
    for done, (_, attempt) in enumerate(attempts, start=1):
        attempt()
        assert len(_refusals(server, done)) == done, "\n".join(server.lines)

    assert [r["code"] for r in _refusals(server, len(attempts))] == [reason for reason, _ in attempts]
    assert _handshake_counts(server) == {reason: 1.0 for reason, _ in attempts}
    for line in server.lines:  # gRPC core's own lines no longer break the JSON stream
        json.loads(line)


def test_a_good_client_is_not_counted(server: ServeProcess, root: Path) -> None:
    """The failing twin: alice's certificate completes the handshake; nothing is logged or counted."""
    _handshake(server.port, root, cert="certs/alice")
    time.sleep(0.5)
    assert _refusals(server, 0) == []
    assert _handshake_counts(server) == {}
