"""Export a leaf: PKCS#12 for browsers, Java and other keystores; a Kubernetes TLS Secret.

The bundle holds the key, the certificate and the CA certificate (so a
Java trust store can be built from it too), encrypted with the password the
user chose: AES-256-CBC under PBKDF2-SHA256 for the key and certificates,
HMAC-SHA256 for integrity. That is PKCS#12 as OpenSSL 3 writes it by
default; Java reads it since 8u301. The legacy RC2/3DES form is not offered.
"""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import PrivateFormat, pkcs12

from securechat.errors import PkiError
from securechat.pki.keys import PrivateKey, key_matches_certificate

MIN_PASSWORD_LENGTH = 8
PBKDF2_ROUNDS = 600_000
"""OWASP's 2023 figure for PBKDF2-HMAC-SHA256."""


def pkcs12_bundle(
    name: str, key: PrivateKey, cert: x509.Certificate, *, ca_cert: x509.Certificate | None, password: bytes
) -> bytes:
    """NAME's key and certificate (plus CA_CERT) as PKCS#12 DER, protected by PASSWORD."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PkiError(
            f"the export password is {len(password)} characters; at least {MIN_PASSWORD_LENGTH} are required."
            " Choose a longer one."
        )
    if not key_matches_certificate(key, cert):
        raise PkiError(f"{name}: the key does not match the certificate. Export a matching pair.")
    encryption = (
        PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(PBKDF2_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password)
    )
    return pkcs12.serialize_key_and_certificates(
        name.encode(), key, cert, [ca_cert] if ca_cert is not None else None, encryption
    )


def kubernetes_tls_secret(
    *, secret_name: str, namespace: str | None, cert_pem: bytes, key_pem: bytes, ca_pem: bytes
) -> dict[str, object]:
    """A kubernetes.io/tls Secret holding tls.crt, tls.key and ca.crt -- the file names cert-manager writes."""
    metadata: dict[str, str] = {"name": secret_name}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(cert_pem).decode(),
            "tls.key": base64.b64encode(key_pem).decode(),
            "ca.crt": base64.b64encode(ca_pem).decode(),
        },
    }
