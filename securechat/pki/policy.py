"""What renewal and revocation mean for the entries of a certs directory's index.

Pure decisions over `IndexEntry` lists -- which certificates a revocation
covers, when a name may be renewed, which entries a reissue supersedes,
what is due for renewal -- so they can be tested without files. The store
applies them; the CLI words them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509

from securechat.errors import PkiError
from securechat.pki.expiry import RENEW_AT
from securechat.pki.index import IndexEntry, iso_utc
from securechat.pki.revoke import Revocation, crl_signer, reason_of

MAX_RENEWAL_WINDOW = dt.timedelta(days=100 * 366)
"""The longest --within accepted: a century covers every certificate securechat issues."""


def normalize_serial(text: str) -> str:
    """'5F:3A:..' or '0x5f3a..' as index.json writes serials: lowercase hex, no leading zeros."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    if len(cleaned) > 64:  # a serial is at most 20 octets (RFC 5280 4.1.2.2)
        raise PkiError(
            f"serial {text[:20]!r}... is longer than any certificate serial. Copy it from 'securechat certs list'."
        )
    try:
        return f"{int(cleaned, 16):x}"
    except ValueError:
        raise PkiError(f"serial {text!r} is not hexadecimal. Copy it from 'securechat certs list'.") from None


def revocation_targets(
    entries: Sequence[IndexEntry], name: str, *, serial: str | None, now: dt.datetime, index_path: Path, directory: Path
) -> list[int]:
    """Positions in ENTRIES that revoking NAME (or only SERIAL) covers; PkiError if there are none.

    Without SERIAL, every unexpired certificate of the name, the current one
    and any superseded one, because each still verifies: revoking a name is
    meant to shut it out.
    """
    wanted = normalize_serial(serial) if serial is not None else None
    targets = [
        i
        for i, e in enumerate(entries)
        if e.name == name
        and e.kind != "ca"
        and e.status != "revoked"
        and (e.serial == wanted if wanted is not None else e.not_after > now)
    ]
    if not targets:
        known = [e for e in entries if e.name == name and e.kind != "ca"]
        if not known:
            raise PkiError(f"{name} is not in {index_path}. Run 'securechat certs list --dir {directory}'.")
        what = f"serial {wanted}" if wanted is not None else "unexpired certificate"
        raise PkiError(f"{name} has no {what} left to revoke (already revoked or expired). Nothing to do.")
    return targets


def mark_revoked(
    entries: Sequence[IndexEntry], targets: Iterable[int], *, now: dt.datetime, reason: str
) -> list[IndexEntry]:
    """ENTRIES with those at TARGETS revoked at NOW for REASON."""
    chosen = set(targets)
    return [
        replace(e, status="revoked", revoked_at=now, reason=reason) if i in chosen else e for i, e in enumerate(entries)
    ]


def refuse_renewing_revoked(entries: Sequence[IndexEntry], name: str) -> None:
    """PkiError if NAME's latest certificate was revoked.

    Re-admitting a revoked name is a decision for `certs server|client NAME
    --force`, not for a renewal timer.
    """
    latest = [e for e in entries if e.name == name and e.kind != "ca"]
    if latest and latest[-1].status == "revoked":
        raise PkiError(
            f"{name} was revoked on {iso_utc(latest[-1].revoked_at or latest[-1].not_before)}; refusing to renew it."
            f" Issue a new certificate deliberately with 'securechat certs server|client {name} --force'."
        )


def supersede(entries: Iterable[IndexEntry], reissued: Iterable[str]) -> list[IndexEntry]:
    """ENTRIES with the valid ones of each REISSUED name marked superseded (the new ones are appended by the caller)."""
    names = set(reissued)
    return [replace(e, status="superseded") if e.name in names and e.status == "valid" else e for e in entries]


def crl_revocations(entries: Iterable[IndexEntry]) -> list[Revocation]:
    """What the CRL lists: every revoked entry."""
    return [
        Revocation(serial=int(e.serial, 16), revoked_at=e.revoked_at, reason=e.reason or "unspecified")
        for e in entries
        if e.status == "revoked" and e.revoked_at is not None
    ]


def carried_revocations(
    previous: x509.CertificateRevocationList | None, ca_cert: x509.Certificate, listed: Iterable[int]
) -> list[Revocation]:
    """The entries of the PREVIOUS crl.pem (signed by CA_CERT's key) that a new CRL keeps besides LISTED.

    Revocation is never undone, so entries carry over: `certs revoke` (from
    index.json) and the online CA (`ca revoke`, from its database) can both
    publish one crl.pem without dropping each other's revocations. A CRL
    signed by another key (an older CA) carries nothing.
    """
    if previous is None or crl_signer(previous, [ca_cert]) is None:
        return []
    skip = set(listed)
    return [
        Revocation(serial=e.serial_number, revoked_at=e.revocation_date_utc, reason=reason_of(e))
        for e in previous
        if e.serial_number not in skip
    ]


def supersede_ca(entries: Iterable[IndexEntry]) -> list[IndexEntry]:
    """ENTRIES with the valid issuing CA ("ca") marked superseded: a new intermediate is taking over."""
    return [replace(e, status="superseded") if e.name == "ca" and e.status == "valid" else e for e in entries]


def valid_leaves(entries: Iterable[IndexEntry]) -> list[IndexEntry]:
    """The leaves still current: not the CA, not superseded, not revoked."""
    return [e for e in entries if e.kind != "ca" and e.status == "valid"]


def parse_renewal_window(text: str, *, flag: str = "--within") -> dt.timedelta:
    """'30d', '12h', '2w' or a bare number of days, as a timedelta of at most a century; PkiError otherwise."""
    match = re.fullmatch(r"\s*([0-9]+)\s*([dhw]?)\s*", text)
    if not match:
        shown = text if len(text) <= 40 else f"{text[:40]}..."
        raise PkiError(f"{flag} {shown!r} is not a duration. Write e.g. 30d, 12h or 2w.")
    digits, unit = match.group(1), match.group(2) or "d"
    # Counted before int(): 10**30 days would overflow timedelta (and 5,000 digits int() itself).
    hours = int(digits) * {"h": 1, "d": 24, "w": 24 * 7}[unit] if len(digits) <= 9 else None
    if hours is None or hours > MAX_RENEWAL_WINDOW.days * 24:
        shown = digits if len(digits) <= 12 else f"{digits[:12]}..."
        raise PkiError(f"{flag} {shown}{unit} is longer than {MAX_RENEWAL_WINDOW.days} days. Write e.g. 30d.")
    return dt.timedelta(hours=hours)


def renewal_point(not_before: dt.datetime, not_after: dt.datetime, within: dt.timedelta | None) -> dt.datetime:
    """When a certificate valid NOT_BEFORE..NOT_AFTER is due: `expiry.renew_by`'s rule, from an index entry's times."""
    point = not_before + (not_after - not_before) * RENEW_AT
    return point if within is None else min(point, not_after - within)


@dataclass(frozen=True)
class RenewalCheck:
    """One certificate looked at by `certs needs-renewal`: its label ('ca' or the name), expiry and whether it is due."""

    label: str
    not_after: dt.datetime
    days_left: int
    due: bool

    @property
    def expired(self) -> bool:
        return self.days_left <= 0
