"""How long certificates live: the named limits and the one function that applies them.

All times are timezone-aware UTC.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from securechat.errors import PkiError

CA_DEFAULT_DAYS = 3650
CA_MAX_DAYS = 36500
"""A hundred years; far enough, and well clear of X.509's year-9999 limit."""

LEAF_DEFAULT_DAYS = 365
LEAF_MAX_DAYS = 397
"""The CA/Browser Forum limit for TLS server certificates, applied to every leaf."""

CLOCK_SKEW_BACKDATE = dt.timedelta(minutes=5)
"""not_valid_before is set this far in the past so a peer whose clock runs
slightly behind does not reject a certificate issued a moment ago."""

SHORT_LIVED_BACKDATE_SHARE = 10
"""A certificate given as a lifetime is backdated by at most a tenth of it
(and never more than CLOCK_SKEW_BACKDATE): five minutes in the past would
be most of a 5-minute certificate, and renewal at 2/3 of the validity
window would then come due at once."""


def utc_now() -> dt.datetime:
    """Now, timezone-aware UTC, truncated to whole seconds (X.509 has no fractions)."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


@dataclass(frozen=True)
class Validity:
    """A certificate's validity window and whether it was shortened to fit its CA."""

    not_before: dt.datetime
    not_after: dt.datetime
    capped_at_ca_expiry: bool = False


def _aware(value: dt.datetime, label: str) -> dt.datetime:
    if value.tzinfo is None:
        raise PkiError(f"{label} {value.isoformat()} has no timezone. Pass a timezone-aware UTC datetime.")
    return value.astimezone(dt.timezone.utc)


def validity_window(
    *,
    days: int,
    max_days: int,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    ca_not_after: dt.datetime | None = None,
) -> Validity:
    """Work out a certificate's validity.

    By default it starts CLOCK_SKEW_BACKDATE ago and lasts DAYS (1..MAX_DAYS).
    Explicit NOT_BEFORE / NOT_AFTER override that (tests use them to make
    expired or not-yet-valid certificates on purpose); the window may still
    not be longer than MAX_DAYS. A leaf never outlives its CA: with
    CA_NOT_AFTER the end is capped there and `capped_at_ca_expiry` is set.
    """
    if days > max_days:
        raise PkiError(
            f"--days {days} is too long: at most {max_days} days are allowed here. Use --days {max_days} or less."
        )
    if days < 1:
        raise PkiError(f"--days {days} is too short. Use --days 1 or more.")
    now = utc_now()
    start = _aware(not_before, "not_before") if not_before else now - CLOCK_SKEW_BACKDATE
    end = _aware(not_after, "not_after") if not_after else start + CLOCK_SKEW_BACKDATE + dt.timedelta(days=days)
    if end - start > dt.timedelta(days=max_days) + CLOCK_SKEW_BACKDATE:
        raise PkiError(
            f"validity from {start.isoformat()} to {end.isoformat()} is longer than"
            f" {max_days} days."
            f" Shorten it to at most {max_days} days."
        )
    capped = False
    if ca_not_after is not None:
        ca_end = _aware(ca_not_after, "CA not_after")
        if end > ca_end:
            end, capped = ca_end, True
        if not_after is None and end <= now:
            raise PkiError(
                f"the CA expired on {ca_end.isoformat()}, so it cannot issue valid certificates."
                " Create a new CA with 'securechat certs init --force' and reissue."
            )
    if end <= start:
        raise PkiError(f"not_after {end.isoformat()} is not after not_before {start.isoformat()}. Swap or fix them.")
    return Validity(not_before=start, not_after=end, capped_at_ca_expiry=capped)


def lifetime_window(
    lifetime: dt.timedelta,
    *,
    max_lifetime: dt.timedelta = dt.timedelta(days=LEAF_MAX_DAYS),
    ca_not_after: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> Validity:
    """A validity window from NOW (default: now) lasting LIFETIME, for short-lived certificates.

    Backdated by min(CLOCK_SKEW_BACKDATE, LIFETIME / SHORT_LIVED_BACKDATE_SHARE);
    capped at CA_NOT_AFTER (then `capped_at_ca_expiry` is set). Raises PkiError
    if LIFETIME is not positive or exceeds MAX_LIFETIME, or the CA has expired.
    """
    if lifetime <= dt.timedelta(0):
        raise PkiError(f"lifetime {lifetime} is not positive. Give a lifetime such as 24h.")
    if lifetime > max_lifetime:
        raise PkiError(f"lifetime {lifetime} is longer than the {max_lifetime} allowed here. Shorten it.")
    start_at = now or dt.datetime.now(dt.timezone.utc)
    backdate = min(CLOCK_SKEW_BACKDATE, lifetime / SHORT_LIVED_BACKDATE_SHARE)
    # Whole seconds: X.509 times have no fractions, and a truncated end would
    # make the certificate a little shorter than asked, never longer.
    start = (start_at - backdate).replace(microsecond=0)
    end = (start_at + lifetime).replace(microsecond=0)
    capped = False
    if ca_not_after is not None:
        ca_end = _aware(ca_not_after, "CA not_after")
        if ca_end <= start_at:
            raise PkiError(
                f"the issuing CA expired on {ca_end.isoformat()}, so it cannot issue valid certificates."
                " Sign a new intermediate with 'securechat certs intermediate --root-dir DIR'."
            )
        if end > ca_end:
            end, capped = ca_end, True
    return Validity(not_before=start, not_after=end, capped_at_ca_expiry=capped)
