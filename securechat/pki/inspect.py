"""Look at a certificate: data, not text. The CLI and `doctor` render it.

These functions return facts and never raise for a "bad" certificate: an
expired or foreign certificate is a normal answer here. What is *not*
decided here: whether a certificate is good for a purpose -- chains of any
length, revocation, names -- that is `securechat.tls.checks`, which these
helpers share their definitions with.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from securechat.pki.keys import key_type_name
from securechat.pki.validity import utc_now
from securechat.tls import checks

_EKU_NAMES: dict[ObjectIdentifier, str] = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}


@dataclass(frozen=True)
class CertSummary:
    """What a person wants to know about a certificate."""

    subject: str
    issuer: str
    common_name: str | None
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    uris: tuple[str, ...]
    ekus: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    days_left: int
    """See `days_until`: positive while valid, negative once expired."""
    serial: str
    """Lowercase hex, no separators."""
    fingerprint_sha256: str
    """Uppercase hex pairs joined by ':', as `openssl x509 -fingerprint -sha256` prints it."""
    key_type: str
    is_ca: bool
    signed_by_ca: bool | None
    """Whether the given CA signed it; None when no CA was given."""
    expired: bool
    not_yet_valid: bool
    key_usages: tuple[str, ...] = ()
    """The KeyUsage bits set, by their RFC 5280 names (digitalSignature, keyCertSign, ...); () without the extension."""


def extended_key_usages(cert: x509.Certificate) -> frozenset[ObjectIdentifier]:
    """The EKU OIDs in CERT; empty when it has no EKU extension."""
    try:
        return frozenset(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return frozenset()


def eku_name(oid: ObjectIdentifier) -> str:
    """'serverAuth', 'clientAuth', ... or the dotted OID for ones without a short name."""
    return _EKU_NAMES.get(oid, oid.dotted_string)


def subject_alternative_names(cert: x509.Certificate) -> list[x509.GeneralName]:
    """The SAN entries of CERT, in order; empty when it has none."""
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def is_ca_certificate(cert: x509.Certificate) -> bool:
    """True if CERT says basicConstraints CA:TRUE (`tls.checks.is_ca`: one definition)."""
    return checks.is_ca(cert)


def is_signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """True if CA_CERT's key signed CERT and CA_CERT's subject is CERT's issuer (`tls.checks.signed_by`).

    One link only; whether a chain reaches a trust anchor is
    `tls.checks.verify_chain`'s decision.
    """
    return checks.signed_by(cert, ca_cert)


_KEY_USAGE_BITS = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign",
)  # fmt: skip


def key_usages(cert: x509.Certificate) -> tuple[str, ...]:
    """The KeyUsage bits CERT sets, by their RFC 5280 names, in the RFC's order."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return ()
    names = [_camel(bit) for bit in _KEY_USAGE_BITS if getattr(usage, bit)]
    if usage.key_agreement:  # only defined with keyAgreement (cryptography raises otherwise)
        names += [_camel(bit) for bit in ("encipher_only", "decipher_only") if getattr(usage, bit)]
    return tuple(names)


def _camel(name: str) -> str:
    if name == "crl_sign":
        return "cRLSign"  # RFC 5280's spelling
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate as 'AB:CD:...'."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def days_until(moment: dt.datetime, *, now: dt.datetime | None = None) -> int:
    """Whole days until MOMENT, the one day count every command shows (see `days_text`).

    Rounded up while it is ahead, so a 365-day certificate shows 365 right
    after issue and one expiring within a day shows 1; once it has passed,
    minus the whole days since (0 within the first day: "expired today").
    """
    remaining = (moment - (now or utc_now())) / dt.timedelta(days=1)
    return math.ceil(remaining)


def days_text(days: int) -> str:
    """A `days_until` count in words: '1 day left', '30 days left', 'expired today', 'expired 1 day ago'."""
    if days > 0:
        return f"{days} day{'s' if days != 1 else ''} left"
    if days == 0:
        return "expired today"
    return f"expired {-days} day{'s' if days != -1 else ''} ago"


def days_left(cert: x509.Certificate, *, now: dt.datetime | None = None) -> int:
    """`days_until` CERT expires: positive while valid, negative once expired."""
    return days_until(cert.not_valid_after_utc, now=now)


def summarize(
    cert: x509.Certificate,
    *,
    ca_cert: x509.Certificate | None = None,
    now: dt.datetime | None = None,
) -> CertSummary:
    """Everything `securechat certs inspect` shows, as data."""
    now = now or utc_now()
    sans = subject_alternative_names(cert)
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return CertSummary(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        common_name=str(common_names[0].value) if common_names else None,
        dns_names=tuple(n.value for n in sans if isinstance(n, x509.DNSName)),
        ip_addresses=tuple(str(n.value) for n in sans if isinstance(n, x509.IPAddress)),
        uris=tuple(n.value for n in sans if isinstance(n, x509.UniformResourceIdentifier)),
        ekus=tuple(sorted(eku_name(oid) for oid in extended_key_usages(cert))),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        days_left=days_left(cert, now=now),
        serial=f"{cert.serial_number:x}",
        fingerprint_sha256=fingerprint_sha256(cert),
        key_type=key_type_name(cert.public_key()),
        is_ca=is_ca_certificate(cert),
        signed_by_ca=None if ca_cert is None else is_signed_by(cert, ca_cert),
        expired=cert.not_valid_after_utc < now,
        not_yet_valid=cert.not_valid_before_utc > now,
        key_usages=key_usages(cert),
    )
