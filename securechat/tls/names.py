"""Identities a certificate can carry: DNS names and SPIFFE IDs, two kinds that never compare equal.

A client is named by a DNS subjectAltName (`alice`, `api.prod.svc.cluster.local`)
or by a SPIFFE ID in a URI subjectAltName (`spiffe://example.org/alice`).
They are different types: `DnsName("x") != SpiffeId("x")` whatever the text,
so a DNS SAN that reads `spiffe://example.org/bob` can never satisfy an authz
entry meant for the SPIFFE ID (it is not even a valid DNS name).

Syntax, by the standards:
- a DNS name is RFC 1123 section 2.1 labels (letters, digits, inner hyphens,
  1-63 characters each) joined by dots, at most 253 characters, no trailing
  dot, no wildcard; compared case-insensitively (RFC 4343), so it is stored
  lowercased. Names from cert-manager (`my-app.my-ns.svc.cluster.local`) or any
  other CA that issues host names pass.
- a SPIFFE ID is `spiffe://TRUST-DOMAIN/PATH` per the SPIFFE ID standard
  (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md): the
  trust domain `[a-z0-9._-]`, at most 255 characters; the path segments
  `[a-zA-Z0-9._-]`, none empty, `.` or `..`; no port, user info, query or
  fragment; at most 2048 bytes in all.

`escape` turns any text taken from a certificate into inert, bounded text
before it reaches a log line or a message: control characters, escape
sequences and bidi overrides become visible `\\x..`/`\\u....` escapes.

This module only parses and escapes; whether a name is *allowed* is
`identity.AuthzPolicy`'s job.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MAX_DNS_LENGTH = 253
"""RFC 1035 section 2.3.4 (255 octets on the wire, 253 characters as text)."""
MAX_SPIFFE_ID_LENGTH = 2048
"""SPIFFE ID standard section 2.3: implementations must support up to 2048 bytes."""
MAX_TRUST_DOMAIN_LENGTH = 255
"""SPIFFE ID standard section 2.1."""
ESCAPED_MAX = 200
"""How much of a foreign string a log line shows before cutting it."""

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


class InvalidName(ValueError):
    """TEXT is not a valid identity of the kind asked for; the message says why (escaped)."""


@dataclass(frozen=True, order=True)
class DnsName:
    """A DNS name identity (lowercase, RFC 1123 syntax). Build it with `dns_name`."""

    value: str

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, order=True)
class SpiffeId:
    """A SPIFFE ID identity (`spiffe://trust-domain/path`). Build it with `spiffe_id`."""

    value: str

    @property
    def trust_domain(self) -> str:
        return self.value[len("spiffe://") :].split("/", 1)[0]

    def __str__(self) -> str:
        return self.value


Identity = DnsName | SpiffeId


def dns_name(text: str) -> DnsName:
    """TEXT as a DnsName, lowercased; InvalidName saying what is wrong otherwise."""
    if not text:
        raise InvalidName("the DNS name is empty")
    if len(text) > MAX_DNS_LENGTH:
        raise InvalidName(f"the DNS name is {len(text)} characters long; at most {MAX_DNS_LENGTH} are allowed")
    if not text.isascii():
        raise InvalidName(f"the DNS name {escape(text)} is not ASCII (an IDNA name must be given as its xn-- A-label)")
    lowered = text.lower()
    labels = lowered.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidName(
            f"{escape(text)} is not a valid DNS name (RFC 1123: letters, digits and inner hyphens in dot-separated labels)"
        )
    return DnsName(lowered)


def spiffe_id(text: str) -> SpiffeId:
    """TEXT as a SpiffeId; InvalidName saying what is wrong otherwise."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SPIFFE_ID_LENGTH:
        raise InvalidName(f"the SPIFFE ID is longer than {MAX_SPIFFE_ID_LENGTH} bytes")
    if not text.startswith("spiffe://"):
        raise InvalidName(f"{escape(text)} is not a SPIFFE ID (it must start with spiffe://, in lowercase)")
    rest = text[len("spiffe://") :]
    trust_domain, slash, path = rest.partition("/")
    if not trust_domain or len(trust_domain) > MAX_TRUST_DOMAIN_LENGTH or not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise InvalidName(
            f"{escape(text)} has an invalid SPIFFE trust domain (lowercase letters, digits, '.', '-' and '_';"
            " no port or user info)"
        )
    if slash:
        segments = path.split("/")
        for segment in segments:
            if segment in ("", ".", "..") or not _PATH_SEGMENT.fullmatch(segment):
                raise InvalidName(
                    f"{escape(text)} has an invalid SPIFFE ID path (segments of letters, digits, '.', '-' and '_';"
                    " none empty, '.' or '..'; no trailing slash, query or fragment)"
                )
    return SpiffeId(text)


def identity(text: str) -> Identity:
    """An authz entry or a configured server id: a SpiffeId if it starts with spiffe://, else a DnsName."""
    return spiffe_id(text) if text.startswith("spiffe://") else dns_name(text)


def escape(text: object, *, limit: int = ESCAPED_MAX) -> str:
    """TEXT as inert, bounded text for a log line or a message: nothing in it can act on a terminal or forge a line.

    Printable characters stay as they are (so valid names are unchanged);
    control characters (C0, DEL, C1), format characters such as bidi overrides
    and zero-width joiners, unassigned code points, surrogates and the
    backslash itself are written as Python escapes. Longer than LIMIT
    characters, the rest is cut and counted.
    """
    value = str(text)
    shown = value[:limit]
    out: list[str] = []
    for char in shown:
        if char == "\\":
            out.append("\\\\")
        elif char.isprintable() and unicodedata.category(char) not in ("Cf", "Co", "Cn", "Cs", "Zl", "Zp"):
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    if len(value) > limit:
        out.append(f"...(+{len(value) - limit} characters)")
    return "".join(out)
