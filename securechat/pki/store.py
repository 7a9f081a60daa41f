"""CertStore: a certs directory -- the CA, the leaves, the index, the CRL -- and the actions on it.

The parts, each in its own module:

    layout.py   where things live (ca.pem, root.pem, NAME.pem, index.json, crl.pem) and their modes
    index.py    the index.json format (IndexEntry, parse_index, render_index)
    atomic.py   atomic, no-clobber, umask-proof writes; 0700 directories
    policy.py   what renewal and revocation mean for the index's entries

This module puts them together: issue into the directory, load the CA (a
flat CA, or a root and its intermediate: `init_hierarchy`,
`write_intermediate`), renew, revoke, write the CRL. Safety rules, all enforced on the way:
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
    replace_files,
    stage,
    sync_as_batch,
    unplace,
    write_all,
    write_private_file,
)
from securechat.pki.ca import (
    DEFAULT_CA_COMMON_NAME,
    INTERMEDIATE_DEFAULT_DAYS,
    CertificateAuthority,
    check_ca,
    create_ca,
    create_root_ca,
    issue_intermediate,
)
from securechat.pki.expiry import renew_by
from securechat.pki.index import INDEX_VERSION, IndexEntry, parse_index, render_index
from securechat.pki.inspect import days_left, is_ca_certificate, is_signed_by
from securechat.pki.issue import IssuedCert, issue_client_certs, reissue
from securechat.pki.keys import DEFAULT_KEY_TYPE, PrivateKey
from securechat.pki.layout import CA_KEY_MODE, CERT_MODE, DIR_MODE, KEY_MODE, CertsLayout, leaf_file_names
from securechat.pki.names import validate_name
from securechat.pki.pem import certificate_pem, load_certificate, load_certificates, load_private_key, private_key_pem
from securechat.pki.policy import (
    RenewalCheck,
    carried_revocations,
    crl_revocations,
    mark_revoked,
    refuse_renewing_revoked,
    revocation_targets,
    supersede,
    supersede_ca,
    valid_leaves,
)
from securechat.pki.revoke import CRL_DEFAULT_DAYS, Revocation, build_crl, crl_number, crl_pem, parse_crl, parse_reason
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
    "replace_files",
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
                FileWrite(self.ca_cert_path, _bundle(ca.cert, *ca.parents), CERT_MODE),
            ],
            force=force,
        )
        self._write_index([IndexEntry.for_certificate("ca", "ca", ca.cert)])
        return self.ca_cert_path, self.ca_key_path

    def load_ca(self, *, passphrase: bytes | None = None) -> CertificateAuthority:
        """The issuing CA in this directory, checked: a CA certificate whose key matches (under the root, if any)."""
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
        return load_private_key(
            path, password=passphrase, encrypted_fix="Pass --ca-passphrase-file FILE with its passphrase."
        )

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
        refuse_existing([self.root_cert_path, self.root_key_path, self.ca_cert_path, self.ca_key_path], force=force)
        root = create_root_ca(common_name=common_name, key_type=key_type, days=days)
        intermediate = issue_intermediate(
            root, key_type=key_type, days=min(intermediate_days, days), permitted_dns=permitted_dns
        )
        self._write_all(
            [
                FileWrite(self.root_key_path, private_key_pem(root.key, password=passphrase), CA_KEY_MODE),
                FileWrite(self.root_cert_path, certificate_pem(root.cert), CERT_MODE),
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
            writes.append(FileWrite(self.root_cert_path, certificate_pem(root_cert), CERT_MODE))
        self._write_all(writes, force=True)
        entries = supersede_ca(self.entries())
        if not any(e.name == "root" for e in entries):
            entries.insert(0, IndexEntry.for_certificate("root", "ca", root_cert))
        entries.append(IndexEntry.for_certificate("ca", "ca", intermediate.cert))
        self._write_index(entries)

    def _intermediate_writes(self, intermediate: CertificateAuthority, passphrase: bytes | None) -> list[FileWrite]:
        return [
            FileWrite(self.ca_key_path, private_key_pem(intermediate.key, password=passphrase), CA_KEY_MODE),
            FileWrite(self.ca_cert_path, _bundle(intermediate.cert, *intermediate.parents), CERT_MODE),
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
            files.append((os.path.join(directory, cert_name), _bundle(item.cert, *item.chain), CERT_MODE))
        staged = stage(files, fsync_each=fsync_each)
        return [
            _StagedLeaf(IndexEntry.for_issued(item), item.capped_at_ca_expiry, staged[2 * i], staged[2 * i + 1])
            for i, item in enumerate(issued)
        ]

    def _commit_leaves(self, staged: Sequence[_StagedLeaf], *, force: bool, syncfs_first: bool) -> list[WrittenLeaf]:
        """Move staged leaves into place, make the names durable, and record them in the index."""
        files = [f for leaf in staged for f in (leaf.key, leaf.cert)]
        try:
            existing = self.entries()  # read before anything is in place: a damaged index leaves nothing behind
        except BaseException:
            discard(files)
            raise
        place_staged(files, replace_existing=force, syncfs_first=syncfs_first)
        try:
            fsync_directory(self.directory)
            entries = supersede(existing, (leaf.entry.name for leaf in staged))
            entries.extend(leaf.entry for leaf in staged)
            self._write_index(entries)
        except BaseException:
            if not force:  # new files only (placed without replacing): an issuance that failed leaves nothing
                unplace(files)
            raise
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
        return self.publish_crl(ca, crl_revocations(entries), days=days)

    def publish_crl(
        self, ca: CertificateAuthority, revoked: Sequence[Revocation], *, days: int = CRL_DEFAULT_DAYS
    ) -> x509.CertificateRevocationList:
        """Sign and write crl.pem listing REVOKED plus every entry of the current crl.pem that CA signed.

        See `policy.carried_revocations`: revocation is never undone, so the
        online CA and `certs revoke` can both publish here.
        """
        number = 1
        previous = None
        if os.path.lexists(self.crl_path):
            previous = self.read_crl()
            number = crl_number(previous) + 1
        carried = carried_revocations(previous, ca.cert, (r.serial for r in revoked))
        crl = build_crl(ca, [*revoked, *carried], number=number, days=days)
        self._write_all([FileWrite(self.crl_path, crl_pem(crl), CERT_MODE)], force=True)
        return crl

    def renewal_checks(self, name: str | None, *, within: dt.timedelta | None = None) -> list[RenewalCheck]:
        """NAME's certificate (default: the root, the CA and every valid leaf), each with whether it is due.

        Due past 2/3 of its lifetime (`expiry.renew_by`), or when it expires within WITHIN if that is sooner.
        """
        if not self.directory.is_dir():
            raise PkiError(f"{self.directory} not found. Run 'securechat certs init --dir {self.directory}' first.")
        if name is not None:
            validate_name(name)
            checks = [(name, self.cert_path(name))]
        else:
            checks = [("root", self.root_cert_path)] if self.has_hierarchy else []
            checks += [("ca", self.ca_cert_path)]
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
                    due=now >= renew_by(cert, within=within),
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


def _bundle(*certs: x509.Certificate) -> bytes:
    """CERTS as one PEM file, in order: a leaf (or an intermediate) first, then the CAs above it."""
    return b"".join(certificate_pem(cert) for cert in certs)


def _refuse_repeats(names: Sequence[str]) -> None:
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise PkiError(f"{', '.join(repeated)} given more than once. Give each name once.")
