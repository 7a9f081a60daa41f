"""Read certificates and keys from files, and encode them for writing.

Every failure is a PkiError naming the file; the text never contains PEM
data or a passphrase.
"""

from __future__ import annotations

import os

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from securechat.errors import InputFileError, PkiError
from securechat.files import CERTIFICATE_LIMIT, KEY_LIMIT, read_regular_file
from securechat.pki.keys import PrivateKey


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    limit = KEY_LIMIT if what == "key" else CERTIFICATE_LIMIT
    try:
        return read_regular_file(path, limit=limit, what=what)
    except InputFileError as exc:
        raise PkiError(str(exc)) from exc
    except FileNotFoundError:
        raise PkiError(f"{path} not found. Check the path, or issue the {what} with 'securechat certs'.") from None
    except IsADirectoryError:
        raise PkiError(f"{path} is a directory, not a {what} file. Point to the .pem file inside it.") from None
    except OSError as exc:
        raise PkiError(f"{path} could not be read ({exc.strerror}). Check its permissions.") from exc


def load_certificates(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle at PATH (at least one), in file order."""
    data = _read(path, "certificate")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise PkiError(f"{path} holds no readable PEM certificate. Point to a certificate (.pem) file.") from exc
    return certs


def load_certificate(path: str | os.PathLike[str]) -> x509.Certificate:
    """The first certificate at PATH, PEM or DER."""
    data = _read(path, "certificate")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)[0]
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        if b"PRIVATE KEY-----" in data:
            raise PkiError(f"{path} is a private key, not a certificate. Point to NAME.pem, not NAME-key.pem.") from exc
        raise PkiError(f"{path} is not a readable certificate. Point to a PEM or DER certificate file.") from exc


def load_private_key(path: str | os.PathLike[str], *, password: bytes | None = None) -> PrivateKey:
    """The private key at PATH (PEM), decrypted with PASSWORD if it is encrypted."""
    data = _read(path, "key")
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except TypeError as exc:
        if password is None:
            raise PkiError(f"{path} is encrypted. Give its passphrase.") from exc
        raise PkiError(f"{path} is not encrypted, but a passphrase was given. Drop the passphrase.") from exc
    except ValueError as exc:
        if password is not None and b"ENCRYPTED" in data:
            raise PkiError(f"{path} could not be decrypted: wrong passphrase. Check the passphrase.") from exc
        if b"CERTIFICATE-----" in data:
            raise PkiError(f"{path} is a certificate, not a private key. Point to NAME-key.pem.") from exc
        raise PkiError(f"{path} holds no readable PEM private key. Point to a NAME-key.pem file.") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise PkiError(
            f"{path} holds a {type(key).__name__}, which securechat does not use. Use an ECDSA, RSA or Ed25519 key."
        )
    return key


def certificate_pem(cert: x509.Certificate) -> bytes:
    """CERT encoded as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def private_key_pem(key: PrivateKey, *, password: bytes | None = None) -> bytes:
    """KEY as PKCS#8 PEM, encrypted with the best available scheme if PASSWORD is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
