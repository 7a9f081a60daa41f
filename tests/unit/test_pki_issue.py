"""The server and client profiles: EKUs, SANs, key usage, identifiers, validity."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from securechat import pki
from securechat.errors import PkiError

CaFor = Callable[[str], pki.CertificateAuthority]


def _sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    return pki.subject_alternative_names(cert)


def _ip(text: str) -> x509.IPAddress:
    return x509.IPAddress(ipaddress.ip_address(text))


@pytest.fixture(params=["server", "client"])
def leaf(request: pytest.FixtureRequest, pki_ca: pki.CertificateAuthority) -> pki.IssuedCert:
    """One server and one client certificate from the session CA."""
    if request.param == "server":
        return pki.issue_server_cert(pki_ca, "server")
    return pki.issue_client_cert(pki_ca, "alice")


def test_server_cert_has_server_auth_only(pki_ca: pki.CertificateAuthority) -> None:
    """A server certificate's EKU is exactly serverAuth, non-critical."""
    issued = pki.issue_server_cert(pki_ca, "server")
    assert pki.extended_key_usages(issued.cert) == frozenset({ExtendedKeyUsageOID.SERVER_AUTH})
    assert not issued.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).critical
    assert issued.kind == "server"


def test_client_cert_has_client_auth_only(pki_ca: pki.CertificateAuthority) -> None:
    """A client certificate's EKU is exactly clientAuth."""
    issued = pki.issue_client_cert(pki_ca, "alice")
    assert pki.extended_key_usages(issued.cert) == frozenset({ExtendedKeyUsageOID.CLIENT_AUTH})
    assert issued.kind == "client"


def test_server_sans_default_to_this_machine(pki_ca: pki.CertificateAuthority) -> None:
    """Without sans=, a server cert covers localhost, 127.0.0.1 and ::1."""
    issued = pki.issue_server_cert(pki_ca, "server")
    assert _sans(issued.cert) == [x509.DNSName("localhost"), _ip("127.0.0.1"), _ip("::1")]


@pytest.mark.parametrize(
    ("sans", "expected"),
    [
        (["api.example.com"], [x509.DNSName("api.example.com")]),
        (["api.example.com", "10.0.0.5"], [x509.DNSName("api.example.com"), _ip("10.0.0.5")]),
        (["2001:db8::1", "::1"], [_ip("2001:db8::1"), _ip("::1")]),
        (["a.example", "A.example", "a.example"], [x509.DNSName("a.example")]),
    ],
)
def test_server_custom_sans(
    pki_ca: pki.CertificateAuthority, sans: list[str], expected: list[x509.GeneralName]
) -> None:
    """Custom SANs (DNS, IPv4, IPv6) are encoded in order, without repeats."""
    assert _sans(pki.issue_server_cert(pki_ca, "server", sans=sans).cert) == expected


def test_server_with_no_sans_is_refused(pki_ca: pki.CertificateAuthority) -> None:
    """An explicit empty SAN list is an error, not a nameless certificate."""
    with pytest.raises(PkiError, match="needs at least one SAN"):
        pki.issue_server_cert(pki_ca, "server", sans=[])


def test_client_identity_is_cn_and_dns_san(pki_ca: pki.CertificateAuthority) -> None:
    """A client's NAME is its CN and its only SAN (a DNS name)."""
    cert = pki.issue_client_cert(pki_ca, "alice").cert
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert _sans(cert) == [x509.DNSName("alice")]


def test_client_spiffe_trust_domain_adds_uri_san(pki_ca: pki.CertificateAuthority) -> None:
    """spiffe_trust_domain= adds spiffe://TD/NAME as a URI SAN."""
    cert = pki.issue_client_cert(pki_ca, "alice", spiffe_trust_domain="example.org").cert
    assert _sans(cert) == [
        x509.DNSName("alice"),
        x509.UniformResourceIdentifier("spiffe://example.org/alice"),
    ]


def test_leaf_subject_is_non_empty_and_issuer_is_ca(leaf: pki.IssuedCert, pki_ca: pki.CertificateAuthority) -> None:
    """Leaf subject is O=securechat, CN=NAME; issuer is the CA subject; SAN non-critical."""
    assert leaf.cert.subject.rfc4514_string() == f"CN={leaf.name},O=securechat"
    assert leaf.cert.issuer == pki_ca.cert.subject
    assert not leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical


def test_leaf_is_not_a_ca(leaf: pki.IssuedCert) -> None:
    """basicConstraints is CA:FALSE, critical."""
    ext = leaf.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert ext.critical
    assert ext.value.ca is False
    assert ext.value.path_length is None


@pytest.mark.parametrize(
    ("key_type", "key_encipherment"),
    [
        ("ecdsa-p256", False),
        ("ecdsa-p384", False),
        ("rsa-2048", True),
        ("rsa-3072", True),
        ("rsa-4096", True),
        ("ed25519", False),
    ],
)
@pytest.mark.parametrize("kind", ["server", "client"])
def test_leaf_key_usage_per_key_type(pki_ca_for: CaFor, key_type: str, key_encipherment: bool, kind: str) -> None:
    """digitalSignature always, keyEncipherment only for RSA, critical; any CA key type signs."""
    ca = pki_ca_for(key_type)
    if key_type == "rsa-4096":  # the slow one: reuse the CA's own key type only for signing
        issued = (pki.issue_server_cert if kind == "server" else pki.issue_client_cert)(ca, "n1", key_type="rsa-2048")
        key_encipherment = True
    else:
        issued = (pki.issue_server_cert if kind == "server" else pki.issue_client_cert)(ca, "n1", key_type=key_type)
        assert pki.key_type_name(issued.cert.public_key()) == key_type
    ext = issued.cert.extensions.get_extension_for_class(x509.KeyUsage)
    usage = ext.value
    assert ext.critical
    assert usage.digital_signature
    assert usage.key_encipherment is key_encipherment
    assert not any([usage.content_commitment, usage.data_encipherment, usage.key_agreement])
    assert not usage.key_cert_sign and not usage.crl_sign
    assert pki.is_signed_by(issued.cert, ca.cert)
    assert pki.key_matches_certificate(issued.key, issued.cert)


def test_leaf_aki_matches_ca_ski(leaf: pki.IssuedCert, pki_ca: pki.CertificateAuthority) -> None:
    """Every leaf has its own SKI and an AKI equal to the CA's SKI (key id only)."""
    ca_ski = pki_ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    ski = leaf.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = leaf.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(leaf.cert.public_key())
    assert aki.key_identifier == ca_ski.digest
    assert aki.authority_cert_issuer is None and aki.authority_cert_serial_number is None


def test_leaf_serials_are_random_and_at_least_128_bits(pki_ca: pki.CertificateAuthority) -> None:
    """Serials are positive, over 128 bits, and differ between certificates."""
    serials = {pki.issue_client_cert(pki_ca, f"u{i}").cert.serial_number for i in range(20)}
    assert len(serials) == 20
    assert all(s > 0 and s.bit_length() > 128 for s in serials)


def test_leaf_validity_default_is_365_days_backdated(pki_ca: pki.CertificateAuthority) -> None:
    """Default: starts CLOCK_SKEW_BACKDATE ago, ends 365 days from now."""
    cert = pki.issue_client_cert(pki_ca, "alice").cert
    now = dt.datetime.now(dt.timezone.utc)
    assert cert.not_valid_before_utc < now - pki.CLOCK_SKEW_BACKDATE / 2
    assert cert.not_valid_after_utc == cert.not_valid_before_utc + pki.CLOCK_SKEW_BACKDATE + dt.timedelta(days=365)
    assert pki.days_left(cert) == 365


@pytest.mark.parametrize("days", [398, 825, 3650])
def test_leaf_days_over_397_is_refused(pki_ca: pki.CertificateAuthority, days: int) -> None:
    """More than 397 days is a one-line error naming the limit and the fix."""
    with pytest.raises(
        PkiError,
        match=rf"^--days {days} is too long: at most 397 days .* Use --days 397 or less\.$",
    ):
        pki.issue_server_cert(pki_ca, "server", days=days)


def test_leaf_397_days_is_allowed(pki_ca: pki.CertificateAuthority) -> None:
    """Exactly 397 days is the longest allowed leaf."""
    assert pki.days_left(pki.issue_client_cert(pki_ca, "alice", days=397).cert) == 397


def test_leaf_never_outlives_its_ca() -> None:
    """A leaf asking for more days than the CA has left ends with the CA and says so."""
    short_ca = pki.create_ca(days=30)
    issued = pki.issue_server_cert(short_ca, "server", days=365)
    assert issued.capped_at_ca_expiry
    assert issued.cert.not_valid_after_utc == short_ca.cert.not_valid_after_utc


def test_leaf_within_ca_lifetime_is_not_capped(pki_ca: pki.CertificateAuthority) -> None:
    """The failing twin: a leaf well inside the CA's lifetime is not marked capped."""
    issued = pki.issue_server_cert(pki_ca, "server", days=30)
    assert not issued.capped_at_ca_expiry
    assert issued.cert.not_valid_after_utc < pki_ca.cert.not_valid_after_utc


def test_expired_ca_cannot_issue_by_default() -> None:
    """An expired CA refuses to issue (the cert would be born expired)."""
    now = pki.utc_now()
    old_ca = pki.create_ca(not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1))
    with pytest.raises(PkiError, match="the CA expired on .*'securechat certs init --force'"):
        pki.issue_client_cert(old_ca, "alice")


@pytest.mark.parametrize(
    ("start", "end", "expired", "not_yet_valid"),
    [
        (-10, -1, True, False),
        (1, 30, False, True),
        (-1, 30, False, False),
    ],
)
def test_explicit_window_makes_expired_and_not_yet_valid_certs(
    pki_ca: pki.CertificateAuthority, start: int, end: int, expired: bool, not_yet_valid: bool
) -> None:
    """not_before/not_after (days from now) are used as given, for tests of broken certs."""
    now = pki.utc_now()
    issued = pki.issue_client_cert(
        pki_ca,
        "alice",
        not_before=now + dt.timedelta(days=start),
        not_after=now + dt.timedelta(days=end),
    )
    summary = pki.summarize(issued.cert)
    assert summary.expired is expired
    assert summary.not_yet_valid is not_yet_valid
    assert issued.cert.not_valid_before_utc == now + dt.timedelta(days=start)


@pytest.mark.parametrize(
    ("not_before", "not_after", "message"),
    [
        (dt.datetime(2030, 1, 1), None, "has no timezone"),  # noqa: DTZ001 - the naive value is the point
        (None, dt.datetime(2030, 1, 1), "has no timezone"),  # noqa: DTZ001
        (
            dt.datetime(2030, 1, 2, tzinfo=dt.timezone.utc),
            dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc),
            "is not after",
        ),
        (
            dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc),
            dt.datetime(2032, 1, 1, tzinfo=dt.timezone.utc),
            "longer than 397",
        ),
    ],
)
def test_explicit_window_is_checked(
    pki_ca: pki.CertificateAuthority,
    not_before: dt.datetime | None,
    not_after: dt.datetime | None,
    message: str,
) -> None:
    """Naive datetimes, reversed windows and over-long windows are refused."""
    with pytest.raises(PkiError, match=message):
        pki.issue_server_cert(pki_ca, "server", not_before=not_before, not_after=not_after)


def test_issue_validates_name(pki_ca: pki.CertificateAuthority) -> None:
    """Issuing checks NAME, so a library caller cannot write '../x.pem' later."""
    with pytest.raises(PkiError, match="looks like a path"):
        pki.issue_client_cert(pki_ca, "../evil")


def test_peer_cert_has_both_ekus_and_the_given_sans(pki_ca: pki.CertificateAuthority) -> None:
    """The peer profile (cluster routes): serverAuth AND clientAuth, SANs as given, still a leaf."""
    issued = pki.issue_peer_cert(pki_ca, "nats-0", sans=["nats-0.nats", "127.0.0.1"])
    ekus = issued.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(ekus) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _sans(issued.cert) == [x509.DNSName("nats-0.nats"), _ip("127.0.0.1")]
    assert issued.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert issued.kind == "peer"


def test_peer_cert_needs_a_san(pki_ca: pki.CertificateAuthority) -> None:
    """The failing twin: a peer certificate without names is refused."""
    with pytest.raises(PkiError, match="'nats-0' needs at least one SAN"):
        pki.issue_peer_cert(pki_ca, "nats-0", sans=[])


@pytest.mark.parametrize(("issue", "kind"), [("server", "server"), ("client", "client"), ("peer", "peer")])
def test_server_and_client_profiles_stay_single_purpose_and_reissue_keeps_the_profile(
    pki_ca: pki.CertificateAuthority, issue: str, kind: str
) -> None:
    """Only the peer profile carries both EKUs; renewing any of them keeps its EKUs."""
    issued = {
        "server": lambda: pki.issue_server_cert(pki_ca, "n"),
        "client": lambda: pki.issue_client_cert(pki_ca, "n"),
        "peer": lambda: pki.issue_peer_cert(pki_ca, "n", sans=["n.example"]),
    }[issue]()
    renewed = pki.reissue(pki_ca, "n", issued.cert)
    assert renewed.kind == kind
    before = list(issued.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert list(renewed.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == before
    assert len(before) == (2 if kind == "peer" else 1)
