"""Who is calling: the identity in the peer's verified client certificate, and who may call what.

gRPC has verified the peer's chain to the client CA (BoringSSL's defaults)
before it hands us the peer's PEM in the auth context; securechat then
decides for itself, with `tls.checks` -- the same core the config loader and
`doctor` use -- because BoringSSL's defaults are not our policy (a CA:TRUE
client certificate, or a leaf under a pathLen-0 CA's intermediate, pass
there). `PeerVerifier.identify` checks, once per distinct certificate and
chain (a bounded cache: the auth interceptor runs on every call):

- the leaf is an end entity with clientAuth and, if it has a keyUsage,
  digitalSignature; the whole chain reaches a trust anchor with every
  basicConstraints and pathLen respected (`checks.verify_chain`);
- the identity is the DNS subjectAltName that equals the CN (or the first DNS
  SAN), and it must be a valid DNS name by RFC 1123 syntax; a `spiffe://` URI
  SAN must be a valid SPIFFE ID (`tls.names`). A CN alone is never trusted.

Anything else is refused (`PeerRejected`, whose text is escaped and safe to
log). The result carries the chain's (issuer key, serial) links, so the
lifecycle can check revocation of every certificate in the chain on every
call without parsing anything again.

`AuthzPolicy` decides which identities may call which methods (config
`authz:`); an entry names a client by its DNS identity (`alice`), by its
SPIFFE ID (`spiffe://example.org/alice`), or `*` for any verified client.
Names and SPIFFE IDs are different kinds (`names.DnsName`, `names.SpiffeId`)
that never match each other: a SPIFFE entry matches only a URI SAN.

Not checked here: revocation (the server's lifecycle does that with
`links`, against the CRLs).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509

from securechat.protocol import RULE_INHERITS
from securechat.tls import checks
from securechat.tls.checks import Code, Purpose
from securechat.tls.names import DnsName, Identity, InvalidName, SpiffeId, dns_name, identity, spiffe_id

PEM_CERT_KEY = "x509_pem_cert"
PEM_CHAIN_KEY = "x509_pem_cert_chain"
VERIFIED_CACHE_SIZE = 4096
"""Distinct (certificate, chain) decisions kept; a hostile peer cycling certificates only evicts."""

_LEAF_CODES = (Code.LEAF_IS_CA, Code.WRONG_EKU, Code.KEY_USAGE)


class PeerRejected(Exception):
    """The peer's certificate cannot name a client; the text says why (escaped: safe to log and send)."""


@dataclass(frozen=True)
class PeerIdentity:
    name: str
    """The DNS identity, lowercase, valid by RFC 1123 syntax."""
    spiffe_id: str
    """The SPIFFE ID, or '' when the certificate has none."""
    serial: str
    not_after: str
    issuer: str = ""
    """RFC 4514 name of the issuing CA (escaped): a serial is only unique per issuer."""
    links: tuple[tuple[str, int], ...] = ()
    """(issuer key id, serial) of every certificate of the verified chain but the anchor: what revocation looks up."""
    valid_until: float = math.inf
    """Epoch seconds at which the first certificate of the chain expires."""

    @property
    def dns(self) -> DnsName:
        return DnsName(self.name)

    @property
    def spiffe(self) -> SpiffeId | None:
        return SpiffeId(self.spiffe_id) if self.spiffe_id else None

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> PeerIdentity:
        """The identity CERT names, judged as a client leaf (not its chain, not its validity); PeerRejected otherwise."""
        where = f"certificate serial {cert.serial_number:x}"
        problems = checks.check_leaf(cert, purpose=Purpose.CLIENT, where=where)
        for problem in problems:
            if problem.code in _LEAF_CODES:
                raise PeerRejected(_wire_text(problem, where))
        return _identity(cert, ())

    @classmethod
    def from_chain(cls, chain: Sequence[x509.Certificate]) -> PeerIdentity:
        """The identity of CHAIN's leaf, once `checks.verify_chain` has verified CHAIN (leaf first, anchor last)."""
        return _identity(chain[0], chain)


def _wire_text(problem: checks.Problem, where: str) -> str:
    """What a refused client is told: the core's message, in the words clients have long seen for a missing clientAuth."""
    if problem.code is Code.WRONG_EKU and problem.depth == 0:
        return f"{where} is not a client certificate (no clientAuth extended key usage)"
    return problem.message


def _identity(leaf: x509.Certificate, chain: Sequence[x509.Certificate]) -> PeerIdentity:
    found = checks.leaf_identity(leaf)
    if isinstance(found, checks.Problem):
        raise PeerRejected(found.message)
    until = min((c.not_valid_after_utc for c in chain), default=leaf.not_valid_after_utc)
    return PeerIdentity(
        name=found.dns.value,
        spiffe_id=found.spiffe.value if found.spiffe is not None else "",
        serial=f"{leaf.serial_number:x}",
        not_after=leaf.not_valid_after_utc.isoformat(),
        issuer=checks.describe_name(leaf.issuer),
        links=checks.chain_links(chain),
        valid_until=until.timestamp(),
    )


@functools.lru_cache(maxsize=VERIFIED_CACHE_SIZE)
def identity_from_pem(pem: bytes) -> PeerIdentity:
    """The leaf-only identity of PEM (no chain check), parsed once per distinct certificate."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise PeerRejected("the peer certificate could not be parsed") from exc
    return PeerIdentity.from_certificate(cert)


class PeerVerifier:
    """Decides about a TLS peer's certificate and chain against ANCHORS, once per distinct pair (bounded LRU).

    A decision is reused until the first certificate of its chain expires;
    refusals are cached too, so a hostile certificate costs one verification,
    not one per call. Built again when the trust anchors change.
    """

    def __init__(
        self,
        anchors: Sequence[x509.Certificate],
        *,
        cache_size: int = VERIFIED_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._anchors = list(anchors)
        self._size = cache_size
        self._clock = clock
        self._cache: OrderedDict[tuple[bytes, bytes], tuple[float, PeerIdentity | str]] = OrderedDict()

    def identify(self, pem: bytes, chain_pem: bytes | None = None) -> PeerIdentity:
        """The identity of the peer that presented PEM (and CHAIN_PEM, its intermediates); PeerRejected otherwise."""
        key = (pem, chain_pem or b"")
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and now < hit[0]:
            self._cache.move_to_end(key)
            result = hit[1]
        else:
            until, result = self._decide(pem, chain_pem, now)
            self._cache[key] = (until, result)
            self._cache.move_to_end(key)
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        if isinstance(result, str):
            raise PeerRejected(result)
        return result

    def _decide(self, pem: bytes, chain_pem: bytes | None, now: float) -> tuple[float, PeerIdentity | str]:
        retry = now + 60.0  # a refusal is decided again after a minute (a clock or CA bundle may have been fixed)
        try:
            leaf = x509.load_pem_x509_certificate(pem)
            presented = x509.load_pem_x509_certificates(chain_pem) if chain_pem else []
        except ValueError:
            return retry, "the peer certificate could not be parsed"
        intermediates = [c for c in presented if c != leaf]
        where = f"certificate serial {leaf.serial_number:x}"
        verdict = checks.verify_chain(
            leaf,
            intermediates,
            self._anchors,
            purpose=Purpose.CLIENT,
            now=dt.datetime.fromtimestamp(now, dt.timezone.utc),
            where=where,
            anchors_where="the server's tls.client_ca",
            anchors_field="the server's tls.client_ca",
        )
        if verdict.first is not None:
            return retry, _wire_text(verdict.first, where)
        try:
            peer = PeerIdentity.from_chain(verdict.chain)
        except PeerRejected as exc:
            return retry, str(exc)
        return peer.valid_until, peer


def peer_certificate_pem(auth_context: Mapping[str, Iterable[bytes]]) -> bytes | None:
    """The verified peer certificate gRPC put in the auth context, if any."""
    return next(iter(auth_context.get(PEM_CERT_KEY, ())), None)


def peer_chain_pem(auth_context: Mapping[str, Iterable[bytes]]) -> bytes | None:
    """The intermediates the peer presented (gRPC's x509_pem_cert_chain), if any."""
    return next(iter(auth_context.get(PEM_CHAIN_KEY, ())), None)


ANY_IDENTITY = "*"


def _typed(entries: frozenset[str]) -> frozenset[Identity]:
    """Authz entries as identities of their kind; an entry valid as neither never matches anyone."""
    typed: set[Identity] = set()
    for entry in entries:
        try:
            typed.add(identity(entry))
        except InvalidName:
            continue
    return frozenset(typed)


@dataclass(frozen=True)
class AuthzPolicy:
    """Who may call what: `allow` for every method, `methods` to override it per method.

    `methods` maps a full method name (`/securechat.v1.ChatService/Chat`) or a
    whole service (`/grpc.health.v1.Health/*`) to the identities allowed
    there; a method listed there ignores `allow`. `allow=None` with no
    matching `methods` entry admits every verified client, as having no
    `authz:` section does.
    """

    allow: frozenset[str] | None = None
    methods: Mapping[str, frozenset[str]] = field(default_factory=dict)
    _typed: dict[frozenset[str], frozenset[Identity]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def allowed(self, identities: frozenset[str] | None, peer: PeerIdentity) -> bool:
        if identities is None or ANY_IDENTITY in identities:
            return True
        typed = self._typed.get(identities)
        if typed is None:
            typed = self._typed[identities] = _typed(identities)
        if peer.spiffe_id:
            try:
                if spiffe_id(peer.spiffe_id) in typed:
                    return True
            except InvalidName:
                pass
        try:
            return dns_name(peer.name) in typed
        except InvalidName:
            return False

    def permits(self, peer: PeerIdentity, method: str) -> bool:
        """True if PEER may call METHOD ('/package.Service/Method')."""
        key = self._deciding_key(method)
        return self.allowed(self.methods[key] if key is not None else self.allow, peer)

    def rule_for(self, method: str) -> str:
        """The config entry that decides METHOD, as a person would look it up: authz.methods['...'] or authz.allow."""
        key = self._deciding_key(method)
        return f"authz.methods['{key}']" if key is not None else "authz.allow"

    def _deciding_key(self, method: str) -> str | None:
        """The `methods` entry that decides METHOD: its own, the one it inherits (ChatBatched: Chat's), its service's."""
        inherited = RULE_INHERITS.get(method)
        for key in (method, inherited, f"{method.rsplit('/', 1)[0]}/*"):
            if key is not None and key in self.methods:
                return key
        return None
