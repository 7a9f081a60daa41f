"""Hostile client certificates against a real server: each refused with UNAUTHENTICATED beside its passing twin."""

from __future__ import annotations

import logging

import grpc
import pytest
from chains import CLIENT, SERVER, make_ca, make_leaf
from tls_support import as_cert, hello, trust

from securechat._gen import chat_pb2, chat_pb2_grpc

HOSTILE_SANS = {
    "newline (a forged log line)": "bob\n2030-01-01 00:00:00 INFO forged: admin logged in",
    "ANSI escapes": "bob\x1b[2J\x1b[31m",
    "Rich markup": "[/bold]bob",
    "NUL": "bob\x00admin",
    "trailing space": "bob ",
    "1000 characters": "b" * 1000,
}


@pytest.mark.parametrize("san", list(HOSTILE_SANS.values()), ids=list(HOSTILE_SANS))
async def test_hostile_dns_san_is_refused_and_logged_escaped(deployment, start, caplog, san):
    """A DNS SAN that is no valid DNS name is refused (UNAUTHENTICATED); the log line shows it escaped, on one line."""
    caplog.set_level(logging.WARNING, logger="securechat")
    server = await start()
    code, details = await hello(deployment, server.port, make_leaf(as_cert(deployment.ca), [san]))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert "names no valid identity" in details
    (line,) = [r.getMessage() for r in caplog.records if "names no valid identity" in r.getMessage()]
    assert "\n" not in line and "\x1b" not in line and "\x00" not in line
    assert len(line) < 600


@pytest.mark.parametrize("san", ["bob", "bob.example.org", "my-app.my-namespace.svc.cluster.local"])
async def test_valid_dns_san_from_another_issuer_is_the_identity(deployment, start, san):
    """The twin: a certificate made outside securechat (as cert-manager would) with a valid DNS name gets in."""
    server = await start()
    assert await hello(deployment, server.port, make_leaf(as_cert(deployment.ca), [san])) == (
        grpc.StatusCode.OK,
        f"Hello, {san}!",
    )


async def test_dns_san_reading_like_a_spiffe_id_never_matches_a_spiffe_entry(deployment, start):
    """A DNS SAN `spiffe://example.org/bob` is refused; the twin with that URI SAN is allowed by the SPIFFE entry."""
    server = await start(authz={"allow": ["spiffe://example.org/bob"]})
    ca = as_cert(deployment.ca)
    code, _ = await hello(deployment, server.port, make_leaf(ca, ["spiffe://example.org/bob"]))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    # A valid DNS name plus the SPIFFE ID as a URI SAN: the entry matches the URI SAN only.
    twin = make_leaf(ca, ["bob"], uris=["spiffe://example.org/bob"])
    assert await hello(deployment, server.port, twin) == (grpc.StatusCode.OK, "Hello, bob!")
    # And a DNS name equal to the SPIFFE ID's path is not the SPIFFE ID either.
    code, details = await hello(deployment, server.port, make_leaf(ca, ["bob"]))
    assert code is grpc.StatusCode.PERMISSION_DENIED and "identity 'bob' is not allowed" in details


async def test_invalid_spiffe_uri_san_is_refused(deployment, start):
    """A URI SAN `spiffe://` that breaks the SPIFFE ID syntax is refused, not matched; the valid twin gets in."""
    server = await start(authz={"allow": ["spiffe://example.org/bob"]})
    ca = as_cert(deployment.ca)
    code, details = await hello(deployment, server.port, make_leaf(ca, ["bob"], uris=["spiffe://example.org/bob/"]))
    assert (code, "invalid SPIFFE ID" in details) == (grpc.StatusCode.UNAUTHENTICATED, True)
    assert (await hello(deployment, server.port, make_leaf(ca, ["bob"], uris=["spiffe://example.org/bob"])))[
        0
    ] is grpc.StatusCode.OK


async def test_who_am_i_carries_only_a_validated_identity(deployment, start):
    """WhoAmI answers with the validated (lowercased) DNS identity of a certificate from another issuer."""
    server = await start()
    leaf = make_leaf(as_cert(deployment.ca), ["Bob.Example.org"])
    credentials = grpc.ssl_channel_credentials(as_cert(deployment.ca).pem, leaf.key_pem, leaf.pem)
    async with grpc.aio.secure_channel(f"localhost:{server.port}", credentials) as channel:
        identity = await chat_pb2_grpc.ChatServiceStub(channel).WhoAmI(chat_pb2.WhoAmIRequest(), timeout=5)
    assert identity.name == "bob.example.org"


async def test_ca_true_client_certificate_is_refused(deployment, start):
    """A CA:TRUE certificate presented as a client certificate is refused; its end-entity twin is accepted."""
    server = await start()
    ca = as_cert(deployment.ca)
    code, details = await hello(deployment, server.port, make_leaf(ca, ["bob"], ca=True))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert "is a CA certificate (basicConstraints CA:TRUE), not a client certificate" in details
    assert await hello(deployment, server.port, make_leaf(ca, ["bob"])) == (grpc.StatusCode.OK, "Hello, bob!")


async def test_leaf_signed_by_a_ca_true_client_certificate_is_refused(deployment, start):
    """A 'client certificate' with CA:TRUE signing a leaf: the pathLen 0 of our CA forbids it (UNAUTHENTICATED)."""
    server = await start()
    rogue = make_ca("bob", as_cert(deployment.ca))  # what a CA:TRUE client certificate can do
    code, details = await hello(deployment, server.port, make_leaf(rogue, ["mallory"]), rogue)
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert "whose pathLen 0 allows 0" in details


async def test_leaf_under_a_path_length_violation_is_refused(deployment, start):
    """root (pathLen 0) -> intermediate -> leaf: BoringSSL lets it through, securechat refuses it; the twin passes."""
    strict_root = make_ca("strict-root", path_length=0)
    open_root = make_ca("open-root")
    bad_inter, good_inter = make_ca("inter", strict_root, path_length=0), make_ca("inter", open_root, path_length=0)
    server = await start(tls={"client_ca": trust(deployment, strict_root, open_root)})
    code, details = await hello(deployment, server.port, make_leaf(bad_inter, ["carol"]), bad_inter)
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert "below CN=strict-root,O=tests, whose pathLen 0 allows 0" in details
    assert await hello(deployment, server.port, make_leaf(good_inter, ["carol"]), good_inter) == (
        grpc.StatusCode.OK,
        "Hello, carol!",
    )


async def test_client_certificate_with_server_eku_is_refused(deployment, start):
    """serverAuth only: never a client (refused in the handshake); the clientAuth twin gets in.

    (A leaf whose keyUsage lacks digitalSignature cannot be tested here: gRPC's
    own client refuses to load it. tests/unit/test_tls_checks.py covers it.)
    """
    server = await start()
    ca = as_cert(deployment.ca)
    code, _ = await hello(deployment, server.port, make_leaf(ca, ["bob"], eku=[SERVER]))
    assert code is grpc.StatusCode.UNAVAILABLE
    assert (await hello(deployment, server.port, make_leaf(ca, ["bob"], eku=[CLIENT])))[0] is grpc.StatusCode.OK
