"""Create a certificate authority: a self-signed root that signs leaves only.

The CA profile, and why (RFC 5280 section 4.2.1):
- basicConstraints CA:TRUE, pathLen 0, critical — it may sign leaves but no
  intermediate CAs (4.2.1.9 requires critical on CA certificates);
- keyUsage keyCertSign + cRLSign, critical — it signs certificates and the
  CRL, nothing else (4.2.1.3);
- subjectKeyIdentifier (required on CA certificates, 4.2.1.2) and an
  authorityKeyIdentifier holding the key id only (4.2.1.1);
- subject `O=securechat, CN=<name>`: never empty, since the subject of a CA
  is the issuer name of everything it signs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from securechat.errors import PkiError
from securechat.pki.keys import (
    DEFAULT_KEY_TYPE,
    PrivateKey,
    generate_private_key,
    key_matches_certificate,
    signature_hash,
)
from securechat.pki.names import MAX_NAME_LENGTH, permitted_subtree
from securechat.pki.validity import CA_DEFAULT_DAYS, CA_MAX_DAYS, validity_window

DEFAULT_CA_COMMON_NAME = "securechat CA"
ORGANIZATION = "securechat"


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate and its private key, ready to sign leaves."""

    cert: x509.Certificate
    key: PrivateKey


def subject_name(common_name: str) -> x509.Name:
    """`O=securechat, CN=<common_name>`: the subject every securechat certificate carries."""
    if not common_name.strip() or len(common_name) > MAX_NAME_LENGTH:
        raise PkiError(
            f"common name {common_name[:20]!r} must be 1 to {MAX_NAME_LENGTH} characters. Pass a shorter --name."
        )
    if not common_name.isprintable() or common_name != common_name.strip():
        # A newline or escape in a subject reaches every log line and terminal that
        # prints an issuer name; isprintable() is False for control, format (bidi)
        # and separator characters other than the plain space.
        raise PkiError(
            f"common name {common_name[:40]!r} holds a control character or surrounding space."
            " Pass a --name of printable text."
        )
    return x509.Name(
        [
            # Most significant first (O before CN), as RFC 4514 renders it reversed.
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def create_ca(
    *,
    common_name: str = DEFAULT_CA_COMMON_NAME,
    key_type: str = DEFAULT_KEY_TYPE,
    days: int = CA_DEFAULT_DAYS,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    permitted_dns: tuple[str, ...] = (),
) -> CertificateAuthority:
    """Make a new self-signed CA with a fresh KEY_TYPE key, valid for DAYS.

    NOT_BEFORE / NOT_AFTER override the validity window (for tests that
    need an expired or not-yet-valid CA). PERMITTED_DNS adds a critical
    nameConstraints extension (RFC 5280 4.2.1.10 requires critical) that lets
    it issue DNS names only under those domains.
    """
    subtrees = [permitted_subtree(text) for text in permitted_dns]
    name = subject_name(common_name)
    validity = validity_window(days=days, max_days=CA_MAX_DAYS, not_before=not_before, not_after=not_after)
    key = generate_private_key(key_type)
    public_key = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity.not_before)
        .not_valid_after(validity.not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,  # the CA signs certificates and CRLs, not TLS handshakes
                content_commitment=False,  # non-repudiation: not for a CA
                key_encipherment=False,  # no key transport
                data_encipherment=False,  # no encryption
                key_agreement=False,  # no key agreement
                key_cert_sign=True,  # sign leaf certificates
                crl_sign=True,  # sign the revocation list (crl.pem)
                encipher_only=False,  # only meaningful with key_agreement
                decipher_only=False,  # only meaningful with key_agreement
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        # Key id only: an issuer name + serial in the AKI would pin the CA
        # cert itself and break a re-signed CA (RFC 5280 4.2.1.1).
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    if subtrees:
        builder = builder.add_extension(
            x509.NameConstraints(permitted_subtrees=subtrees, excluded_subtrees=None), critical=True
        )
    cert = builder.sign(private_key=key, algorithm=signature_hash(key))
    return CertificateAuthority(cert=cert, key=key)


def check_ca(ca: CertificateAuthority, *, where: str = "the CA") -> CertificateAuthority:
    """Return CA if its cert is a CA matching its key, else raise PkiError naming WHERE."""
    try:
        constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise PkiError(f"{where} is not a CA certificate (no basicConstraints CA:TRUE). Point to the CA's ca.pem.")
    if not key_matches_certificate(ca.key, ca.cert):
        raise PkiError(f"{where}: the CA key does not match the CA certificate. Restore the matching ca-key.pem.")
    return ca


def authority_key_identifier(ca: CertificateAuthority) -> x509.AuthorityKeyIdentifier:
    """The AKI for what CA signs (leaves and CRLs): its subjectKeyIdentifier, else one from its key."""
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
