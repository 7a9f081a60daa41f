"""Revocation, the CRL, renewal, name constraints and PKCS#12 export, with real keys."""

from __future__ import annotations

import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from securechat import pki
from securechat.errors import PkiError


def _crl(store: pki.CertStore) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(store.crl_path.read_bytes())


def test_revoke_writes_a_signed_crl_with_number_dates_and_reason(pki_issued_store, pki_ca) -> None:
    """revoke marks bob revoked in the index and lists his serial with reason, number 1, this/nextUpdate."""
    bob = pki.load_certificate(pki_issued_store.cert_path("bob"))
    revoked = pki_issued_store.revoke(pki_ca, "bob", reason="key-compromise")
    assert [e.serial for e in revoked] == [f"{bob.serial_number:x}"]
    crl = _crl(pki_issued_store)
    assert crl.is_signature_valid(pki_ca.cert.public_key())
    assert pki.crl_number(crl) == 1
    assert (crl.next_update_utc - crl.last_update_utc).days == pki.CRL_DEFAULT_DAYS
    (entry,) = list(crl)
    assert entry.serial_number == bob.serial_number
    assert pki.reason_of(entry) == "key-compromise"
    index = json.loads(pki_issued_store.index_path.read_text())
    bob_entry = next(e for e in index["certificates"] if e["name"] == "bob")
    assert bob_entry["status"] == "revoked" and bob_entry["reason"] == "key-compromise"


def test_second_revocation_increments_the_crl_number_and_keeps_earlier_entries(pki_issued_store, pki_ca) -> None:
    """Each new CRL has a higher cRLNumber and still lists what was revoked before; unspecified has no reasonCode."""
    pki_issued_store.revoke(pki_ca, "bob")
    pki_issued_store.revoke(pki_ca, "alice", reason="unspecified")
    crl = _crl(pki_issued_store)
    assert pki.crl_number(crl) == 2
    assert len(crl) == 2
    assert all(not list(entry.extensions) for entry in crl)


def test_revoking_twice_or_an_unknown_name_is_a_clear_error(pki_issued_store, pki_ca) -> None:
    """The failing twins: nothing left to revoke, and a name that was never issued."""
    pki_issued_store.revoke(pki_ca, "bob")
    with pytest.raises(PkiError, match="bob has no unexpired certificate left to revoke"):
        pki_issued_store.revoke(pki_ca, "bob")
    with pytest.raises(PkiError, match="carol is not in"):
        pki_issued_store.revoke(pki_ca, "carol")


def test_revoke_covers_superseded_certificates_unless_a_serial_is_given(pki_issued_store, pki_ca) -> None:
    """Revoking a name revokes its old (still valid) certificate too; --serial revokes exactly one."""
    old = pki.load_certificate(pki_issued_store.cert_path("alice"))
    pki_issued_store.renew(pki_ca, "alice")
    only_old = pki_issued_store.revoke(pki_ca, "alice", serial=f"{old.serial_number:X}")
    assert [e.serial for e in only_old] == [f"{old.serial_number:x}"]
    rest = pki_issued_store.revoke(pki_ca, "alice")
    assert len(rest) == 1 and rest[0].serial != only_old[0].serial


def test_load_crl_accepts_its_ca_and_rejects_a_foreign_one(pki_issued_store, pki_ca, pki_foreign_ca) -> None:
    """load_crl verifies the signature against the trusted CAs; a same-named foreign CA's CRL is refused."""
    pki_issued_store.revoke(pki_ca, "bob")
    data = pki_issued_store.crl_path.read_bytes()
    revoked = pki.load_crl(data, [pki_ca.cert], where="crl.pem")
    bob = pki.load_certificate(pki_issued_store.cert_path("bob"))
    assert revoked.revokes(pki_ca.cert.subject.rfc4514_string(), bob.serial_number)
    with pytest.raises(PkiError, match="crl.pem is not signed by the client CA"):
        pki.load_crl(data, [pki_foreign_ca.cert], where="crl.pem")
    with pytest.raises(PkiError, match="is not a readable CRL"):
        pki.load_crl(b"-----BEGIN X509 CRL-----\nnope\n-----END X509 CRL-----\n", [pki_ca.cert], where="crl.pem")


@pytest.mark.parametrize("kind", ["server", "client"])
def test_renew_keeps_identity_sans_and_eku_with_a_new_serial_and_key(pki_ca, tmp_path, kind) -> None:
    """renew re-issues with the same SANs and EKU; new serial, new key; the old entry is superseded."""
    store = pki.CertStore(tmp_path / "certs")
    store.write_ca(pki_ca)
    if kind == "server":
        issued = pki.issue_server_cert(pki_ca, "api", sans=["api.example.org", "10.0.0.5"], key_type="rsa-2048")
    else:
        issued = pki.issue_client_cert(pki_ca, "api", spiffe_trust_domain="example.org", key_type="ed25519")
    store.write_leaf("api", issued)
    renewed = store.renew(pki_ca, "api")
    assert renewed.kind == kind
    assert pki.subject_alternative_names(renewed.cert) == pki.subject_alternative_names(issued.cert)
    assert pki.extended_key_usages(renewed.cert) == pki.extended_key_usages(issued.cert)
    assert renewed.cert.subject == issued.cert.subject
    assert renewed.cert.serial_number != issued.cert.serial_number
    assert not pki.key_matches_certificate(issued.key, renewed.cert)
    assert pki.key_type_name(renewed.cert.public_key()) == pki.key_type_name(issued.cert.public_key())
    assert [e.status for e in store.entries() if e.name == "api"] == ["superseded", "valid"]


def test_renew_keep_key_reuses_the_key(pki_issued_store, pki_ca) -> None:
    """--keep-key: the renewed certificate is for the key already on disk."""
    key = pki.load_private_key(pki_issued_store.key_path("alice"))
    renewed = pki_issued_store.renew(pki_ca, "alice", keep_key=True)
    assert pki.key_matches_certificate(key, renewed.cert)


def test_renew_refuses_a_revoked_name(pki_issued_store, pki_ca) -> None:
    """A revoked identity is not silently re-admitted by a renewal timer."""
    pki_issued_store.revoke(pki_ca, "bob")
    with pytest.raises(PkiError, match="bob was revoked on .*refusing to renew it"):
        pki_issued_store.renew(pki_ca, "bob")


def test_name_constraints_are_written_critical_and_enforced_at_issue_time() -> None:
    """--permit-dns example.org: names under it are issued; others fail naming the constraint."""
    ca = pki.create_ca(permitted_dns=("example.org",))
    constraints = ca.cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert constraints.value.permitted_subtrees == [x509.DNSName("example.org")]
    pki.issue_server_cert(ca, "api", sans=["api.example.org", "example.org", "10.0.0.5"])
    pki.issue_client_cert(ca, "alice.example.org", spiffe_trust_domain="example.org")
    with pytest.raises(PkiError, match=r"'localhost' is outside the CA's name constraints .*under: example.org"):
        pki.issue_server_cert(ca, "server")
    with pytest.raises(PkiError, match="'alice' is outside the CA's name constraints"):
        pki.issue_client_cert(ca, "alice")
    with pytest.raises(PkiError, match="'badexample.org' is outside"):
        pki.issue_server_cert(ca, "api", sans=["badexample.org"])


def test_issuing_and_verifying_agree_on_name_constraints() -> None:
    """What `certs` refuses to issue under --permit-dns is exactly what the TLS core refuses in a chain (one decision)."""
    from securechat.tls import checks

    ca = pki.create_ca(permitted_dns=("example.org",))
    names = ["example.org", "api.example.org", "a.b.example.org", "badexample.org", "example.org.evil", "localhost"]
    refused_at_issue = []
    for name in names:
        try:
            pki.check_name_constraints(ca.cert, [x509.DNSName(name)])
        except PkiError:
            refused_at_issue.append(name)
    assert refused_at_issue == checks.outside_name_constraints(ca.cert, names)
    assert refused_at_issue == ["badexample.org", "example.org.evil", "localhost"]
    assert checks.outside_name_constraints(pki.create_ca().cert, names) == []  # the twin: no constraint, nothing refused


def test_pkcs12_export_round_trips_with_the_password_only(pki_ca) -> None:
    """The bundle opens with its password and holds key, certificate and CA; a wrong password fails."""
    issued = pki.issue_client_cert(pki_ca, "alice")
    data = pki.pkcs12_bundle("alice", issued.key, issued.cert, ca_cert=pki_ca.cert, password=b"correct horse")
    key, cert, extra = pkcs12.load_key_and_certificates(data, b"correct horse")
    assert cert == issued.cert and extra == [pki_ca.cert]
    assert key is not None and pki.key_matches_certificate(key, issued.cert)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(data, b"wrong horse")
    with pytest.raises(PkiError, match="at least 8 are required"):
        pki.pkcs12_bundle("alice", issued.key, issued.cert, ca_cert=None, password=b"short")
