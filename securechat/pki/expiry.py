"""When a certificate "expires soon": judged against its own lifetime and whether it renews itself.

A fixed threshold cannot serve both a 397-day certificate and a 24-hour
one: "under 30 days left" is always true for the second. So:

- expired (or not yet valid): FAIL;
- with renewal configured (`tls.renew`): OK until its renewal time
  (RENEW_AT of the lifetime, as the renewer does it); past
  FAILING_AT of the lifetime the renewer evidently is not succeeding:
  FAIL ("renewal is failing");
- without renewal: WARN once it is past RENEW_AT of its lifetime (or, when
  the caller gives WITHIN, e.g. `--within 30d`, once that close to its end,
  whichever comes first); OK before that.

`doctor`, `certs list` and `certs needs-renewal` all ask here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from cryptography import x509

RENEW_AT = 2 / 3
"""The renewer's default (`tls.renew.at`)."""
FAILING_AT = 0.8
"""Past this share of its lifetime a self-renewing certificate should have been renewed: renewal is failing."""
Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class ExpiryVerdict:
    level: Level
    message: str
    renew_by: dt.datetime
    """When it should be renewed: RENEW_AT of its lifetime, or WITHIN before its end if sooner."""

    @property
    def due(self) -> bool:
        """True when it should be renewed now (WARN or FAIL, or OK-but-due under renewal)."""
        return self.level != "ok"


def _text(delta: dt.timedelta, *, ahead: bool = False) -> str:
    """DELTA in its largest unit; AHEAD (time left) rounds whole days up, as `pki.days_until` does everywhere."""
    seconds = int(abs(delta.total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = -(-seconds // size) if ahead and unit == "day" else seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def renew_by(cert: x509.Certificate, *, within: dt.timedelta | None = None, at: float = RENEW_AT) -> dt.datetime:
    """RENEW_AT of the way through CERT's validity, or WITHIN before its end if that is sooner."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    point = start + (end - start) * at
    return point if within is None else min(point, end - within)


def judge_expiry(
    cert: x509.Certificate,
    *,
    now: dt.datetime,
    renewal_configured: bool,
    within: dt.timedelta | None = None,
) -> ExpiryVerdict:
    """The verdict for CERT at NOW; see the module docstring for the rule."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    lifetime = end - start
    due = renew_by(cert, within=within)
    until = f"{end:%Y-%m-%d %H:%M} UTC"
    if now >= end:
        return ExpiryVerdict("fail", f"expired on {until} ({_text(now - end)} ago)", due)
    if now < start:
        return ExpiryVerdict("fail", f"not valid until {start:%Y-%m-%d %H:%M} UTC", due)
    left = _text(end - now, ahead=True)
    if renewal_configured:
        if now >= start + lifetime * FAILING_AT:
            return ExpiryVerdict(
                "fail",
                f"renewal is failing: it should have been renewed by {start + lifetime * RENEW_AT:%Y-%m-%d %H:%M:%S} UTC"
                f" and expires on {until} ({left} left)",
                due,
            )
        if now >= start + lifetime * RENEW_AT:
            return ExpiryVerdict("ok", f"valid until {until} ({left} left); tls.renew renews it now", due)
        return ExpiryVerdict(
            "ok", f"valid until {until} ({left} left); tls.renew renews it from {due:%Y-%m-%d %H:%M} UTC", due
        )
    if now >= due:
        return ExpiryVerdict(
            "warn",
            f"expires soon: {until} ({left} left, {_share(now, start, lifetime)} of its lifetime gone) and nothing"
            " renews it by itself",
            due,
        )
    return ExpiryVerdict("ok", f"valid until {until} ({left} left)", due)


def _share(now: dt.datetime, start: dt.datetime, lifetime: dt.timedelta) -> str:
    return f"{(now - start) / lifetime:.0%}"
