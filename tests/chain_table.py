"""The table of good and broken chains that the decision core, the loader, doctor and the server are all judged on.

Each BROKEN row names its passing twin in GOOD. Rows are built from one
`World` of CAs (made once per test module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from chains import CLIENT, DAY, NOW, SERVER, Cert, make_ca, make_crl, make_leaf
from cryptography import x509

from securechat.tls import checks
from securechat.tls.checks import Code, Purpose, RevocationIndex


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
