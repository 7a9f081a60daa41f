"""The CA database on the event loop: group commit, a refused job undone alone, never blocked by another writer."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from securechat.ca import database
from securechat.ca.database import CaDatabase, TokenRecord, Transaction


def _token(i: int) -> TokenRecord:
    now = dt.datetime.now(dt.timezone.utc)
    return TokenRecord(hash=f"h{i}", name=f"n{i}", kind="client", sans=(), created_at=now, expires_at=now)


def _stored(path: Path) -> set[str]:
    with sqlite3.connect(path) as other:  # another connection: only what was committed
        return {row[0] for row in other.execute("SELECT hash FROM tokens")}


async def test_jobs_that_arrive_together_share_one_commit(tmp_path: Path) -> None:
    """50 jobs submitted in one turn of the loop: one or two COMMITs, every row durable when its result is seen."""
    db = CaDatabase(tmp_path / "ca.db")
    try:
        await asyncio.gather(*(db.run_async(lambda tx, i=i: tx.add_token(_token(i))) for i in range(50)))
        assert db.jobs == 50 and db.commits <= 2
        assert _stored(tmp_path / "ca.db") == {f"h{i}" for i in range(50)}
    finally:
        db.close()


async def test_jobs_that_arrive_during_a_commit_gather_into_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone job commits alone; jobs arriving while its COMMIT is on its way wait for company (GATHER_JOBS,
    or GATHER_SECONDS at most) and share the next COMMIT, each durable when its result is seen."""
    monkeypatch.setattr(database, "GATHER_JOBS", 3)
    monkeypatch.setattr(database, "GATHER_SECONDS", 60.0)  # only the third job may start the batch
    db = CaDatabase(tmp_path / "ca.db")
    try:
        first = asyncio.ensure_future(db.run_async(lambda tx: tx.add_token(_token(0))))
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the first batch has started: its COMMIT is on the committer thread
        assert db._committing
        second = asyncio.ensure_future(db.run_async(lambda tx: tx.add_token(_token(1))))
        later: list[asyncio.Future[None]] = []
        # Submitted once the first result is seen: the second waits for them.
        first.add_done_callback(
            lambda _: later.extend(
                asyncio.ensure_future(db.run_async(lambda tx, i=i: tx.add_token(_token(i)))) for i in (2, 3)
            )
        )
        await first  # alone, it did not wait: with GATHER_SECONDS at 60 this would take a minute
        assert db.commits == 1 and db.jobs == 1
        await second
        await asyncio.gather(*later)
        assert db.commits == 2 and db.jobs == 4, "jobs 1-3 share one COMMIT (without gathering: 1 alone, then 2-3)"
        assert _stored(tmp_path / "ca.db") == {"h0", "h1", "h2", "h3"}
    finally:
        db.close()


async def test_prepares_run_first_and_a_failed_one_skips_its_job(tmp_path: Path) -> None:
    """A batch runs every job's PREPARE before any job's SQL; a PREPARE that raises is its job's result and the
    job never runs, while its neighbours' jobs commit (twin)."""
    db = CaDatabase(tmp_path / "ca.db")
    order: list[str] = []

    def prepare(i: int) -> None:
        order.append(f"prepare {i}")
        if i == 1:
            raise ValueError("bad CSR 1")

    def job(tx: Transaction, i: int) -> int:
        order.append(f"job {i}")
        tx.add_token(_token(i))
        return i

    try:
        results = await asyncio.gather(
            *(db.run_async(lambda tx, i=i: job(tx, i), prepare=lambda i=i: prepare(i)) for i in range(3)),
            return_exceptions=True,
        )
        assert results[0] == 0 and results[2] == 2
        assert isinstance(results[1], ValueError) and str(results[1]) == "bad CSR 1"
        assert order == ["prepare 0", "prepare 1", "prepare 2", "job 0", "job 2"]
        assert _stored(tmp_path / "ca.db") == {"h0", "h2"}
    finally:
        db.close()


async def test_a_refused_job_is_undone_alone(tmp_path: Path) -> None:
    """In one batch a job that raises rolls back its own writes; its neighbour's are committed (twin)."""
    db = CaDatabase(tmp_path / "ca.db")

    def refused(tx: Transaction) -> None:
        tx.add_token(_token(2))
        raise ValueError("refused")

    try:
        results = await asyncio.gather(
            db.run_async(lambda tx: tx.add_token(_token(1))), db.run_async(refused), return_exceptions=True
        )
        assert results[0] is None and isinstance(results[1], ValueError)
        assert _stored(tmp_path / "ca.db") == {"h1"}
    finally:
        db.close()


async def test_another_writer_does_not_block_the_loop(tmp_path: Path) -> None:
    """While another process's transaction holds the write lock the loop keeps running; the job commits after it."""
    db = CaDatabase(tmp_path / "ca.db")
    other = sqlite3.connect(tmp_path / "ca.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        job = asyncio.ensure_future(db.run_async(lambda tx: tx.add_token(_token(7))))
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not job.done()  # the loop ran on; the job waits for the lock
        other.execute("COMMIT")
        await asyncio.wait_for(job, timeout=5)
        assert _stored(tmp_path / "ca.db") == {"h7"}
    finally:
        other.close()
        db.close()


def test_synchronous_callers_commit_their_own_transaction(tmp_path: Path) -> None:
    """run(): the CLI's way in, committed before it returns; a closed database says so."""
    db = CaDatabase(tmp_path / "ca.db")
    db.run(lambda tx: tx.add_token(_token(3)))
    assert _stored(tmp_path / "ca.db") == {"h3"}
    db.close()
    from securechat.ca.database import DatabaseError

    with pytest.raises(DatabaseError, match="the CA database is closed"):
        db.run(lambda tx: tx.add_token(_token(4)))


def test_the_crl_number_mark_only_goes_up(tmp_path: Path) -> None:
    """raise_crl_number keeps the highest number per signer key: 3 then 2 leaves 3 (twin: 4 raises it)."""
    now = dt.datetime.now(dt.timezone.utc)
    with CaDatabase(tmp_path / "ca.db") as db:
        assert db.run(lambda tx: tx.crl_number("k")) is None
        db.run(lambda tx: tx.raise_crl_number("k", issuer="CN=i", number=3, at=now))
        db.run(lambda tx: tx.raise_crl_number("k", issuer="CN=i", number=2, at=now))
        assert db.run(lambda tx: tx.crl_number("k")) == 3
        db.run(lambda tx: tx.raise_crl_number("k", issuer="CN=i", number=4, at=now))
        assert db.run(lambda tx: tx.crl_number("k")) == 4
        assert db.run(lambda tx: tx.crl_number("other")) is None


def test_a_version_1_database_gains_the_crl_numbers_table(tmp_path: Path) -> None:
    """A database made before crl_numbers existed opens, gains the table and says version 2."""
    path = tmp_path / "ca.db"
    CaDatabase(path).close()
    with sqlite3.connect(path) as old:
        old.execute("DROP TABLE crl_numbers")
        old.execute("PRAGMA user_version=1")
    with CaDatabase(path) as db:
        assert db.run(lambda tx: tx.crl_number("k")) is None
    with sqlite3.connect(path) as reopened:
        assert reopened.execute("PRAGMA user_version").fetchone() == (2,)
