"""Fixtures for tests/broker: our PKI for NATS, a real nats-server per test, brokers that are always closed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from nats_support import NatsServer, PkiFiles

from securechat import pki
from securechat.broker import load_broker_config
from securechat.broker.jetstream import JetStreamBroker


@pytest.fixture(scope="session")
def nats_pki(tmp_path_factory: pytest.TempPathFactory, pki_ca: pki.CertificateAuthority, pki_foreign_ca: pki.CertificateAuthority) -> PkiFiles:
    """The NATS server certificate and replica client certificates from the session CA, plus one from a foreign CA."""
    root = tmp_path_factory.mktemp("nats-certs")
    store = pki.CertStore(root)
    store.write_ca(pki_ca)
    store.write_leaves(
        [
            pki.issue_server_cert(pki_ca, "nats", sans=["localhost", "127.0.0.1"]),
            pki.issue_client_cert(pki_ca, "replica-a"),
            pki.issue_client_cert(pki_ca, "replica-b"),
            pki.issue_client_cert(pki_foreign_ca, "intruder"),
        ]
    )
    clients = {name: (root / f"{name}.pem", root / f"{name}-key.pem") for name in ("replica-a", "replica-b", "intruder")}
    return PkiFiles(ca=root / "ca.pem", server_cert=root / "nats.pem", server_key=root / "nats-key.pem", clients=clients)


@pytest.fixture
def nats_server(tmp_path: Path, nats_pki: PkiFiles) -> Iterator[NatsServer]:
    """A running nats-server with JetStream and TLS verify: true, on 127.0.0.1 and an ephemeral port."""
    server = NatsServer(root=tmp_path / "nats", pki=nats_pki)
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


MakeBroker = Callable[..., Awaitable[JetStreamBroker]]


def broker_yaml(path: Path, server: NatsServer, replica: str, *, server_name: str | None = None, **overrides: Any) -> Path:
    """A server YAML whose broker section points `replica` at `server`."""
    cert, key = server.pki.clients[replica]
    tls = {"ca": str(server.pki.ca), "cert": str(cert), "key": str(key)}
    if server_name:
        tls["server_name"] = server_name
    broker: dict[str, Any] = {
        "type": "nats",
        "servers": [server.url],
        "tls": tls,
        "stream": "SECURECHAT",
        "publish_timeout": "2s",
        "connect_timeout": "3s",
        "reconnect_wait": "100ms",
        "retention": {"max_age": "1h", "max_bytes": 16 << 20},
    }
    broker["retention"].update(overrides.pop("retention", {}))
    broker.update(overrides)
    path.write_text(yaml.safe_dump({"broker": broker}, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
async def make_broker(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[MakeBroker]:
    """Start a JetStreamBroker for a replica ('replica-a', 'replica-b', ...) against `nats_server`; closed after the test."""
    brokers: list[JetStreamBroker] = []

    async def make(
        replica: str = "replica-a", *, start: bool = True, heartbeat_seconds: float = 0.5, server_name: str | None = None, **overrides: Any
    ) -> JetStreamBroker:
        path = broker_yaml(tmp_path / f"{replica}-{len(brokers)}.yaml", nats_server, replica, server_name=server_name, **overrides)
        config = load_broker_config(path)
        assert config is not None
        broker = JetStreamBroker(config, name=replica, heartbeat_seconds=heartbeat_seconds)
        brokers.append(broker)
        if start:
            await broker.start()
        return broker

    yield make
    for broker in brokers:
        await broker.close()
