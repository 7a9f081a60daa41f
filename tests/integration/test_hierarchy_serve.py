"""A real mTLS server under root + intermediate: chains presented, the root trusted, the intermediate's CRL enforced."""

from __future__ import annotations

from pathlib import Path

import pytest

from securechat import pki
from securechat.client import open_channel, say_hello
from securechat.errors import ConfigError, ConnectError
from securechat.server.app import start_server
from tests.conftest import Deployment


@pytest.fixture
def tiered(tmp_path: Path) -> Deployment:
    """server, alice, bob issued by an intermediate; configs trust root.pem only."""
    store = pki.CertStore(tmp_path / "certs")
    store.init_hierarchy()
    ca = store.load_ca()
    store.write_leaves(
        [pki.issue_server_cert(ca, "server"), pki.issue_client_cert(ca, "alice"), pki.issue_client_cert(ca, "bob")]
    )
    return Deployment(root=tmp_path, store=store, ca=ca)


async def test_chain_served_and_root_trusted(tiered: Deployment) -> None:
    """The server presents leaf + intermediate; a client trusting root.pem says hello as alice."""
    server = await start_server(tiered.server(tls={"client_ca": "certs/root.pem"}))
    try:
        client = tiered.client("alice", server.port, tls={"ca": "certs/root.pem"})
        async with open_channel(client) as channel:
            assert await say_hello(channel) == "Hello, alice!"
    finally:
        await server.stop(grace=0)


async def test_a_leaf_without_its_intermediate_is_refused_before_serving(tiered: Deployment) -> None:
    """Failing twin: a server certificate file without the intermediate cannot chain to root.pem: no port opens."""
    leaf_only = tiered.root / "certs" / "leaf-only.pem"
    leaf_only.write_bytes(pki.certificate_pem(pki.load_certificate(tiered.store.cert_path("server"))))
    config = tiered.server(tls={"cert": "certs/leaf-only.pem", "client_ca": "certs/root.pem"})
    with pytest.raises(ConfigError, match=r"tls.cert: .*leaf-only.pem was not signed by the CA in .*root.pem"):
        await start_server(config)


async def test_crl_signed_by_the_intermediate_is_enforced(tiered: Deployment) -> None:
    """bob revoked by the intermediate's crl.pem (next to root.pem): UNAUTHENTICATED; alice still served."""
    tiered.store.revoke(tiered.ca, "bob")
    server = await start_server(tiered.server(tls={"client_ca": "certs/root.pem"}))
    try:
        async with open_channel(tiered.client("bob", server.port, tls={"ca": "certs/root.pem"})) as channel:
            with pytest.raises(ConnectError, match=r"server refused our identity: certificate serial \w+ \(bob\) is revoked"):
                await say_hello(channel)
        async with open_channel(tiered.client("alice", server.port, tls={"ca": "certs/root.pem"})) as channel:
            assert await say_hello(channel) == "Hello, alice!"
    finally:
        await server.stop(grace=0)
