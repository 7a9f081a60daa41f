"""Fixtures for the online CA: a root + intermediate, the CA service's own certificate, ca.yaml, a running service.

Owner: securechat.ca. Real keys, a real grpc.aio CA service on 127.0.0.1:0,
a real SQLite database in tmp_path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from securechat import pki
from securechat.ca.client import CaClient, CaTarget
from securechat.config.ca import CaConfig, load_ca_config
from securechat.ca.service import RunningCa, start_ca_server


@dataclass
class CaEnv:
    """A certs directory with a hierarchy and the CA service's server certificate, and a ca.yaml writer."""

    root: Path
    store: pki.CertStore

    @property
    def ca(self) -> pki.CertificateAuthority:
        return self.store.load_ca()

    @property
    def trust_pem(self) -> bytes:
        return self.store.root_cert_path.read_bytes()

    def ca_yaml(self, **overrides: Any) -> Path:
        data: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "certs": "certs",
            "tls": {"cert": "certs/ca-service.pem", "key": "certs/ca-service-key.pem"},
            "database": "ca.db",
        }
        data.update(overrides)
        path = self.root / "ca.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def config(self, **overrides: Any) -> CaConfig:
        return load_ca_config(self.ca_yaml(**overrides))

    def target(self, port: int) -> CaTarget:
        return CaTarget(f"localhost:{port}", self.trust_pem)


def make_ca_env(root: Path) -> CaEnv:
    store = pki.CertStore(root / "certs")
    store.init_hierarchy()
    store.write_leaves([pki.issue_server_cert(store.load_ca(), "ca-service")])
    return CaEnv(root=root, store=store)


@pytest.fixture
def ca_env(tmp_path: Path) -> CaEnv:
    return make_ca_env(tmp_path)


StartCa = Callable[..., Awaitable[RunningCa]]


@pytest.fixture
async def start_ca(ca_env: CaEnv) -> AsyncIterator[StartCa]:
    """Start a real CA service from ca.yaml overrides; stopped after the test."""
    running: list[RunningCa] = []

    async def start_one(**overrides: Any) -> RunningCa:
        service = await start_ca_server(ca_env.config(**overrides))
        running.append(service)
        return service

    yield start_one
    for service in running:
        await service.stop(grace=0)


@pytest.fixture
async def ca_client(ca_env: CaEnv, start_ca: StartCa) -> AsyncIterator[tuple[RunningCa, CaClient]]:
    """A CA service with default policy and a client connected to it."""
    service = await start_ca()
    async with CaClient(ca_env.target(service.port)) as client:
        yield service, client
