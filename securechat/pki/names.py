"""Which names securechat accepts: certificate NAMEs and SAN strings.

A NAME is at once a file name in the certs directory (`NAME.pem`,
`NAME-key.pem`), the certificate's common name, and — for client
certificates — the identity a server reads back from the DNS SAN. So it is
held to the narrowest rule that is safe for all three: lowercase DNS-style
labels (RFC 1123), at most 64 characters (the X.520 upper bound for a common
name, RFC 5280 appendix A).

SAN strings are turned into `x509` names in exactly one place,
`parse_san`. What is *not* accepted: Unicode host names (give the A-label,
`xn--...`), IP networks, e-mail addresses, IPv6 zone ids, and wildcards
(`*.example.com` is not RFC 5280 syntax; list each host instead).

About linters: pkilint's RFC 5280 linter checks DNS names with the
`validators` package, which wants at least two labels, so it reports
single-label names such as `localhost` or a client `alice` as
"invalid_domain_name_syntax" although RFC 1123 allows them; it likewise
reports `spiffe://` URIs as "invalid_uri_syntax". Multi-label names lint
clean. See certs/README.md.
"""

from __future__ import annotations

import ipaddress
import re

from cryptography import x509

from securechat.errors import PkiError
from securechat.tls import checks

MAX_NAME_LENGTH = 64
"""ub-common-name in RFC 5280; NAME also becomes the certificate's CN."""

RESERVED_NAMES = frozenset({"ca", "crl", "index"})
"""Names whose files the certs directory already uses for itself."""

# One DNS label per RFC 1123 section 2.1: letters, digits and inner hyphens,
# 1-63 characters. Lowercase only, so `Alice` and `alice` cannot be two
# files on a case-insensitive file system but one identity on the wire.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_SPIFFE_TRUST_DOMAIN_RE = re.compile(r"[a-z0-9._-]{1,255}")
_DOTTED_NUMBERS = re.compile(r"[0-9]+(?:\.[0-9]*)*")
_IPV6_CHARACTERS = re.compile(r"[0-9A-Fa-f:.]+")
_NUMERIC_LAST_LABEL = re.compile(r"(?:[^.]*\.)+[0-9]+\.?")


def validate_name(name: str) -> str:
    """Return NAME if it is a safe certificate name, else raise PkiError."""
    fix = "Use lowercase letters, digits, '-' and '.', e.g. 'alice' or 'api.internal'."
    if not name:
        raise PkiError(f"certificate name is empty. {fix}")
    if "/" in name or "\\" in name or ".." in name:
        raise PkiError(f"certificate name {name!r} looks like a path. {fix}")
    if len(name) > MAX_NAME_LENGTH:
        raise PkiError(
            f"certificate name {name[:20]!r}... is {len(name)} characters long;"
            f" at most {MAX_NAME_LENGTH} are allowed. Choose a shorter name."
        )
    if name in RESERVED_NAMES:
        raise PkiError(f"certificate name {name!r} is reserved for the certs directory itself. Choose another name.")
    if name.endswith("-key"):
        # `foo-key.pem` is the key of `foo`; a cert named `foo-key` would collide.
        raise PkiError(f"certificate name {name!r} ends in '-key', which names key files. Choose another name.")
    if not _NAME_RE.fullmatch(name):
        raise PkiError(f"certificate name {name!r} is not allowed. {fix}")
    return name


def validate_spiffe_trust_domain(trust_domain: str) -> str:
    """Return the trust domain if the SPIFFE ID spec allows it, else raise PkiError.

    See https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md
    (section 2.1: lowercase letters, digits, '.', '-' and '_').
    """
    if not _SPIFFE_TRUST_DOMAIN_RE.fullmatch(trust_domain):
        raise PkiError(
            f"SPIFFE trust domain {trust_domain!r} is not valid. Use lowercase letters,"
            " digits, '.', '-' and '_', e.g. 'example.org'."
        )
    return trust_domain


def spiffe_id(trust_domain: str, name: str) -> str:
    """The SPIFFE ID `spiffe://TRUST_DOMAIN/NAME` for a client identity."""
    return f"spiffe://{validate_spiffe_trust_domain(trust_domain)}/{validate_name(name)}"


def parse_san(text: str) -> x509.GeneralName:
    """Turn one `--san` value into an x509 name: an IP address or a DNS name.

    IPv4 and IPv6 addresses become `IPAddress`; anything else must be a DNS
    name (optionally `*.` on the leftmost label) and becomes `DNSName`,
    lowercased. Raises PkiError naming the value otherwise.
    """
    value = text.strip()
    if "%" in value:
        raise PkiError(f"SAN {text!r} has an IPv6 zone id, which certificates cannot hold. Drop the '%...' part.")
    # ip_address first: "127.0.0.1" is also a syntactically valid DNS name.
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    # RFC 1123 2.1: a host name's last label is never all digits, so anything
    # that reads as an address but is not one is a mistyped IP: 999.1.1.1,
    # 1.2.3, or 010.0.0.1 (leading zeros, octal in some parsers; refused by
    # ipaddress since Python 3.9.5). Never let those become DNS names.
    if _DOTTED_NUMBERS.fullmatch(value):
        raise PkiError(
            f"SAN {text!r} is not a valid IPv4 address. Write four numbers 0-255 without leading zeros, e.g. '10.0.0.5'."
        )
    if ":" in value and _IPV6_CHARACTERS.fullmatch(value):
        raise PkiError(f"SAN {text!r} is not a valid IPv6 address. Write it like '::1' or 'fd00::5'.")
    if _NUMERIC_LAST_LABEL.fullmatch(value):
        raise PkiError(
            f"SAN {text!r} is not a DNS name: its last label is all digits, which reads as an address."
            " Use a host name such as 'api.example.com', or an IP such as '10.0.0.5'."
        )
    host = value.lower()
    if not host.isascii():
        raise PkiError(f"SAN {text!r} is not ASCII. Give the IDNA A-label instead (the 'xn--...' form).")
    if "*" in host:
        raise PkiError(f"SAN {text!r} is a wildcard, which securechat does not issue. List each host name with --san.")
    if len(host) > 253 or not _NAME_RE.fullmatch(host):
        raise PkiError(
            f"SAN {text!r} is neither an IP address nor a DNS name."
            " Use a host name such as 'api.example.com', or an IP such as '10.0.0.5' or '::1'."
        )
    return x509.DNSName(host)


def san_to_text(name: x509.GeneralName) -> str:
    """Render an x509 general name as `DNS:...`, `IP:...` or `URI:...`, like OpenSSL."""
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    return f"{type(name).__name__}:{name.value}"


def permitted_subtree(text: str) -> x509.GeneralName:
    """One `--permit-dns` value as a name-constraints subtree (a DNS name, no wildcard)."""
    base = parse_san(text.strip().lstrip("."))
    if not isinstance(base, x509.DNSName):
        raise PkiError(f"--permit-dns {text!r} is an IP address. Give a DNS domain such as 'example.org'.")
    return base


def check_name_constraints(ca_cert: x509.Certificate, sans: list[x509.GeneralName]) -> None:
    """Raise PkiError if a DNS SAN falls outside the CA's DNS name constraints (decided by `tls.checks`).

    Names of a type the CA does not constrain (IPs, URIs) are allowed, as
    RFC 5280 says.
    """
    outside = checks.outside_name_constraints(ca_cert, [san.value for san in sans if isinstance(san, x509.DNSName)])
    if not outside:
        return
    name, permitted = outside[0], checks.permitted_dns_subtrees(ca_cert)
    if not permitted:
        raise PkiError(f"{name!r} is excluded by the CA's name constraints. Use a name the CA may certify.")
    raise PkiError(
        f"{name!r} is outside the CA's name constraints (it may only issue names under: {', '.join(permitted)})."
        f" Use a name such as '{name.split('.')[0]}.{permitted[0]}'."
    )
