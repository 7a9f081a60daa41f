"""Looking at certificates (data, not text) and loading them from files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from securechat import pki
from securechat.errors import PkiError


def test_summarize_client_cert(pki_ca: pki.CertificateAuthority) -> None:
    """A client summary carries identity, SANs, EKU, key type, serial, fingerprint and CA check."""
    cert = pki.issue_client_cert(pki_ca, "alice", spiffe_trust_domain="example.org").cert
    summary = pki.summarize(cert, ca_cert=pki_ca.cert)
    assert summary.subject == "CN=alice,O=securechat"
    assert summary.issuer == "CN=securechat CA,O=securechat"
    assert summary.common_name == "alice"
    assert summary.dns_names == ("alice",)
    assert summary.ip_addresses == ()
    assert summary.uris == ("spiffe://example.org/alice",)
    assert summary.ekus == ("clientAuth",)
    assert summary.key_type == "ecdsa-p256"
    assert summary.serial == f"{cert.serial_number:x}"
    assert summary.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex(":").upper()
    assert summary.days_left == 365
    assert summary.is_ca is False
    assert summary.signed_by_ca is True
    assert (summary.expired, summary.not_yet_valid) == (False, False)


def test_summarize_server_cert_lists_ips(pki_ca: pki.CertificateAuthority) -> None:
    """IP SANs are listed as text, v4 and v6."""
    summary = pki.summarize(pki.issue_server_cert(pki_ca, "server").cert)
    assert summary.dns_names == ("localhost",)
    assert summary.ip_addresses == ("127.0.0.1", "::1")
    assert summary.ekus == ("serverAuth",)
    assert summary.signed_by_ca is None


def test_summarize_foreign_cert_is_not_signed_by_ca(
    pki_ca: pki.CertificateAuthority, pki_foreign_ca: pki.CertificateAuthority
) -> None:
    """A certificate from a same-named foreign CA reports signed_by_ca False."""
    cert = pki.issue_client_cert(pki_foreign_ca, "mallory").cert
    assert cert.issuer == pki_ca.cert.subject  # same name: only the signature tells them apart
    assert pki.summarize(cert, ca_cert=pki_ca.cert).signed_by_ca is False


def test_summarize_ca(pki_ca: pki.CertificateAuthority) -> None:
    """A CA summary says is_ca, no EKUs, self-signed."""
    summary = pki.summarize(pki_ca.cert, ca_cert=pki_ca.cert)
    assert summary.is_ca and summary.ekus == () and summary.signed_by_ca


def test_days_left_is_negative_once_expired(pki_ca: pki.CertificateAuthority) -> None:
    """An expired certificate has negative days left and expired=True."""
    now = pki.utc_now()
    cert = pki.issue_client_cert(
        pki_ca,
        "alice",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=3, hours=1),
    ).cert
    summary = pki.summarize(cert)
    assert summary.expired
    assert summary.days_left == -3
    assert pki.days_text(summary.days_left) == "expired 3 days ago"


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (dt.timedelta(days=365), "365 days left"),
        (dt.timedelta(hours=30), "2 days left"),
        (dt.timedelta(hours=3), "1 day left"),
        (dt.timedelta(hours=-3), "expired today"),
        (dt.timedelta(hours=-25), "expired 1 day ago"),
        (dt.timedelta(days=-29), "expired 29 days ago"),
    ],
)
def test_one_day_count_in_words(delta: dt.timedelta, text: str) -> None:
    """days_until + days_text: the one day count every command shows ('1 day', never '1 days')."""
    now = pki.utc_now()
    assert pki.days_text(pki.days_until(now + delta, now=now)) == text


def test_is_signed_by_and_its_failing_twin(
    pki_ca: pki.CertificateAuthority, pki_foreign_ca: pki.CertificateAuthority
) -> None:
    """is_signed_by is True for the issuing CA, False for another CA or a leaf."""
    issued = pki.issue_server_cert(pki_ca, "server")
    assert pki.is_signed_by(issued.cert, pki_ca.cert)
    assert not pki.is_signed_by(issued.cert, pki_foreign_ca.cert)
    assert not pki.is_signed_by(issued.cert, issued.cert)


def test_key_matches_certificate_and_its_failing_twin(pki_ca: pki.CertificateAuthority) -> None:
    """A cert's own key matches; another cert's key does not."""
    alice = pki.issue_client_cert(pki_ca, "alice")
    bob = pki.issue_client_cert(pki_ca, "bob")
    assert pki.key_matches_certificate(alice.key, alice.cert)
    assert not pki.key_matches_certificate(bob.key, alice.cert)


def test_extended_key_usages(pki_ca: pki.CertificateAuthority) -> None:
    """EKUs come back as OIDs; a CA without the extension has none."""
    assert pki.extended_key_usages(pki.issue_server_cert(pki_ca, "s").cert) == {ExtendedKeyUsageOID.SERVER_AUTH}
    assert pki.extended_key_usages(pki_ca.cert) == frozenset()


def test_load_certificates_reads_a_bundle(tmp_path: Path, pki_ca: pki.CertificateAuthority) -> None:
    """load_certificates returns every certificate in a PEM bundle, in order."""
    leaf = pki.issue_server_cert(pki_ca, "server").cert
    bundle = tmp_path / "chain.pem"
    bundle.write_bytes(pki.certificate_pem(leaf) + pki.certificate_pem(pki_ca.cert))
    assert pki.load_certificates(bundle) == [leaf, pki_ca.cert]
    assert pki.load_certificate(bundle) == leaf


def test_load_certificate_reads_der(tmp_path: Path, pki_ca: pki.CertificateAuthority) -> None:
    """A DER certificate loads too."""
    path = tmp_path / "ca.der"
    path.write_bytes(pki_ca.cert.public_bytes(serialization.Encoding.DER))
    assert pki.load_certificate(path) == pki_ca.cert


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"missing\.pem not found\. Check the path"),
        (b"garbage", r"is not a PEM or DER certificate\. Point it at a file that starts with -----BEGIN CERTIFICATE-----\."),
        (
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            r"is a private key, not a certificate\. Point it at NAME\.pem, not NAME-key\.pem\.",
        ),
    ],
)
def test_load_certificate_errors_name_the_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    """Missing, garbage and key-instead-of-cert files are one-line errors naming the file."""
    path = tmp_path / "missing.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PkiError, match=message) as excinfo:
        pki.load_certificate(path)
    assert str(path) in str(excinfo.value)
    assert "AAAA" not in str(excinfo.value) and "garbage" not in str(excinfo.value)  # never the file's contents


def test_load_certificates_rejects_empty_bundle(tmp_path: Path) -> None:
    """A file without any PEM certificate is an error naming it."""
    path = tmp_path / "empty.pem"
    path.write_text("")
    with pytest.raises(PkiError, match=r"empty\.pem is not a PEM certificate\."):
        pki.load_certificates(path)


def test_load_private_key_errors(tmp_path: Path, pki_ca: pki.CertificateAuthority) -> None:
    """A cert given as a key, or an encrypted key without passphrase, names the file and fix."""
    cert_file = tmp_path / "alice.pem"
    cert_file.write_bytes(pki.certificate_pem(pki_ca.cert))
    with pytest.raises(PkiError, match=r"alice\.pem is a certificate, not a private key"):
        pki.load_private_key(cert_file)
    encrypted = tmp_path / "enc-key.pem"
    encrypted.write_bytes(pki.private_key_pem(pki_ca.key, password=b"pw"))
    with pytest.raises(PkiError, match=r"enc-key\.pem is encrypted with a passphrase\. Give its passphrase\."):
        pki.load_private_key(encrypted)
    assert pki.key_matches_certificate(pki.load_private_key(encrypted, password=b"pw"), pki_ca.cert)


def test_key_files_read_the_same_in_pki_and_in_a_config(tmp_path: Path, pki_ca: pki.CertificateAuthority) -> None:
    """pki.load_private_key words a bad key file as the TLS core does (one decision), with its own fix only for a passphrase."""
    from securechat.tls import checks

    cert_file = tmp_path / "alice.pem"
    cert_file.write_bytes(pki.certificate_pem(pki_ca.cert))
    core = checks.parse_private_key(cert_file.read_bytes(), where=str(cert_file))
    assert isinstance(core, checks.Problem) and core.code is checks.Code.NOT_PEM_KEY
    with pytest.raises(PkiError) as excinfo:
        pki.load_private_key(cert_file)
    assert str(excinfo.value) == f"{core.message} {core.fix}"
    plain = tmp_path / "plain-key.pem"
    plain.write_bytes(pki.private_key_pem(pki_ca.key))
    given = checks.parse_private_key(plain.read_bytes(), where="k", password=b"pw")
    assert isinstance(given, checks.Problem) and given.code is checks.Code.KEY_NOT_ENCRYPTED
    with pytest.raises(PkiError, match=r"plain-key\.pem is not encrypted, but a passphrase was given\. Drop the passphrase\."):
        pki.load_private_key(plain, password=b"pw")
    assert pki.load_private_key(plain) is not None  # the twin: no passphrase, it loads
