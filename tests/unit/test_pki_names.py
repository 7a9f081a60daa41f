"""Certificate NAMEs and SAN strings: what is accepted, and how it is encoded."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509

from securechat import pki
from securechat.errors import PkiError


@pytest.mark.parametrize("name", ["alice", "server", "api.internal", "node-1", "a", "0day", "a" * 30 + "." + "b" * 33])
def test_valid_names_are_accepted(name: str) -> None:
    """Lowercase DNS-style names up to 64 characters pass unchanged."""
    assert pki.validate_name(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "is empty"),
        ("../x", "looks like a path"),
        ("a/b", "looks like a path"),
        ("a\\b", "looks like a path"),
        ("a..b", "looks like a path"),
        ("ca", "is reserved"),
        ("crl", "is reserved"),
        ("alice-key", "ends in '-key'"),
        ("Alice", "is not allowed"),
        ("-alice", "is not allowed"),
        ("alice-", "is not allowed"),
        (".alice", "is not allowed"),
        ("al ice", "is not allowed"),
        ("al_ice", "is not allowed"),
        ("alicé", "is not allowed"),
        ("a" * 65, "at most 64"),
    ],
)
def test_bad_names_are_refused_in_one_line(name: str, message: str) -> None:
    """Path-like, reserved, oversized or odd names raise a one-line PkiError."""
    with pytest.raises(PkiError, match=message) as excinfo:
        pki.validate_name(name)
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("localhost", x509.DNSName("localhost")),
        ("API.Example.com", x509.DNSName("api.example.com")),
        ("xn--caf-dma.example", x509.DNSName("xn--caf-dma.example")),
        ("127.0.0.1", x509.IPAddress(ipaddress.ip_address("127.0.0.1"))),
        ("10.0.0.5", x509.IPAddress(ipaddress.ip_address("10.0.0.5"))),
        ("::1", x509.IPAddress(ipaddress.ip_address("::1"))),
        ("2001:db8::7", x509.IPAddress(ipaddress.ip_address("2001:db8::7"))),
    ],
)
def test_parse_san_turns_text_into_x509_names(text: str, expected: x509.GeneralName) -> None:
    """IPs become IPAddress (v4 and v6); host names become lowercase DNSName."""
    assert pki.parse_san(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "neither an IP address nor a DNS name"),
        ("https://example.com", "neither an IP address nor a DNS name"),
        ("host:443", "neither an IP address nor a DNS name"),
        ("10.0.0.0/8", "neither an IP address nor a DNS name"),
        ("under_score.example", "neither an IP address nor a DNS name"),
        ("*.example.com", "is a wildcard"),
        ("café.example", "not ASCII"),
        ("fe80::1%eth0", "zone id"),
    ],
)
def test_parse_san_refuses_what_it_cannot_encode(text: str, message: str) -> None:
    """URLs, ports, networks, wildcards, Unicode and zone ids are refused by name."""
    with pytest.raises(PkiError, match=message):
        pki.parse_san(text)


def test_spiffe_id_is_built_from_trust_domain_and_name() -> None:
    """spiffe_id joins a valid trust domain and name."""
    assert pki.spiffe_id("example.org", "alice") == "spiffe://example.org/alice"


@pytest.mark.parametrize("trust_domain", ["Example.org", "example.org/x", "", "ex ample"])
def test_bad_spiffe_trust_domain_is_refused(trust_domain: str) -> None:
    """Trust domains outside the SPIFFE character set are refused."""
    with pytest.raises(PkiError, match="SPIFFE trust domain"):
        pki.spiffe_id(trust_domain, "alice")
