"""The online CA's state: issued certificates, revocations and used tokens, in SQLite (WAL).

Durable before a reply. Every change runs as a job inside a transaction
that is committed (WAL, `synchronous=FULL`: the commit is on disk when
COMMIT returns) before the job's result is handed back. So a certificate
is returned only once its record is durable; a crash after the commit and
before the reply loses nothing (the record is there; the caller retries:
Renew with its still-valid certificate, Enroll with the same CSR gets the
recorded certificate back), and a crash before the commit loses the
certificate too, which nobody has seen.

Group commit: jobs that arrive together run in one transaction, each in
its own SAVEPOINT (a refused job rolls back alone), and share one COMMIT,
so under load many issuances share one fsync (the next batch then waits a
few milliseconds for company: `GATHER_SECONDS`). On the CA service's event
loop (`run_async`) every job that arrives while a COMMIT is on its way to
disk joins the next one, so the batches grow with the load by themselves;
the jobs' SQL runs on the loop and only the COMMIT on a committer thread,
so one batch costs one hand-off between threads and the GIL is not fought
over (see `CaDatabase`). Jobs should be short SQL; what a job needs done
without the database first (a renewal's CSR check and signature) is its
`prepare`, and a batch runs its PREPAREs back to back before the SQL, so
the signatures find the CPU caches warm (the write lock is held meanwhile,
a fraction of a millisecond per job, which another writer waits out).

Why `synchronous=FULL`, not NORMAL: in WAL mode NORMAL skips the fsync of
each COMMIT (only checkpoints sync), which survives a crash of the process
but not of the machine (power loss, kernel panic, a VM reset): commits
acknowledged before the last checkpoint can vanish. A certificate we
returned must never be forgotten -- that is the point of the record -- so
every COMMIT is synced, and group commit is what keeps that affordable.

Tokens are consumed in the same job that records the certificate they pay
for: a token is used exactly when a certificate exists for it. Reads that
decide (is this serial revoked, is this token unused) run in the job too,
so a revocation and a renewal are ordered by the database, never raced.

CRL numbers: `crl_numbers` keeps, per CRL signer key, the highest
cRLNumber this CA published (or found in its crl.pem). A number is
reserved here, committed, before the file is written, so the CA never
publishes a number twice or a lower one, whatever became of crl.pem.

index.json (what `securechat certs` issued offline) is imported: its
certificates become known here (so they can renew online) with their
revocations; the database is the source of truth for what the CA service
issues. `certs list` and index.json do not show online issuance.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from securechat.errors import SecureChatError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
"""2 added `crl_numbers` (a version-1 database gains the table when opened)."""
MAX_BATCH = 512
"""Jobs sharing one transaction at most: bounds how long the first one waits for the COMMIT."""
GATHER_SECONDS = 0.004
"""Under load -- jobs arrived while the last COMMIT was on its way to disk -- the next batch waits
this long at most for GATHER_JOBS jobs before it starts: fewer, larger COMMITs (each costs a
hand-off between threads and an fsync, whatever its size). Alone, a job never waits."""
GATHER_JOBS = 32
BUSY_TIMEOUT_MS = 10_000
"""How long a second writer (`ca revoke`, `ca token` while the service runs) waits for the lock."""
BUSY_RETRY_SECONDS = 0.005
"""How soon the event loop tries again when another writer holds the database."""

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
CREATE TABLE IF NOT EXISTS crl_numbers (
    issuer_key TEXT PRIMARY KEY,      -- tls.checks.key_id of the CRL's signer
    issuer TEXT NOT NULL,             -- its RFC 4514 name, for people
    number INTEGER NOT NULL,          -- the highest cRLNumber this CA published (or saw in crl.pem)
    updated_at TEXT NOT NULL
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

    # -- CRL numbers -----------------------------------------------------

    def crl_number(self, issuer_key: str) -> int | None:
        """The highest cRLNumber recorded for the CRL signer ISSUER_KEY, None if it never published."""
        row = self._db.execute("SELECT number FROM crl_numbers WHERE issuer_key = ?", (issuer_key,)).fetchone()
        return int(row["number"]) if row is not None else None

    def raise_crl_number(self, issuer_key: str, *, issuer: str, number: int, at: dt.datetime) -> None:
        """Record NUMBER for ISSUER_KEY unless a higher one is already recorded: the mark only goes up."""
        self._db.execute(
            "INSERT INTO crl_numbers (issuer_key, issuer, number, updated_at) VALUES (?,?,?,?)"
            " ON CONFLICT (issuer_key) DO UPDATE SET number = excluded.number, issuer = excluded.issuer,"
            " updated_at = excluded.updated_at WHERE excluded.number > crl_numbers.number",
            (issuer_key, issuer, number, iso(at)),
        )

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


_Outcome = tuple[bool, Any]
_Job = tuple[Callable[[Transaction], Any], "asyncio.Future[Any]", Callable[[], object] | None]


class CaDatabase:
    """The CA database at PATH (created 0600 on first use); group commit, durable before any result is seen.

    Two ways in, one connection, one transaction at a time (`_lock`):
    - `run(job)`: synchronous, from any thread (the CLI, `ca revoke`,
      `ca token`, start-up imports): its own transaction, committed before
      it returns.
    - `await run_async(job)`, on the event loop of the CA service: the job
      joins the next batch. A batch runs ON the loop (its SQL is short: a
      lookup, an insert), and only its COMMIT -- the fsync -- goes to a
      committer thread, which holds no GIL while the disk works. Jobs that
      arrive meanwhile wait, and form the next batch once the COMMIT is
      back (waiting up to GATHER_SECONDS more for GATHER_JOBS of them): under
      load the batches grow by themselves (up to MAX_BATCH), and each costs
      one hand-off between threads, not one per job. The loop never waits for another process's lock: a busy
      database (say `ca revoke` writing) is tried again a little later.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._connection = _open(self.path)
        self._lock = threading.Lock()
        self._committer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="securechat-ca-db")
        self._pending: list[_Job] = []
        self._busy_since: float | None = None
        self._committing = False
        self._scheduled = False
        self._gathering: asyncio.TimerHandle | None = None
        self._blocking = True
        """Whether the connection's busy_timeout is BUSY_TIMEOUT_MS (synchronous callers) or 0 (the loop)."""
        self._closed = False
        self.commits = 0
        """Transactions committed so far (a batch of jobs is one); for the benchmark's report."""
        self.jobs = 0
        """Jobs committed so far; jobs / commits is the mean batch size."""

    # -- synchronous callers ---------------------------------------------------

    def run(self, job: Callable[[Transaction], T]) -> T:
        """Run JOB in a transaction of its own and commit it; its result (or exception) once durable."""
        self._check_open()
        with self._lock:
            try:
                self._set_blocking(True)
                self._connection.execute("BEGIN IMMEDIATE")
                [(ok, value)] = self._run_jobs([job])
                self._connection.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc
        self.commits += 1
        self.jobs += 1
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    # -- the event loop ----------------------------------------------------------

    async def run_async(self, job: Callable[[Transaction], T], *, prepare: Callable[[], object] | None = None) -> T:
        """JOB in the next batch; its result (or exception) once that batch is committed.

        PREPARE, if given, is work that needs no database (a renewal's CSR check
        and signature): the batch runs its jobs' PREPAREs one after another
        before their SQL, so that work runs back to back with the CPU caches
        warm. If PREPARE raises, JOB does not run and that exception is its result.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((job, future, prepare))
        if self._gathering is not None and len(self._pending) >= GATHER_JOBS:
            self._gathering.cancel()
            self._gathered(loop)
        else:
            self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop, delay: float = 0.0) -> None:
        # call_soon, not now: the jobs submitted in this turn of the loop go together.
        if self._scheduled or self._committing:
            return
        self._scheduled = True
        if delay:
            loop.call_later(delay, self._start_batch, loop)
        else:
            loop.call_soon(self._start_batch, loop)

    def _start_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        if self._committing or not self._pending:
            return
        if self._closed:
            self._fail_pending(DatabaseError(f"{self.path}: the CA database is closed."))
            return
        if not self._lock.acquire(blocking=False):  # a synchronous caller's transaction: soon done
            self._schedule(loop, BUSY_RETRY_SECONDS)
            return
        try:
            self._set_blocking(False)
            self._connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # another process holds the write lock
            self._lock.release()
            now = loop.time()
            self._busy_since = self._busy_since if self._busy_since is not None else now
            if now - self._busy_since < BUSY_TIMEOUT_MS / 1000:
                self._schedule(loop, BUSY_RETRY_SECONDS)
            else:
                self._busy_since = None
                self._fail_pending(self._failed(exc))
            return
        except BaseException:
            self._lock.release()
            raise
        self._busy_since = None
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        try:
            outcomes = self._run_jobs(_prepared(batch))
        except sqlite3.Error as exc:
            failure = self._failed(exc)
            self._lock.release()
            self._settle(batch, [(False, failure)] * len(batch))
            self._schedule(loop)
            return
        self._committing = True
        committed = asyncio.wrap_future(self._committer.submit(self._commit_and_release), loop=loop)
        committed.add_done_callback(lambda done: self._committed(loop, batch, outcomes, done))

    def _commit_and_release(self) -> None:
        """On the committer thread: COMMIT (and its fsync) without the GIL, then free the connection."""
        try:
            self._connection.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        finally:
            self._lock.release()

    def _committed(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Job],
        outcomes: list[_Outcome],
        done: asyncio.Future[None],
    ) -> None:
        self._committing = False
        failure = done.exception()
        if failure is not None:
            self._settle(batch, [(False, failure)] * len(batch))
        else:
            self.commits += 1
            self.jobs += len(batch)
            # Only now, with the transaction durable, does anyone see a result.
            self._settle(batch, outcomes)
        if self._pending:
            # What arrived during the COMMIT is the next batch; under load it waits a little for company.
            if len(self._pending) < GATHER_JOBS and not self._closed:
                self._scheduled = True
                self._gathering = loop.call_later(GATHER_SECONDS, self._gathered, loop)
            else:
                self._start_batch(loop)

    def _gathered(self, loop: asyncio.AbstractEventLoop) -> None:
        self._gathering = None
        self._start_batch(loop)

    @staticmethod
    def _settle(batch: list[_Job], outcomes: Sequence[_Outcome]) -> None:
        for (_job, future, _prepare), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _fail_pending(self, failure: Exception) -> None:
        batch, self._pending = self._pending, []
        self._settle(batch, [(False, failure)] * len(batch))

    # -- both ----------------------------------------------------------------------

    def _run_jobs(self, jobs: Sequence[Callable[[Transaction], Any] | Exception]) -> list[_Outcome]:
        """Each job in its own SAVEPOINT of the open transaction: a job that raises is undone alone.

        An exception in place of a job (its PREPARE failed) is that job's outcome.
        """
        db = self._connection
        tx = Transaction(db)
        outcomes: list[_Outcome] = []
        try:
            for job in jobs:
                if isinstance(job, Exception):
                    outcomes.append((False, job))
                    continue
                db.execute("SAVEPOINT job")
                try:
                    value = job(tx)
                except Exception as exc:  # a refusal or a failure: this job alone is undone
                    db.execute("ROLLBACK TO job")
                    db.execute("RELEASE job")
                    outcomes.append((False, exc))
                else:
                    db.execute("RELEASE job")
                    outcomes.append((True, value))
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return outcomes

    def _set_blocking(self, blocking: bool) -> None:
        if blocking != self._blocking:
            self._connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS if blocking else 0}")
            self._blocking = blocking

    def _failed(self, exc: sqlite3.Error) -> DatabaseError:
        if self._connection.in_transaction:
            self._connection.execute("ROLLBACK")
        failure = DatabaseError(
            f"{self.path}: the CA database could not be written ({exc}). Check disk space and permissions."
        )
        log.error("%s", failure)
        return failure

    def _check_open(self) -> None:
        if self._closed:
            raise DatabaseError(f"{self.path}: the CA database is closed.")

    def close(self) -> None:
        """Wait for a COMMIT under way, then close; jobs not yet started are not run."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._committer.shutdown(wait=True)
            self._connection.close()

    def __enter__(self) -> CaDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _prepared(batch: Sequence[_Job]) -> list[Callable[[Transaction], Any] | Exception]:
    """The batch's jobs, each PREPARE run first (back to back); a failed one's exception instead of its job."""
    jobs: list[Callable[[Transaction], Any] | Exception] = []
    for job, _future, prepare in batch:
        if prepare is not None:
            try:
                prepare()
            except Exception as exc:
                jobs.append(exc)
                continue
        jobs.append(job)
    return jobs


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
