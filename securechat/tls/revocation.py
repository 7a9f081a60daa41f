"""CRL files: read them safely, verify them by key, and never let an older one undo a revocation.

`tls.checks` decides what a verified CRL revokes; this module is about the
*files* and their *history*:

- `read_crl_file(path)`: a regular file only (a FIFO, a device or a
  directory is refused at once, never opened for a blocking read), at most
  MAX_CRL_BYTES. A CRL file may hold several PEM CRLs (one per CA: a root's
  and its intermediate's, or an old and a new CA during a rollover), or one
  DER CRL.
- `load_crls(data, signers, where=...)`: every CRL in the file verified with
  `checks.verify_crl` against SIGNERS -- by key, never by name alone.
- `CrlHighWater`: the highest cRLNumber seen per issuing CA key, persisted
  in a small JSON file so it survives restarts. A CRL with a lower number
  than one already seen from the same CA is a rollback (it would un-revoke)
  and is refused (RFC 5280 5.2.3: the number increases monotonically).

Where the high-water mark lives, and why: next to the CRL, as
`.<crl file name>.seen.json` (for `certs/crl.pem`: `certs/.crl.pem.seen.json`),
because it belongs to that CRL and is backed up with it. When that directory
is not writable (a Kubernetes Secret or ConfigMap volume), it falls back to
`$XDG_STATE_HOME/securechat/` (default `~/.local/state/securechat/`), in a
file named after the CRL's absolute path. `CrlHighWater.path` says which;
the server logs it at start.

Not done: delta CRLs, indirect CRLs, distribution points, OCSP.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from securechat.errors import InputFileError
from securechat.files import CRL_LIMIT, read_regular_file
from securechat.tls.checks import Code, Problem, RevocationList, verify_crl

MAX_CRL_BYTES = CRL_LIMIT
"""A CRL listing a million certificates is about 40 MB; more is not a CRL we should parse."""
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)


class CrlFileError(Exception):
    """A CRL file that is missing, not a regular file or unreadable; `problem` says which and how to fix it."""

    def __init__(self, problem: Problem, *, missing: bool = False) -> None:
        super().__init__(problem.message)
        self.problem = problem
        self.missing = missing


def read_crl_file(path: Path, *, where: str | None = None) -> bytes:
    """The bytes of the CRL file at PATH; CrlFileError (missing=True when absent) otherwise.

    Read by `securechat.files.read_regular_file`: opened non-blocking and
    checked with fstat before any read, so a FIFO planted at the path can
    never freeze the caller; at most MAX_CRL_BYTES.
    """
    shown = where or str(path)
    try:
        return read_regular_file(path, limit=MAX_CRL_BYTES, what="CRL")
    except FileNotFoundError:
        raise CrlFileError(
            Problem(
                Code.CRL_UNREADABLE,
                "crl",
                f"{shown} not found.",
                "Write it with 'securechat certs revoke NAME' or 'securechat certs crl'.",
            ),
            missing=True,
        ) from None
    except IsADirectoryError as exc:
        raise CrlFileError(
            Problem(
                Code.CRL_UNREADABLE,
                "crl",
                f"{shown} is a directory, not a regular file.",
                "Point crl at the crl.pem file written by 'securechat certs revoke'.",
            )
        ) from exc
    except InputFileError as exc:  # a FIFO, a device, a socket, or too large
        raise CrlFileError(Problem(Code.CRL_UNREADABLE, "crl", f"{shown} {exc.problem}", exc.fix)) from exc
    except OSError as exc:
        raise CrlFileError(
            Problem(Code.CRL_UNREADABLE, "crl", f"{shown} cannot be read ({exc.strerror}).", "Fix its permissions.")
        ) from exc


def parse_crls(data: bytes, *, where: str) -> list[x509.CertificateRevocationList] | Problem:
    """Every CRL in DATA: one or more PEM blocks, or one DER CRL."""
    unreadable = Problem(
        Code.CRL_UNREADABLE,
        "crl",
        f"{where} is not a readable CRL.",
        "Write it with 'securechat certs revoke' or 'certs crl'.",
    )
    try:
        if b"-----BEGIN" in data:
            blocks = _PEM_CRL.findall(data)
            if not blocks:
                return unreadable
            return [x509.load_pem_x509_crl(block) for block in blocks]
        return [x509.load_der_x509_crl(data)]
    except ValueError:
        return unreadable


def load_crls(
    data: bytes, signers: Sequence[x509.Certificate], *, where: str, signers_where: str = "the client CA"
) -> list[RevocationList] | Problem:
    """Every CRL in DATA, each verified against SIGNERS (by key); the first Problem if one is unreadable or unsigned."""
    crls = parse_crls(data, where=where)
    if isinstance(crls, Problem):
        return crls
    verified: list[RevocationList] = []
    for crl in crls:
        result = verify_crl(crl, signers, where=where, signers_where=signers_where)
        if isinstance(result, Problem):
            return result
        verified.append(result)
    return verified


@dataclass(frozen=True)
class Seen:
    """The highest CRL number seen from one CA key, and where that CA is named."""

    number: int
    issuer: str


class CrlHighWater:
    """The highest cRLNumber seen per issuing CA key, persisted across restarts (see the module docstring).

    Not thread-safe: one owner (the server's lifecycle, which loads CRLs in
    one worker thread at a time).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: dict[str, Seen] = {}
        self.error: str | None = None
        """Why the file could not be read or written, if it could not (the marks are kept in memory then)."""
        self._read()

    @classmethod
    def for_crl(cls, crl_path: Path) -> CrlHighWater:
        """The high-water file for the CRL at CRL_PATH: next to it if that directory is writable, else the state dir."""
        beside = crl_path.parent / f".{crl_path.name}.seen.json"
        if beside.exists() or os.access(crl_path.parent, os.W_OK):
            return cls(beside)
        state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "securechat"
        digest = hashlib.sha256(str(crl_path.resolve()).encode()).hexdigest()[:16]
        return cls(state / f"crl-{digest}.seen.json")

    def seen(self, issuer_key: str) -> Seen | None:
        return self._seen.get(issuer_key)

    @property
    def issuers(self) -> dict[str, Seen]:
        return dict(self._seen)

    def rollback(self, lists: Sequence[RevocationList]) -> Problem | None:
        """A Problem if a CRL in LISTS is older (lower cRLNumber) than one already seen from the same CA key."""
        for item in lists:
            seen = self._seen.get(item.issuer_key)
            if seen is not None and item.number < seen.number:
                return Problem(
                    Code.CRL_ROLLBACK,
                    "crl",
                    f"{item.source} holds CRL number {item.number} of {item.issuer}, older than number {seen.number}"
                    " already seen: an older CRL would un-revoke certificates.",
                    "Publish the current CRL ('securechat certs crl' signs a new, higher number).",
                )
        return None

    def record(self, lists: Sequence[RevocationList]) -> None:
        """Remember the numbers of LISTS (accepted CRLs) and persist them; failures are kept in `error`."""
        changed = False
        for item in lists:
            seen = self._seen.get(item.issuer_key)
            if seen is None or item.number > seen.number:
                self._seen[item.issuer_key] = Seen(item.number, item.issuer)
                changed = True
        if changed:
            self._write()

    def _read(self) -> None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            entries = raw.get("issuers", {}) if isinstance(raw, dict) else {}
            for key, value in entries.items():
                if isinstance(key, str) and isinstance(value, dict) and isinstance(value.get("number"), int):
                    self._seen[key] = Seen(int(value["number"]), str(value.get("issuer", "")))
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError) as exc:
            self.error = f"cannot read {self.path} ({exc.__class__.__name__})"

    def _write(self) -> None:
        data = {
            "version": 1,
            "about": "highest cRLNumber securechat has seen per issuing CA (key: SHA-256 of its SubjectPublicKeyInfo)",
            "issuers": {key: {"number": s.number, "issuer": s.issuer} for key, s in sorted(self._seen.items())},
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(data, out, indent=2)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self.path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            self.error = None
        except OSError as exc:
            self.error = f"cannot write {self.path} ({exc.strerror or exc.__class__.__name__})"
