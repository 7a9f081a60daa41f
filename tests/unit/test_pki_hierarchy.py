"""A root + issuing intermediate: profiles, files, chains in real TLS handshakes, CRLs, a new intermediate."""

from __future__ import annotations

import datetime as dt
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from securechat import pki
from securechat.errors import FileExistsRefused, PkiError
from tests.unit.test_pki_handshake import Outcome, _handshake
from tests.unit.test_pki_lint import lint_certificate, lint_crl


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _constraints(cert: x509.Certificate) -> x509.BasicConstraints:
    return cert.extensions.get_extension_for_class(x509.BasicConstraints).value


@pytest.fixture
def hierarchy(tmp_path: Path) -> pki.CertStore:
    """A certs directory made like `certs init --intermediate`, with server, alice and bob."""
    store = pki.CertStore(tmp_path / "certs")
    store.init_hierarchy()
    ca = store.load_ca()
    store.write_leaves(
        [pki.issue_server_cert(ca, "server"), pki.issue_client_cert(ca, "alice"), pki.issue_client_cert(ca, "bob")]
    )
    return store


def _context(store: pki.CertStore, name: str, *, server: bool, trust: Path) -> ssl.SSLContext:
    purpose = ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH
    ctx = ssl.create_default_context(purpose, cafile=str(trust))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if server:
        ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(store.cert_path(name), store.key_path(name))
    return ctx


def test_init_hierarchy_writes_root_and_intermediate(hierarchy: pki.CertStore) -> None:
    """root.pem/root-key.pem and ca.pem/ca-key.pem: keys 0400, the root pathLen 1, the intermediate pathLen 0."""
    store = hierarchy
    assert {_mode(store.root_key_path), _mode(store.ca_key_path)} == {0o400}
    assert {_mode(store.root_cert_path), _mode(store.ca_cert_path)} == {0o644}
    root = pki.load_certificate(store.root_cert_path)
    intermediate = pki.load_certificate(store.ca_cert_path)
    assert _constraints(root).path_length == 1 and _constraints(intermediate).path_length == 0
    assert pki.is_signed_by(intermediate, root) and not pki.is_signed_by(intermediate, intermediate)
    assert store.trust_anchor_path == store.root_cert_path and store.has_hierarchy
    assert [(e.name, e.kind) for e in store.entries()][:2] == [("root", "ca"), ("ca", "ca")]
    assert lint_certificate(root) == [] and lint_certificate(intermediate) == []


def test_leaves_are_written_as_chains(hierarchy: pki.CertStore) -> None:
    """NAME.pem holds the leaf and then the intermediate; a flat CA's leaf file holds one certificate."""
    chain = pki.load_certificates(hierarchy.cert_path("alice"))
    assert len(chain) == 2
    assert chain[1] == pki.load_certificate(hierarchy.ca_cert_path)
    assert pki.is_signed_by(chain[0], chain[1])
    assert lint_certificate(chain[0]) == []


def test_flat_ca_is_unchanged(pki_issued_store: pki.CertStore) -> None:
    """Twin: a flat CA writes a leaf alone, trusts ca.pem, and has no root.pem."""
    assert len(pki.load_certificates(pki_issued_store.cert_path("alice"))) == 1
    assert not pki_issued_store.has_hierarchy
    assert pki_issued_store.trust_anchor_path == pki_issued_store.ca_cert_path
    assert pki_issued_store.load_ca().leaf_chain == ()


def test_mtls_handshake_trusting_only_the_root(hierarchy: pki.CertStore) -> None:
    """Both sides present their chain and trust root.pem alone: the handshake completes."""
    trust = hierarchy.root_cert_path
    outcome = _handshake(
        _context(hierarchy, "server", server=True, trust=trust), _context(hierarchy, "alice", server=False, trust=trust)
    )
    assert outcome == Outcome(reply=b"ok", peer_cn="alice")


def test_a_leaf_without_its_intermediate_does_not_verify(hierarchy: pki.CertStore, tmp_path: Path) -> None:
    """Failing twin: a server presenting only its leaf cannot be verified by a client trusting the root."""
    leaf_only = tmp_path / "leaf-only.pem"
    leaf_only.write_bytes(pki.certificate_pem(pki.load_certificate(hierarchy.cert_path("server"))))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(leaf_only, hierarchy.key_path("server"))
    outcome = _handshake(server, _context(hierarchy, "alice", server=False, trust=hierarchy.root_cert_path))
    assert outcome.client_error is not None and "unable to get local issuer certificate" in outcome.client_error


def test_name_constraints_on_the_intermediate(tmp_path: Path) -> None:
    """--permit-dns goes on the intermediate: names outside are refused at issuance; inside lints clean."""
    store = pki.CertStore(tmp_path / "certs")
    store.init_hierarchy(permitted_dns=("example.org",))
    ca = store.load_ca()
    assert ca.cert.extensions.get_extension_for_class(x509.NameConstraints).critical
    assert lint_certificate(pki.issue_server_cert(ca, "api", sans=["api.example.org"]).cert) == []
    with pytest.raises(PkiError, match="'localhost' is outside the CA's name constraints"):
        pki.issue_server_cert(ca, "server")


def test_init_hierarchy_refuses_to_overwrite(hierarchy: pki.CertStore) -> None:
    """An existing root is never replaced without force."""
    before = hierarchy.root_cert_path.read_bytes()
    with pytest.raises(FileExistsRefused, match="root.pem already exists"):
        hierarchy.init_hierarchy()
    assert hierarchy.root_cert_path.read_bytes() == before


def test_a_leaf_named_root_is_refused_in_a_hierarchy(hierarchy: pki.CertStore) -> None:
    """'root' names the root's files there; a flat directory still allows it."""
    with pytest.raises(PkiError, match="'root' names the root CA's files"):
        hierarchy.write_leaves([pki.issue_client_cert(hierarchy.load_ca(), "root")])


def test_new_intermediate_from_the_offline_root(hierarchy: pki.CertStore, tmp_path: Path) -> None:
    """The root moves to another directory; a new intermediate signed there is installed; old leaves still verify."""
    offline = pki.CertStore(tmp_path / "offline")
    offline.directory.mkdir(mode=0o700)
    for path in (hierarchy.root_cert_path, hierarchy.root_key_path):
        (offline.directory / path.name).write_bytes(path.read_bytes())
    hierarchy.root_key_path.chmod(0o600)
    hierarchy.root_key_path.unlink()  # the online directory keeps only root.pem
    old_intermediate = pki.load_certificate(hierarchy.ca_cert_path)
    root = offline.load_root()
    new = pki.issue_intermediate(root)
    hierarchy.write_intermediate(new, root.cert)
    ca = hierarchy.load_ca()
    assert ca.cert == new.cert and ca.cert != old_intermediate
    hierarchy.write_leaves([pki.issue_client_cert(ca, "carol")])
    trust = hierarchy.root_cert_path
    for client in ("alice", "carol"):  # issued by the old and by the new intermediate
        outcome = _handshake(
            _context(hierarchy, "server", server=True, trust=trust), _context(hierarchy, client, server=False, trust=trust)
        )
        assert outcome == Outcome(reply=b"ok", peer_cn=client), client
    statuses = [(e.name, e.status) for e in hierarchy.entries() if e.kind == "ca"]
    assert statuses == [("root", "valid"), ("ca", "superseded"), ("ca", "valid")]


def test_intermediate_from_another_root_is_refused(hierarchy: pki.CertStore) -> None:
    """Failing twin: an intermediate of a different root would orphan every leaf, so it is refused."""
    other = pki.create_root_ca()
    with pytest.raises(PkiError, match="is a different root than the one in --root-dir"):
        hierarchy.write_intermediate(pki.issue_intermediate(other), other.cert)


def test_an_intermediate_cannot_sign_an_intermediate(hierarchy: pki.CertStore) -> None:
    """pathLen 0 means leaves only: signing a CA with the intermediate is refused."""
    with pytest.raises(PkiError, match="pathLen 0, so it cannot sign another CA"):
        pki.issue_intermediate(hierarchy.load_ca())


def test_crl_from_the_intermediate_is_accepted_through_the_chain(hierarchy: pki.CertStore) -> None:
    """The intermediate signs crl.pem; a server trusting the root accepts it via its own chain's intermediate."""
    ca = hierarchy.load_ca()
    hierarchy.revoke(ca, "bob")
    data = hierarchy.crl_path.read_bytes()
    assert lint_crl(pki.parse_crl(data, where="crl.pem")) == []
    root = pki.load_certificates(hierarchy.root_cert_path)
    chain = pki.load_certificates(hierarchy.cert_path("server"))
    revoked = pki.load_crl(data, root, where="crl.pem", intermediates=chain[1:])
    bob = pki.load_certificate(hierarchy.cert_path("bob"))
    assert revoked.revokes(bob.issuer.rfc4514_string(), bob.serial_number)
    with pytest.raises(PkiError, match="is not signed by the client CA"):
        pki.load_crl(data, root, where="crl.pem")  # twin: no intermediate offered
    stranger = pki.issue_intermediate(pki.create_root_ca())
    with pytest.raises(PkiError, match="is not signed by the client CA"):
        pki.load_crl(data, root, where="crl.pem", intermediates=[stranger.cert])  # twin: one not under the root


def test_publish_crl_keeps_earlier_entries(pki_issued_store: pki.CertStore, pki_ca: pki.CertificateAuthority) -> None:
    """A CRL published from another source (the online CA) keeps what `certs revoke` listed, and the reverse."""
    pki_issued_store.revoke(pki_ca, "bob")
    extra = pki.Revocation(serial=12345, revoked_at=pki.utc_now(), reason="superseded")
    pki_issued_store.publish_crl(pki_ca, [extra])
    crl = pki.parse_crl(pki_issued_store.crl_path.read_bytes(), where="crl.pem")
    bob = pki.load_certificate(pki_issued_store.cert_path("bob"))
    assert {e.serial_number for e in crl} == {12345, bob.serial_number}
    assert pki.crl_number(crl) == 2
    pki_issued_store.revoke(pki_ca, "alice")  # from the index again: 12345 survives
    crl = pki.parse_crl(pki_issued_store.crl_path.read_bytes(), where="crl.pem")
    assert 12345 in {e.serial_number for e in crl} and len(crl) == 3


def test_publish_crl_under_a_new_ca_starts_afresh(pki_issued_store: pki.CertStore, pki_ca) -> None:
    """Twin: entries of a CRL signed by another key are not carried into the new CA's CRL."""
    pki_issued_store.revoke(pki_ca, "bob")
    other = pki.create_ca()
    pki_issued_store.publish_crl(other, [])
    crl = pki.parse_crl(pki_issued_store.crl_path.read_bytes(), where="crl.pem")
    assert len(crl) == 0


def test_lifetime_window_for_short_lived_certificates() -> None:
    """A 30-second certificate is backdated 3 s, not 5 minutes; a 24-hour one the full 5 minutes."""
    now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    short = pki.lifetime_window(dt.timedelta(seconds=30), now=now)
    assert (short.not_before, short.not_after) == (now - dt.timedelta(seconds=3), now + dt.timedelta(seconds=30))
    day = pki.lifetime_window(dt.timedelta(hours=24), now=now)
    assert day.not_before == now - pki.CLOCK_SKEW_BACKDATE
    capped = pki.lifetime_window(dt.timedelta(hours=24), now=now, ca_not_after=now + dt.timedelta(hours=1))
    assert capped.capped_at_ca_expiry and capped.not_after == now + dt.timedelta(hours=1)
    with pytest.raises(PkiError, match="the issuing CA expired"):
        pki.lifetime_window(dt.timedelta(hours=1), now=now, ca_not_after=now - dt.timedelta(seconds=1))


def test_sign_leaf_for_a_public_key(hierarchy: pki.CertStore) -> None:
    """sign_leaf: the caller's key, the kind's EKU, the given SANs, and the intermediate as its chain."""
    ca = hierarchy.load_ca()
    key = pki.generate_private_key("ed25519")
    signed = pki.sign_leaf(
        ca, "alice", key.public_key(), kind="client", sans=[x509.DNSName("alice")], lifetime=dt.timedelta(minutes=5)
    )
    assert pki.key_matches_certificate(key, signed.cert)
    assert pki.extended_key_usages(signed.cert) == {x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH}
    assert signed.chain == (ca.cert,)
    assert signed.cert.not_valid_after_utc - signed.cert.not_valid_before_utc == dt.timedelta(seconds=330)
    assert lint_certificate(signed.cert) == []
