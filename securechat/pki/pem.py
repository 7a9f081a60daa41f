"""Read certificates and keys from files, and encode them for writing.

Every failure is a PkiError naming the file; the text never contains PEM
data or a passphrase. What is wrong with a file's contents is decided by
the TLS core (`tls.checks.parse_certificates` / `parse_private_key`), so a
file reads the same here as in a config, `doctor` or the CA.
"""

from __future__ import annotations

import os

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed448

from securechat.errors import InputFileError, PkiError
from securechat.files import CERTIFICATE_LIMIT, KEY_LIMIT, read_regular_file
from securechat.pki.keys import PrivateKey
from securechat.tls import checks


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
    return _certificates(path, allow_der=False)


def load_certificate(path: str | os.PathLike[str]) -> x509.Certificate:
    """The first certificate at PATH, PEM or DER."""
    return _certificates(path, allow_der=True)[0]


def _certificates(path: str | os.PathLike[str], *, allow_der: bool) -> list[x509.Certificate]:
    parsed = checks.parse_certificates(_read(path, "certificate"), where=str(path), allow_der=allow_der)
    if isinstance(parsed, checks.Problem):
        raise PkiError(f"{parsed.message} {parsed.fix}")
    return parsed


def load_private_key(
    path: str | os.PathLike[str], *, password: bytes | None = None, encrypted_fix: str = "Give its passphrase."
) -> PrivateKey:
    """The private key at PATH (PEM), decrypted with PASSWORD if it is encrypted.

    The TLS core decides what is wrong with the file; a key that needs a
    passphrase gets ENCRYPTED_FIX (how this caller takes one), not the
    server's fix.
    """
    parsed = checks.parse_private_key(_read(path, "key"), where=str(path), password=password)
    if isinstance(parsed, checks.Problem):
        fix = encrypted_fix if parsed.code is checks.Code.KEY_ENCRYPTED else parsed.fix
        raise PkiError(f"{parsed.message} {fix}")
    if isinstance(parsed, ed448.Ed448PrivateKey):
        raise PkiError(
            f"{path} holds an Ed448 key, which securechat does not issue with. Use an ECDSA, RSA or Ed25519 key."
        )
    return parsed


def certificate_pem(cert: x509.Certificate) -> bytes:
    """CERT encoded as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def private_key_pem(key: PrivateKey, *, password: bytes | None = None) -> bytes:
    """KEY as PKCS#8 PEM, encrypted with the best available scheme if PASSWORD is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
