"""What the online CA allows: CSRs against a grant, renewal proofs, lifetimes. Decisions, as data.

- A CSR must be well-formed, self-signed (its signature proves the
  requester holds the new key) and carry a key securechat issues for
  (ECDSA P-256/P-384, RSA 2048+, Ed25519).
- Enrolment: the CSR may name no more than the token allows. Its subject CN,
  if present, must be the token's name; each SAN it asks for must be one
  of the token's. The certificate carries the token's name and SANs.
- Renewal: the identity, kind and SANs come from the current certificate's
  record, whatever the CSR asks; the new key must differ from the old one.
- The current certificate is judged by the chain check (`check_chain`),
  and a caller that could not present it over mTLS proves its key with a
  signature over the CSR and a time (`verify_renewal_proof`).

Not decided here: whether a token is unused or a serial revoked (the
database decides that, in the transaction that issues).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from securechat.ca.refusals import CaRefusal, RefusalReason
from securechat.config.ca import Lifetimes
from securechat.pki import CertificatePublicKey, san_to_text

PROOF_CONTEXT = b"securechat.ca.v1.Renew\n"
PROOF_MAX_AGE = dt.timedelta(minutes=5)
"""A renewal proof older (or further in the future) than this is refused: a captured request
replayed later gets nothing."""
MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class CsrRequest:
    """A checked CSR: its key, and the names it asks for."""

    csr: x509.CertificateSigningRequest
    public_key: CertificatePublicKey
    common_name: str | None
    sans: tuple[x509.GeneralName, ...]
    der: bytes

    @property
    def spki_sha256(self) -> str:
        return spki_fingerprint(self.public_key)


def spki_fingerprint(public_key: CertificatePublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def parse_csr(pem: bytes) -> CsrRequest:
    """The CSR in PEM, checked: readable, self-signed, a key type securechat issues for."""
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
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        sans = tuple(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = ()
    return CsrRequest(
        csr=csr,
        public_key=public_key,
        common_name=str(names[0].value) if names else None,
        sans=sans,
        der=csr.public_bytes(serialization.Encoding.DER),
    )


def check_enrolment(request: CsrRequest, *, name: str, allowed: Sequence[x509.GeneralName]) -> None:
    """Raise PERMISSION_DENIED naming what differs if the CSR asks for more than NAME and ALLOWED."""
    if request.common_name is not None and request.common_name != name:
        raise CaRefusal(
            RefusalReason.NAME_MISMATCH,
            f"the CSR asks for the name {request.common_name!r}, but the token is for {name!r}",
        )
    extra = [san for san in request.sans if san not in allowed]
    if extra:
        raise CaRefusal(
            RefusalReason.SAN_NOT_ALLOWED,
            f"the CSR asks for {', '.join(san_to_text(s) for s in extra)}, which the token for {name!r} does not allow"
            f" (it allows: {', '.join(san_to_text(s) for s in allowed)})",
        )


def lifetime_for(kind: str, lifetimes: Lifetimes) -> dt.timedelta:
    return lifetimes.of(kind)


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
    """Raise UNAUTHENTICATED unless LEAF's key signed this CSR recently."""
    signed_at = dt.datetime.fromtimestamp(signed_at_unix_ms / 1000, tz=dt.timezone.utc)
    if abs(now - signed_at) > PROOF_MAX_AGE:
        raise CaRefusal(
            RefusalReason.BAD_PROOF,
            f"the renewal proof was signed at {signed_at:%Y-%m-%d %H:%M:%S} UTC, more than"
            f" {int(PROOF_MAX_AGE.total_seconds() // 60)} minutes from the CA's clock; check both clocks",
        )
    message = proof_message(csr_der, signed_at_unix_ms)
    public_key = leaf.public_key()
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, message)
        else:
            raise InvalidSignature
    except InvalidSignature:
        raise CaRefusal(
            RefusalReason.BAD_PROOF, "the renewal proof is not a signature by the current certificate's key"
        ) from None


def check_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    *,
    kind: str,
    now: dt.datetime,
) -> list[str]:
    """Problems with LEAF's path to ANCHORS at NOW, as the kind's EKU needs; [] when it verifies.

    TODO(merge): tls.checks — replace with the tls package's chain check
    (branch tlscore) once it lands; this adapter only calls cryptography's
    path validator (chain to an anchor, validity of every certificate, the
    kind's EKU, name constraints).
    """
    if leaf.not_valid_after_utc <= now:
        return [f"expired at {leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"]
    if leaf.not_valid_before_utc > now:
        return [f"not valid until {leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"]
    builder = verification.PolicyBuilder().store(verification.Store(list(anchors))).time(now)
    try:
        if kind == "server":
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            subject = next(iter(sans), None)
            if not isinstance(subject, x509.DNSName | x509.IPAddress):
                return ["a server certificate without a DNS or IP SAN"]
            builder.build_server_verifier(subject).verify(leaf, list(intermediates))
        else:
            builder.build_client_verifier().verify(leaf, list(intermediates))
    except (verification.VerificationError, x509.ExtensionNotFound, ValueError) as exc:
        return [f"does not chain to the CA's trust anchor ({exc})"]
    return []
