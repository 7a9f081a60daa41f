"""rotating_channel follows the certificate files on disk; tls.server_id requires the server's name or SPIFFE ID."""

from __future__ import annotations

import asyncio
import re

import pytest

from securechat import pki
from securechat._gen import chat_pb2, chat_pb2_grpc
from securechat.client import open_channel, say_hello, who_am_i
from securechat.errors import ConnectError
from securechat.client.rotation import rotating_channel


async def _until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_a_stub_made_once_follows_a_renewed_certificate(deployment, start) -> None:
    """certs renew alice while the channel is open: new calls carry the new serial, through the same stub."""
    server = await start()
    config = deployment.client("alice", server.port)
    async with rotating_channel(config) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        first = await stub.WhoAmI(chat_pb2.WhoAmIRequest(), timeout=5)
        renewed = deployment.store.renew(deployment.ca, "alice")
        await _until(lambda: channel.rotations == 1)
        second = await stub.WhoAmI(chat_pb2.WhoAmIRequest(), timeout=5)
    assert first.name == second.name == "alice"
    assert second.serial == f"{renewed.cert.serial_number:x}" != first.serial


async def test_a_half_written_rotation_is_skipped(deployment, start) -> None:
    """Failing twin: a new certificate with the old key does not load: no rotation, calls keep working."""
    server = await start()
    config = deployment.client("alice", server.port)
    async with rotating_channel(config) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        before = await stub.WhoAmI(chat_pb2.WhoAmIRequest(), timeout=5)
        other = pki.issue_client_cert(deployment.ca, "alice")  # a certificate for another key
        deployment.store.cert_path("alice").write_bytes(pki.certificate_pem(other.cert))
        await asyncio.sleep(1.5)
        assert channel.rotations == 0
        after = await stub.WhoAmI(chat_pb2.WhoAmIRequest(), timeout=5)
    assert after.serial == before.serial


async def test_server_id_as_a_dns_name(deployment, start) -> None:
    """tls.server_id localhost is in the server's SANs: hello works; api.internal is not: refused by name."""
    server = await start()
    async with open_channel(deployment.client("alice", server.port, tls={"server_id": "localhost"})) as channel:
        assert await say_hello(channel) == "Hello, alice!"
    async with open_channel(deployment.client("alice", server.port, tls={"server_id": "api.internal"})) as channel:
        with pytest.raises(ConnectError, match="server name does not match its certificate"):
            await say_hello(channel, timeout=5)


async def test_server_id_as_a_spiffe_id(deployment, start) -> None:
    """A server certificate with a SPIFFE URI SAN passes tls.server_id; another ID is refused naming both."""
    from cryptography import x509

    issued = pki.issue_server_cert(deployment.ca, "server")
    # securechat issues server SANs from DNS names and IPs; add the SPIFFE ID as a SAN here.
    spiffe = "spiffe://example.org/chat"
    sans = [*issued.sans, x509.UniformResourceIdentifier(spiffe)]
    profile = pki.issue._LeafProfile.build(  # type: ignore[attr-defined]
        deployment.ca, kind="server", eku=x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, key_type="ecdsa-p256", days=1,
        not_before=None, not_after=None,
    )
    deployment.store.write_leaves([profile.issue("server", sans)], force=True)
    server = await start()
    async with open_channel(deployment.client("alice", server.port, tls={"server_id": spiffe})) as channel:
        assert (await who_am_i(channel)).name == "alice"
    with pytest.raises(ConnectError, match=r"is not spiffe://example.org/billing: its certificate names spiffe://example.org/chat"):
        async with open_channel(deployment.client("alice", server.port, tls={"server_id": "spiffe://example.org/billing"})):
            pass


@pytest.mark.parametrize(
    ("server_id", "message"),
    [
        (
            "spiffe://example.org/../chat",
            "spiffe://example.org/../chat has an invalid SPIFFE ID path",
        ),
        ("spiffe://Example.org/chat", "spiffe://Example.org/chat has an invalid SPIFFE trust domain"),
        ("spiffe://example.org", "spiffe://example.org names a trust domain, not a workload"),
    ],
)
def test_server_id_is_held_to_the_spiffe_id_syntax(deployment, server_id: str, message: str) -> None:
    """tls.server_id spiffe://... is parsed by tls.names: a bad one is a one-line ConfigError; a good one loads (twin)."""
    from securechat.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"tls.server_id: {re.escape(message)}"):
        deployment.client("alice", 1, tls={"server_id": server_id})
    assert deployment.client("alice", 1, tls={"server_id": "spiffe://example.org/chat"}).tls.server_id == "spiffe://example.org/chat"
