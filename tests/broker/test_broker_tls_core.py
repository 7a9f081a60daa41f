"""The NATS server's chain goes through the TLS core, not only through Python's ssl (real nats-server, loopback).

Each refused certificate is one OpenSSL accepts -- shown by a plain
`ssl` context completing the handshake with the same server -- but the
core refuses: no extended key usage at all (OpenSSL reads that as "any
use") and a CA:TRUE leaf (OpenSSL serves it as a leaf). The twin is the
same handmade profile done right, which both judges accept.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import broker_yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nats_support import NatsServer, PkiFiles

from securechat import pki
from securechat._gen import chat_pb2
from securechat.broker import load_broker_config
from securechat.broker.jetstream import JetStreamBroker
from securechat.broker.tls import client_context, judge_server_chain
from securechat.errors import BrokerUnavailable


def _nats_cert(ca: pki.CertificateAuthority, *, eku: list[x509.ObjectIdentifier] | None, leaf_is_ca: bool = False) -> tuple[bytes, bytes]:
    """A NATS server certificate for 127.0.0.1 signed by CA, with the given EKU (None: no EKU extension)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nats")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=leaf_is_ca, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)  # type: ignore[arg-type]
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())  # type: ignore[arg-type]
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


@pytest.fixture
def odd_nats(request: pytest.FixtureRequest, tmp_path: Path, nats_pki: PkiFiles, pki_ca: pki.CertificateAuthority) -> Iterator[NatsServer]:
    """A nats-server presenting the certificate named by the test's parameter (signed by our CA)."""
    kind = request.param
    eku = {"no-eku": None, "leaf-is-ca": [ExtendedKeyUsageOID.SERVER_AUTH], "good": [ExtendedKeyUsageOID.SERVER_AUTH]}[kind]
    cert, key = _nats_cert(pki_ca, eku=eku, leaf_is_ca=kind == "leaf-is-ca")
    certs = tmp_path / "odd-certs"
    certs.mkdir()
    (certs / "nats.pem").write_bytes(cert)
    (certs / "nats-key.pem").write_bytes(key)
    (certs / "nats-key.pem").chmod(0o600)
    files = PkiFiles(ca=nats_pki.ca, server_cert=certs / "nats.pem", server_key=certs / "nats-key.pem", clients=nats_pki.clients)
    server = NatsServer(root=tmp_path / "nats-odd", pki=files)
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


async def _openssl_accepts(server: NatsServer) -> None:
    """Python's ssl alone (our CA, our client certificate, the host name) completes the handshake with SERVER."""
    cert, key = server.pki.clients["replica-a"]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(server.pki.ca))
    context.load_cert_chain(str(cert), str(key))
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), 5)
    await asyncio.wait_for(reader.readline(), 5)  # nats-server's INFO comes first, in plaintext
    await asyncio.wait_for(writer.start_tls(context, server_hostname="127.0.0.1"), 5)
    assert writer.get_extra_info("peercert") is not None
    writer.close()


async def _broker(tmp_path: Path, server: NatsServer) -> JetStreamBroker:
    config = load_broker_config(broker_yaml(tmp_path / "replica.yaml", server, "replica-a", connect_timeout="2s"))
    assert config is not None
    return JetStreamBroker(config, name="replica-a", heartbeat_seconds=0.5)


@pytest.mark.parametrize(
    ("odd_nats", "refusal"),
    [
        ("no-eku", r"the NATS server's certificate \(CN=nats\) is not a server certificate \(its extended key usage lacks serverAuth\)"),
        ("leaf-is-ca", r"the NATS server's certificate \(CN=nats\) is a CA certificate \(basicConstraints CA:TRUE\), not a server certificate"),
    ],
    indirect=["odd_nats"],
)
async def test_nats_chain_openssl_accepts_is_refused_by_the_core(odd_nats: NatsServer, refusal: str, tmp_path: Path) -> None:
    await _openssl_accepts(odd_nats)  # the certificate gets past OpenSSL ...
    broker = await _broker(tmp_path, odd_nats)
    try:
        with pytest.raises(BrokerUnavailable, match=rf"cannot connect to NATS at tls://127\.0\.0\.1:\d+: {refusal}"):
            await broker.start()  # ... and not past the core
        assert not broker.connected
    finally:
        await broker.close()


@pytest.mark.parametrize("odd_nats", ["good"], indirect=True)
async def test_nats_chain_the_core_accepts(odd_nats: NatsServer, tmp_path: Path) -> None:
    """The twin: the same handmade profile with serverAuth and CA:FALSE connects, publishes and reads back."""
    await _openssl_accepts(odd_nats)
    broker = await _broker(tmp_path, odd_nats)
    try:
        await broker.start()
        assert broker.connected
        event_id = await broker.publish("general", chat_pb2.ChatEvent(room="general", sender="a", text="hi"), msg_id="one")
        assert [i for i, _ in await broker.history("general", 0)] == [event_id]
    finally:
        await broker.close()


def test_judge_server_chain_names_the_problem(nats_pki: PkiFiles, pki_ca: pki.CertificateAuthority) -> None:
    """The verdict function itself, without a network: good chain None, wrong name and no-EKU one line each."""
    good = x509.load_pem_x509_certificate(nats_pki.server_cert.read_bytes())
    assert judge_server_chain([good], [pki_ca.cert], server_name="127.0.0.1") is None
    wrong = judge_server_chain([good], [pki_ca.cert], server_name="evil.example")
    assert wrong is not None and "evil.example" in wrong
    no_eku = x509.load_pem_x509_certificate(_nats_cert(pki_ca, eku=None)[0])
    assert judge_server_chain([no_eku], [pki_ca.cert], server_name="127.0.0.1") == (
        "the NATS server's certificate (CN=nats) is not a server certificate (its extended key usage lacks serverAuth). "
        "Issue one with 'securechat certs server NAME'."
    )
    assert judge_server_chain([], [pki_ca.cert], server_name="127.0.0.1") == "the NATS server presented no certificate."


def test_client_context_carries_the_core_check(tmp_path: Path, nats_pki: PkiFiles) -> None:
    """The context nats-py gets wraps every connection in the core-checked SSLObject (public ssl hook)."""
    server = NatsServer(root=tmp_path / "unused", pki=nats_pki)
    server.port = 4222
    config = load_broker_config(broker_yaml(tmp_path / "r.yaml", server, "replica-a"))
    assert config is not None
    context = client_context(config)
    assert context.sslobject_class.__name__ == "_CoreCheckedObject"
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


@pytest.mark.parametrize("odd_nats", ["good"], indirect=True)
async def test_a_reconnect_is_judged_too(odd_nats: NatsServer, tmp_path: Path, pki_ca: pki.CertificateAuthority, caplog: pytest.LogCaptureFixture) -> None:
    """The NATS server comes back with a certificate OpenSSL accepts and the core does not: the replica stays away."""
    broker = await _broker(tmp_path, odd_nats)
    try:
        await broker.start()
        assert broker.connected
        odd_nats.stop(kill=True)
        cert, key = _nats_cert(pki_ca, eku=None)
        odd_nats.pki.server_cert.write_bytes(cert)
        odd_nats.pki.server_key.write_bytes(key)
        odd_nats.start()
        await _openssl_accepts(odd_nats)
        await asyncio.sleep(1.5)  # several reconnect attempts (reconnect_wait 100ms)
        assert not broker.connected
        assert any("is not a server certificate (its extended key usage lacks serverAuth)" in m for m in caplog.messages)
    finally:
        started = time.monotonic()
        await broker.close()  # bounded even while nats-py keeps failing the handshake
        assert time.monotonic() - started < 4.0
