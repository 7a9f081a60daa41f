"""The files a config names, read once and checked before any port opens.

Reading is done here; every *decision* about the certificates (key match,
validity, end entity, EKU, keyUsage, the chain up to a trust anchor) is
`securechat.tls.checks`', the same code `doctor` and the server's per-peer
check use. The first problem found is raised as a ConfigError naming the
config file, the field, the file and the fix (a reissue command for this
file), with the problem's code in `ConfigError.code`. What comes back is the
PEM bytes gRPC wants plus the parsed leaf certificate, so nothing is read
twice.

Not checked here: revocation (the CRL is the server's job at call time,
`tls.revocation`) and whether the server's certificate covers the client's
target name (gRPC checks that during the handshake; `doctor` explains it).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from securechat.errors import ConfigError, InputFileError
from securechat.files import CERTIFICATE_LIMIT, KEY_LIMIT, read_regular_file
from securechat.tls import checks
from securechat.tls.checks import Code, Problem, Purpose

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

    def error(self, problem: str, fix: str = "", *, code: Code | None = None) -> ConfigError:
        return ConfigError(self.source, self.name, problem, fix, code=code.value if code is not None else None)

    def raise_problem(self, problem: Problem, fix: str | None = None) -> ConfigError:
        return self.error(problem.message, problem.fix if fix is None else fix, code=problem.code)


def load_server_material(config: ServerConfig) -> TlsMaterial | None:
    """Read and check the server's certificate, key and client CA bundle."""
    if config.tls is None:
        return None
    source = config.source.name
    ca_bundle = cas = None
    if config.tls.client_ca is not None:
        ca_bundle, cas = _read_ca_bundle(_Field(source, "tls.client_ca"), config.tls.client_ca)
    chain, key_pem = _read_pair(
        _Field(source, "tls.cert"),
        config.tls.cert,
        _Field(source, "tls.key"),
        config.tls.key,
        purpose=Purpose.SERVER,
        anchors=(cas, config.tls.client_ca, "tls.client_ca"),
    )
    return TlsMaterial(ca_bundle=ca_bundle, cert_chain=_pem(chain), private_key=key_pem, certificate=chain[0])


def load_client_material(config: ClientConfig) -> TlsMaterial | None:
    """Read and check the client's CA bundle and, if set, its certificate and key."""
    if config.tls is None:
        return None
    source = config.source.name
    ca_bundle, cas = _read_ca_bundle(_Field(source, "tls.ca"), config.tls.ca)
    if config.tls.cert is None or config.tls.key is None:
        return TlsMaterial(ca_bundle=ca_bundle)
    chain, key_pem = _read_pair(
        _Field(source, "tls.cert"),
        config.tls.cert,
        _Field(source, "tls.key"),
        config.tls.key,
        purpose=Purpose.CLIENT,
        anchors=(cas, config.tls.ca, "tls.ca"),
    )
    return TlsMaterial(ca_bundle=ca_bundle, cert_chain=_pem(chain), private_key=key_pem, certificate=chain[0])


def _read(field: _Field, path: Path, fix: str, *, limit: int = CERTIFICATE_LIMIT, what: str = "certificate") -> bytes:
    try:
        return read_regular_file(path, limit=limit, what=what)
    except InputFileError as exc:  # a FIFO, a device, or far too large
        raise field.error(f"{shown(path)} {exc.problem}", exc.fix) from exc
    except FileNotFoundError as exc:
        raise field.error(f"{shown(path)} not found.", fix) from exc
    except PermissionError as exc:
        raise field.error(
            f"{shown(path)} cannot be read by this user (uid {os.getuid()}).", "Fix its owner or permissions."
        ) from exc
    except IsADirectoryError as exc:
        raise field.error(f"{shown(path)} is a directory, not a file.", "Point it at the PEM file.") from exc


def _read_ca_bundle(field: _Field, path: Path) -> tuple[bytes, list[x509.Certificate]]:
    data = _read(field, path, "Run 'securechat certs init' to create a CA, or fix the path.")
    cas = checks.parse_certificates(data, where=shown(path))
    if isinstance(cas, Problem):
        raise field.raise_problem(cas, "Point it at the CA's certificate (ca.pem, or root.pem for a hierarchy).")
    problem = checks.check_anchors(cas, where=shown(path))
    if problem is not None:
        raise field.raise_problem(problem)
    return data, cas


def _read_pair(
    cert_field: _Field,
    cert_path: Path,
    key_field: _Field,
    key_path: Path,
    *,
    purpose: Purpose,
    anchors: tuple[list[x509.Certificate] | None, Path | None, str],
) -> tuple[list[x509.Certificate], bytes]:
    name, directory = _guess_name(cert_path)
    issue = f"securechat certs {purpose.value} {name} --dir {directory}"
    cert_data = _read(cert_field, cert_path, f"Run '{issue}' or fix the path.")
    chain = checks.parse_certificates(cert_data, where=shown(cert_path))
    if isinstance(chain, Problem):
        raise cert_field.raise_problem(chain)
    leaf = chain[0]
    key_data = _read(key_field, key_path, f"Run '{issue}' or fix the path.", limit=KEY_LIMIT, what="private key")
    _check_key_mode(key_field, key_path)
    key = checks.parse_private_key(key_data, where=shown(key_path))
    if isinstance(key, Problem):
        raise key_field.raise_problem(key)
    mismatch = checks.check_key(leaf, key, where=shown(key_path), cert_where=shown(cert_path))
    if mismatch is not None:
        raise key_field.raise_problem(
            mismatch, f"Use the key issued with that certificate, or issue both again with '{issue} --force'."
        )
    cas, ca_path, ca_field = anchors
    if cas is None:
        problems = checks.check_leaf(leaf, purpose=purpose, where=shown(cert_path))
    else:
        problems = list(
            checks.verify_chain(
                leaf,
                chain[1:],
                cas,
                purpose=purpose,
                where=shown(cert_path),
                anchors_where=shown(ca_path),
                anchors_field=ca_field,
            ).problems
        )
    if problems:
        problem = problems[0]
        raise (key_field if problem.field == "key" else cert_field).raise_problem(problem, _fix_for(problem, issue))
    return chain, key_data


def _fix_for(problem: Problem, issue: str) -> str | None:
    """This file's own reissue command where it is the fix; None keeps the core's."""
    if problem.depth != 0:
        return None
    if problem.code is Code.EXPIRED:
        return f"Issue a new one with '{issue} --force'."
    if problem.code in (Code.WRONG_EKU, Code.LEAF_IS_CA, Code.KEY_USAGE, Code.NO_SAN):
        return f"Issue one with '{issue}'."
    return None


def _check_key_mode(field: _Field, path: Path) -> None:
    # Group access is allowed: Kubernetes Secret volumes with fsGroup hand keys
    # out as 0440. Access for every other user of the machine is not.
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o007:
        raise field.error(
            f"{shown(path)} is readable or writable by other users (mode {mode:04o}).",
            f"Run 'chmod 600 {shown(path)}'.",
        )


def _pem(chain: list[x509.Certificate]) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in chain)


def shown(path: Path | None) -> str:
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
