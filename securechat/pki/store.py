"""The certs directory: where keys and certificates live, and the index of what was issued.

Layout of DIR (every `securechat certs` command takes `--dir DIR`):

    ca.pem  ca-key.pem     the issuing CA (key 0400): a flat CA, or the
                           intermediate of a hierarchy
    root.pem root-key.pem  a hierarchy's root (`init_hierarchy`); the root
                           key signs only intermediates, so it may be moved
                           offline once the intermediate exists
    NAME.pem NAME-key.pem  each leaf (cert 0644, key 0600); under an
                           intermediate NAME.pem is the chain: the leaf,
                           then the intermediate
    index.json             what was issued (0644), see below
    crl.pem                the revocation list (written by revocation work)

Safety rules, all enforced here:
- DIR is created 0700;
- every file is written atomically: a temp file in DIR created with its
  final mode, made durable (fsync, or one syncfs for many files), then
  linked (or, with force, renamed) into place, then DIR fsynced, so a
  crash never leaves a half-written key;
- an existing key or certificate is never replaced unless `force=True`;
  all targets are checked before anything is written;
- nothing of a batch is moved into place until all of it is written:
  `issue_clients` issues and writes temp files in several processes, and
  only once every one succeeded are they made durable and moved. (A name
  that appears between the check and the move still stops a batch part-way;
  files already moved stay, and the index is not updated.)

index.json, format version 1:

    {
      "version": 1,
      "certificates": [
        {"name": "alice", "kind": "client", "serial": "5f3a...",
         "not_before": "2025-01-01T00:00:00Z", "not_after": "2026-01-01T00:00:00Z",
         "sans": ["DNS:alice", "URI:spiffe://example.org/alice"],
         "status": "valid"}
      ]
    }

`kind` is "ca", "server", "client" or "peer" (a hierarchy records its root
as name "root", kind "ca", and each intermediate as name "ca"); `serial` lowercase hex; times are UTC
ISO 8601 with a trailing Z; `sans` are OpenSSL-style `DNS:`/`IP:`/`URI:`
strings. `status` is "valid", "superseded" (the name was reissued with
--force or renewed; the old certificate still verifies until it expires —
revoke it if its key leaked) or "revoked" (listed in crl.pem; such an entry
also has "revoked_at", a time like the others, and "reason", a `certs revoke
--reason` value). Entries are appended, never deleted; a new CA (init
--force) starts a new index. A reader must reject a higher `version` and
ignore fields it does not know.

What is *not* done: locking. Two commands issuing into one DIR at the same
moment may lose one index update (never a key or certificate).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import errno
import json
import os
import secrets
import stat
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509

from securechat.errors import FileExistsRefused, PkiError
from securechat.pki.ca import (
    DEFAULT_CA_COMMON_NAME,
    INTERMEDIATE_DEFAULT_DAYS,
    CertificateAuthority,
    check_ca,
    create_ca,
    create_root_ca,
    issue_intermediate,
)
from securechat.pki.inspect import is_ca_certificate, is_signed_by, subject_alternative_names
from securechat.pki.issue import IssuedCert, issue_client_certs, reissue
from securechat.pki.keys import DEFAULT_KEY_TYPE, PrivateKey
from securechat.pki.names import san_to_text, validate_name
from securechat.pki.pem import (
    certificate_pem,
    load_certificate,
    load_certificates,
    load_private_key,
    private_key_pem,
)
from securechat.pki.revoke import (
    CRL_DEFAULT_DAYS,
    Revocation,
    build_crl,
    crl_number,
    crl_pem,
    crl_signer,
    parse_crl,
    parse_reason,
    reason_of,
)
from securechat.pki.validity import CA_DEFAULT_DAYS, LEAF_DEFAULT_DAYS, utc_now
from securechat.pki.workers import default_workers, run_in_forks, split

INDEX_VERSION = 1
DIR_MODE = 0o700
CERT_MODE = 0o644
KEY_MODE = 0o600
CA_KEY_MODE = 0o400
"""Read-only even for the owner, like mkcert: replacing it takes --force."""


@dataclass(frozen=True)
class IndexEntry:
    """One certificate recorded in index.json."""

    name: str
    kind: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    sans: tuple[str, ...]
    status: str = "valid"
    revoked_at: dt.datetime | None = None
    reason: str | None = None

    @classmethod
    def for_certificate(cls, name: str, kind: str, cert: x509.Certificate) -> IndexEntry:
        return cls(
            name=name,
            kind=kind,
            serial=f"{cert.serial_number:x}",
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            sans=tuple(san_to_text(n) for n in subject_alternative_names(cert)),
        )

    @classmethod
    def for_issued(cls, issued: IssuedCert) -> IndexEntry:
        if not issued.sans:
            return cls.for_certificate(issued.name, issued.kind, issued.cert)
        return cls(
            name=issued.name,
            kind=issued.kind,
            serial=f"{issued.cert.serial_number:x}",
            not_before=issued.cert.not_valid_before_utc,
            not_after=issued.cert.not_valid_after_utc,
            sans=tuple(san_to_text(n) for n in issued.sans),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "serial": self.serial,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "sans": list(self.sans),
            "status": self.status,
        } | (
            {"revoked_at": _iso(self.revoked_at), "reason": self.reason or "unspecified"}
            if self.revoked_at is not None
            else {}
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IndexEntry:
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            serial=str(data["serial"]),
            not_before=_parse_iso(data["not_before"]),
            not_after=_parse_iso(data["not_after"]),
            sans=tuple(str(s) for s in data.get("sans", [])),
            status=str(data.get("status", "valid")),
            revoked_at=_parse_iso(data["revoked_at"]) if data.get("revoked_at") else None,
            reason=str(data["reason"]) if data.get("reason") else None,
        )


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.timezone.utc)


_LIST_DIRECTORY_FROM = 16
"""Checking more names than this for existing files lists DIR once instead."""


@dataclass(frozen=True)
class _Write:
    path: Path
    data: bytes
    mode: int


@dataclass(frozen=True)
class WrittenLeaf:
    """A leaf certificate and its key, now on disk in DIRECTORY and in the index."""

    entry: IndexEntry
    directory: Path
    capped_at_ca_expiry: bool
    """True if the requested validity ran past the CA's expiry and was cut there."""

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def cert_path(self) -> Path:
        return self.directory / _leaf_file_names(self.entry.name)[0]

    @property
    def key_path(self) -> Path:
        return self.directory / _leaf_file_names(self.entry.name)[1]


def _leaf_file_names(name: str) -> tuple[str, str]:
    """NAME's certificate and key file names in DIR: NAME.pem and NAME-key.pem."""
    validate_name(name)
    return f"{name}.pem", f"{name}-key.pem"


@dataclass(frozen=True)
class CertStore:
    """A certs directory. Creating the object touches nothing on disk."""

    directory: Path

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "directory", Path(directory))

    # -- paths -------------------------------------------------------------

    @property
    def ca_cert_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key_path(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def root_cert_path(self) -> Path:
        return self.directory / "root.pem"

    @property
    def root_key_path(self) -> Path:
        return self.directory / "root-key.pem"

    @property
    def has_hierarchy(self) -> bool:
        """True if DIR holds a root (root.pem): ca.pem is then its intermediate."""
        return self.root_cert_path.is_file()

    @property
    def trust_anchor_path(self) -> Path:
        """What servers and clients should trust: root.pem in a hierarchy, else ca.pem."""
        return self.root_cert_path if self.has_hierarchy else self.ca_cert_path

    @property
    def index_path(self) -> Path:
        return self.directory / "index.json"

    @property
    def crl_path(self) -> Path:
        return self.directory / "crl.pem"

    def cert_path(self, name: str) -> Path:
        return self.directory / _leaf_file_names(name)[0]

    def key_path(self, name: str) -> Path:
        return self.directory / _leaf_file_names(name)[1]

    def directory_is_private(self) -> bool:
        """False if DIR exists and group or others may enter or read it."""
        try:
            mode = self.directory.stat().st_mode
        except FileNotFoundError:
            return True
        return stat.S_IMODE(mode) & 0o077 == 0

    # -- the CA ------------------------------------------------------------

    def init_ca(
        self,
        *,
        common_name: str = DEFAULT_CA_COMMON_NAME,
        key_type: str = DEFAULT_KEY_TYPE,
        days: int = CA_DEFAULT_DAYS,
        force: bool = False,
        passphrase: bytes | None = None,
        permitted_dns: tuple[str, ...] = (),
    ) -> CertificateAuthority:
        """Create a CA (as `create_ca` does) and write it here; see `write_ca`.

        Existing CA files are checked first, so a refusal costs no key generation.
        """
        self._refuse_existing([self.ca_cert_path, self.ca_key_path], force=force)
        ca = create_ca(common_name=common_name, key_type=key_type, days=days, permitted_dns=permitted_dns)
        self.write_ca(ca, force=force, passphrase=passphrase)
        return ca

    def write_ca(
        self, ca: CertificateAuthority, *, force: bool = False, passphrase: bytes | None = None
    ) -> tuple[Path, Path]:
        """Write CA to ca.pem / ca-key.pem (key encrypted if PASSPHRASE) and start a new index."""
        self._write_all(
            [
                _Write(self.ca_key_path, private_key_pem(ca.key, password=passphrase), CA_KEY_MODE),
                _Write(self.ca_cert_path, b"".join(certificate_pem(c) for c in (ca.cert, *ca.parents)), CERT_MODE),
            ],
            force=force,
        )
        self._write_index([IndexEntry.for_certificate("ca", "ca", ca.cert)])
        return self.ca_cert_path, self.ca_key_path

    def load_ca(self, *, passphrase: bytes | None = None) -> CertificateAuthority:
        """The CA in this directory, checked: a CA certificate whose key matches."""
        init = f"Run 'securechat certs init --dir {self.directory}' first."
        for path in (self.ca_cert_path, self.ca_key_path):
            if not path.exists():
                raise PkiError(f"{path} not found. {init}")
        bundle = load_certificates(self.ca_cert_path)
        cert = bundle[0]
        if not is_ca_certificate(cert):
            raise PkiError(f"{self.ca_cert_path} is not a CA certificate. {init}")
        key = self._load_ca_key(self.ca_key_path, passphrase)
        # An intermediate's ca.pem may carry the CAs above it (never the
        # root, which peers must already trust): a leaf's chain file gets them.
        parents = tuple(c for c in bundle[1:] if c.issuer != c.subject)
        ca = check_ca(CertificateAuthority(cert=cert, key=key, parents=parents), where=str(self.ca_cert_path))
        if not ca.is_root and self.has_hierarchy:
            root = load_certificate(self.root_cert_path)
            top = (ca.cert, *ca.parents)[-1]
            if not is_signed_by(top, root):
                raise PkiError(
                    f"{self.ca_cert_path} was not signed by the root in {self.root_cert_path}."
                    f" Sign a new intermediate with 'securechat certs intermediate --root-dir ROOT_DIR --dir {self.directory}'."
                )
        return ca

    def _load_ca_key(self, path: Path, passphrase: bytes | None) -> PrivateKey:
        try:
            return load_private_key(path, password=passphrase)
        except PkiError as exc:
            if passphrase is None and isinstance(exc.__cause__, TypeError):  # encrypted, no passphrase
                raise PkiError(f"{path} is encrypted. Pass --ca-passphrase-file FILE with its passphrase.") from exc
            raise

    # -- a hierarchy: root and intermediate ----------------------------------

    def init_hierarchy(
        self,
        *,
        common_name: str = DEFAULT_CA_COMMON_NAME,
        key_type: str = DEFAULT_KEY_TYPE,
        days: int = CA_DEFAULT_DAYS,
        intermediate_days: int = INTERMEDIATE_DEFAULT_DAYS,
        force: bool = False,
        passphrase: bytes | None = None,
        permitted_dns: tuple[str, ...] = (),
    ) -> tuple[CertificateAuthority, CertificateAuthority]:
        """A root (root.pem, root-key.pem) and its issuing intermediate (ca.pem, ca-key.pem); a new index.

        The intermediate has pathLen 0 and, with PERMITTED_DNS, the name
        constraints; both keys are encrypted with PASSPHRASE when given.
        Existing files are checked first, so a refusal costs no key generation.
        """
        self._refuse_existing(
            [self.root_cert_path, self.root_key_path, self.ca_cert_path, self.ca_key_path], force=force
        )
        root = create_root_ca(common_name=common_name, key_type=key_type, days=days)
        intermediate = issue_intermediate(
            root, key_type=key_type, days=min(intermediate_days, days), permitted_dns=permitted_dns
        )
        self._write_all(
            [
                _Write(self.root_key_path, private_key_pem(root.key, password=passphrase), CA_KEY_MODE),
                _Write(self.root_cert_path, certificate_pem(root.cert), CERT_MODE),
                *self._intermediate_writes(intermediate, passphrase),
            ],
            force=force,
        )
        self._write_index(
            [
                IndexEntry.for_certificate("root", "ca", root.cert),
                IndexEntry.for_certificate("ca", "ca", intermediate.cert),
            ]
        )
        return root, intermediate

    def load_root(self, *, passphrase: bytes | None = None) -> CertificateAuthority:
        """The root in this directory (root.pem and root-key.pem), checked."""
        for path in (self.root_cert_path, self.root_key_path):
            if not path.exists():
                raise PkiError(
                    f"{path} not found. Point --root-dir at the directory holding the root's root.pem and"
                    " root-key.pem (made by 'securechat certs init --intermediate')."
                )
        cert = load_certificate(self.root_cert_path)
        if not is_ca_certificate(cert):
            raise PkiError(f"{self.root_cert_path} is not a CA certificate. Point --root-dir at the root's directory.")
        key = self._load_ca_key(self.root_key_path, passphrase)
        return check_ca(CertificateAuthority(cert=cert, key=key), where=str(self.root_cert_path))

    def write_intermediate(
        self, intermediate: CertificateAuthority, root_cert: x509.Certificate, *, passphrase: bytes | None = None
    ) -> None:
        """Install INTERMEDIATE (signed under ROOT_CERT) as this directory's issuing CA.

        ca.pem and ca-key.pem are replaced; root.pem is written if missing and
        must otherwise be ROOT_CERT (a different root would orphan every
        leaf). Leaves issued by the previous intermediate stay valid: their
        chain files carry it. The index records the new "ca"; the old one
        becomes superseded.
        """
        top = (intermediate.cert, *intermediate.parents)[-1]
        if not is_signed_by(top, root_cert):
            raise PkiError("the intermediate was not signed by that root. Sign it with the root in --root-dir.")
        writes = self._intermediate_writes(intermediate, passphrase)
        if self.root_cert_path.exists():
            if load_certificate(self.root_cert_path) != root_cert:
                raise PkiError(
                    f"{self.root_cert_path} is a different root than the one in --root-dir. Use the root that"
                    " this directory's certificates chain to, or a new directory."
                )
        else:
            writes.append(_Write(self.root_cert_path, certificate_pem(root_cert), CERT_MODE))
        self._write_all(writes, force=True)
        entries = [
            replace(e, status="superseded") if e.name == "ca" and e.status == "valid" else e for e in self.entries()
        ]
        if not any(e.name == "root" for e in entries):
            entries.insert(0, IndexEntry.for_certificate("root", "ca", root_cert))
        entries.append(IndexEntry.for_certificate("ca", "ca", intermediate.cert))
        self._write_index(entries)

    def _intermediate_writes(self, intermediate: CertificateAuthority, passphrase: bytes | None) -> list[_Write]:
        bundle = b"".join(certificate_pem(c) for c in (intermediate.cert, *intermediate.parents))
        return [
            _Write(self.ca_key_path, private_key_pem(intermediate.key, password=passphrase), CA_KEY_MODE),
            _Write(self.ca_cert_path, bundle, CERT_MODE),
        ]

    # -- leaves ------------------------------------------------------------

    def write_leaf(
        self, name: str, issued: IssuedCert, *, kind: str | None = None, force: bool = False
    ) -> tuple[Path, Path]:
        """Write ISSUED as NAME.pem / NAME-key.pem and record it; returns (cert_path, key_path)."""
        if kind is not None and kind != issued.kind:
            raise PkiError(
                f"{name}: a {issued.kind} certificate cannot be recorded as {kind}. Issue a {kind} certificate."
            )
        if name != issued.name:
            issued = replace(issued, name=name)
        return self.write_leaves([issued], force=force)[0]

    def refuse_overwrite(self, names: Iterable[str], *, force: bool = False) -> None:
        """Raise FileExistsRefused for the first NAME whose cert or key exists (unless FORCE).

        Lets a caller refuse before spending time generating keys;
        `write_leaves` checks again anyway.
        """
        names = list(names)
        if "root" in names and self.has_hierarchy:
            raise PkiError(f"'root' names the root CA's files in {self.directory}. Choose another certificate name.")
        if force:
            return
        present = self._entry_names() if len(names) > _LIST_DIRECTORY_FROM else None
        for name in names:
            for file_name in _leaf_file_names(name):
                if present is not None:
                    exists = file_name in present
                else:
                    exists = os.path.lexists(self.directory / file_name)
                if exists:
                    raise FileExistsRefused(self.directory / file_name)

    def write_leaves(self, issued: Sequence[IssuedCert], *, force: bool = False) -> list[tuple[Path, Path]]:
        """Write many leaves at once: every target checked first, the index written once."""
        _refuse_repeats([item.name for item in issued])
        self.refuse_overwrite([item.name for item in issued], force=force)
        self._ensure_directory()
        batch = _sync_as_batch(2 * len(issued))
        written = self._commit_leaves(self._stage_leaves(issued, fsync_each=not batch), force=force, syncfs_first=batch)
        return [(leaf.cert_path, leaf.key_path) for leaf in written]

    def issue_clients(
        self,
        ca: CertificateAuthority,
        names: Sequence[str],
        *,
        key_type: str = DEFAULT_KEY_TYPE,
        days: int = LEAF_DEFAULT_DAYS,
        spiffe_trust_domain: str | None = None,
        force: bool = False,
        workers: int | None = None,
    ) -> list[WrittenLeaf]:
        """Issue a client certificate for each of NAMES and write them all, as `write_leaves` does.

        Issuing and writing run in WORKERS processes at once (default: one per
        CPU for a batch big enough to gain from it; see `workers`). The
        result is in the order of NAMES.
        """
        _refuse_repeats(names)
        for name in names:
            validate_name(name)
        self.refuse_overwrite(names, force=force)
        self._ensure_directory()
        batch = _sync_as_batch(2 * len(names))

        def issue_and_stage(part: Sequence[str]) -> list[_StagedLeaf]:
            issued = issue_client_certs(ca, part, key_type=key_type, days=days, spiffe_trust_domain=spiffe_trust_domain)
            return self._stage_leaves(issued, fsync_each=not batch)

        parts = run_in_forks(
            issue_and_stage,
            split(names, default_workers(len(names)) if workers is None else workers),
            abandon=lambda staged: _discard(f for leaf in staged for f in (leaf.key, leaf.cert)),
        )
        return self._commit_leaves([leaf for part in parts for leaf in part], force=force, syncfs_first=batch)

    def _stage_leaves(self, issued: Sequence[IssuedCert], *, fsync_each: bool) -> list[_StagedLeaf]:
        """Each leaf's key and certificate in temp files in DIR; nothing in place yet."""
        directory = os.fspath(self.directory)
        files: list[tuple[str, bytes, int]] = []
        for item in issued:
            cert_name, key_name = _leaf_file_names(item.name)
            files.append((os.path.join(directory, key_name), private_key_pem(item.key), KEY_MODE))
            chain = b"".join(certificate_pem(c) for c in (item.cert, *item.chain))
            files.append((os.path.join(directory, cert_name), chain, CERT_MODE))
        staged = _stage(files, fsync_each=fsync_each)
        return [
            _StagedLeaf(IndexEntry.for_issued(item), item.capped_at_ca_expiry, staged[2 * i], staged[2 * i + 1])
            for i, item in enumerate(issued)
        ]

    def _commit_leaves(self, staged: Sequence[_StagedLeaf], *, force: bool, syncfs_first: bool) -> list[WrittenLeaf]:
        """Move staged leaves into place, make the names durable, and record them in the index."""
        files = [f for leaf in staged for f in (leaf.key, leaf.cert)]
        _place_staged(files, replace_existing=force, syncfs_first=syncfs_first)
        _fsync_directory(self.directory)
        reissued = {leaf.entry.name for leaf in staged}
        entries = [
            replace(e, status="superseded") if e.name in reissued and e.status == "valid" else e for e in self.entries()
        ]
        entries.extend(leaf.entry for leaf in staged)
        self._write_index(entries)
        return [WrittenLeaf(leaf.entry, self.directory, leaf.capped_at_ca_expiry) for leaf in staged]

    # -- renewal and revocation --------------------------------------------

    def renew(
        self, ca: CertificateAuthority, name: str, *, keep_key: bool = False, days: int = LEAF_DEFAULT_DAYS
    ) -> IssuedCert:
        """Re-issue NAME.pem with its identity, SANs and EKU; a new key unless KEEP_KEY.

        The old certificate is recorded as superseded. A name whose latest
        certificate was revoked is refused: re-admitting it is a decision
        for `certs server|client NAME --force`, not for a renewal timer.
        """
        latest = [e for e in self.entries() if e.name == name and e.kind != "ca"]
        if latest and latest[-1].status == "revoked":
            raise PkiError(
                f"{name} was revoked on {_iso(latest[-1].revoked_at or latest[-1].not_before)}; refusing to renew it."
                f" Issue a new certificate deliberately with 'securechat certs server|client {name} --force'."
            )
        old = load_certificate(self.cert_path(name))
        key = load_private_key(self.key_path(name)) if keep_key else None
        issued = reissue(ca, name, old, key=key, days=days)
        self.write_leaves([issued], force=True)
        return issued

    def revoke(
        self,
        ca: CertificateAuthority,
        name: str,
        *,
        reason: str = "unspecified",
        serial: str | None = None,
        crl_days: int = CRL_DEFAULT_DAYS,
    ) -> list[IndexEntry]:
        """Revoke NAME's unexpired certificates (or only SERIAL) and write a new crl.pem.

        Every unexpired certificate of the name is revoked, the current one
        and any superseded one, because each still verifies: revoking a name
        is meant to shut it out. Returns the entries revoked.
        """
        parse_reason(reason)
        wanted = _normalize_serial(serial) if serial is not None else None
        now = utc_now()
        entries = self.entries()
        targets = [
            i
            for i, e in enumerate(entries)
            if e.name == name
            and e.kind != "ca"
            and e.status != "revoked"
            and (e.serial == wanted if wanted is not None else e.not_after > now)
        ]
        if not targets:
            known = [e for e in entries if e.name == name and e.kind != "ca"]
            if not known:
                raise PkiError(f"{name} is not in {self.index_path}. Run 'securechat certs list --dir {self.directory}'.")
            what = f"serial {wanted}" if wanted is not None else "unexpired certificate"
            raise PkiError(f"{name} has no {what} left to revoke (already revoked or expired). Nothing to do.")
        for i in targets:
            entries[i] = replace(entries[i], status="revoked", revoked_at=now, reason=reason)
        self._publish_crl(ca, entries, days=crl_days)
        self._write_index(entries)
        return [entries[i] for i in targets]

    def write_crl(self, ca: CertificateAuthority, *, days: int = CRL_DEFAULT_DAYS) -> x509.CertificateRevocationList:
        """Sign crl.pem again from the index (a new cRLNumber and nextUpdate)."""
        return self._publish_crl(ca, self.entries(), days=days)

    def _publish_crl(
        self, ca: CertificateAuthority, entries: Sequence[IndexEntry], *, days: int
    ) -> x509.CertificateRevocationList:
        return self.publish_crl(
            ca,
            [
                Revocation(serial=int(e.serial, 16), revoked_at=e.revoked_at, reason=e.reason or "unspecified")
                for e in entries
                if e.status == "revoked" and e.revoked_at is not None
            ],
            days=days,
        )

    def publish_crl(
        self, ca: CertificateAuthority, revoked: Sequence[Revocation], *, days: int = CRL_DEFAULT_DAYS
    ) -> x509.CertificateRevocationList:
        """Sign and write crl.pem listing REVOKED plus every entry of the current crl.pem that CA signed.

        Revocation is never undone, so entries carry over: `certs revoke`
        (from index.json) and the online CA (`ca revoke`, from its database)
        can both publish here without dropping each other's revocations. A
        crl.pem signed by another key (an older CA) starts afresh.
        """
        number = 1
        listed = {r.serial for r in revoked}
        carried: list[Revocation] = []
        if self.crl_path.exists():
            previous = parse_crl(self.crl_path.read_bytes(), where=str(self.crl_path))
            number = crl_number(previous) + 1
            if crl_signer(previous, [ca.cert]) is not None:
                carried = [
                    Revocation(serial=e.serial_number, revoked_at=e.revocation_date_utc, reason=reason_of(e))
                    for e in previous
                    if e.serial_number not in listed
                ]
        crl = build_crl(ca, [*revoked, *carried], number=number, days=days)
        self._write_all([_Write(self.crl_path, crl_pem(crl), CERT_MODE)], force=True)
        return crl

    # -- the index ---------------------------------------------------------

    def entries(self) -> list[IndexEntry]:
        """Everything index.json records, oldest first; empty if there is no index yet."""
        try:
            raw = self.index_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise PkiError(f"{self.index_path} could not be read ({exc.strerror}). Check its permissions.") from exc
        try:
            data = json.loads(raw)
            version = data["version"]
            if not isinstance(version, int) or version > INDEX_VERSION:
                raise PkiError(
                    f"{self.index_path} has format version {version}, newer than this securechat"
                    f" understands ({INDEX_VERSION}). Upgrade securechat."
                )
            return [IndexEntry.from_json(item) for item in data["certificates"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PkiError(
                f"{self.index_path} is damaged ({type(exc).__name__}). Restore it from a"
                " backup, or move it"
                " aside to start a new index (certificates on disk stay valid)."
            ) from exc

    def _write_index(self, entries: Iterable[IndexEntry]) -> None:
        # One certificate per line: still readable, and each line goes through
        # json's C encoder (indent= would use the slow pure-Python one).
        lines = ",\n    ".join(json.dumps(e.to_json()) for e in entries)
        body = f"\n    {lines}\n  " if lines else ""
        data = f'{{\n  "version": {INDEX_VERSION},\n  "certificates": [{body}]\n}}\n'.encode()
        self._write_all([_Write(self.index_path, data, CERT_MODE)], force=True)

    # -- writing -----------------------------------------------------------

    def _refuse_existing(self, paths: Iterable[Path], *, force: bool) -> None:
        if force:
            return
        for path in paths:
            if os.path.lexists(path):
                raise FileExistsRefused(path)

    def _entry_names(self) -> set[str] | None:
        """Every name in DIR (one listing instead of a lookup per file); None if DIR cannot be listed."""
        try:
            return set(os.listdir(self.directory))
        except FileNotFoundError:
            return set()
        except OSError:
            return None

    def _ensure_directory(self) -> None:
        if not self.directory.exists():
            self.directory.mkdir(parents=True, mode=DIR_MODE)
            os.chmod(self.directory, DIR_MODE)  # mkdir's mode is filtered by the umask
        elif not self.directory.is_dir():
            raise PkiError(f"{self.directory} is a file, not a directory. Pass --dir with a directory path.")

    def _write_all(self, writes: Sequence[_Write], *, force: bool) -> None:
        """Check every target, write them all atomically, make them durable, then fsync the directory once."""
        self._refuse_existing((w.path for w in writes), force=force)
        self._ensure_directory()
        _write_atomic_many([(w.path, w.data, w.mode) for w in writes], replace_existing=force)
        _fsync_directory(self.directory)


def _refuse_repeats(names: Sequence[str]) -> None:
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise PkiError(f"{', '.join(repeated)} given more than once. Give each name once.")


def _normalize_serial(text: str) -> str:
    """'5F:3A:..' or '0x5f3a..' as index.json writes serials: lowercase hex, no leading zeros."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        return f"{int(cleaned, 16):x}"
    except ValueError:
        raise PkiError(f"serial {text!r} is not hexadecimal. Copy it from 'securechat certs list'.") from None


def replace_files(files: Sequence[tuple[Path, bytes, int]]) -> None:
    """Replace each (PATH, DATA, MODE) atomically, in order, then make the directories durable.

    For renewal: every new file is complete and durable in a temp file
    before the first rename, and the renames follow one another at once, so
    a reader sees the old pair or the new one (keys are written first: a
    reader that catches the gap sees a new key with the old certificate,
    which it refuses and reads again). Keys are created 0600 and never
    readable by others, not even for a moment.
    """
    _write_atomic_many(list(files), replace_existing=True)
    for directory in {path.parent for path, _, _ in files}:
        _fsync_directory(directory)


def write_private_file(path: Path, data: bytes, *, force: bool = False) -> Path:
    """Write DATA to PATH atomically with mode 0600 (an export bundle, say); refuse to overwrite unless FORCE."""
    if not force and os.path.lexists(path):
        raise FileExistsRefused(path)
    _write_atomic(path, data, KEY_MODE, replace_existing=force)
    return path


def _write_atomic(path: Path, data: bytes, mode: int, *, replace_existing: bool) -> None:
    """Write DATA to PATH with MODE so that PATH is either absent, old, or complete."""
    _write_atomic_many([(path, data, mode)], replace_existing=replace_existing)


BATCH_SYNC_MIN_FILES = 16
"""From this many files on, one syncfs(2) replaces an fsync(2) per file (Linux)."""


def _write_atomic_many(files: Sequence[tuple[Path, bytes, int]], *, replace_existing: bool) -> None:
    """Write each (PATH, DATA, MODE) so that every PATH is either absent, old, or complete.

    Every file goes first to a temp file in its directory, created with its
    final mode (a key is never readable by others, not even for a moment).
    Only once all temp files are durable are they linked (or, replacing,
    renamed) into place: a crash never leaves a name pointing at a partial
    file. The caller fsyncs the directory afterwards, so the new names are
    durable before it reports success.

    Durability is one fsync per file for a few files; for many (issuing a
    thousand clients writes two thousand) it is a single syncfs(2) of the
    file system holding them, which writes all their data at once — the
    fsyncs one by one were most of the time `certs client` took.
    """
    batch = _sync_as_batch(len(files))
    _place_staged(_stage(files, fsync_each=not batch), replace_existing=replace_existing, syncfs_first=batch)


def _sync_as_batch(files: int) -> bool:
    return files >= BATCH_SYNC_MIN_FILES and _syncfs is not None


@dataclass(frozen=True)
class _Staged:
    """A file's complete content in a temp file beside PATH, not yet in place.

    Paths are plain strings: staged files of a bulk issue cross a pipe from
    a worker process, and `Path` objects cost more to unpickle than the
    rest of the batch.
    """

    path: str
    temp: str


@dataclass(frozen=True)
class _StagedLeaf:
    entry: IndexEntry
    capped_at_ca_expiry: bool
    key: _Staged
    cert: _Staged


def _stage(files: Sequence[tuple[str | Path, bytes, int]], *, fsync_each: bool) -> list[_Staged]:
    """Write each (PATH, DATA, MODE) to a fresh temp file beside PATH; all removed again on failure."""
    staged: list[_Staged] = []
    current = ""
    umask = _current_umask()
    try:
        for target, data, mode in files:
            path = current = os.fspath(target)
            directory, name = os.path.split(path)
            temp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
            except OSError as exc:
                raise PkiError(
                    f"{directory or '.'} is not writable ({exc.strerror}). Check its permissions or pass another --dir."
                ) from exc
            staged.append(_Staged(path, temp))
            try:
                if umask is None or umask & mode:
                    os.fchmod(fd, mode)  # os.open's mode was filtered by the umask; set it exactly
                os.write(fd, data)
                if fsync_each:
                    os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        _discard(staged)
        raise PkiError(f"{current} could not be written ({exc.strerror}). Check free space and permissions.") from exc
    except BaseException:
        _discard(staged)
        raise
    return staged


def _place_staged(staged: Sequence[_Staged], *, replace_existing: bool, syncfs_first: bool) -> None:
    """Move every staged temp file to its PATH (after one syncfs if SYNCFS_FIRST); leftovers removed on failure."""
    placed = 0
    current = staged[0].path if staged else ""
    try:
        if syncfs_first:
            assert _syncfs is not None
            for directory in {os.path.dirname(item.temp) for item in staged}:
                _syncfs(directory or ".")
        for item in staged:
            current = item.path
            try:
                if replace_existing:
                    os.replace(item.temp, item.path)
                else:
                    _move_no_clobber(item.temp, item.path)
            except FileExistsError:
                raise FileExistsRefused(Path(item.path)) from None
            placed += 1
    except OSError as exc:
        raise PkiError(f"{current} could not be written ({exc.strerror}). Check free space and permissions.") from exc
    finally:
        _discard(staged[placed:])


def _discard(staged: Iterable[_Staged]) -> None:
    for item in staged:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(item.temp)


def _current_umask() -> int | None:
    """The process's umask, read without changing it (Linux); None where it cannot be read."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


def _libc_function(name: str, *argtypes: Any) -> Any | None:
    """NAME from the C library (Linux), taking ARGTYPES and returning an int; None where it is missing."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    return function


def _load_syncfs() -> Callable[[str], None] | None:
    """syncfs(2): flush one file system's data and wait for it."""
    syncfs = _libc_function("syncfs", ctypes.c_int)
    if syncfs is None:
        return None

    def sync_directory_fs(directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            if syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)

    return sync_directory_fs


_syncfs = _load_syncfs()


def _load_rename_no_replace() -> Callable[[str, str], bool] | None:
    """renameat2(2) with RENAME_NOREPLACE: an atomic rename that never replaces."""
    renameat2 = _libc_function("renameat2", ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    if renameat2 is None:
        return None
    at_fdcwd, rename_noreplace = -100, 1

    def rename_no_replace(source: str, target: str) -> bool:
        """True once moved; False if this file system cannot (the caller falls back); FileExistsError if TARGET exists."""
        if renameat2(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), rename_noreplace) == 0:
            return True
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), str(target))
        if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            return False
        raise OSError(err, os.strerror(err), str(target))

    return rename_no_replace


_rename_no_replace = _load_rename_no_replace()


def _move_no_clobber(temp: str, path: str) -> None:
    """Move TEMP to PATH, failing with FileExistsError if PATH appeared meanwhile; TEMP is gone either way on success."""
    if _rename_no_replace is not None and _rename_no_replace(temp, path):
        return
    try:
        os.link(temp, path)  # unlike rename, link never replaces an existing file
    except FileExistsError:
        raise
    except OSError:
        # File systems without hard links: fall back to check-then-rename.
        if os.path.lexists(path):
            raise FileExistsError(path) from None
        os.replace(temp, path)
        return
    os.unlink(temp)


def _fsync_directory(directory: Path) -> None:
    """Make the new directory entries durable (POSIX; a no-op where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
