"""The CA service over real gRPC: enrolment, renewal and their refusals, each beside its passing twin."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
import time

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from securechat import pki
from securechat._gen import ca_pb2, ca_pb2_grpc
from securechat.ca.authority import BUNDLE_RECHECK_SECONDS
from securechat.ca.client import CaClient, CaError, make_csr
from securechat.ca.policy import proof_message, sign_proof
from securechat.ca.service import RunningCa
from securechat.ca.tokens import token_hash
from securechat.protocol import REFUSAL_KEY
from tests.ca.conftest import CaEnv, StartCa


def _sans(cert: x509.Certificate) -> list[str]:
    return [pki.san_to_text(n) for n in pki.subject_alternative_names(cert)]


async def _token(service: RunningCa, name: str = "alice", **options: object) -> str:
    secret, _ = await asyncio.to_thread(service.authority.mint_token, name, **{"kind": "client", **options})  # type: ignore[arg-type]
    return secret


async def _enroll(service: RunningCa, client: CaClient, name: str = "alice", **options: object):
    key = pki.generate_private_key()
    issued = await client.enroll(await _token(service, name, **options), name=name, key=key)
    return key, issued


async def test_enroll_issues_a_24h_chain_for_the_token(ca_client: tuple[RunningCa, CaClient], ca_env: CaEnv, caplog) -> None:
    """Enroll: leaf + intermediate for the token's name and SANs, 24 h by default, the root as trust bundle, an audit line."""
    service, client = ca_client
    caplog.set_level(logging.INFO, logger="securechat.ca.audit")
    key, issued = await _enroll(service, client)
    chain = x509.load_pem_x509_certificates(issued.chain_pem)
    assert len(chain) == 2 and chain[1] == ca_env.ca.cert
    leaf = chain[0]
    assert pki.key_matches_certificate(key, leaf)
    assert _sans(leaf) == ["DNS:alice"]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(hours=24, minutes=5)
    assert pki.extended_key_usages(leaf) == {x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH}
    assert issued.trust_bundle_pem == ca_env.trust_pem
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("event=issued"))
    assert f"identity=alice serial={issued.serial} kind=client" in line and "reason=enroll" in line
    assert "BEGIN" not in line  # never key material or PEM
    assert service.authority.metrics.issued.labels(kind="client")._value.get() == 1


async def test_a_used_token_is_refused(ca_client: tuple[RunningCa, CaClient]) -> None:
    """Failing twin: a second key with the same token gets UNAUTHENTICATED token-used, naming the first serial."""
    service, client = ca_client
    secret = await _token(service)
    first = await client.enroll(secret, name="alice", key=pki.generate_private_key())
    with pytest.raises(CaError, match=rf"this token was already used at .* \(certificate serial {first.serial}\)") as refused:
        await client.enroll(secret, name="alice", key=pki.generate_private_key())
    assert (refused.value.reason, refused.value.code) == ("token-used", grpc.StatusCode.UNAUTHENTICATED)
    assert service.authority.metrics.refused.labels(reason="token-used")._value.get() == 1


async def test_the_same_key_asking_again_gets_the_recorded_certificate(ca_client: tuple[RunningCa, CaClient]) -> None:
    """A lost reply is recovered: the same token with the same key returns the same serial; nothing new is issued."""
    service, client = ca_client
    secret = await _token(service)
    key = pki.generate_private_key()
    first = await client.enroll(secret, name="alice", key=key)
    again = await client.enroll(secret, name="alice", key=key)
    assert again.serial == first.serial and again.chain_pem == first.chain_pem
    assert len(service.authority.db.run(lambda tx: tx.certificates("alice"))) == 1


async def test_an_expired_token_is_refused(ca_client: tuple[RunningCa, CaClient]) -> None:
    """Failing twin: a token past its --ttl gets UNAUTHENTICATED token-expired."""
    service, client = ca_client
    secret = await _token(service, ttl=dt.timedelta(seconds=1))
    await asyncio.sleep(1.1)
    with pytest.raises(CaError, match="this token expired at") as refused:
        await client.enroll(secret, name="alice", key=pki.generate_private_key())
    assert (refused.value.reason, refused.value.code) == ("token-expired", grpc.StatusCode.UNAUTHENTICATED)


async def test_an_unknown_token_is_refused(ca_client: tuple[RunningCa, CaClient]) -> None:
    """Failing twin: a made-up token gets UNAUTHENTICATED token-unknown."""
    _, client = ca_client
    with pytest.raises(CaError, match="this token is not known to the CA") as refused:
        await client.enroll("sct1.not-a-token", name="alice", key=pki.generate_private_key())
    assert refused.value.reason == "token-unknown"


async def _raw_enroll(service: RunningCa, ca_env: CaEnv, token: str, csr: bytes) -> grpc.aio.AioRpcError:
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_env.trust_pem)
    async with grpc.aio.secure_channel(f"localhost:{service.port}", credentials) as channel:
        stub = ca_pb2_grpc.CertificateAuthorityStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.Enroll(ca_pb2.EnrollRequest(token=token, csr_pem=csr), timeout=5)
    return error.value


def _csr(name: str, sans: list[x509.GeneralName]) -> bytes:
    key = pki.generate_private_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, pki.keys.signature_hash(key)).public_bytes(serialization.Encoding.PEM)


async def test_a_csr_for_another_name_is_refused(ca_client: tuple[RunningCa, CaClient], ca_env: CaEnv) -> None:
    """Failing twin: alice's token with a CSR for mallory: PERMISSION_DENIED naming both; the token stays unused."""
    service, client = ca_client
    secret = await _token(service)
    error = await _raw_enroll(service, ca_env, secret, _csr("mallory", []))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "the CSR asks for the name 'mallory', but the token is for 'alice'"
    assert dict(error.trailing_metadata())[REFUSAL_KEY] == "name-mismatch"
    issued = await client.enroll(secret, name="alice", key=pki.generate_private_key())  # twin: still good
    assert _sans(issued.leaf) == ["DNS:alice"]


async def test_a_csr_with_an_extra_san_is_refused(ca_client: tuple[RunningCa, CaClient], ca_env: CaEnv) -> None:
    """Failing twin: a CSR adding DNS:evil.example: PERMISSION_DENIED naming it and what the token allows."""
    service, _ = ca_client
    secret = await _token(service)
    error = await _raw_enroll(service, ca_env, secret, _csr("alice", [x509.DNSName("alice"), x509.DNSName("evil.example")]))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "the CSR asks for DNS:evil.example, which the token for 'alice' does not allow (it allows: DNS:alice)"
    assert dict(error.trailing_metadata())[REFUSAL_KEY] == "san-not-allowed"


async def test_a_server_token_with_sans(ca_client: tuple[RunningCa, CaClient]) -> None:
    """A server token carries its --san list; the certificate is serverAuth only."""
    service, client = ca_client
    _, issued = await _enroll(service, client, "api", kind="server", sans=("api.internal", "10.0.0.5"))
    assert _sans(issued.leaf) == ["DNS:api.internal", "IP:10.0.0.5"]
    assert pki.extended_key_usages(issued.leaf) == {x509.oid.ExtendedKeyUsageOID.SERVER_AUTH}


async def test_renew_keeps_identity_and_sans_whatever_the_csr_asks(ca_client: tuple[RunningCa, CaClient]) -> None:
    """Renew: same name, kind and SANs, a new key and serial; renewed_from recorded."""
    service, client = ca_client
    key, issued = await _enroll(service, client)
    new_key = pki.generate_private_key()
    renewed = await client.renew(chain_pem=issued.chain_pem, key=key, new_key=new_key)
    assert renewed.serial != issued.serial
    assert pki.key_matches_certificate(new_key, renewed.leaf)
    assert _sans(renewed.leaf) == ["DNS:alice"]
    record = service.authority.db.run(lambda tx: tx.certificate(renewed.serial))
    assert record is not None and (record.via, record.renewed_from) == ("renew", issued.serial)
    assert service.authority.metrics.renewed.labels(kind="client")._value.get() == 1


async def _raw_renew(service: RunningCa, ca_env: CaEnv, chain_pem: bytes, key, csr_pem: bytes, *, signer=None):
    csr_der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    signed_at = int(time.time() * 1000)
    request = ca_pb2.RenewRequest(
        csr_pem=csr_pem,
        current_chain_pem=chain_pem,
        signature=sign_proof(signer or key, proof_message(csr_der, signed_at)),
        signed_at_unix_ms=signed_at,
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_env.trust_pem)
    async with grpc.aio.secure_channel(f"localhost:{service.port}", credentials) as channel:
        return await ca_pb2_grpc.CertificateAuthorityStub(channel).Renew(request, timeout=5)


async def test_a_renewal_csr_asking_for_more_gets_the_old_sans(ca_client: tuple[RunningCa, CaClient], ca_env: CaEnv) -> None:
    """No escalation: a renewal CSR naming 'root' with extra SANs still gets alice's certificate with DNS:alice only."""
    service, client = ca_client
    key, issued = await _enroll(service, client)
    reply = await _raw_renew(service, ca_env, issued.chain_pem, key, _csr("admin", [x509.DNSName("admin"), x509.DNSName("alice")]))
    leaf = x509.load_pem_x509_certificates(reply.certificate_chain_pem)[0]
    assert _sans(leaf) == ["DNS:alice"]
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"


async def test_a_renewal_proof_by_another_key_is_refused(ca_client: tuple[RunningCa, CaClient], ca_env: CaEnv) -> None:
    """Failing twin: someone holding alice's certificate but not her key gets UNAUTHENTICATED bad-proof."""
    service, client = ca_client
    _, issued = await _enroll(service, client)
    thief = pki.generate_private_key()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _raw_renew(service, ca_env, issued.chain_pem, thief, make_csr(pki.generate_private_key(), "alice"))
    assert error.value.code() is grpc.StatusCode.UNAUTHENTICATED
    leaf = issued.leaf
    assert error.value.details() == (
        f"the renewal proof is not a signature by the key of CN=alice,O=securechat (serial {leaf.serial_number:x})"
    )
    assert dict(error.value.trailing_metadata())[REFUSAL_KEY] == "bad-proof"


async def test_renewing_with_the_same_key_is_refused(ca_client: tuple[RunningCa, CaClient]) -> None:
    """Failing twin: a renewal must bring a new key (INVALID_ARGUMENT same-key)."""
    service, client = ca_client
    key, issued = await _enroll(service, client)
    with pytest.raises(CaError, match="a renewal needs a new key") as refused:
        await client.renew(chain_pem=issued.chain_pem, key=key, new_key=key)
    assert (refused.value.reason, refused.value.code) == ("same-key", grpc.StatusCode.INVALID_ARGUMENT)


async def test_a_revoked_certificate_cannot_renew(ca_client: tuple[RunningCa, CaClient], ca_env: CaEnv) -> None:
    """Passive revocation: after 'ca revoke' the core finds the serial in crl.pem: PERMISSION_DENIED revoked."""
    service, client = ca_client
    key, issued = await _enroll(service, client)
    renewed = await client.renew(chain_pem=issued.chain_pem, key=key, new_key=pki.generate_private_key())  # twin
    assert renewed.serial != issued.serial
    await asyncio.to_thread(service.authority.revoke, "alice", reason="key-compromise")
    with pytest.raises(CaError, match=rf"the certificate of alice \(serial {issued.serial}\) is revoked in .*crl.pem \(CRL number \d+\): a revoked certificate cannot renew$") as refused:
        await client.renew(chain_pem=issued.chain_pem, key=key, new_key=pki.generate_private_key())
    assert (refused.value.reason, refused.value.code) == ("revoked", grpc.StatusCode.PERMISSION_DENIED)
    crl = pki.load_crl(
        ca_env.store.crl_path.read_bytes(), [pki.load_certificate(ca_env.store.root_cert_path)], where="crl.pem",
        intermediates=[ca_env.ca.cert],
    )
    assert int(issued.serial, 16) in crl.serials


async def test_a_revocation_committed_before_its_crl_is_refused_by_the_record(ca_client: tuple[RunningCa, CaClient]) -> None:
    """Revoked in the database but not yet in crl.pem: the record refuses, ordered by the transaction."""
    service, client = ca_client
    key, issued = await _enroll(service, client)
    now = pki.utc_now()
    service.authority.db.run(lambda tx: tx.revoke([issued.serial], at=now, reason="key-compromise"))
    with pytest.raises(CaError, match=rf"certificate serial {issued.serial} \(alice\) was revoked at .* \(key-compromise\)") as refused:
        await client.renew(chain_pem=issued.chain_pem, key=key, new_key=pki.generate_private_key())
    assert (refused.value.reason, refused.value.code) == ("revoked", grpc.StatusCode.PERMISSION_DENIED)


async def test_a_certificate_revoked_offline_cannot_renew(ca_env: CaEnv, start_ca: StartCa) -> None:
    """'certs revoke bob' while the CA runs writes only index.json and crl.pem: the core reads the new CRL at once."""
    ca_env.store.write_leaves([bob := pki.issue_client_cert(ca_env.ca, "bob"), carol := pki.issue_client_cert(ca_env.ca, "carol")])
    service = await start_ca()
    ca_env.store.revoke(ca_env.ca, "bob", reason="key-compromise")
    async with CaClient(ca_env.target(service.port)) as client:
        renewed = await client.renew(  # twin: carol, in the same CRL's scope, renews
            chain_pem=ca_env.store.cert_path("carol").read_bytes(), key=carol.key, new_key=pki.generate_private_key()
        )
        assert _sans(renewed.leaf) == ["DNS:carol"]
        with pytest.raises(CaError, match=r"the certificate of bob \(serial [0-9a-f]+\) is revoked in") as refused:
            await client.renew(
                chain_pem=ca_env.store.cert_path("bob").read_bytes(), key=bob.key, new_key=pki.generate_private_key()
            )
    assert (refused.value.reason, refused.value.code) == ("revoked", grpc.StatusCode.PERMISSION_DENIED)
    assert service.authority.db.run(lambda tx: tx.certificate(f"{bob.cert.serial_number:x}")).revoked_at is None


async def test_an_expired_certificate_cannot_renew(ca_client: tuple[RunningCa, CaClient], ca_env: CaEnv) -> None:
    """Failing twin: an expired certificate gets UNAUTHENTICATED expired, with what to do instead."""
    service, client = ca_client
    now = pki.utc_now()
    old = pki.issue_client_cert(ca_env.ca, "carol", not_before=now - dt.timedelta(hours=2), not_after=now - dt.timedelta(hours=1))
    ca_env.store.write_leaves([old])
    service.authority.import_index()
    chain_pem = ca_env.store.cert_path("carol").read_bytes()
    with pytest.raises(CaError, match=r"the certificate of carol expired on .*: an expired certificate cannot renew. Enroll again") as refused:
        await client.renew(chain_pem=chain_pem, key=old.key, new_key=pki.generate_private_key())
    assert (refused.value.reason, refused.value.code) == ("expired", grpc.StatusCode.UNAUTHENTICATED)


async def test_a_certificate_of_another_ca_cannot_renew(ca_client: tuple[RunningCa, CaClient]) -> None:
    """Failing twin: a same-named foreign CA's certificate gets UNAUTHENTICATED untrusted."""
    _, client = ca_client
    foreign = pki.issue_client_cert(pki.issue_intermediate(pki.create_root_ca()), "alice")
    chain_pem = b"".join(pki.certificate_pem(c) for c in (foreign.cert, *foreign.chain))
    with pytest.raises(CaError, match=r"the certificate of alice was not signed by the CA in .*certs/root.pem: it cannot renew here") as refused:
        await client.renew(chain_pem=chain_pem, key=foreign.key, new_key=pki.generate_private_key())
    assert (refused.value.reason, refused.value.code) == ("untrusted", grpc.StatusCode.UNAUTHENTICATED)


async def test_a_certificate_the_ca_never_recorded_cannot_renew(ca_client: tuple[RunningCa, CaClient], ca_env: CaEnv) -> None:
    """Failing twin: signed by our intermediate but in neither the database nor index.json: PERMISSION_DENIED."""
    _, client = ca_client
    stray = pki.issue_client_cert(ca_env.ca, "dave")
    chain_pem = b"".join(pki.certificate_pem(c) for c in (stray.cert, *stray.chain))
    with pytest.raises(CaError, match=r"is not in this CA's records") as refused:
        await client.renew(chain_pem=chain_pem, key=stray.key, new_key=pki.generate_private_key())
    assert (refused.value.reason, refused.value.code) == ("unknown-certificate", grpc.StatusCode.PERMISSION_DENIED)


async def test_an_offline_issued_certificate_renews_online(ca_env: CaEnv, start_ca: StartCa) -> None:
    """index.json is imported: 'certs client bob' (offline) renews with the CA service."""
    ca_env.store.write_leaves([bob := pki.issue_client_cert(ca_env.ca, "bob")])
    service = await start_ca()
    async with CaClient(ca_env.target(service.port)) as client:
        renewed = await client.renew(
            chain_pem=ca_env.store.cert_path("bob").read_bytes(), key=bob.key, new_key=pki.generate_private_key()
        )
    assert _sans(renewed.leaf) == ["DNS:bob"]


async def test_records_are_durable_and_tokens_stored_as_hashes(ca_client: tuple[RunningCa, CaClient], ca_env: CaEnv) -> None:
    """Another connection to the SQLite file sees the certificate and the used token; the token text is nowhere."""
    service, client = ca_client
    secret = await _token(service)
    issued = await client.enroll(secret, name="alice", key=pki.generate_private_key())
    with sqlite3.connect(ca_env.root / "ca.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT name, via FROM certificates WHERE serial = ?", (issued.serial,)).fetchone() == ("alice", "enroll")
        used = db.execute("SELECT used_serial FROM tokens WHERE hash = ?", (token_hash(secret),)).fetchone()
        assert used == (issued.serial,)
    assert secret.encode() not in (ca_env.root / "ca.db").read_bytes()
    assert (ca_env.root / "ca.db").stat().st_mode & 0o077 == 0


async def test_lifetimes_come_from_ca_yaml_and_stop_at_the_issuing_ca(ca_env: CaEnv, start_ca: StartCa) -> None:
    """lifetimes.client 1h gives 1 h (plus backdate); lifetimes under 5 minutes need testing_short_lifetimes."""
    service = await start_ca(lifetimes={"client": "1h"})
    async with CaClient(ca_env.target(service.port)) as client:
        _, issued = await _enroll(service, client)
    assert issued.leaf.not_valid_after_utc - issued.leaf.not_valid_before_utc == dt.timedelta(hours=1, minutes=5)
    from securechat.errors import ConfigError

    with pytest.raises(ConfigError, match=r"ca.yaml: lifetimes.client: 30s is out of range; use 5m to 397d. Short lifetimes under 5 minutes need testing_short_lifetimes: true."):
        ca_env.config(lifetimes={"client": "30s"})
    assert ca_env.config(lifetimes={"client": "30s"}, testing_short_lifetimes=True).lifetimes.client == dt.timedelta(seconds=30)


async def test_mtls_port_renews_with_the_handshake_certificate(ca_env: CaEnv, start_ca: StartCa) -> None:
    """mtls_listen: a client certificate presented in the handshake renews without a proof; without one, refused."""
    service = await start_ca(mtls_listen="127.0.0.1:0")
    assert service.mtls_port is not None
    async with CaClient(ca_env.target(service.port)) as client:
        key, issued = await _enroll(service, client)
    csr = make_csr(pki.generate_private_key(), "alice")
    identity = grpc.ssl_channel_credentials(
        root_certificates=ca_env.trust_pem, private_key=pki.private_key_pem(key), certificate_chain=issued.chain_pem
    )
    async with grpc.aio.secure_channel(f"localhost:{service.mtls_port}", identity) as channel:
        reply = await ca_pb2_grpc.CertificateAuthorityStub(channel).Renew(ca_pb2.RenewRequest(csr_pem=csr), timeout=5)
    assert _sans(x509.load_pem_x509_certificates(reply.certificate_chain_pem)[0]) == ["DNS:alice"]
    anonymous = grpc.ssl_channel_credentials(root_certificates=ca_env.trust_pem)
    async with grpc.aio.secure_channel(f"localhost:{service.port}", anonymous) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await ca_pb2_grpc.CertificateAuthorityStub(channel).Renew(ca_pb2.RenewRequest(csr_pem=csr), timeout=5)
    assert error.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert dict(error.value.trailing_metadata())[REFUSAL_KEY] == "no-certificate"


async def test_trust_bundle_serves_the_root(ca_client: tuple[RunningCa, CaClient], ca_env: CaEnv) -> None:
    """TrustBundle: the root now, and the next root too once certs/root-next.pem exists (a rollover)."""
    _, client = ca_client
    assert await client.trust_bundle() == ca_env.trust_pem
    next_root = pki.create_root_ca(common_name="securechat CA 2")
    (ca_env.store.directory / "root-next.pem").write_bytes(pki.certificate_pem(next_root.cert))
    await asyncio.sleep(BUNDLE_RECHECK_SECONDS + 0.1)  # the CA looks at the file once a second at most
    bundle = x509.load_pem_x509_certificates(await client.trust_bundle())
    assert bundle == [pki.load_certificate(ca_env.store.root_cert_path), next_root.cert]


async def test_the_ca_down_is_said_plainly(ca_env: CaEnv) -> None:
    """Nothing listening: CaError 'CA service not reachable', retryable."""
    async with CaClient(ca_env.target(1)) as client:
        with pytest.raises(CaError, match=r"CA service not reachable at localhost:1: .*Is it running") as error:
            await client.trust_bundle(timeout=3)
    assert error.value.retryable
