"""The CA's checks are the TLS core's: CSR names by tls.names' syntax, presented chains by tls.checks, each with its twin."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from securechat import pki
from securechat._gen import ca_pb2, ca_pb2_grpc
from securechat.ca.client import CaClient, CaError, CaTarget, Issued, make_csr
from securechat.ca.policy import ChainVerdicts, proof_message, sign_proof
from securechat.ca.refusals import CaRefusal
from securechat.ca.renewal import _check_answer
from securechat.ca.service import RunningCa, start_ca_server
from securechat.errors import ConfigError, PkiError
from securechat.protocol import REFUSAL_KEY
from securechat.tls import checks
from tests.ca.conftest import CaEnv, StartCa


async def _token(service: RunningCa, name: str = "alice", **options: object) -> str:
    secret, _ = await asyncio.to_thread(service.authority.mint_token, name, **{"kind": "client", **options})  # type: ignore[arg-type]
    return secret


def _csr(common_names: list[str], sans: list[x509.GeneralName]) -> bytes:
    key = pki.generate_private_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in common_names])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, pki.keys.signature_hash(key)).public_bytes(serialization.Encoding.PEM)


async def _enroll(service: RunningCa, ca_env: CaEnv, token: str, csr: bytes) -> ca_pb2.CertificateReply | grpc.aio.AioRpcError:
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_env.trust_pem)
    async with grpc.aio.secure_channel(f"localhost:{service.port}", credentials) as channel:
        try:
            return await ca_pb2_grpc.CertificateAuthorityStub(channel).Enroll(
                ca_pb2.EnrollRequest(token=token, csr_pem=csr), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            return error


BAD_NAMES = [
    pytest.param(
        ["alice\x1b[31m"], [],
        r"the CSR's subject CN is not a valid name: alice\x1b[31m is not a valid DNS name (RFC 1123: letters, digits and inner hyphens in dot-separated labels)",
        id="control-characters-in-the-cn",
    ),
    pytest.param(
        ["alice"], [x509.DNSName("spiffe://example.org/alice")],
        "the DNS SAN in the CSR is not a valid name: spiffe://example.org/alice is not a valid DNS name (RFC 1123:"
        " letters, digits and inner hyphens in dot-separated labels) (a SPIFFE ID belongs in a URI SAN)",
        id="spiffe-id-in-a-dns-san",
    ),
    pytest.param(
        ["alice\u202egnp.exe"], [],
        r"the CSR's subject CN is not a valid name: the DNS name alice\u202egnp.exe is not ASCII (an IDNA name must be given as its xn-- A-label)",
        id="bidi-override-in-the-cn",
    ),
    pytest.param(
        ["alice"], [x509.DNSName("alice\r\nevent=issued")],
        r"the DNS SAN in the CSR is not a valid name: alice\x0d\x0aevent=issued is not a valid DNS name (RFC 1123:"
        " letters, digits and inner hyphens in dot-separated labels)",
        id="a-forged-log-line-in-a-dns-san",
    ),
    pytest.param(
        ["alice"], [x509.UniformResourceIdentifier("https://example.org/alice")],
        "the URI SAN in the CSR is not a SPIFFE ID, the only URI issued: https://example.org/alice is not a SPIFFE ID"
        " (it must start with spiffe://, in lowercase)",
        id="a-uri-that-is-no-spiffe-id",
    ),
    pytest.param(
        ["alice"], [x509.UniformResourceIdentifier("spiffe://example.org/../admin")],
        "the URI SAN in the CSR is not a SPIFFE ID, the only URI issued: spiffe://example.org/../admin has an invalid"
        " SPIFFE ID path (segments of letters, digits, '.', '-' and '_'; none empty, '.' or '..'; no trailing slash,"
        " query or fragment)",
        id="dot-dot-in-a-spiffe-path",
    ),
    pytest.param(
        ["alice"], [x509.RFC822Name("alice@example.org")],
        "the CSR asks for email:alice@example.org: the CA issues DNS, IP and spiffe:// URI SANs only",
        id="an-email-san",
    ),
    pytest.param(
        ["alice", "bob"], [],
        "the CSR's subject has 2 common names (CN); at most one is allowed",
        id="two-common-names",
    ),
]


@pytest.mark.parametrize(("common_names", "sans", "message"), BAD_NAMES)
async def test_a_csr_naming_something_invalid_is_refused_by_name_syntax(
    ca_client: tuple[RunningCa, CaClient], ca_env: CaEnv, common_names: list[str], sans: list[x509.GeneralName], message: str
) -> None:
    """tls.names' syntax decides: INVALID_ARGUMENT bad-name, the value escaped in the message; the token stays unused."""
    service, client = ca_client
    secret = await _token(service)
    error = await _enroll(service, ca_env, secret, _csr(common_names, sans))
    assert isinstance(error, grpc.aio.AioRpcError)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    assert dict(error.trailing_metadata())[REFUSAL_KEY] == "bad-name"
    assert "\x1b" not in error.details() and "\u202e" not in error.details()
    issued = await client.enroll(secret, name="alice", key=pki.generate_private_key())  # twin: the token still works
    assert issued.leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"


async def test_names_in_a_csr_compare_as_identities(ca_client: tuple[RunningCa, CaClient], ca_env: CaEnv) -> None:
    """Passing twin: CN ALICE and SANs DNS:Alice + its SPIFFE ID match a token for alice with that ID (DNS names ignore case)."""
    service, _ = ca_client
    secret = await _token(service, sans=("spiffe://example.org/alice",))
    csr = _csr(["ALICE"], [x509.DNSName("Alice"), x509.UniformResourceIdentifier("spiffe://example.org/alice")])
    reply = await _enroll(service, ca_env, secret, csr)
    assert isinstance(reply, ca_pb2.CertificateReply)
    leaf = x509.load_pem_x509_certificates(reply.certificate_chain_pem)[0]
    assert [pki.san_to_text(n) for n in pki.subject_alternative_names(leaf)] == ["DNS:alice", "URI:spiffe://example.org/alice"]


async def test_a_spiffe_id_in_a_dns_san_does_not_match_the_granted_spiffe_id(
    ca_client: tuple[RunningCa, CaClient], ca_env: CaEnv
) -> None:
    """Failing twin of the above: the granted SPIFFE ID asked for as a DNS SAN is no SPIFFE ID (and no DNS name)."""
    service, _ = ca_client
    secret = await _token(service, sans=("spiffe://example.org/alice",))
    error = await _enroll(service, ca_env, secret, _csr(["alice"], [x509.DNSName("spiffe://example.org/alice")]))
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert dict(error.trailing_metadata())[REFUSAL_KEY] == "bad-name"


async def test_a_token_for_an_invalid_spiffe_id_is_not_minted(ca_client: tuple[RunningCa, CaClient]) -> None:
    """`ca token --san spiffe://...` is held to the SPIFFE ID syntax; a valid one is minted (twin)."""
    service, _ = ca_client
    with pytest.raises(PkiError, match=r"--san 'spiffe://Example.org/alice': spiffe://Example.org/alice has an invalid SPIFFE trust domain"):
        await _token(service, sans=("spiffe://Example.org/alice",))
    assert await _token(service, sans=("spiffe://example.org/alice",))


async def _renew_with_proof(service: RunningCa, ca_env: CaEnv, chain_pem: bytes, key: object) -> grpc.aio.AioRpcError:
    csr_pem = make_csr(pki.generate_private_key(), "alice")
    signed_at = int(time.time() * 1000)
    csr_der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    request = ca_pb2.RenewRequest(
        csr_pem=csr_pem,
        current_chain_pem=chain_pem,
        signature=sign_proof(key, proof_message(csr_der, signed_at)),
        signed_at_unix_ms=signed_at,
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_env.trust_pem)
    async with grpc.aio.secure_channel(f"localhost:{service.port}", credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await ca_pb2_grpc.CertificateAuthorityStub(channel).Renew(request, timeout=5)
    return error.value


async def test_the_issuing_ca_itself_cannot_renew_as_a_leaf(ca_client: tuple[RunningCa, CaClient], ca_env: CaEnv) -> None:
    """The intermediate presented with a proof by its own key: the core says it is a CA, not a leaf (UNAUTHENTICATED untrusted)."""
    service, _ = ca_client
    ca = ca_env.ca
    error = await _renew_with_proof(service, ca_env, pki.certificate_pem(ca.cert), ca.key)
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert dict(error.trailing_metadata())[REFUSAL_KEY] == "untrusted"
    assert "is a CA certificate (basicConstraints CA:TRUE), not a client certificate: it cannot renew here" in error.details()


async def test_mtls_renewals_of_one_certificate_ask_the_core_once(ca_env: CaEnv, start_ca: StartCa) -> None:
    """Kept mTLS connection: the same handshake certificate renews twice, its chain judged once; a new CRL judges again."""
    service = await start_ca(mtls_listen="127.0.0.1:0")
    ca_env.store.write_leaves([bob := pki.issue_client_cert(ca_env.ca, "bob")])
    service.authority.import_index()
    chain_pem = ca_env.store.cert_path("bob").read_bytes()
    verdicts = service.authority.verdicts
    before = verdicts.judged
    async with CaClient(CaTarget(f"localhost:{service.mtls_port}", ca_env.trust_pem), identity=(chain_pem, pki.private_key_pem(bob.key))) as client:
        for _ in range(2):
            await client.renew_over_mtls(name="bob", new_key=pki.generate_private_key())
        assert verdicts.judged == before + 1
        ca_env.store.write_crl(ca_env.ca)  # a new crl.pem (nothing new revoked): the kept verdicts go
        await client.renew_over_mtls(name="bob", new_key=pki.generate_private_key())
        assert verdicts.judged == before + 2


def test_a_kept_verdict_holds_only_inside_the_chains_validity(ca_env: CaEnv) -> None:
    """ChainVerdicts: a good verdict is reused while valid; past the leaf's notAfter the core says expired (no stale yes)."""
    ca = ca_env.ca
    leaf = pki.issue_client_cert(ca, "erin")
    verdicts = ChainVerdicts(
        [pki.load_certificate(ca_env.store.root_cert_path)], ca.leaf_chain, anchors_where="certs/root.pem"
    )
    now = pki.utc_now()
    verdicts.judge([leaf.cert], now=now, crls=None, identity="erin")
    verdicts.judge([leaf.cert], now=now + dt.timedelta(hours=1), crls=None, identity="erin")
    assert (verdicts.judged, len(verdicts)) == (1, 1)
    later = leaf.cert.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(CaRefusal, match=r"the certificate of erin expired on .*: an expired certificate cannot renew") as refused:
        verdicts.judge([leaf.cert], now=later, crls=None, identity="erin")
    assert refused.value.reason.value == "expired"
    assert verdicts.judged == 2


def test_a_kept_verdict_is_bounded(ca_env: CaEnv) -> None:
    """At most SIZE verdicts are kept, the least recently used dropped first."""
    ca = ca_env.ca
    anchors = [pki.load_certificate(ca_env.store.root_cert_path)]
    verdicts = ChainVerdicts(anchors, ca.leaf_chain, anchors_where="certs/root.pem", size=2)
    leaves = [pki.issue_client_cert(ca, f"c{i}").cert for i in range(3)]
    now = pki.utc_now()
    for leaf in leaves:
        verdicts.judge([leaf], now=now, crls=None, identity="c")
    assert (verdicts.judged, len(verdicts)) == (3, 2)
    verdicts.judge([leaves[0]], now=now, crls=None, identity="c")  # dropped: judged again
    assert verdicts.judged == 4


async def test_the_ca_services_own_certificate_is_judged_by_the_core(ca_env: CaEnv) -> None:
    """tls.cert must be a server certificate under the CA's anchors: a client certificate there is a one-line ConfigError."""
    ca_env.store.write_leaves([pki.issue_client_cert(ca_env.ca, "notaserver")])
    config = ca_env.config(tls={"cert": "certs/notaserver.pem", "key": "certs/notaserver-key.pem"})
    with pytest.raises(ConfigError, match=r"tls.cert: .*notaserver.pem is not a server certificate \(its extended key usage lacks serverAuth\)"):
        await start_ca_server(config)
    running = await start_ca_server(ca_env.config())  # twin: the CA service's server certificate
    await running.stop(grace=0)


def test_the_core_judges_possession(ca_env: CaEnv) -> None:
    """checks.check_possession: the certificate's key signed the message; another key did not (twin)."""
    leaf = pki.issue_client_cert(ca_env.ca, "frank")
    message = proof_message(b"csr", 1)
    assert checks.check_possession(leaf.cert, sign_proof(leaf.key, message), message) is None
    problem = checks.check_possession(leaf.cert, sign_proof(pki.generate_private_key(), message), message)
    assert problem is not None and problem.code is checks.Code.KEY_MISMATCH



def _issued(cert: pki.IssuedCert) -> Issued:
    chain_pem = b"".join(pki.certificate_pem(c) for c in (cert.cert, *cert.chain))
    return Issued(chain_pem=chain_pem, trust_bundle_pem=b"", serial=f"{cert.cert.serial_number:x}", not_after=cert.cert.not_valid_after_utc)


def test_the_renewer_judges_the_answer_before_replacing_files(ca_env: CaEnv) -> None:
    """Client side: an answer chaining to the trusted root is taken; one from a same-named foreign CA is bad-answer."""
    ca = ca_env.ca
    old = pki.issue_client_cert(ca, "gina")
    good = pki.issue_client_cert(ca, "gina")
    _check_answer(_issued(good), old.cert, good.key, ca_env.trust_pem)
    foreign = pki.issue_client_cert(pki.issue_intermediate(pki.create_root_ca()), "gina")
    with pytest.raises(CaError, match=r"the CA returned a certificate that does not verify: the renewed certificate was not signed by the CA in tls.renew.ca_cert") as refused:
        _check_answer(_issued(foreign), old.cert, foreign.key, ca_env.trust_pem)
    assert refused.value.reason == "bad-answer"
    with pytest.raises(CaError, match="the CA returned a certificate for another key"):
        _check_answer(_issued(good), old.cert, foreign.key, ca_env.trust_pem)
