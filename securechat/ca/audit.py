"""One structured audit line per issuance, renewal and refusal: who, what serial, which kind, until when, why.

The lines go to the `securechat.ca.audit` logger as `key=value` text (or,
with `log: {format: json}`, as JSON fields); never key material, CSRs or
tokens. A refusal names the reason (`securechat.ca.refusals`) and the
caller's address.
"""

from __future__ import annotations

import datetime as dt
import logging

log = logging.getLogger("securechat.ca.audit")

_FIELDS = ("identity", "serial", "kind", "not_after", "caller", "reason")


def _line(event: str, values: dict[str, str]) -> str:
    parts = [f"event={event}"]
    for key in _FIELDS:
        value = values.get(key, "")
        parts.append(f"{key}={_quote(value) if value else '-'}")
    return " ".join(parts)


def _quote(value: str) -> str:
    # One line, and unambiguous: a value with spaces or quotes is quoted.
    cleaned = value.replace("\n", " ").replace("\r", " ")
    return cleaned if cleaned.replace("-", "").replace(".", "").replace(":", "").isalnum() else repr(cleaned)


def record(
    event: str,
    *,
    identity: str = "",
    serial: str = "",
    kind: str = "",
    not_after: dt.datetime | None = None,
    caller: str = "",
    reason: str = "",
) -> None:
    """Log one audit line; EVENT is 'issued', 'renewed', 'refused', 'revoked' or 'token'."""
    values = {
        "identity": identity,
        "serial": serial,
        "kind": kind,
        "not_after": not_after.strftime("%Y-%m-%dT%H:%M:%SZ") if not_after else "",
        "caller": caller,
        "reason": reason,
    }
    level = logging.WARNING if event == "refused" else logging.INFO
    log.log(level, "%s", _line(event, values), extra={"event": event, **{k: v for k, v in values.items() if v}})
