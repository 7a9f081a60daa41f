"""What a peer certificate says about who is calling."""

from __future__ import annotations

import pytest

from securechat import pki
from securechat.tls.identity import PeerIdentity, PeerRejected, identity_from_pem, peer_certificate_pem


def test_client_certificate_names_its_identity(pki_ca):
    """A client certificate's identity is its name, with serial and expiry."""
    issued = pki.issue_client_cert(pki_ca, "alice")
    peer = PeerIdentity.from_certificate(issued.cert)
    assert peer.name == "alice"
    assert peer.serial == f"{issued.cert.serial_number:x}"
    assert peer.not_after == issued.cert.not_valid_after_utc.isoformat()
    assert peer.spiffe_id == ""


def test_spiffe_id_is_reported(pki_ca):
    """A SPIFFE URI SAN is carried as spiffe_id."""
    issued = pki.issue_client_cert(pki_ca, "alice", spiffe_trust_domain="example.org")
    assert PeerIdentity.from_certificate(issued.cert).spiffe_id == "spiffe://example.org/alice"


def test_server_certificate_is_not_a_client_identity(pki_ca):
    """A certificate without clientAuth never names a client."""
    issued = pki.issue_server_cert(pki_ca, "server")
    with pytest.raises(PeerRejected, match="is not a client certificate"):
        PeerIdentity.from_certificate(issued.cert)


def test_identity_from_pem_parses_and_caches(pki_ca):
    """The same PEM gives the same (cached) identity object."""
    pem = pki.certificate_pem(pki.issue_client_cert(pki_ca, "bob").cert)
    assert identity_from_pem(pem) is identity_from_pem(pem)
    assert identity_from_pem(pem).name == "bob"


def test_garbage_pem_is_rejected():
    """Bytes that are not a certificate are refused, not crashed on."""
    with pytest.raises(PeerRejected, match="could not be parsed"):
        identity_from_pem(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")


def test_peer_certificate_pem_reads_the_auth_context():
    """The PEM comes from gRPC's x509_pem_cert entry; absent means no client certificate."""
    assert peer_certificate_pem({"x509_pem_cert": [b"PEM"]}) == b"PEM"
    assert peer_certificate_pem({"transport_security_type": [b"ssl"]}) is None
