"""index.json: the record of every certificate issued in a certs directory (format version 1).

    {
      "version": 1,
      "certificates": [
        {"name": "alice", "kind": "client", "serial": "5f3a...",
         "not_before": "2025-01-01T00:00:00Z", "not_after": "2026-01-01T00:00:00Z",
         "sans": ["DNS:alice", "URI:spiffe://example.org/alice"],
         "status": "valid"}
      ]
    }

`kind` is "ca", "server", "client" or "peer" (a hierarchy records its root
as name "root", kind "ca", and each intermediate as name "ca"); `serial` lowercase hex; times are UTC
ISO 8601 with a trailing Z; `sans` are OpenSSL-style `DNS:`/`IP:`/`URI:`
strings. `status` is "valid", "superseded" (the name was reissued with
--force or renewed; the old certificate still verifies until it expires --
revoke it if its key leaked) or "revoked" (listed in crl.pem; such an entry
also has "revoked_at", a time like the others, and "reason", a `certs revoke
--reason` value). Entries are appended, never deleted; a new CA (init
--force) starts a new index. A reader must reject a higher `version` and
ignore fields it does not know.

This module only turns entries into bytes and back; where the file lives is
`layout.py`, how it is written `atomic.py`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from securechat.errors import PkiError
from securechat.pki.inspect import subject_alternative_names
from securechat.pki.issue import IssuedCert
from securechat.pki.names import san_to_text

INDEX_VERSION = 1


@dataclass(frozen=True)
class IndexEntry:
    """One certificate recorded in index.json."""

    name: str
    kind: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    sans: tuple[str, ...]
    status: str = "valid"
    revoked_at: dt.datetime | None = None
    reason: str | None = None

    @classmethod
    def for_certificate(cls, name: str, kind: str, cert: x509.Certificate) -> IndexEntry:
        return cls(
            name=name,
            kind=kind,
            serial=f"{cert.serial_number:x}",
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            sans=tuple(san_to_text(n) for n in subject_alternative_names(cert)),
        )

    @classmethod
    def for_issued(cls, issued: IssuedCert) -> IndexEntry:
        if not issued.sans:
            return cls.for_certificate(issued.name, issued.kind, issued.cert)
        return cls(
            name=issued.name,
            kind=issued.kind,
            serial=f"{issued.cert.serial_number:x}",
            not_before=issued.cert.not_valid_before_utc,
            not_after=issued.cert.not_valid_after_utc,
            sans=tuple(san_to_text(n) for n in issued.sans),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "serial": self.serial,
            "not_before": iso_utc(self.not_before),
            "not_after": iso_utc(self.not_after),
            "sans": list(self.sans),
            "status": self.status,
        } | (
            {"revoked_at": iso_utc(self.revoked_at), "reason": self.reason or "unspecified"}
            if self.revoked_at is not None
            else {}
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IndexEntry:
        """An entry from its JSON object; ValueError, KeyError or TypeError if it is not one."""
        if not isinstance(data, Mapping):
            raise TypeError(f"an entry is {type(data).__name__}, not an object")
        sans = data.get("sans", [])
        if not isinstance(sans, list):
            raise TypeError("sans is not a list")
        return cls(
            name=_text(data["name"]),
            kind=_text(data["kind"]),
            serial=_text(data["serial"]),
            not_before=parse_iso_utc(data["not_before"]),
            not_after=parse_iso_utc(data["not_after"]),
            sans=tuple(_text(s) for s in sans),
            status=_text(data.get("status", "valid")),
            revoked_at=parse_iso_utc(data["revoked_at"]) if data.get("revoked_at") else None,
            reason=_text(data["reason"]) if data.get("reason") else None,
        )


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def iso_utc(value: dt.datetime) -> str:
    """VALUE as index.json writes times: UTC, seconds, a trailing Z."""
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_utc(text: object) -> dt.datetime:
    """A time written by `iso_utc` (or any ISO 8601 time with an offset), as an aware UTC datetime."""
    if not isinstance(text, str):
        raise TypeError(f"a time is {type(text).__name__}, not a string")
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"time {text[:40]!r} has no UTC offset")
    return value.astimezone(dt.timezone.utc)


def parse_index(raw: bytes, *, where: str) -> list[IndexEntry]:
    """The entries of an index.json file read from WHERE, oldest first; PkiError naming WHERE if it is damaged."""
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise TypeError(f"the document is {type(data).__name__}, not an object")
        version = data["version"]
        if not isinstance(version, int) or isinstance(version, bool) or version > INDEX_VERSION:
            raise PkiError(
                f"{where} has format version {str(version)[:20]}, newer than this securechat"
                f" understands ({INDEX_VERSION}). Upgrade securechat."
            )
        certificates = data["certificates"]
        if not isinstance(certificates, list):
            raise TypeError("certificates is not a list")
        return [IndexEntry.from_json(item) for item in certificates]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        # RecursionError: json's C decoder recurses once per nesting level.
        raise PkiError(
            f"{where} is damaged ({type(exc).__name__}). Restore it from a backup, or move it"
            " aside to start a new index (certificates on disk stay valid)."
        ) from exc


def render_index(entries: Iterable[IndexEntry]) -> bytes:
    """ENTRIES as the bytes of an index.json file."""
    # One certificate per line: still readable, and each line goes through
    # json's C encoder (indent= would use the slow pure-Python one).
    lines = ",\n    ".join(json.dumps(e.to_json()) for e in entries)
    body = f"\n    {lines}\n  " if lines else ""
    return f'{{\n  "version": {INDEX_VERSION},\n  "certificates": [{body}]\n}}\n'.encode()
