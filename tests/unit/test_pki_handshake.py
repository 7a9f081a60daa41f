"""Real mutual-TLS handshakes over loopback with Python's ssl, each with a failing twin."""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from securechat import pki


@dataclass
class Outcome:
    """What each side saw: the client's reply or error, and the server's error."""

    reply: bytes | None = None
    client_error: str | None = None
    server_error: str | None = None
    peer_cn: str | None = None


def _server_context(store: pki.CertStore, name: str = "server", *, client_ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca or store.ca_cert_path))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # RFC 5280 strictness, as Python 3.13 does by default
    ctx.load_cert_chain(store.cert_path(name), store.key_path(name))
    return ctx


def _client_context(store: pki.CertStore, name: str = "alice", *, ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca or store.ca_cert_path))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_cert_chain(store.cert_path(name), store.key_path(name))
    return ctx


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str = "localhost") -> Outcome:
    outcome = Outcome()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                with conn, server_ctx.wrap_socket(conn, server_side=True) as tls:
                    peer = tls.getpeercert() or {}
                    subject = dict(item for rdn in peer.get("subject", ()) for item in rdn)
                    outcome.peer_cn = subject.get("commonName")
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError) as exc:
                outcome.server_error = str(exc)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with client_ctx.wrap_socket(raw, server_hostname=hostname) as tls:
                    outcome.reply = tls.recv(2)
        except (ssl.SSLError, OSError) as exc:
            outcome.client_error = str(exc)
        finally:
            thread.join(10)
    return outcome


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ecdsa-p384", "rsa-2048", "ed25519"])
def test_mtls_handshake_succeeds_with_our_ca(tmp_path: Path, key_type: str) -> None:
    """Server and client certs from one CA complete mTLS; the server sees the client's name."""
    store = pki.CertStore(tmp_path / "certs")
    ca = store.init_ca(key_type=key_type)
    store.write_leaves(
        [
            pki.issue_server_cert(ca, "server", key_type=key_type),
            pki.issue_client_cert(ca, "alice", key_type=key_type),
        ]
    )
    outcome = _handshake(_server_context(store), _client_context(store))
    assert outcome == Outcome(reply=b"ok", peer_cn="alice")


def test_client_rejects_server_from_foreign_ca(
    pki_issued_store: pki.CertStore, pki_foreign_ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    """Failing twin: a client trusting another CA refuses the server."""
    foreign = pki.CertStore(tmp_path / "foreign")
    foreign.write_ca(pki_foreign_ca)
    outcome = _handshake(
        _server_context(pki_issued_store),
        _client_context(pki_issued_store, ca=foreign.ca_cert_path),
    )
    assert outcome.reply is None
    assert outcome.client_error is not None and "certificate verify failed" in outcome.client_error


def test_server_rejects_client_from_foreign_ca(
    pki_issued_store: pki.CertStore, pki_foreign_ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    """Failing twin: a client certificate from a same-named foreign CA is refused by the server."""
    foreign = pki.CertStore(tmp_path / "foreign")
    foreign.write_ca(pki_foreign_ca)
    foreign.write_leaf("mallory", pki.issue_client_cert(pki_foreign_ca, "mallory"))
    client_ctx = ssl.create_default_context(cafile=str(pki_issued_store.ca_cert_path))
    client_ctx.load_cert_chain(foreign.cert_path("mallory"), foreign.key_path("mallory"))
    outcome = _handshake(_server_context(pki_issued_store), client_ctx)
    assert outcome.reply is None
    assert outcome.server_error is not None and "certificate verify failed" in outcome.server_error


def test_client_rejects_wrong_hostname(pki_issued_store: pki.CertStore) -> None:
    """Failing twin: the default server cert does not cover another host name."""
    outcome = _handshake(_server_context(pki_issued_store), _client_context(pki_issued_store), hostname="example.com")
    assert outcome.client_error is not None and "Hostname mismatch" in outcome.client_error


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", "::1"])
def test_default_sans_cover_loopback_names(pki_issued_store: pki.CertStore, hostname: str) -> None:
    """The default SANs work for localhost, 127.0.0.1 and ::1 as the verified name."""
    outcome = _handshake(_server_context(pki_issued_store), _client_context(pki_issued_store), hostname=hostname)
    assert outcome.reply == b"ok"


def test_server_rejects_a_server_cert_used_as_client_cert(pki_issued_store: pki.CertStore) -> None:
    """Failing twin for EKU: a serverAuth-only certificate cannot authenticate a client."""
    outcome = _handshake(_server_context(pki_issued_store), _client_context(pki_issued_store, name="server"))
    assert outcome.reply is None
    assert outcome.server_error is not None and "unsuitable certificate purpose" in outcome.server_error
