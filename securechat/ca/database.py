"""The online CA's state: issued certificates, revocations and used tokens, in SQLite (WAL).

Durable before a reply. Every change runs as a job on one writer thread,
inside a transaction that is committed (WAL, `synchronous=FULL`: the
commit is on disk when COMMIT returns) before the job's result is handed
back. So a certificate is returned only once its record is durable; a
crash after the commit and before the reply loses nothing (the record is
there; the caller retries: Renew with its still-valid certificate, Enroll
with the same CSR gets the recorded certificate back), and a crash before
the commit loses the certificate too, which nobody has seen.

Group commit: jobs waiting when the writer is free run together in one
transaction, each in its own SAVEPOINT (a refused job rolls back alone),
and share one COMMIT, so under load many issuances share one fsync.

Tokens are consumed in the same job that records the certificate they pay
for: a token is used exactly when a certificate exists for it. Reads that
decide (is this serial revoked, is this token unused) run in the job too,
so a revocation and a renewal are ordered by the database, never raced.

index.json (what `securechat certs` issued offline) is imported: its
certificates become known here (so they can renew online) with their
revocations; the database is the source of truth for what the CA service
issues. `certs list` and index.json do not show online issuance.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from securechat.errors import SecureChatError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_BATCH = 512
"""Jobs sharing one transaction at most: bounds how long the first one waits for the COMMIT."""
BUSY_TIMEOUT_MS = 10_000
"""How long a second writer (`ca revoke`, `ca token` while the service runs) waits for the lock."""

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,          -- lowercase hex, as index.json writes it
    name TEXT NOT NULL,
    kind TEXT NOT NULL,               -- client | server | peer
    sans TEXT NOT NULL,               -- JSON list of 'DNS:..', 'IP:..', 'URI:..'
    not_before TEXT NOT NULL,
    not_after TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    via TEXT NOT NULL,                -- enroll | renew | import
    caller TEXT NOT NULL DEFAULT '',
    renewed_from TEXT,
    spki_sha256 TEXT NOT NULL DEFAULT '',
    chain_pem BLOB,
    revoked_at TEXT,
    reason TEXT,
    issuer TEXT NOT NULL DEFAULT ''   -- RFC 4514 name of the issuing CA; a CRL lists only its own
);
CREATE INDEX IF NOT EXISTS certificates_by_name ON certificates (name);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,            -- SHA-256 of the token; the token itself is never stored
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    sans TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    used_serial TEXT,
    used_spki TEXT
);
"""


class DatabaseError(SecureChatError):
    """The CA database could not be opened or written."""


@dataclass(frozen=True)
class CertRecord:
    """One certificate the CA knows about."""

    serial: str
    name: str
    kind: str
    sans: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    issued_at: dt.datetime
    via: str
    caller: str = ""
    renewed_from: str | None = None
    spki_sha256: str = ""
    chain_pem: bytes | None = None
    revoked_at: dt.datetime | None = None
    reason: str | None = None
    issuer: str = ""

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class TokenRecord:
    hash: str
    name: str
    kind: str
    sans: tuple[str, ...]
    created_at: dt.datetime
    expires_at: dt.datetime
    used_at: dt.datetime | None = None
    used_serial: str | None = None
    used_spki: str | None = None


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.timezone.utc)


def _optional_time(text: str | None) -> dt.datetime | None:
    return parse_iso(text) if text else None


class Transaction:
    """What a job may do; it runs on the writer thread inside the batch's transaction."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    # -- certificates ----------------------------------------------------

    def certificate(self, serial: str) -> CertRecord | None:
        row = self._db.execute("SELECT * FROM certificates WHERE serial = ?", (serial,)).fetchone()
        return _cert_record(row) if row is not None else None

    def certificates(self, name: str | None = None) -> list[CertRecord]:
        if name is None:
            rows = self._db.execute("SELECT * FROM certificates ORDER BY issued_at, serial").fetchall()
        else:
            rows = self._db.execute(
                "SELECT * FROM certificates WHERE name = ? ORDER BY issued_at, serial", (name,)
            ).fetchall()
        return [_cert_record(row) for row in rows]

    def insert_certificate(self, record: CertRecord) -> None:
        self._db.execute(
            "INSERT INTO certificates (serial, name, kind, sans, not_before, not_after, issued_at, via, caller,"
            " renewed_from, spki_sha256, chain_pem, revoked_at, reason, issuer) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                record.serial,
                record.name,
                record.kind,
                json.dumps(list(record.sans)),
                iso(record.not_before),
                iso(record.not_after),
                iso(record.issued_at),
                record.via,
                record.caller,
                record.renewed_from,
                record.spki_sha256,
                record.chain_pem,
                iso(record.revoked_at) if record.revoked_at else None,
                record.reason,
                record.issuer,
            ),
        )

    def revoke(self, serials: Iterable[str], *, at: dt.datetime, reason: str) -> int:
        count = 0
        for serial in serials:
            cursor = self._db.execute(
                "UPDATE certificates SET revoked_at = ?, reason = ? WHERE serial = ? AND revoked_at IS NULL",
                (iso(at), reason, serial),
            )
            count += cursor.rowcount
        return count

    def revoked(self) -> list[CertRecord]:
        rows = self._db.execute(
            "SELECT * FROM certificates WHERE revoked_at IS NOT NULL ORDER BY revoked_at"
        ).fetchall()
        return [_cert_record(row) for row in rows]

    # -- tokens ----------------------------------------------------------

    def add_token(self, record: TokenRecord) -> None:
        self._db.execute(
            "INSERT INTO tokens (hash, name, kind, sans, created_at, expires_at) VALUES (?,?,?,?,?,?)",
            (
                record.hash,
                record.name,
                record.kind,
                json.dumps(list(record.sans)),
                iso(record.created_at),
                iso(record.expires_at),
            ),
        )

    def token(self, token_hash: str) -> TokenRecord | None:
        row = self._db.execute("SELECT * FROM tokens WHERE hash = ?", (token_hash,)).fetchone()
        if row is None:
            return None
        return TokenRecord(
            hash=row["hash"],
            name=row["name"],
            kind=row["kind"],
            sans=tuple(json.loads(row["sans"])),
            created_at=parse_iso(row["created_at"]),
            expires_at=parse_iso(row["expires_at"]),
            used_at=_optional_time(row["used_at"]),
            used_serial=row["used_serial"],
            used_spki=row["used_spki"],
        )

    def use_token(self, token_hash: str, *, at: dt.datetime, serial: str, spki_sha256: str) -> None:
        cursor = self._db.execute(
            "UPDATE tokens SET used_at = ?, used_serial = ?, used_spki = ? WHERE hash = ? AND used_at IS NULL",
            (iso(at), serial, spki_sha256, token_hash),
        )
        if cursor.rowcount != 1:  # the job checked it unused in this same transaction
            raise DatabaseError("token was used meanwhile")


def _cert_record(row: sqlite3.Row) -> CertRecord:
    return CertRecord(
        serial=row["serial"],
        name=row["name"],
        kind=row["kind"],
        sans=tuple(json.loads(row["sans"])),
        not_before=parse_iso(row["not_before"]),
        not_after=parse_iso(row["not_after"]),
        issued_at=parse_iso(row["issued_at"]),
        via=row["via"],
        caller=row["caller"],
        renewed_from=row["renewed_from"],
        spki_sha256=row["spki_sha256"],
        chain_pem=row["chain_pem"],
        revoked_at=_optional_time(row["revoked_at"]),
        reason=row["reason"],
        issuer=row["issuer"],
    )


_Job = tuple[Callable[[Transaction], Any], "concurrent.futures.Future[Any]"]


class CaDatabase:
    """The CA database at PATH (created 0600 on first use), written by one thread with group commit."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._connection = _open(self.path)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self.commits = 0
        """Transactions committed so far (a batch of jobs is one); for the benchmark's report."""
        self._thread = threading.Thread(target=self._write_loop, name="securechat-ca-db", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[Transaction], T]) -> concurrent.futures.Future[T]:
        """Run JOB in the next transaction; its future resolves once that transaction is committed."""
        if self._closed:
            raise DatabaseError(f"{self.path}: the CA database is closed.")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((job, future))
        return future

    def run(self, job: Callable[[Transaction], T]) -> T:
        """`submit` and wait: for the CLI and other synchronous callers."""
        return self.submit(job).result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        self._connection.close()

    def __enter__(self) -> CaDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._run_batch(batch)

    def _run_batch(self, batch: Sequence[_Job]) -> None:
        db = self._connection
        tx = Transaction(db)
        outcomes: list[tuple[concurrent.futures.Future[Any], bool, Any]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for job, future in batch:
                if not future.set_running_or_notify_cancel():
                    continue
                db.execute("SAVEPOINT job")
                try:
                    value = job(tx)
                except Exception as exc:  # a refusal or a failure: this job alone is undone
                    db.execute("ROLLBACK TO job")
                    db.execute("RELEASE job")
                    outcomes.append((future, False, exc))
                else:
                    db.execute("RELEASE job")
                    outcomes.append((future, True, value))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            failure = DatabaseError(
                f"{self.path}: the CA database could not be written ({exc}). Check disk space and permissions."
            )
            log.error("%s", failure)
            for _job, future in batch:
                if future.running():
                    future.set_exception(failure)
            return
        self.commits += 1
        # Only now, with the transaction durable, does anyone see a result.
        for future, ok, value in outcomes:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


def _open(path: Path) -> sqlite3.Connection:
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)  # what was issued to whom is nobody else's business
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise DatabaseError(
            f"{path}: cannot open the CA database ({exc}). Check the path and its permissions."
        ) from exc
    connection.row_factory = sqlite3.Row
    try:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise DatabaseError(
                f"{path}: SQLite refused WAL mode (got {mode}). Put the database on a local file system."
            )
        # FULL: in WAL mode, NORMAL may lose the last commits on power loss; a
        # returned certificate must never be forgotten.
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise DatabaseError(
                f"{path} has schema version {version}, newer than this securechat understands ({SCHEMA_VERSION})."
                " Upgrade securechat."
            )
        connection.executescript(_SCHEMA)
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except sqlite3.DatabaseError as exc:
        connection.close()
        raise DatabaseError(f"{path} is not a CA database or is damaged ({exc}). Restore it from a backup.") from exc
    return connection
