"""Enrolment tokens: single-use, expiring, bound to a name, kind and SANs, stored only as a hash.

A token is 256 random bits, written `sct1.` + base64url. The CA keeps
SHA-256 of it, never the token: someone who reads the database cannot
enrol. (A fast hash is enough: the token is random, not a password, so
there is nothing to guess.) What a token allows is a `TokenGrant`; the
database marks it used in the same transaction that records the
certificate it paid for, so it can never pay twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass

from cryptography import x509

from securechat.errors import PkiError
from securechat.pki import DEFAULT_SERVER_SANS, LeafKind, parse_san, san_to_text, validate_name
from securechat.tls import names

TOKEN_PREFIX = "sct1."  # noqa: S105 - the format marker, not a secret
_TOKEN_BYTES = 32


@dataclass(frozen=True)
class TokenGrant:
    """What one token allows: a certificate of KIND for NAME with exactly SANS."""

    name: str
    kind: LeafKind
    sans: tuple[x509.GeneralName, ...]
    expires_at: dt.datetime

    @property
    def san_texts(self) -> tuple[str, ...]:
        return tuple(san_to_text(name) for name in self.sans)


def mint_token() -> tuple[str, str]:
    """A new token and the hash the CA stores for it."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    """SHA-256 of the token text, hex."""
    return hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)


def grant_for(
    name: str,
    *,
    kind: LeafKind,
    sans: tuple[str, ...] = (),
    expires_at: dt.datetime,
) -> TokenGrant:
    """The grant `ca token NAME --kind KIND --san ...` writes, its SANs checked now.

    A client certificate always carries DNS:NAME (its identity); SANS add to
    it (a SPIFFE ID as `spiffe://TD/NAME`). A server certificate carries
    SANS, or DEFAULT_SERVER_SANS when none are given.
    """
    validate_name(name)
    names: list[x509.GeneralName] = [x509.DNSName(name)] if kind == "client" else []
    texts = sans if sans or kind == "client" else DEFAULT_SERVER_SANS
    for text in texts:
        general_name = parse_grant_san(text)
        if general_name not in names:
            names.append(general_name)
    if not names:
        raise PkiError(f"a {kind} token for {name!r} needs at least one --san.")
    return TokenGrant(name=name, kind=kind, sans=tuple(names), expires_at=expires_at)


def parse_grant_san(text: str) -> x509.GeneralName:
    """A `--san` value: a DNS name or an IP (`pki.parse_san`), or a SPIFFE ID by `tls.names`' syntax."""
    value = text.strip()
    if value.lower().startswith("spiffe:"):
        try:
            return x509.UniformResourceIdentifier(names.spiffe_id(value).value)
        except names.InvalidName as exc:
            raise PkiError(f"--san {names.escape(value)!r}: {exc}. Use spiffe://TRUST-DOMAIN/PATH.") from None
    return parse_san(value)


def san_from_text(text: str) -> x509.GeneralName:
    """Read back what `san_to_text` wrote (`DNS:`, `IP:`, `URI:`), as the database stores SANs."""
    kind, _, value = text.partition(":")
    if kind == "DNS":
        return x509.DNSName(value)
    if kind == "IP":
        return x509.IPAddress(ipaddress.ip_address(value))
    if kind == "URI":
        return x509.UniformResourceIdentifier(value)
    raise PkiError(f"SAN {text!r} has an unknown type. Expected DNS:, IP: or URI:.")
