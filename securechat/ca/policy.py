"""What the online CA allows: CSRs against a grant, renewals, lifetimes. Decisions, as refusals.

Whether a certificate, a chain or a key is good is not decided here: that
is `securechat.tls.checks` (the one place that decides, for the config
loader, `doctor`, the broker and this CA alike), and whether a name is a
valid DNS name or SPIFFE ID is `securechat.tls.names`. This module asks
them and turns their problems into the CA's refusals; what it adds is the
CA's own policy:

- A CSR must be well-formed, self-signed (its signature proves the
  requester holds the new key) and carry a key securechat issues for
  (ECDSA P-256/P-384, RSA 2048+, Ed25519). Every name it asks for is held
  to `tls.names`' syntax: the subject CN and each DNS SAN a DNS name, each
  URI SAN a SPIFFE ID, nothing else but IP addresses (INVALID_ARGUMENT
  `bad-name`, naming the value, escaped).
- Enrolment: the CSR may name no more than the token allows. Its subject CN,
  if present, must be the token's name; each SAN it asks for must be one
  of the token's (compared as `tls.names` identities: DNS names without
  regard to case, a SPIFFE ID never equal to a DNS name). The certificate
  carries the token's name and SANs.
- Renewal: the presented chain is judged by `checks.verify_chain` (chain to
  this CA's trust anchors, validity, end entity, EKU, name constraints,
  the CRLs the CA publishes) through `ChainVerdicts`, which keeps a good
  verdict per certificate fingerprint for as long as it can hold; a
  caller that could not present it over mTLS proves its key with a
  signature over the CSR and a time (`verify_renewal_proof`: the signature
  is `checks.check_possession`'s, the time window is this CA's). The
  identity, kind and SANs then come from the current certificate's record,
  whatever the CSR asks; the new key must differ from the old one.

Not decided here: whether a token is unused or a serial recorded and
unrevoked (the database decides that, in the transaction that issues).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from securechat.ca.refusals import CaRefusal, RefusalReason
from securechat.config.ca import Lifetimes
from securechat.pki import CertificatePublicKey, san_to_text
from securechat.tls import checks, names

PROOF_CONTEXT = b"securechat.ca.v1.Renew\n"
PROOF_MAX_AGE = dt.timedelta(minutes=5)
"""A renewal proof older (or further in the future) than this is refused: a captured request
replayed later gets nothing."""
MIN_RSA_BITS = 2048
MAX_CACHED_VERDICTS = 50_000
"""Good chain verdicts kept (about 300 bytes each): a fleet's certificates, renewing over kept connections."""


@dataclass(frozen=True)
class CsrRequest:
    """A checked CSR: its key, and the names it asks for."""

    csr: x509.CertificateSigningRequest
    public_key: CertificatePublicKey
    common_name: str | None
    sans: tuple[x509.GeneralName, ...]
    der: bytes
    spki_sha256: str
    """SHA-256 of the CSR's SubjectPublicKeyInfo: what the record keeps of the key."""


def spki_fingerprint(public_key: CertificatePublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def parse_csr(pem: bytes) -> CsrRequest:
    """The CSR in PEM, checked: readable, self-signed, a key type securechat issues for, names of valid syntax."""
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError:
        raise CaRefusal(RefusalReason.BAD_CSR, "csr_pem is not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise CaRefusal(RefusalReason.BAD_CSR, "the CSR's signature does not verify: it must be signed by its own key")
    public_key = csr.public_key()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in ("secp256r1", "secp384r1"):
            raise CaRefusal(
                RefusalReason.BAD_CSR, f"the CSR's curve {public_key.curve.name} is not issued for: use P-256 or P-384"
            )
    elif isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise CaRefusal(
                RefusalReason.BAD_CSR,
                f"the CSR's RSA key has {public_key.key_size} bits: at least {MIN_RSA_BITS} are needed",
            )
    elif not isinstance(public_key, ed25519.Ed25519PublicKey):
        raise CaRefusal(RefusalReason.BAD_CSR, f"the CSR's key type {type(public_key).__name__} is not issued for")
    common_names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(common_names) > 1:
        raise CaRefusal(
            RefusalReason.BAD_NAME,
            f"the CSR's subject has {len(common_names)} common names (CN); at most one is allowed",
        )
    common_name = _text(common_names[0].value) if common_names else None
    if common_name is not None:
        requested_identity(common_name, what="the CSR's subject CN")
    try:
        sans = tuple(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = ()
    except ValueError:  # a SAN extension cryptography cannot even decode
        raise CaRefusal(RefusalReason.BAD_NAME, "the CSR's subjectAltName extension is malformed") from None
    for san in sans:
        requested_san(san)
    return CsrRequest(
        csr=csr,
        public_key=public_key,
        common_name=common_name,
        sans=sans,
        der=csr.public_bytes(serialization.Encoding.DER),
        spki_sha256=spki_fingerprint(public_key),
    )


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def requested_identity(text: str, *, what: str) -> names.DnsName:
    """TEXT as a DNS name by `tls.names`' syntax; INVALID_ARGUMENT bad-name saying WHAT is wrong otherwise."""
    try:
        return names.dns_name(text)
    except names.InvalidName as exc:
        hint = " (a SPIFFE ID belongs in a URI SAN)" if text.lower().startswith("spiffe:") else ""
        raise CaRefusal(RefusalReason.BAD_NAME, f"{what} is not a valid name: {exc}{hint}") from None


SanKey = names.DnsName | names.SpiffeId | ipaddress.IPv4Address | ipaddress.IPv6Address


def requested_san(san: x509.GeneralName) -> SanKey:
    """A SAN a CSR (or a token) asks for, as the identity it names; INVALID_ARGUMENT bad-name if it names none.

    A DNS SAN must be a DNS name and a URI SAN a SPIFFE ID (`tls.names`);
    an IP address is taken as it is; any other kind (e-mail, directory
    name, otherName) is not issued.
    """
    if isinstance(san, x509.DNSName):
        return requested_identity(san.value, what="the DNS SAN in the CSR")
    if isinstance(san, x509.UniformResourceIdentifier):
        try:
            return names.spiffe_id(san.value)
        except names.InvalidName as exc:
            raise CaRefusal(
                RefusalReason.BAD_NAME, f"the URI SAN in the CSR is not a SPIFFE ID, the only URI issued: {exc}"
            ) from None
    if isinstance(san, x509.IPAddress) and isinstance(san.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return san.value
    raise CaRefusal(
        RefusalReason.BAD_NAME,
        f"the CSR asks for {names.escape(san_to_text(san))}: the CA issues DNS, IP and spiffe:// URI SANs only",
    )


def check_enrolment(request: CsrRequest, *, name: str, allowed: Sequence[x509.GeneralName]) -> None:
    """Raise PERMISSION_DENIED naming what differs if the CSR asks for more than NAME and ALLOWED."""
    if request.common_name is not None and requested_identity(request.common_name, what="the CSR's subject CN") != (
        names.dns_name(name)
    ):
        raise CaRefusal(
            RefusalReason.NAME_MISMATCH,
            f"the CSR asks for the name {names.escape(request.common_name)!r}, but the token is for {name!r}",
        )
    granted = {requested_san(san) for san in allowed}
    extra = [san for san in request.sans if requested_san(san) not in granted]
    if extra:
        raise CaRefusal(
            RefusalReason.SAN_NOT_ALLOWED,
            f"the CSR asks for {', '.join(names.escape(san_to_text(s)) for s in extra)}, which the token for"
            f" {name!r} does not allow (it allows: {', '.join(san_to_text(s) for s in allowed)})",
        )


def lifetime_for(kind: str, lifetimes: Lifetimes) -> dt.timedelta:
    return lifetimes.of(kind)


# -- renewal: the presented certificate ------------------------------------------------


def purpose_of(leaf: x509.Certificate) -> checks.Purpose:
    """What LEAF is judged as: a server certificate (serverAuth without clientAuth) as one, anything else as a client."""
    ekus = checks.extended_key_usages(leaf)
    if ExtendedKeyUsageOID.SERVER_AUTH in ekus and ExtendedKeyUsageOID.CLIENT_AUTH not in ekus:
        return checks.Purpose.SERVER
    return checks.Purpose.CLIENT


def presented_name(leaf: x509.Certificate) -> str:
    """Who LEAF says it is, for messages and audit lines (escaped): its CN, else its serial."""
    common_names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return names.escape(_text(common_names[0].value)) if common_names else f"serial {leaf.serial_number:x}"


_REFUSAL_FOR_CODE = {
    checks.Code.EXPIRED: RefusalReason.EXPIRED,
    checks.Code.REVOKED: RefusalReason.REVOKED,
}
"""How the core's problems with a presented certificate refuse a renewal; every other code is `untrusted`."""


def refusal_for(problem: checks.Problem, *, serial: str, identity: str) -> CaRefusal:
    """The renewal refusal for the core's PROBLEM with the presented certificate: its message, and what to do."""
    reason = _REFUSAL_FOR_CODE.get(problem.code, RefusalReason.UNTRUSTED)
    if reason is RefusalReason.EXPIRED:
        consequence = (
            "an expired certificate cannot renew. Enroll again with a new token"
            f" ('securechat ca token {identity} --config ca.yaml')"
        )
    elif reason is RefusalReason.REVOKED:
        consequence = "a revoked certificate cannot renew"
    else:
        consequence = "it cannot renew here"
    return CaRefusal(reason, f"{problem.message.rstrip('.')}: {consequence}", identity=identity, serial=serial)


@dataclass(frozen=True)
class _GoodVerdict:
    valid_from: dt.datetime
    valid_until: dt.datetime


class ChainVerdicts:
    """`checks.verify_chain`'s verdicts on presented certificates, each asked for once per fingerprint.

    What a verdict depends on is the leaf (its SHA-256 fingerprint: a path
    that verified once still exists, whatever else is presented with it
    later), this CA's trust anchors and intermediates (fixed for the
    object's life), the time and the CRLs. So a good verdict is kept, at
    most MAX_CACHED_VERDICTS of them (least recently used dropped first),
    and reused only while NOW is inside every validity window of the
    verified chain and the CRLs are the very same `RevocationIndex`; a new
    CRL (a revocation) empties it. Bad verdicts are never kept: they are
    rare, and each is judged afresh so its message is exact.
    """

    def __init__(
        self,
        anchors: Sequence[x509.Certificate],
        intermediates: Sequence[x509.Certificate],
        *,
        anchors_where: str,
        size: int = MAX_CACHED_VERDICTS,
    ) -> None:
        self.anchors = tuple(anchors)
        self.intermediates = tuple(intermediates)
        self.anchors_where = anchors_where
        self.size = size
        self._good: OrderedDict[bytes, _GoodVerdict] = OrderedDict()
        self._crls: checks.RevocationIndex | None = None
        self.judged = 0
        """How many times the core was asked (cache misses); for tests and the benchmark."""

    def judge(
        self,
        presented: Sequence[x509.Certificate],
        *,
        now: dt.datetime,
        crls: checks.RevocationIndex | None,
        identity: str,
        fingerprint: bytes | None = None,
    ) -> None:
        """Raise the CaRefusal for the first problem the core finds with PRESENTED (leaf first) at NOW.

        FINGERPRINT, when the caller has it, is the leaf's SHA-256 fingerprint.
        """
        leaf = presented[0]
        if crls is not self._crls:
            self._good.clear()
            self._crls = crls
        key = fingerprint if fingerprint is not None else leaf.fingerprint(hashes.SHA256())
        held = self._good.get(key)
        if held is not None and held.valid_from <= now <= held.valid_until:
            self._good.move_to_end(key)
            return
        self.judged += 1
        verdict = checks.verify_chain(
            leaf,
            [*presented[1:], *self.intermediates],
            self.anchors,
            purpose=purpose_of(leaf),
            now=now,
            crls=crls,
            where=f"the certificate of {identity}",
            anchors_where=self.anchors_where,
            anchors_field="current_chain_pem",
        )
        if verdict.first is not None:
            self._good.pop(key, None)
            raise refusal_for(verdict.first, serial=f"{leaf.serial_number:x}", identity=identity)
        self._good[key] = _GoodVerdict(
            valid_from=max(c.not_valid_before_utc for c in verdict.chain),
            valid_until=min(c.not_valid_after_utc for c in verdict.chain),
        )
        while len(self._good) > self.size:
            self._good.popitem(last=False)

    def __len__(self) -> int:
        return len(self._good)


# -- renewal: the proof of the current key ---------------------------------------------


def proof_message(csr_der: bytes, signed_at_unix_ms: int) -> bytes:
    """What a renewal proof signs (see ca.proto RenewRequest)."""
    return PROOF_CONTEXT + hashlib.sha256(csr_der).digest() + b"\n" + str(signed_at_unix_ms).encode()


def sign_proof(key: object, message: bytes) -> bytes:
    """The current key's signature over MESSAGE (the client side of `verify_renewal_proof`)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    raise TypeError(f"cannot sign a renewal proof with a {type(key).__name__}")


def verify_renewal_proof(
    leaf: x509.Certificate, *, signature: bytes, csr_der: bytes, signed_at_unix_ms: int, now: dt.datetime
) -> None:
    """Raise UNAUTHENTICATED unless LEAF's key signed this CSR recently.

    The time window is this CA's policy (a captured request replayed later
    gets nothing); whether the signature is LEAF's key's is the core's
    (`checks.check_possession`).
    """
    try:
        signed_at = dt.datetime.fromtimestamp(signed_at_unix_ms / 1000, tz=dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise CaRefusal(
            RefusalReason.BAD_PROOF,
            f"signed_at_unix_ms {signed_at_unix_ms} is not a time; send milliseconds since 1970",
        ) from None
    if abs(now - signed_at) > PROOF_MAX_AGE:
        raise CaRefusal(
            RefusalReason.BAD_PROOF,
            f"the renewal proof was signed at {signed_at:%Y-%m-%d %H:%M:%S} UTC, more than"
            f" {int(PROOF_MAX_AGE.total_seconds() // 60)} minutes from the CA's clock; check both clocks",
        )
    problem = checks.check_possession(
        leaf, signature, proof_message(csr_der, signed_at_unix_ms), where="the renewal proof"
    )
    if problem is not None:
        raise CaRefusal(RefusalReason.BAD_PROOF, problem.message.rstrip("."))
