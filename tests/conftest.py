"""Shared fixtures. Each area keeps its fixtures in its own marked section."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

# Before anything imports grpc. pexpect starts every pseudo-terminal child by
# forking this process, which runs gRPC's threads; with fork support on (grpcio's
# default) gRPC's fork handler restarts its poller in the child, and ptyprocess
# then closes that poller's epoll fd before exec: in one fork of three here the
# child wrote "epoll_wait error: Bad file descriptor" into the terminal under
# test. Nothing in securechat forks with gRPC running (pki/workers.py forks only
# a single-threaded process). tests/terminal/test_spawn_beside_grpc.py checks it.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"

import pytest  # noqa: E402

from securechat import pki  # noqa: E402

# `securechat certs init` encrypts the CA key by default. Tests that run it
# (in-process or as a subprocess, which inherits this) use this passphrase, the
# way cron jobs and CI use $SECURECHAT_CA_PASSPHRASE; tests of the prompt or of
# --passphrase-file clear it.
os.environ.setdefault("SECURECHAT_CA_PASSPHRASE", "correct horse battery staple for tests")

# ---------------------------------------------------------------------------
# PKI fixtures (owner: securechat.pki). Real keys and certificates, no mocks.
# CAs are session-scoped (RSA-4096 generation is slow, so each key type is
# made at most once); leaves and certs directories are per test.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pki_ca_for() -> Callable[[str], pki.CertificateAuthority]:
    """A function returning one session-wide CA per key type, made on first use."""

    @cache
    def ca_for(key_type: str) -> pki.CertificateAuthority:
        return pki.create_ca(key_type=key_type)

    return ca_for


@pytest.fixture(scope="session")
def pki_ca(pki_ca_for: Callable[[str], pki.CertificateAuthority]) -> pki.CertificateAuthority:
    """The session's default CA (ECDSA P-256, common name 'securechat CA')."""
    return pki_ca_for(pki.DEFAULT_KEY_TYPE)


@pytest.fixture(scope="session")
def pki_foreign_ca() -> pki.CertificateAuthority:
    """Another CA with the same name as `pki_ca` but a different key: trusted by nobody here."""
    return pki.create_ca()


@pytest.fixture
def pki_store(tmp_path: Path, pki_ca: pki.CertificateAuthority) -> pki.CertStore:
    """A fresh certs directory (tmp_path/certs) holding the session CA."""
    store = pki.CertStore(tmp_path / "certs")
    store.write_ca(pki_ca)
    return store


@pytest.fixture
def pki_issued_store(pki_store: pki.CertStore, pki_ca: pki.CertificateAuthority) -> pki.CertStore:
    """`pki_store` plus server.pem (default SANs) and alice.pem / bob.pem client certs."""
    pki_store.write_leaves(
        [
            pki.issue_server_cert(pki_ca, "server"),
            pki.issue_client_cert(pki_ca, "alice"),
            pki.issue_client_cert(pki_ca, "bob"),
        ]
    )
    return pki_store


# ---------------------------------------------------------------------------
# (end of PKI fixtures)
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# Deployment fixtures (owner: config, server, client). A certs directory with
# server, alice and bob from the session CA, YAML configs written on demand,
# and real servers on 127.0.0.1:0 that are stopped after each test.
# ---------------------------------------------------------------------------

import copy  # noqa: E402
from collections.abc import AsyncIterator, Awaitable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402

from securechat.config import ClientConfig, ServerConfig, load_client_config, load_server_config  # noqa: E402
from securechat.server.app import RunningServer, start_server  # noqa: E402

DELETE = object()


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge overrides into a copy of base; a value of DELETE removes the key."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is DELETE:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass
class Deployment:
    """A working set like `securechat quickstart` makes, in a test's tmp_path."""

    root: Path
    store: pki.CertStore
    ca: pki.CertificateAuthority
    ports: dict[str, int] = field(default_factory=dict)

    def issue_client(self, name: str, *, ca: pki.CertificateAuthority | None = None, **options: Any) -> pki.IssuedCert:
        issued = pki.issue_client_cert(ca or self.ca, name, **options)
        self.store.write_leaves([issued], force=True)
        return issued

    def issue_server(self, name: str, *, ca: pki.CertificateAuthority | None = None, **options: Any) -> pki.IssuedCert:
        issued = pki.issue_server_cert(ca or self.ca, name, **options)
        self.store.write_leaves([issued], force=True)
        return issued

    def write_yaml(self, name: str, data: dict[str, Any]) -> Path:
        path = self.root / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def server_yaml(self, name: str = "server.yaml", **overrides: Any) -> Path:
        base = {
            "listen": "127.0.0.1:0",
            "tls": {
                "cert": "certs/server.pem",
                "key": "certs/server-key.pem",
                "client_ca": "certs/ca.pem",
            },
        }
        return self.write_yaml(name, merge(base, overrides))

    def client_yaml(self, identity: str, port: int, *, name: str | None = None, **overrides: Any) -> Path:
        base = {
            "target": f"localhost:{port}",
            "tls": {
                "ca": "certs/ca.pem",
                "cert": f"certs/{identity}.pem",
                "key": f"certs/{identity}-key.pem",
            },
        }
        return self.write_yaml(name or f"{identity}.yaml", merge(base, overrides))

    def client(self, identity: str, port: int, **overrides: Any) -> ClientConfig:
        return load_client_config(self.client_yaml(identity, port, **overrides))

    def server(self, **overrides: Any) -> ServerConfig:
        return load_server_config(self.server_yaml(**overrides))


@pytest.fixture
def deployment(tmp_path: Path, pki_ca: pki.CertificateAuthority) -> Deployment:
    """server, alice and bob certificates from the session CA in tmp_path/certs."""
    store = pki.CertStore(tmp_path / "certs")
    store.write_ca(pki_ca)
    store.write_leaves(
        [
            pki.issue_server_cert(pki_ca, "server"),
            pki.issue_client_cert(pki_ca, "alice"),
            pki.issue_client_cert(pki_ca, "bob"),
        ]
    )
    return Deployment(root=tmp_path, store=store, ca=pki_ca)


StartServer = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def start(deployment: Deployment) -> AsyncIterator[StartServer]:
    """Start a real server from YAML overrides (or a ServerConfig); stopped after the test."""
    running: list[RunningServer] = []

    async def start_one(config: ServerConfig | None = None, **overrides: Any) -> RunningServer:
        server = await start_server(config or deployment.server(**overrides))
        running.append(server)
        return server

    yield start_one
    for server in running:
        await server.stop(grace=0)
