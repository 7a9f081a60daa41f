"""The decision core, driven directly: a table of good and broken chains, each broken one beside its passing twin."""

from __future__ import annotations

import pytest
from chain_table import BROKEN, GOOD, World
from chains import DAY, NOW, SERVER, make_crl, make_leaf

from securechat import pki
from securechat.tls import checks
from securechat.tls.checks import Code, Purpose, RevocationIndex
from securechat.tls.names import DnsName, SpiffeId, dns_name, spiffe_id


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.mark.parametrize("name", list(GOOD))
def test_good_chains_pass(world, name):
    """Each good row verifies, and the verified chain runs from the leaf to a trust anchor."""
    row = GOOD[name](world)
    verdict = row.verdict()
    assert verdict.ok, verdict.problems
    assert verdict.chain[0] == row.leaf.cert
    assert verdict.chain[-1] in [a.cert for a in row.anchors]


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_chains_fail_with_their_code_beside_their_passing_twin(world, name):
    """Each broken row fails with exactly its code (first problem), at the right depth; its twin passes."""
    make, code, depth, twin = BROKEN[name]
    verdict = make(world).verdict()
    assert not verdict.ok
    assert verdict.first is not None
    assert (verdict.first.code, verdict.first.depth) == (code, depth), verdict.problems
    assert verdict.first.message and verdict.first.fix
    assert GOOD[twin](world).verdict().ok


@pytest.mark.parametrize("name", [*GOOD, *BROKEN])
def test_the_quick_path_and_the_explaining_path_agree(world, name, monkeypatch):
    """A good chain's signatures are checked once (cryptography's path, securechat's CA checks on it); every row's
    verdict -- chain and problems, word for word -- is the one the explaining path gives alone."""
    row = (GOOD[name] if name in GOOD else BROKEN[name][0])(world)
    both = row.verdict()
    quick = checks._verified_quickly  # noqa: SLF001 (the optimisation under test)
    with monkeypatch.context() as patched:
        patched.setattr(checks, "_verified_quickly", lambda *args: None)
        explained = row.verdict()
    assert (both.chain, both.problems) == (explained.chain, explained.problems)
    if name in GOOD and all(c.cert.signature_algorithm_oid not in checks._EDDSA for c in (row.leaf, *row.intermediates)):  # noqa: SLF001
        taken = quick(
            row.leaf.cert, [c.cert for c in row.intermediates], [c.cert for c in row.anchors], row.purpose, NOW, None, None, "x"
        )
        assert taken is not None and taken.chain == both.chain  # the good rows do take the quick path


def test_path_length_violation_message(world):
    """The pathLen message names the CA whose limit is broken, and the numbers."""
    verdict = BROKEN["pathLen 0 violated (leaf under an intermediate of a pathLen-0 root)"][0](world).verdict()
    assert verdict.first is not None
    assert verdict.first.message == (
        "alice.pem is 1 intermediate CA(s) below CN=root-pathlen-0,O=tests, whose pathLen 0 allows 0."
    )


def test_untrusted_message_names_the_anchor_field_and_the_issuer(world):
    """A chain to an untrusted CA says which file did not sign it and which field to point elsewhere."""
    verdict = BROKEN["wrong anchor (a same-named root with another key)"][0](world).verdict()
    assert verdict.first is not None
    assert verdict.first.message == "alice.pem was not signed by the CA in ca.pem."
    assert verdict.first.fix == "Issue it from that CA, or point tls.ca at the CA that signed it (CN=root,O=tests)."


def test_revoked_intermediate_message_says_what_falls_with_it(world):
    """A revoked intermediate is named, with its serial and the CRL number."""
    row = BROKEN["revoked intermediate (in the root's CRL) refuses its leaf"][0](world)
    verdict = row.verdict()
    assert verdict.first is not None
    assert verdict.first.message == (
        f"the CA certificate CN=intermediate,O=tests (serial {row.intermediates[0].cert.serial_number:x}) in the chain"
        " of alice.pem is revoked in the CRL (CRL number 1), and with it everything it signed."
    )


def test_every_problem_is_reported_not_just_the_first(world):
    """An expired, CA:TRUE, no-clientAuth leaf: all three problems, in the documented order."""
    leaf = make_leaf(world.root, ca=True, eku=[SERVER], not_before=NOW - 9 * DAY, not_after=NOW - DAY)
    verdict = checks.verify_chain(leaf.cert, [], [world.root.cert], purpose=Purpose.CLIENT)
    assert [p.code for p in verdict.problems] == [Code.EXPIRED, Code.LEAF_IS_CA, Code.WRONG_EKU]


def test_securechat_pki_certificates_pass(pki_ca):
    """What `securechat certs` issues passes for its purpose, and fails for the other one."""
    alice = pki.issue_client_cert(pki_ca, "alice", spiffe_trust_domain="example.org")
    server = pki.issue_server_cert(pki_ca, "server")
    assert checks.verify_chain(alice.cert, [], [pki_ca.cert], purpose=Purpose.CLIENT).ok
    assert checks.verify_chain(server.cert, [], [pki_ca.cert], purpose=Purpose.SERVER, server_name="::1").ok
    assert checks.verify_chain(alice.cert, [], [pki_ca.cert], purpose=Purpose.SERVER).first.code is Code.WRONG_EKU  # type: ignore[union-attr]


@pytest.mark.parametrize("key_type", ["ecdsa-p384", "rsa-2048", "ed25519"])
def test_other_key_types_verify(pki_ca_for, key_type):
    """Chains of every key type securechat issues verify (cryptography's verifier supports them all)."""
    ca = pki_ca_for(key_type)
    leaf = pki.issue_client_cert(ca, "alice", key_type=key_type)
    assert checks.verify_chain(leaf.cert, [], [ca.cert], purpose=Purpose.CLIENT).ok


def test_key_mismatch_and_its_twin(world):
    """check_key: the leaf's own key passes; another key is a key-mismatch naming both files."""
    alice, bob = make_leaf(world.root), make_leaf(world.root, ["bob"])
    assert checks.check_key(alice.cert, alice.key) is None
    problem = checks.check_key(alice.cert, bob.key, where="bob-key.pem", cert_where="alice.pem")
    assert problem is not None and problem.code is Code.KEY_MISMATCH and problem.field == "key"
    assert problem.message == "bob-key.pem does not match the certificate alice.pem."


def test_anchors_must_be_cas(world):
    """check_anchors: a CA bundle passes; one holding a leaf names the leaf."""
    assert checks.check_anchors([world.root.cert, world.inter.cert]) is None
    problem = checks.check_anchors([world.root.cert, make_leaf(world.root).cert], where="ca.pem")
    assert problem is not None and problem.code is Code.NOT_A_CA
    assert problem.message == "ca.pem holds a certificate that is not a CA (CN=alice)."


# -- identities ---------------------------------------------------------------------


def test_spiffe_match_only_by_uri_san(world):
    """A SPIFFE entry matches a URI SAN; a DNS SAN reading the same text never does (the twin)."""
    by_uri = make_leaf(world.root, ["bob"], uris=["spiffe://example.org/bob"])
    by_dns = make_leaf(world.root, ["spiffe://example.org/bob"])
    expected = spiffe_id("spiffe://example.org/bob")
    assert checks.match_identity(by_uri.cert, expected) is None
    problem = checks.match_identity(by_dns.cert, expected, where="bob.pem")
    assert problem is not None and problem.code is Code.SPIFFE_MISMATCH


def test_dns_match_only_by_dns_san(world):
    """A DNS identity matches a DNS SAN; a URI SAN with that text does not."""
    assert checks.match_identity(make_leaf(world.root, ["bob"]).cert, dns_name("bob")) is None
    problem = checks.match_identity(make_leaf(world.root, [], common_name="bob", uris=["bob"]).cert, dns_name("bob"))
    assert problem is not None and problem.code is Code.SAN_MISMATCH


def test_names_and_spiffe_ids_never_compare_equal():
    """The two kinds are different types: equal text is not an equal identity."""
    assert DnsName("x") != SpiffeId("x")
    assert {DnsName("spiffe://example.org/bob")}.isdisjoint({SpiffeId("spiffe://example.org/bob")})


HOSTILE_NAMES = {
    "newline": "alice\nforged line",
    "ANSI escape": "alice\x1b[31m",
    "Rich markup": "[/bold]alice",
    "NUL": "alice\x00",
    "trailing space": "alice ",
    "1000 characters": "a" * 1000,
    "a SPIFFE ID as a DNS name": "spiffe://example.org/bob",
    "wildcard": "*.example.org",
    "empty label": "alice..example",
    "leading hyphen": "-alice",
    "bidi override": "alice\u202e",
}
GOOD_NAMES = ["alice", "Alice", "api.internal", "my-app.my-namespace.svc.cluster.local", "a" * 63, "x1-2.y"]


@pytest.mark.parametrize("text", list(HOSTILE_NAMES.values()), ids=list(HOSTILE_NAMES))
def test_hostile_dns_identities_are_refused(world, text):
    """A leaf whose DNS SAN is not a valid DNS name names no identity: bad-identity, escaped in the message."""
    problem = checks.leaf_identity(make_leaf(world.root, [text]).cert)
    assert isinstance(problem, checks.Problem) and problem.code is Code.BAD_IDENTITY
    assert problem.message.isprintable() and "\x1b" not in problem.message and len(problem.message) < 400


@pytest.mark.parametrize("text", GOOD_NAMES)
def test_valid_dns_identities_are_accepted(world, text):
    """The twin: names by RFC 1123 syntax (cert-manager's service names among them) are identities, lowercased."""
    found = checks.leaf_identity(make_leaf(world.root, [text]).cert)
    assert isinstance(found, checks.LeafIdentity) and found.dns == DnsName(text.lower())


@pytest.mark.parametrize(
    "uri",
    ["spiffe://Example.org/a", "spiffe://example.org/a/", "spiffe://example.org//a", "spiffe://example.org/a/../b",
     "spiffe://example.org:443/a", "spiffe://user@example.org/a", "spiffe://example.org/a?b", "spiffe://example.org/a\nb",
     "spiffe://example.org/" + "a" * 2100],
)  # fmt: skip
def test_invalid_spiffe_ids_are_refused(world, uri):
    """A URI SAN that is not a SPIFFE ID by the spec's syntax is refused, not matched."""
    problem = checks.leaf_identity(make_leaf(world.root, ["alice"], uris=[uri]).cert)
    assert isinstance(problem, checks.Problem) and problem.code is Code.BAD_IDENTITY


@pytest.mark.parametrize(
    "uri", ["spiffe://example.org/alice", "spiffe://example.org", "spiffe://td_1.x-y/ns/a.b/sa/c_d-e"]
)
def test_valid_spiffe_ids_are_accepted(world, uri):
    """The twin: SPIFFE IDs by the spec's syntax."""
    found = checks.leaf_identity(make_leaf(world.root, ["alice"], uris=[uri]).cert)
    assert isinstance(found, checks.LeafIdentity) and found.spiffe == SpiffeId(uri)


# -- CRLs ------------------------------------------------------------------------------


def test_crl_is_matched_to_its_issuer_by_key_not_name(world):
    """A CRL verifies with its CA's key; the same-named CA with another key is not its signer (the twin)."""
    crl = make_crl(world.root, [1])
    verified = checks.verify_crl(crl, [world.root.cert])
    assert isinstance(verified, checks.RevocationList) and verified.issuer_key == checks.key_id(world.root.cert)
    problem = checks.verify_crl(crl, [world.other_root.cert], where="crl.pem")
    assert isinstance(problem, checks.Problem) and problem.code is Code.CRL_UNTRUSTED
    assert problem.message == "crl.pem is not signed by the client CA (its issuer is CN=root,O=tests)."


def test_crl_with_a_forged_issuer_name_is_not_matched(world):
    """A CRL signed by another CA's key under root's name verifies with neither."""
    forged = make_crl(world.inter, [1], issuer_name=world.root.cert.subject)
    assert isinstance(checks.verify_crl(forged, [world.root.cert, world.inter.cert]), checks.Problem)


def test_revocation_index_keeps_the_highest_number_per_issuer(world):
    """Two CRLs of one CA in a file: the higher CRL number is the one in force."""
    older = checks.verify_crl(make_crl(world.root, [1], number=1), [world.root.cert])
    newer = checks.verify_crl(make_crl(world.root, [2], number=2), [world.root.cert])
    assert isinstance(older, checks.RevocationList) and isinstance(newer, checks.RevocationList)
    index = RevocationIndex([newer, older])
    assert index.revoked(newer.issuer_key, 2) is newer and index.revoked(newer.issuer_key, 1) is None
