"""Key types: generate a private key, name a public key, pick the signature hash."""

from __future__ import annotations

from typing import Literal, TypeAlias, get_args

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import Certificate

from securechat.errors import PkiError
from securechat.tls import checks

KeyType: TypeAlias = Literal["ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"]
KEY_TYPES: tuple[str, ...] = get_args(KeyType)
DEFAULT_KEY_TYPE: KeyType = "ecdsa-p256"

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
"""The private keys securechat issues and signs with."""

_RSA_PUBLIC_EXPONENT = 65537


def generate_private_key(key_type: str = DEFAULT_KEY_TYPE) -> PrivateKey:
    """Generate a fresh private key of KEY_TYPE (one of KEY_TYPES)."""
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type.startswith("rsa-") and key_type in KEY_TYPES:
        return rsa.generate_private_key(public_exponent=_RSA_PUBLIC_EXPONENT, key_size=int(key_type[4:]))
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise PkiError(f"unknown key type {key_type!r}. Use one of: {', '.join(KEY_TYPES)}.")


def key_type_name(public_key: object) -> str:
    """Name a public key the way `--key-type` does, e.g. 'ecdsa-p256' or 'rsa-3072'."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = {"secp256r1": "p256", "secp384r1": "p384", "secp521r1": "p521"}
        return f"ecdsa-{curve.get(public_key.curve.name, public_key.curve.name)}"
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa-{public_key.key_size}"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    return type(public_key).__name__


def signature_hash(signing_key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | None:
    """The digest to sign with: matched to the curve size; None for Ed25519 (it hashes itself)."""
    if isinstance(signing_key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(signing_key, ec.EllipticCurvePrivateKey) and signing_key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def key_matches_certificate(key: PrivateKey, cert: Certificate) -> bool:
    """True if KEY is the private half of CERT's public key (`tls.checks.key_matches`: one definition)."""
    return checks.key_matches(key, cert)
