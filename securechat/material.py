"""The files a config names, read once and checked before any port opens.

Each check raises ConfigError naming the config file, the field, the file
and the fix. What comes back is the PEM bytes gRPC wants plus the parsed
leaf certificate, so nothing is read twice.

Not checked here: revocation (the CRL is the server's job at call time) and
whether the server's certificate covers the client's target name (gRPC
checks that during the handshake; `doctor` explains it).
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from securechat import pki
from securechat.errors import ConfigError, InputFileError
from securechat.files import CERTIFICATE_LIMIT, KEY_LIMIT, read_regular_file

if TYPE_CHECKING:
    from securechat.config import ClientConfig, ServerConfig


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes ready for grpc credentials, and the parsed leaf certificate."""

    ca_bundle: bytes | None
    cert_chain: bytes | None = None
    private_key: bytes | None = None
    certificate: x509.Certificate | None = None


@dataclass(frozen=True)
class _Field:
    source: str
    name: str

    def error(self, problem: str, fix: str = "") -> ConfigError:
        return ConfigError(self.source, self.name, problem, fix)


def load_server_material(config: ServerConfig) -> TlsMaterial | None:
    """Read and check the server's certificate, key and client CA bundle."""
    if config.tls is None:
        return None
    source = config.source.name
    ca_bundle = cas = None
    if config.tls.client_ca is not None:
        ca_bundle, cas = _read_ca_bundle(_Field(source, "tls.client_ca"), config.tls.client_ca)
    chain, leaf, key_pem = _read_pair(
        _Field(source, "tls.cert"), config.tls.cert, _Field(source, "tls.key"), config.tls.key, role="server"
    )
    if cas is not None:
        _check_signed(_Field(source, "tls.cert"), config.tls.cert, chain, cas, config.tls.client_ca, "tls.client_ca")
    return TlsMaterial(ca_bundle=ca_bundle, cert_chain=_pem(chain), private_key=key_pem, certificate=leaf)


def load_client_material(config: ClientConfig) -> TlsMaterial | None:
    """Read and check the client's CA bundle and, if set, its certificate and key."""
    if config.tls is None:
        return None
    source = config.source.name
    ca_bundle, cas = _read_ca_bundle(_Field(source, "tls.ca"), config.tls.ca)
    if config.tls.cert is None or config.tls.key is None:
        return TlsMaterial(ca_bundle=ca_bundle)
    chain, leaf, key_pem = _read_pair(
        _Field(source, "tls.cert"), config.tls.cert, _Field(source, "tls.key"), config.tls.key, role="client"
    )
    _check_signed(_Field(source, "tls.cert"), config.tls.cert, chain, cas, config.tls.ca, "tls.ca")
    return TlsMaterial(ca_bundle=ca_bundle, cert_chain=_pem(chain), private_key=key_pem, certificate=leaf)


def _read(field: _Field, path: Path, fix: str, *, limit: int = CERTIFICATE_LIMIT, what: str = "certificate") -> bytes:
    try:
        return read_regular_file(path, limit=limit, what=what)
    except InputFileError as exc:  # a FIFO, a device, or far too large
        raise field.error(f"{_shown(path)} {exc.problem}", exc.fix) from exc
    except FileNotFoundError as exc:
        raise field.error(f"{_shown(path)} not found.", fix) from exc
    except PermissionError as exc:
        raise field.error(f"{_shown(path)} cannot be read by this user (uid {os.getuid()}).", "Fix its owner or permissions.") from exc
    except IsADirectoryError as exc:
        raise field.error(f"{_shown(path)} is a directory, not a file.", "Point it at the PEM file.") from exc


def _read_ca_bundle(field: _Field, path: Path) -> tuple[bytes, list[x509.Certificate]]:
    data = _read(field, path, "Run 'securechat certs init' to create a CA, or fix the path.")
    cas = _parse_certs(field, path, data)
    for ca in cas:
        if not _is_ca(ca):
            raise field.error(
                f"{_shown(path)} holds a certificate that is not a CA ({ca.subject.rfc4514_string()}).",
                "Point it at the CA certificate (ca.pem), not a server or client certificate.",
            )
    return data, cas


def _read_pair(
    cert_field: _Field, cert_path: Path, key_field: _Field, key_path: Path, *, role: str
) -> tuple[list[x509.Certificate], x509.Certificate, bytes]:
    name, directory = _guess_name(cert_path)
    issue = f"securechat certs {role} {name} --dir {directory}"
    cert_data = _read(cert_field, cert_path, f"Run '{issue}' or fix the path.")
    chain = _parse_certs(cert_field, cert_path, cert_data)
    leaf = chain[0]
    key_data = _read(key_field, key_path, f"Run '{issue}' or fix the path.", limit=KEY_LIMIT, what="private key")
    _check_key_mode(key_field, key_path)
    key = _parse_key(key_field, key_path, key_data)
    if not pki.key_matches_certificate(key, leaf):
        raise key_field.error(
            f"{_shown(key_path)} does not match the certificate {_shown(cert_path)}.",
            f"Use the key issued with that certificate, or issue both again with '{issue} --force'.",
        )
    _check_validity(cert_field, cert_path, leaf, f"{issue} --force")
    usage = ExtendedKeyUsageOID.SERVER_AUTH if role == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    if usage not in pki.extended_key_usages(leaf):
        wanted = "serverAuth" if role == "server" else "clientAuth"
        raise cert_field.error(
            f"{_shown(cert_path)} is not a {role} certificate (its extended key usage lacks {wanted}).",
            f"Issue one with '{issue}'.",
        )
    return chain, leaf, key_data


def _parse_certs(field: _Field, path: Path, data: bytes) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise field.error(f"{_shown(path)} is not a PEM certificate.", "Point it at a file that starts with -----BEGIN CERTIFICATE-----.") from exc
    return certs


def _parse_key(field: _Field, path: Path, data: bytes) -> object:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise field.error(f"{_shown(path)} is encrypted with a passphrase.", "The server and client need an unencrypted key file (mode 0600).") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise field.error(f"{_shown(path)} is not a PEM private key.", "Point it at the NAME-key.pem file issued with the certificate.") from exc


def _check_key_mode(field: _Field, path: Path) -> None:
    # Group access is allowed: Kubernetes Secret volumes with fsGroup hand keys
    # out as 0440. Access for every other user of the machine is not.
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o007:
        raise field.error(f"{_shown(path)} is readable or writable by other users (mode {mode:04o}).", f"Run 'chmod 600 {_shown(path)}'.")


def _check_validity(field: _Field, path: Path, cert: x509.Certificate, reissue: str) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    if now > cert.not_valid_after_utc:
        days = (now - cert.not_valid_after_utc).days
        raise field.error(
            f"{_shown(path)} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC ({days} days ago).",
            f"Issue a new one with '{reissue}'.",
        )
    if now < cert.not_valid_before_utc:
        raise field.error(
            f"{_shown(path)} is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC.",
            "Check this machine's clock, or issue a certificate that is valid now.",
        )


def _check_signed(
    field: _Field, path: Path, chain: list[x509.Certificate], cas: list[x509.Certificate], ca_path: Path | None, ca_field: str
) -> None:
    # A chain file may carry intermediates after the leaf: the last one must
    # have been signed by a CA in the bundle.
    top = chain[-1]
    if any(top == ca or pki.is_signed_by(top, ca) for ca in cas):
        return
    raise field.error(
        f"{_shown(path)} was not signed by the CA in {_shown(ca_path)}.",
        f"Issue it from that CA, or point {ca_field} at the CA that signed it ({top.issuer.rfc4514_string()}).",
    )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _pem(chain: list[x509.Certificate]) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in chain)


def _shown(path: Path | None) -> str:
    """A path as the user would type it: relative to the working directory when under it."""
    if path is None:
        return "(not set)"
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _guess_name(cert_path: Path) -> tuple[str, str]:
    """The NAME and --dir that would re-issue this file, for the fix text."""
    name = cert_path.stem if cert_path.suffix == ".pem" else "NAME"
    try:
        directory = os.path.relpath(cert_path.parent)
    except ValueError:
        directory = str(cert_path.parent)
    return name, directory
