"""The decision core, driven directly: a table of good and broken chains, each broken one beside its passing twin."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from chains import CLIENT, DAY, NOW, SERVER, Cert, make_ca, make_crl, make_leaf
from cryptography import x509

from securechat import pki
from securechat.tls import checks
from securechat.tls.checks import Code, Purpose, RevocationIndex
from securechat.tls.names import DnsName, SpiffeId, dns_name, spiffe_id


@dataclass(frozen=True)
class Chain:
    """One row: what the owner presents (leaf + intermediates), what is trusted, and how it is judged."""

    leaf: Cert
    intermediates: tuple[Cert, ...] = ()
    anchors: tuple[Cert, ...] = ()
    purpose: Purpose = Purpose.CLIENT
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    crl_signers: tuple[Cert, ...] = ()
    server_name: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def verdict(self) -> checks.Verdict:
        signers = [c.cert for c in (*self.anchors, *self.intermediates, *self.crl_signers)]
        lists = []
        for crl in self.crls:
            verified = checks.verify_crl(crl, signers)
            assert isinstance(verified, checks.RevocationList), verified
            lists.append(verified)
        return checks.verify_chain(
            self.leaf.cert,
            [c.cert for c in self.intermediates],
            [c.cert for c in self.anchors],
            purpose=self.purpose,
            crls=RevocationIndex(lists) if self.crls else None,
            server_name=self.server_name,
            where="alice.pem",
            anchors_where="ca.pem",
            anchors_field="tls.ca",
        )


class World:
    """The CAs every row is built from, made once for the module."""

    def __init__(self) -> None:
        self.root = make_ca("root")  # no pathLen: may sign intermediates
        self.other_root = make_ca("root")  # same name, another key: trusted by nobody
        self.inter = make_ca("intermediate", self.root, path_length=1)
        self.sub = make_ca("sub-intermediate", self.inter, path_length=0)
        self.root_len0 = make_ca("root-pathlen-0", path_length=0)
        self.inter_under_len0 = make_ca("intermediate", self.root_len0, path_length=0)
        self.expired_inter = make_ca("old-intermediate", self.root, not_before=NOW - 60 * DAY, not_after=NOW - DAY)
        self.not_a_ca = make_ca("not-a-ca", self.root, ca=False)


@pytest.fixture(scope="module")
def world() -> World:
    return World()


Row = Callable[[World], Chain]

GOOD: dict[str, Row] = {
    "length 1 (leaf under the root)": lambda w: Chain(make_leaf(w.root), anchors=(w.root,)),
    "length 2 (leaf + intermediate)": lambda w: Chain(make_leaf(w.inter), (w.inter,), (w.root,)),
    "length 3 (leaf + two intermediates)": lambda w: Chain(make_leaf(w.sub), (w.sub, w.inter), (w.root,)),
    "length 3, intermediates out of order": lambda w: Chain(make_leaf(w.sub), (w.inter, w.sub), (w.root,)),
    "chain file that includes the root": lambda w: Chain(make_leaf(w.inter), (w.inter, w.root), (w.root,)),
    "server certificate": lambda w: Chain(
        make_leaf(w.inter, ["localhost"], ips=["127.0.0.1"], eku=[SERVER]), (w.inter,), (w.root,), Purpose.SERVER
    ),
    "server certificate covering the name dialled": lambda w: Chain(
        make_leaf(w.inter, ["localhost"], eku=[SERVER]), (w.inter,), (w.root,), Purpose.SERVER, server_name="localhost"
    ),
    "server certificate covering the IP dialled": lambda w: Chain(
        make_leaf(w.inter, ["localhost"], ips=["127.0.0.1"], eku=[SERVER]),
        (w.inter,),
        (w.root,),
        Purpose.SERVER,
        server_name="127.0.0.1",
    ),
    "peer certificate (both EKUs) as a client": lambda w: Chain(
        make_leaf(w.root, eku=[SERVER, CLIENT]), anchors=(w.root,)
    ),
    "leaf not revoked (its CA's CRL lists another serial)": lambda w: Chain(
        make_leaf(w.inter), (w.inter,), (w.root,), crls=(make_crl(w.inter, [12345]),)
    ),
    "intermediate not revoked (the root's CRL lists another serial)": lambda w: Chain(
        make_leaf(w.inter), (w.inter,), (w.root,), crls=(make_crl(w.root, [12345]),)
    ),
    "a same-named CA's CRL does not apply (rollover)": lambda w: _rollover(w),
}


def _rollover(w: World) -> Chain:
    """A leaf of `root`; the CRL of `other_root` (same name, new key) lists its serial: not its CRL."""
    leaf = make_leaf(w.root)
    return Chain(leaf, anchors=(w.root, w.other_root), crls=(make_crl(w.other_root, [leaf]),))


def _revoked_leaf(w: World) -> Chain:
    leaf = make_leaf(w.inter)
    return Chain(leaf, (w.inter,), (w.root,), crls=(make_crl(w.inter, [leaf]),))


def _revoked_leaf_under_root(w: World) -> Chain:
    leaf = make_leaf(w.root)
    return Chain(leaf, anchors=(w.root,), crls=(make_crl(w.root, [leaf]),))


BROKEN: dict[str, tuple[Row, Code, int, str]] = {
    # name: (row, code, depth of the certificate it is about, what its passing twin is in GOOD)
    "expired leaf": (
        lambda w: Chain(make_leaf(w.inter, not_before=NOW - 30 * DAY, not_after=NOW - 3 * DAY), (w.inter,), (w.root,)),
        Code.EXPIRED,
        0,
        "length 2 (leaf + intermediate)",
    ),
    "not-yet-valid leaf": (
        lambda w: Chain(make_leaf(w.inter, not_before=NOW + DAY, not_after=NOW + 30 * DAY), (w.inter,), (w.root,)),
        Code.NOT_YET_VALID,
        0,
        "length 2 (leaf + intermediate)",
    ),
    "expired intermediate": (
        lambda w: Chain(
            make_leaf(w.expired_inter, not_before=NOW - 30 * DAY, not_after=NOW + DAY), (w.expired_inter,), (w.root,)
        ),
        Code.EXPIRED,
        1,
        "length 2 (leaf + intermediate)",
    ),
    "server certificate used as a client certificate (wrong EKU)": (
        lambda w: Chain(make_leaf(w.inter, eku=[SERVER]), (w.inter,), (w.root,)),
        Code.WRONG_EKU,
        0,
        "length 2 (leaf + intermediate)",
    ),
    "client certificate used as a server certificate (wrong EKU)": (
        lambda w: Chain(make_leaf(w.inter, ["localhost"]), (w.inter,), (w.root,), Purpose.SERVER),
        Code.WRONG_EKU,
        0,
        "server certificate",
    ),
    "no EKU at all": (
        lambda w: Chain(make_leaf(w.root, eku=None), anchors=(w.root,)),
        Code.WRONG_EKU,
        0,
        "length 1 (leaf under the root)",
    ),
    "CA:TRUE leaf": (
        lambda w: Chain(make_leaf(w.root, ca=True), anchors=(w.root,)),
        Code.LEAF_IS_CA,
        0,
        "length 1 (leaf under the root)",
    ),
    "leaf without digitalSignature": (
        lambda w: Chain(make_leaf(w.root, digital_signature=False), anchors=(w.root,)),
        Code.KEY_USAGE,
        0,
        "length 1 (leaf under the root)",
    ),
    "pathLen 0 violated (leaf under an intermediate of a pathLen-0 root)": (
        lambda w: Chain(make_leaf(w.inter_under_len0), (w.inter_under_len0,), (w.root_len0,)),
        Code.PATH_LENGTH,
        2,
        "length 2 (leaf + intermediate)",
    ),
    "pathLen 1 violated (three intermediates deep... two under a pathLen-1 CA)": (
        lambda w: _too_deep(w),
        Code.PATH_LENGTH,
        3,
        "length 3 (leaf + two intermediates)",
    ),
    "signed by a certificate that is not a CA": (
        lambda w: Chain(make_leaf(w.not_a_ca), (w.not_a_ca,), (w.root,)),
        Code.NOT_A_CA,
        1,
        "length 2 (leaf + intermediate)",
    ),
    "wrong anchor (a same-named root with another key)": (
        lambda w: Chain(make_leaf(w.root), anchors=(w.other_root,)),
        Code.UNTRUSTED,
        0,
        "length 1 (leaf under the root)",
    ),
    "intermediate missing from the chain file": (
        lambda w: Chain(make_leaf(w.inter), (), (w.root,)),
        Code.UNTRUSTED,
        0,
        "length 2 (leaf + intermediate)",
    ),
    "revoked leaf (length 1)": (_revoked_leaf_under_root, Code.REVOKED, 0, "length 1 (leaf under the root)"),
    "revoked leaf (in its intermediate's CRL)": (
        _revoked_leaf,
        Code.REVOKED,
        0,
        "leaf not revoked (its CA's CRL lists another serial)",
    ),
    "revoked intermediate (in the root's CRL) refuses its leaf": (
        lambda w: Chain(make_leaf(w.inter), (w.inter,), (w.root,), crls=(make_crl(w.root, [w.inter]),)),
        Code.REVOKED,
        1,
        "intermediate not revoked (the root's CRL lists another serial)",
    ),
    "revoked sub-intermediate (length 3)": (
        lambda w: Chain(make_leaf(w.sub), (w.sub, w.inter), (w.root,), crls=(make_crl(w.inter, [w.sub]),)),
        Code.REVOKED,
        1,
        "length 3 (leaf + two intermediates)",
    ),
    "server certificate not covering the name dialled (SAN mismatch)": (
        lambda w: Chain(
            make_leaf(w.inter, ["localhost"], eku=[SERVER]),
            (w.inter,),
            (w.root,),
            Purpose.SERVER,
            server_name="other.example",
        ),
        Code.SAN_MISMATCH,
        0,
        "server certificate covering the name dialled",
    ),
    "IP dialled, certificate has only a DNS SAN": (
        lambda w: Chain(
            make_leaf(w.inter, ["localhost"], eku=[SERVER]),
            (w.inter,),
            (w.root,),
            Purpose.SERVER,
            server_name="127.0.0.1",
        ),
        Code.SAN_MISMATCH,
        0,
        "server certificate covering the IP dialled",
    ),
    "server certificate without any SAN": (
        lambda w: Chain(
            make_leaf(w.inter, [], common_name="localhost", eku=[SERVER]), (w.inter,), (w.root,), Purpose.SERVER
        ),
        Code.NO_SAN,
        0,
        "server certificate",
    ),
}


def _too_deep(w: World) -> Chain:
    """root -> inter (pathLen 1) -> sub (pathLen 0... but here a CA without pathLen) -> sub2 -> leaf: two CAs below inter."""
    sub = make_ca("sub-without-limit", w.inter)
    sub2 = make_ca("sub2", sub)
    return Chain(make_leaf(sub2), (sub2, sub, w.inter), (w.root,))


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
