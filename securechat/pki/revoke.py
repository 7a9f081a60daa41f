"""Revocation: reason codes, the signed CRL, and reading one back.

The CRL profile, and why (RFC 5280 section 5):
- version 2, signed by the CA with the same hash it uses for certificates;
- thisUpdate now (backdated like certificates, for clock skew) and
  nextUpdate CRL_DEFAULT_DAYS later: a relying party treats a CRL past its
  nextUpdate as stale, so re-sign it (`securechat certs crl`) before then;
- cRLNumber, monotonically increasing (5.2.3, MUST), and the CA's
  authorityKeyIdentifier (5.2.1, MUST);
- one entry per revoked serial with its revocation date and, unless the
  reason is "unspecified", a reasonCode entry extension (5.3.1: the
  unspecified code SHOULD be left out rather than written).

`load_crl` reads one CRL back and accepts it only if a CA in the bundle
signed it (by key: `tls.checks.verify_crl`). The server and `doctor` use
`securechat.tls.revocation`, which also handles several CRLs per file and
CRL-number rollbacks. What is *not* done: delta CRLs, indirect CRLs,
distribution points, and certificateHold (a hold cannot be undone here).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from securechat.errors import PkiError
from securechat.pki.ca import CertificateAuthority, authority_key_identifier
from securechat.pki.keys import signature_hash
from securechat.pki.validity import CLOCK_SKEW_BACKDATE, utc_now
from securechat.tls import checks

CRL_DEFAULT_DAYS = 30
"""How long a CRL stays current; `certs revoke` and `certs crl` sign a new one."""
CRL_MAX_DAYS = 3650
"""A CRL's nextUpdate at most ten years out (it is capped at the CA's expiry anyway)."""

REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "privilege-withdrawn": x509.ReasonFlags.privilege_withdrawn,
}
"""`--reason` values. CA compromise and certificate hold are left out: the
first means a new CA, not a CRL entry; the second cannot be lifted here."""


def parse_reason(text: str) -> str:
    """Return TEXT if it is a known `--reason`, else raise PkiError listing them."""
    if text not in REASONS:
        raise PkiError(f"unknown revocation reason {text!r}. Use one of: {', '.join(REASONS)}.")
    return text


@dataclass(frozen=True)
class Revocation:
    """One revoked certificate, as the CRL lists it."""

    serial: int
    revoked_at: dt.datetime
    reason: str = "unspecified"


def build_crl(
    ca: CertificateAuthority,
    revoked: Iterable[Revocation],
    *,
    number: int,
    days: int = CRL_DEFAULT_DAYS,
    now: dt.datetime | None = None,
) -> x509.CertificateRevocationList:
    """Sign a CRL listing REVOKED, with cRLNumber NUMBER, current for DAYS."""
    if days < 1:
        raise PkiError(f"--days {days} is too short for a CRL. Use --days 1 or more.")
    if days > CRL_MAX_DAYS:
        # Checked before timedelta(days=...), which overflows past 999,999,999 days.
        raise PkiError(
            f"--days {days} is too long for a CRL: at most {CRL_MAX_DAYS}. Use --days {CRL_MAX_DAYS} or less."
        )
    this_update = (now or utc_now()) - CLOCK_SKEW_BACKDATE
    next_update = min(this_update + CLOCK_SKEW_BACKDATE + dt.timedelta(days=days), ca.cert.not_valid_after_utc)
    aki = authority_key_identifier(ca)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(aki, critical=False)
    )
    for item in sorted(revoked, key=lambda r: (r.revoked_at, r.serial)):
        entry = x509.RevokedCertificateBuilder().serial_number(item.serial).revocation_date(item.revoked_at)
        if item.reason != "unspecified":
            entry = entry.add_extension(x509.CRLReason(REASONS[parse_reason(item.reason)]), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(private_key=ca.key, algorithm=signature_hash(ca.key))


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def crl_number(crl: x509.CertificateRevocationList) -> int:
    """The CRL's cRLNumber, or 0 if it has none."""
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return 0


def reason_of(entry: x509.RevokedCertificate) -> str:
    """The `--reason` name of a CRL entry ('unspecified' when it has no reasonCode)."""
    try:
        flag = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return "unspecified"
    return next((name for name, value in REASONS.items() if value == flag), flag.name)


def parse_crl(data: bytes, *, where: str) -> x509.CertificateRevocationList:
    """A CRL from PEM or DER bytes; PkiError naming WHERE otherwise."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise PkiError(
            f"{where} is not a readable CRL. Write it with 'securechat certs revoke' or 'certs crl'."
        ) from exc


def crl_signer(crl: x509.CertificateRevocationList, cas: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The CA in CAS that signed CRL -- matched by key (`tls.checks.verify_crl`), never by name alone -- if any."""
    for ca in cas:
        if isinstance(checks.verify_crl(crl, [ca]), checks.RevocationList):
            return ca
    return None


@dataclass(frozen=True)
class RevokedSet:
    """The serials a verified CRL revokes, keyed by the issuing CA's name."""

    issuer: str
    """RFC 4514 name of the CA that signed the CRL."""
    serials: frozenset[int]
    number: int
    next_update: dt.datetime | None

    def revokes(self, issuer: str, serial: int) -> bool:
        return issuer == self.issuer and serial in self.serials

    @property
    def stale(self) -> bool:
        return self.next_update is not None and self.next_update < utc_now()


def load_crl(
    data: bytes,
    cas: Sequence[x509.Certificate],
    *,
    where: str,
    intermediates: Sequence[x509.Certificate] = (),
) -> RevokedSet:
    """Parse DATA and accept it only if a CA in CAS signed it; PkiError naming WHERE otherwise.

    Under a hierarchy the CRL is signed by the issuing intermediate, not by
    the root that CAS holds: INTERMEDIATES (say, those in the server's own
    chain file) are accepted as signers too, each only if it is a CA whose
    path leads to a CA in CAS.
    """
    crl = parse_crl(data, where=where)
    if crl_signer(crl, [*cas, *_linked_cas(cas, intermediates)]) is None:
        raise PkiError(
            f"{where} is not signed by the client CA (its issuer is {crl.issuer.rfc4514_string()})."
            " Use the crl.pem written by 'securechat certs revoke' in the CA's directory."
        )
    return RevokedSet(
        issuer=crl.issuer.rfc4514_string(),
        serials=frozenset(entry.serial_number for entry in crl),
        number=crl_number(crl),
        next_update=crl.next_update_utc,
    )


def _linked_cas(anchors: Sequence[x509.Certificate], candidates: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """The CA certificates of CANDIDATES that chain to ANCHORS (directly or through each other)."""
    trusted = list(anchors)
    linked: list[x509.Certificate] = []
    pending = [c for c in candidates if checks.is_ca(c)]
    progress = True
    while pending and progress:
        progress = False
        for cert in list(pending):
            if any(checks.signed_by(cert, issuer) for issuer in trusted):
                trusted.append(cert)
                linked.append(cert)
                pending.remove(cert)
                progress = True
    return linked
