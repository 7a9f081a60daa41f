"""TLS handshakes that must fail, each with its passing twin and the exact outcome."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from securechat import pki
from securechat._gen import chat_pb2, chat_pb2_grpc
from securechat.client import open_channel, say_hello
from securechat.errors import ConnectError

STEP = 5.0


async def raw_hello(port: int, credentials: grpc.ChannelCredentials, *, target_host: str = "localhost") -> str:
    """SayHello over credentials built by hand, bypassing the client's own checks."""
    async with grpc.aio.secure_channel(f"{target_host}:{port}", credentials) as channel:
        reply = await chat_pb2_grpc.ChatServiceStub(channel).SayHello(chat_pb2.HelloRequest(), timeout=STEP)
    return reply.message


def credentials(ca: pki.CertificateAuthority, leaf: pki.IssuedCert | None) -> grpc.ChannelCredentials:
    if leaf is None:
        return grpc.ssl_channel_credentials(pki.certificate_pem(ca.cert))
    return grpc.ssl_channel_credentials(
        pki.certificate_pem(ca.cert), pki.private_key_pem(leaf.key), pki.certificate_pem(leaf.cert)
    )


async def test_valid_client_certificate_is_accepted(deployment, start, pki_ca):
    """The twin of every refusal below: a client certificate from the client CA gets in."""
    server = await start()
    alice = pki.issue_client_cert(pki_ca, "alice")
    assert await raw_hello(server.port, credentials(pki_ca, alice)) == "Hello, alice!"


async def test_no_client_certificate_is_refused(deployment, start):
    """Under mTLS a client without a certificate fails the handshake, and is told why."""
    server = await start()
    config = deployment.client("anon", server.port, tls={"cert": None, "key": None})
    async with open_channel(config) as channel:
        with pytest.raises(ConnectError, match="server refused our connection: it requires a client certificate"):
            await say_hello(channel)


@pytest.mark.parametrize("case", ["foreign CA", "expired", "server certificate"])
async def test_bad_client_certificate_fails_the_handshake(deployment, start, pki_ca, pki_foreign_ca, case):
    """Certificates from another CA, expired ones and server certificates never get a call through."""
    server = await start()
    now = dt.datetime.now(dt.timezone.utc)
    leaf = {
        "foreign CA": lambda: pki.issue_client_cert(pki_foreign_ca, "mallory"),
        "expired": lambda: pki.issue_client_cert(
            pki_ca, "alice", not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1)
        ),
        "server certificate": lambda: pki.issue_server_cert(pki_ca, "server"),
    }[case]()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_hello(server.port, credentials(pki_ca, leaf))
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_foreign_client_certificate_is_explained(deployment, start, pki_foreign_ca):
    """The CLI's client turns the server's refusal into one line saying our certificate was refused."""
    server = await start()
    deployment.issue_client("mallory", ca=pki_foreign_ca)
    bundle = deployment.root / "both-cas.pem"
    bundle.write_bytes(pki.certificate_pem(deployment.ca.cert) + pki.certificate_pem(pki_foreign_ca.cert))
    config = deployment.client("mallory", server.port, tls={"ca": str(bundle)})
    async with open_channel(config) as channel:
        with pytest.raises(ConnectError, match="server refused our certificate during the TLS handshake"):
            await say_hello(channel)


def certificate_without_eku(ca: pki.CertificateAuthority, name: str) -> pki.IssuedCert:
    """A CA-signed leaf with no extendedKeyUsage at all, which TLS stacks accept for any purpose."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    return pki.IssuedCert(name=name, kind="client", cert=cert, key=key, capped_at_ca_expiry=False)


async def test_certificate_without_client_auth_is_refused_by_the_server_itself(deployment, start, pki_ca):
    """If TLS lets a certificate without clientAuth through, the interceptor refuses it: UNAUTHENTICATED."""
    server = await start()
    leaf = certificate_without_eku(pki_ca, "sneaky")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_hello(server.port, credentials(pki_ca, leaf))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "is not a client certificate (no clientAuth extended key usage)" in caught.value.details()


async def test_client_trusting_another_ca_refuses_the_server(deployment, start, pki_foreign_ca):
    """A client whose tls.ca did not sign the server's certificate stops: untrusted server."""
    server = await start()
    deployment.issue_client("alice", ca=pki_foreign_ca)
    other = deployment.root / "other-ca.pem"
    other.write_bytes(pki.certificate_pem(pki_foreign_ca.cert))
    config = deployment.client("alice", server.port, tls={"ca": str(other)})
    async with open_channel(config) as channel:
        with pytest.raises(ConnectError, match="untrusted server: its certificate was not signed by the CA in"):
            await say_hello(channel)


async def test_target_name_not_in_server_sans_is_refused(deployment, start):
    """A server certificate for example.org does not serve target 'localhost'."""
    deployment.issue_server("server", sans=["example.org"])
    server = await start()
    async with open_channel(deployment.client("alice", server.port)) as channel:
        with pytest.raises(ConnectError, match="server name does not match its certificate: 'localhost' is not among"):
            await say_hello(channel)


async def test_server_name_override_matches_the_san(deployment, start):
    """The twin: tls.server_name example.org verifies that same certificate."""
    deployment.issue_server("server", sans=["example.org"])
    server = await start()
    async with open_channel(deployment.client("alice", server.port, tls={"server_name": "example.org"})) as channel:
        assert await say_hello(channel) == "Hello, alice!"


async def test_ip_target_needs_an_ip_san(deployment, start):
    """The default server SANs include 127.0.0.1, so an IP target verifies."""
    server = await start()
    async with open_channel(deployment.client("alice", server.port, target=f"127.0.0.1:{server.port}")) as channel:
        assert await say_hello(channel) == "Hello, alice!"


async def test_plaintext_client_against_tls_port_is_refused(deployment, start):
    """insecure: true against a TLS port fails, saying the server probably expects TLS."""
    server = await start()
    config = deployment.client("alice", server.port, tls=None, insecure=True)
    async with open_channel(config) as channel:
        with pytest.raises(ConnectError, match="closed the connection: it probably expects TLS"):
            await say_hello(channel)


async def test_unreachable_server_is_explained(deployment, start):
    """Nothing listening: 'server not reachable', not a gRPC dump."""
    server = await start()
    port = server.port
    await server.stop(grace=0)
    async with open_channel(deployment.client("alice", port)) as channel:
        with pytest.raises(ConnectError, match=f"server not reachable at localhost:{port}: Connection refused"):
            await say_hello(channel)


async def test_insecure_server_on_loopback_serves_plaintext_anonymously(deployment, start):
    """insecure: true is the one way to plaintext; callers have no identity."""
    server = await start(tls=None, insecure=True)
    config = deployment.client("alice", server.port, tls=None, insecure=True)
    async with open_channel(config) as channel:
        assert await say_hello(channel, "carol") == "Hello, carol!"
