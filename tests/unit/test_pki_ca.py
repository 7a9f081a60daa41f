"""The CA profile: constraints, key usage, identifiers, serial, validity, per key type."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from securechat import pki
from securechat.errors import PkiError

CaFor = Callable[[str], pki.CertificateAuthority]


@pytest.mark.parametrize("key_type", pki.KEY_TYPES)
def test_ca_has_key_of_requested_type(pki_ca_for: CaFor, key_type: str) -> None:
    """The CA's key, and the key type read back from its cert, match --key-type."""
    ca = pki_ca_for(key_type)
    assert pki.key_type_name(ca.cert.public_key()) == key_type
    assert pki.key_matches_certificate(ca.key, ca.cert)


@pytest.mark.parametrize("key_type", pki.KEY_TYPES)
def test_ca_is_self_signed(pki_ca_for: CaFor, key_type: str) -> None:
    """The CA verifies as issued by itself."""
    ca = pki_ca_for(key_type)
    assert pki.is_signed_by(ca.cert, ca.cert)


@pytest.mark.parametrize("key_type", pki.KEY_TYPES)
def test_ca_basic_constraints_are_critical_with_pathlen_zero(pki_ca_for: CaFor, key_type: str) -> None:
    """basicConstraints is CA:TRUE, pathLen 0, critical."""
    ext = pki_ca_for(key_type).cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert ext.critical
    assert ext.value.ca is True
    assert ext.value.path_length == 0


@pytest.mark.parametrize("key_type", pki.KEY_TYPES)
def test_ca_key_usage_is_cert_and_crl_signing_only(pki_ca_for: CaFor, key_type: str) -> None:
    """keyUsage is keyCertSign + cRLSign and nothing else, critical."""
    ext = pki_ca_for(key_type).cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ext.critical
    usage = ext.value
    assert usage.key_cert_sign and usage.crl_sign
    assert not any(
        [
            usage.digital_signature,
            usage.content_commitment,
            usage.key_encipherment,
            usage.data_encipherment,
            usage.key_agreement,
        ]
    )


@pytest.mark.parametrize("key_type", pki.KEY_TYPES)
def test_ca_has_ski_and_keyid_only_aki(pki_ca_for: CaFor, key_type: str) -> None:
    """SKI matches the public key; the AKI carries that key id only, both non-critical."""
    cert = pki_ca_for(key_type).cert
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert not ski.critical and not aki.critical
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert aki.value.key_identifier == ski.value.digest
    assert aki.value.authority_cert_issuer is None
    assert aki.value.authority_cert_serial_number is None


def test_ca_subject_names_common_name_and_organization(pki_ca: pki.CertificateAuthority) -> None:
    """The subject is non-empty: CN from --name, O=securechat; issuer equals subject."""
    subject = pki_ca.cert.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "securechat CA"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "securechat"
    assert pki_ca.cert.issuer == subject


def test_ca_common_name_is_configurable() -> None:
    """common_name= sets the CA's CN."""
    ca = pki.create_ca(common_name="Acme internal CA")
    assert ca.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Acme internal CA"


@pytest.mark.parametrize("common_name", ["", "   ", "x" * 65])
def test_ca_common_name_must_fit(common_name: str) -> None:
    """An empty or over-long CN is refused."""
    with pytest.raises(PkiError, match="common name"):
        pki.create_ca(common_name=common_name)


@pytest.mark.parametrize("key_type", pki.KEY_TYPES)
def test_ca_serial_is_random_and_at_least_128_bits(pki_ca_for: CaFor, key_type: str) -> None:
    """The serial is positive and needs more than 128 bits (so at least 128 random bits)."""
    serial = pki_ca_for(key_type).cert.serial_number
    assert serial > 0
    assert serial.bit_length() > 128


def test_ca_validity_default_is_ten_years_backdated_for_skew(
    pki_ca: pki.CertificateAuthority,
) -> None:
    """Default validity: starts a few minutes back, lasts 3650 days from now; UTC-aware."""
    cert = pki_ca.cert
    now = dt.datetime.now(dt.timezone.utc)
    assert now - dt.timedelta(hours=1) < cert.not_valid_before_utc < now - pki.CLOCK_SKEW_BACKDATE / 2
    expected_end = cert.not_valid_before_utc + pki.CLOCK_SKEW_BACKDATE + dt.timedelta(days=3650)
    assert cert.not_valid_after_utc == expected_end


@pytest.mark.parametrize("days", [0, -1, pki.CA_MAX_DAYS + 1])
def test_ca_days_out_of_range_is_refused(days: int) -> None:
    """CA days outside 1..CA_MAX_DAYS are refused with the flag named."""
    with pytest.raises(PkiError, match="--days"):
        pki.create_ca(days=days)


def test_unknown_key_type_is_refused() -> None:
    """An unknown key type names the accepted ones."""
    with pytest.raises(PkiError, match="unknown key type 'dsa-1024'.*ecdsa-p256"):
        pki.create_ca(key_type="dsa-1024")


@pytest.mark.parametrize(
    ("key_type", "hash_name"),
    [("ecdsa-p256", "sha256"), ("ecdsa-p384", "sha384"), ("rsa-2048", "sha256"), ("ed25519", None)],
)
def test_ca_signature_hash_matches_key(pki_ca_for: CaFor, key_type: str, hash_name: str | None) -> None:
    """P-384 signs with SHA-384, P-256 and RSA with SHA-256, Ed25519 with no separate hash."""
    algorithm = pki_ca_for(key_type).cert.signature_hash_algorithm
    assert (algorithm.name if isinstance(algorithm, hashes.HashAlgorithm) else None) == hash_name


def test_ca_with_explicit_window_can_be_expired() -> None:
    """not_before/not_after make an already-expired CA for tests."""
    now = pki.utc_now()
    ca = pki.create_ca(not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1))
    assert pki.summarize(ca.cert).expired
