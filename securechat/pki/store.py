"""CertStore: a certs directory -- the CA, the leaves, the index, the CRL -- and the actions on it.

The parts, each in its own module:

    layout.py   where things live (ca.pem, NAME.pem, index.json, crl.pem) and their modes
    index.py    the index.json format (IndexEntry, parse_index, render_index)
    atomic.py   atomic, no-clobber, umask-proof writes; 0700 directories
    policy.py   what renewal and revocation mean for the index's entries

This module puts them together: issue into the directory, load the CA,
renew, revoke, write the CRL. Safety rules, all enforced on the way:
- DIR is created 0700 (whatever the umask);
- every file is written atomically (see `atomic.py`), so a crash never
  leaves a half-written key, and a planted symlink is never followed;
- an existing key or certificate is never replaced unless `force=True`;
  all targets are checked before anything is written;
- nothing of a batch is moved into place until all of it is written:
  `issue_clients` issues and writes temp files in several processes, and
  only once every one succeeded are they made durable and moved. (A name
  that appears between the check and the move still stops a batch part-way;
  files already moved stay, and the index is not updated.)
- every file read back (index.json, crl.pem, certificates, keys) is read
  with a size limit and must be a regular file (`securechat.files`).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509

from securechat.errors import FileExistsRefused, PkiError
from securechat.files import CRL_LIMIT, INDEX_LIMIT, read_regular_file
from securechat.pki.atomic import (
    FileWrite,
    Staged,
    discard,
    ensure_private_directory,
    fsync_directory,
    place_staged,
    refuse_existing,
    stage,
    sync_as_batch,
    write_all,
    write_private_file,
)
from securechat.pki.ca import DEFAULT_CA_COMMON_NAME, CertificateAuthority, check_ca, create_ca
from securechat.pki.index import INDEX_VERSION, IndexEntry, parse_index, render_index
from securechat.pki.inspect import days_left, is_ca_certificate
from securechat.pki.issue import IssuedCert, issue_client_certs, reissue
from securechat.pki.keys import DEFAULT_KEY_TYPE
from securechat.pki.layout import CA_KEY_MODE, CERT_MODE, DIR_MODE, KEY_MODE, CertsLayout, leaf_file_names
from securechat.pki.names import validate_name
from securechat.pki.pem import certificate_pem, load_certificate, load_private_key, private_key_pem
from securechat.pki.policy import (
    RenewalCheck,
    crl_revocations,
    mark_revoked,
    refuse_renewing_revoked,
    revocation_targets,
    supersede,
    valid_leaves,
)
from securechat.pki.revoke import CRL_DEFAULT_DAYS, build_crl, crl_number, crl_pem, parse_crl, parse_reason
from securechat.pki.validity import CA_DEFAULT_DAYS, LEAF_DEFAULT_DAYS, utc_now
from securechat.pki.workers import default_workers, run_in_forks, split

__all__ = [
    "CA_KEY_MODE",
    "CERT_MODE",
    "DIR_MODE",
    "INDEX_VERSION",
    "KEY_MODE",
    "CertStore",
    "IndexEntry",
    "WrittenLeaf",
    "write_private_file",
]

_LIST_DIRECTORY_FROM = 16
"""Checking more names than this for existing files lists DIR once instead."""


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
        return self.directory / leaf_file_names(self.entry.name)[0]

    @property
    def key_path(self) -> Path:
        return self.directory / leaf_file_names(self.entry.name)[1]


@dataclass(frozen=True)
class _StagedLeaf:
    entry: IndexEntry
    capped_at_ca_expiry: bool
    key: Staged
    cert: Staged


@dataclass(frozen=True, init=False)
class CertStore(CertsLayout):
    """A certs directory (its paths are `CertsLayout`'s). Creating the object touches nothing on disk."""

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
        refuse_existing([self.ca_cert_path, self.ca_key_path], force=force)
        ca = create_ca(common_name=common_name, key_type=key_type, days=days, permitted_dns=permitted_dns)
        self.write_ca(ca, force=force, passphrase=passphrase)
        return ca

    def write_ca(
        self, ca: CertificateAuthority, *, force: bool = False, passphrase: bytes | None = None
    ) -> tuple[Path, Path]:
        """Write CA to ca.pem / ca-key.pem (key encrypted if PASSPHRASE) and start a new index."""
        self._write_all(
            [
                FileWrite(self.ca_key_path, private_key_pem(ca.key, password=passphrase), CA_KEY_MODE),
                FileWrite(self.ca_cert_path, certificate_pem(ca.cert), CERT_MODE),
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
        cert = load_certificate(self.ca_cert_path)
        if not is_ca_certificate(cert):
            raise PkiError(f"{self.ca_cert_path} is not a CA certificate. {init}")
        try:
            key = load_private_key(self.ca_key_path, password=passphrase)
        except PkiError as exc:
            if passphrase is None and isinstance(exc.__cause__, TypeError):  # encrypted, no passphrase
                raise PkiError(
                    f"{self.ca_key_path} is encrypted. Pass --ca-passphrase-file FILE with its passphrase."
                ) from exc
            raise
        return check_ca(CertificateAuthority(cert=cert, key=key), where=str(self.ca_cert_path))

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
        if force:
            return
        names = list(names)
        present = self._entry_names() if len(names) > _LIST_DIRECTORY_FROM else None
        for name in names:
            for file_name in leaf_file_names(name):
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
        ensure_private_directory(self.directory)
        batch = sync_as_batch(2 * len(issued))
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
        ensure_private_directory(self.directory)
        batch = sync_as_batch(2 * len(names))

        def issue_and_stage(part: Sequence[str]) -> list[_StagedLeaf]:
            issued = issue_client_certs(ca, part, key_type=key_type, days=days, spiffe_trust_domain=spiffe_trust_domain)
            return self._stage_leaves(issued, fsync_each=not batch)

        parts = run_in_forks(
            issue_and_stage,
            split(names, default_workers(len(names)) if workers is None else workers),
            abandon=lambda staged: discard(f for leaf in staged for f in (leaf.key, leaf.cert)),
        )
        return self._commit_leaves([leaf for part in parts for leaf in part], force=force, syncfs_first=batch)

    def _stage_leaves(self, issued: Sequence[IssuedCert], *, fsync_each: bool) -> list[_StagedLeaf]:
        """Each leaf's key and certificate in temp files in DIR; nothing in place yet."""
        directory = os.fspath(self.directory)
        files: list[tuple[str | Path, bytes, int]] = []
        for item in issued:
            cert_name, key_name = leaf_file_names(item.name)
            files.append((os.path.join(directory, key_name), private_key_pem(item.key), KEY_MODE))
            files.append((os.path.join(directory, cert_name), certificate_pem(item.cert), CERT_MODE))
        staged = stage(files, fsync_each=fsync_each)
        return [
            _StagedLeaf(IndexEntry.for_issued(item), item.capped_at_ca_expiry, staged[2 * i], staged[2 * i + 1])
            for i, item in enumerate(issued)
        ]

    def _commit_leaves(self, staged: Sequence[_StagedLeaf], *, force: bool, syncfs_first: bool) -> list[WrittenLeaf]:
        """Move staged leaves into place, make the names durable, and record them in the index."""
        files = [f for leaf in staged for f in (leaf.key, leaf.cert)]
        place_staged(files, replace_existing=force, syncfs_first=syncfs_first)
        fsync_directory(self.directory)
        entries = supersede(self.entries(), (leaf.entry.name for leaf in staged))
        entries.extend(leaf.entry for leaf in staged)
        self._write_index(entries)
        return [WrittenLeaf(leaf.entry, self.directory, leaf.capped_at_ca_expiry) for leaf in staged]

    # -- renewal and revocation --------------------------------------------

    def renew(
        self, ca: CertificateAuthority, name: str, *, keep_key: bool = False, days: int = LEAF_DEFAULT_DAYS
    ) -> IssuedCert:
        """Re-issue NAME.pem with its identity, SANs and EKU; a new key unless KEEP_KEY.

        The old certificate is recorded as superseded. A name whose latest
        certificate was revoked is refused (see `policy.refuse_renewing_revoked`).
        """
        refuse_renewing_revoked(self.entries(), name)
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

        Which certificates are covered is `policy.revocation_targets`.
        Returns the entries revoked.
        """
        parse_reason(reason)
        now = utc_now()
        entries = self.entries()
        targets = revocation_targets(
            entries, name, serial=serial, now=now, index_path=self.index_path, directory=self.directory
        )
        entries = mark_revoked(entries, targets, now=now, reason=reason)
        self._publish_crl(ca, entries, days=crl_days)
        self._write_index(entries)
        return [entries[i] for i in targets]

    def write_crl(self, ca: CertificateAuthority, *, days: int = CRL_DEFAULT_DAYS) -> x509.CertificateRevocationList:
        """Sign crl.pem again from the index (a new cRLNumber and nextUpdate)."""
        return self._publish_crl(ca, self.entries(), days=days)

    def read_crl(self) -> x509.CertificateRevocationList:
        """The CRL in crl.pem, as written by `revoke` or `write_crl`."""
        return parse_crl(self._read_crl_bytes(), where=str(self.crl_path))

    def _read_crl_bytes(self) -> bytes:
        try:
            return read_regular_file(self.crl_path, limit=CRL_LIMIT, what="CRL")
        except FileNotFoundError:
            raise PkiError(f"{self.crl_path} not found. Run 'securechat certs crl --dir {self.directory}'.") from None
        except OSError as exc:
            raise PkiError(f"{self.crl_path} could not be read ({exc.strerror}). Check its permissions.") from exc

    def _publish_crl(
        self, ca: CertificateAuthority, entries: Sequence[IndexEntry], *, days: int
    ) -> x509.CertificateRevocationList:
        number = 1
        if os.path.lexists(self.crl_path):
            number = crl_number(self.read_crl()) + 1
        crl = build_crl(ca, crl_revocations(entries), number=number, days=days)
        self._write_all([FileWrite(self.crl_path, crl_pem(crl), CERT_MODE)], force=True)
        return crl

    def renewal_checks(self, name: str | None, *, within: dt.timedelta) -> list[RenewalCheck]:
        """NAME's certificate (default: the CA and every valid leaf), each with whether it expires WITHIN."""
        if not self.directory.is_dir():
            raise PkiError(f"{self.directory} not found. Run 'securechat certs init --dir {self.directory}' first.")
        if name is not None:
            validate_name(name)
            checks = [(name, self.cert_path(name))]
        else:
            checks = [("ca", self.ca_cert_path)]
            checks += [(e.name, self.cert_path(e.name)) for e in valid_leaves(self.entries())]
        now = utc_now()
        results = []
        for label, path in checks:
            cert = load_certificate(path)
            results.append(
                RenewalCheck(
                    label=label,
                    not_after=cert.not_valid_after_utc,
                    days_left=days_left(cert, now=now),
                    due=cert.not_valid_after_utc - now <= within,
                )
            )
        return results

    # -- the index ---------------------------------------------------------

    def entries(self) -> list[IndexEntry]:
        """Everything index.json records, oldest first; empty if there is no index yet."""
        try:
            raw = read_regular_file(self.index_path, limit=INDEX_LIMIT, what="index")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise PkiError(f"{self.index_path} could not be read ({exc.strerror}). Check its permissions.") from exc
        return parse_index(raw, where=str(self.index_path))

    def current_leaves(self) -> list[IndexEntry]:
        """The current leaves of the index; empty if the index is damaged (so `init --force` can still replace the CA)."""
        try:
            return valid_leaves(self.entries())
        except PkiError:
            return []

    def _write_index(self, entries: Iterable[IndexEntry]) -> None:
        self._write_all([FileWrite(self.index_path, render_index(entries), CERT_MODE)], force=True)

    # -- writing -----------------------------------------------------------

    def _entry_names(self) -> set[str] | None:
        """Every name in DIR (one listing instead of a lookup per file); None if DIR cannot be listed."""
        try:
            return set(os.listdir(self.directory))
        except FileNotFoundError:
            return set()
        except OSError:
            return None

    def _write_all(self, writes: Sequence[FileWrite], *, force: bool) -> None:
        write_all(writes, directory=self.directory, force=force)


def _refuse_repeats(names: Sequence[str]) -> None:
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise PkiError(f"{', '.join(repeated)} given more than once. Give each name once.")
