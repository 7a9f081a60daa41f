"""Bulk client issuance (`CertStore.issue_clients`): forked workers, one commit, nothing left behind."""

from __future__ import annotations

import gc
import os
import signal
import stat
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from securechat import pki
from securechat.errors import FileExistsRefused, PkiError
from securechat.pki import workers

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="forked workers need os.fork")


def _leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def _leaf_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("user"))


@needs_fork
def test_two_workers_issue_every_name_once_in_order(pki_store: pki.CertStore, pki_ca: pki.CertificateAuthority) -> None:
    """Two processes: every NAME.pem verifies, keys and serials are all distinct, the index lists NAMES in order."""
    names = [f"user{i}" for i in range(130)]
    written = pki_store.issue_clients(pki_ca, names, workers=2)

    assert [leaf.entry.name for leaf in written] == names
    certs = [pki.load_certificate(leaf.cert_path) for leaf in written]
    keys = [pki.load_private_key(leaf.key_path) for leaf in written]
    assert all(pki.is_signed_by(cert, pki_ca.cert) for cert in certs)
    assert all(pki.key_matches_certificate(key, cert) for key, cert in zip(keys, certs, strict=True))
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    public_keys = {cert.public_key().public_bytes(*spki) for cert in certs}
    assert len(public_keys) == len(names), "two workers generated the same key"
    assert len({cert.serial_number for cert in certs}) == len(names)
    assert all(stat.S_IMODE(leaf.key_path.stat().st_mode) == 0o600 for leaf in written)
    assert all(stat.S_IMODE(leaf.cert_path.stat().st_mode) == 0o644 for leaf in written)
    assert [e.name for e in pki_store.entries() if e.kind == "client"] == names
    assert [e.serial for e in pki_store.entries() if e.kind == "client"] == [f"{c.serial_number:x}" for c in certs]
    assert _leftovers(pki_store.directory) == []


@needs_fork
@pytest.mark.parametrize("bad_slice", ["this process's", "the child's"])
def test_a_failing_slice_writes_nothing_and_leaves_no_temp_files(tmp_path: Path, bad_slice: str) -> None:
    """A name outside the CA's name constraints, in either slice: PkiError naming it, and no file of the batch appears."""
    ca = pki.create_ca(permitted_dns=("example.org",))
    store = pki.CertStore(tmp_path / "certs")
    store.write_ca(ca)
    names = [f"user{i}.example.org" for i in range(128)]
    names[10 if bad_slice == "this process's" else 100] = "user-outside"

    with pytest.raises(PkiError, match=r"'user-outside' is outside the CA's name constraints"):
        store.issue_clients(ca, names, workers=2)
    assert _leaf_files(store.directory) == []
    assert _leftovers(store.directory) == []
    assert [e.kind for e in store.entries()] == ["ca"]


def test_an_existing_name_is_refused_before_any_key_is_made(
    pki_store: pki.CertStore, pki_ca: pki.CertificateAuthority
) -> None:
    """One existing NAME.pem among many: FileExistsRefused for it, nothing else written."""
    pki_store.write_leaf("user50", pki.issue_client_cert(pki_ca, "user50"))
    with pytest.raises(FileExistsRefused, match=r"user50(-key)?\.pem already exists"):
        pki_store.issue_clients(pki_ca, [f"user{i}" for i in range(100)], workers=2)
    assert _leaf_files(pki_store.directory) == ["user50-key.pem", "user50.pem"]


def test_repeated_names_are_refused(pki_store: pki.CertStore, pki_ca: pki.CertificateAuthority) -> None:
    """The same name twice in one batch is an error before anything is issued."""
    with pytest.raises(PkiError, match="user1 given more than once"):
        pki_store.issue_clients(pki_ca, ["user0", "user1", "user1"])
    assert _leaf_files(pki_store.directory) == []


@needs_fork
def test_a_worker_that_dies_is_reported_and_its_siblings_work_undone() -> None:
    """A child that exits without a result: PkiError, and ABANDON runs on the results that did arrive."""
    abandoned: list[list[int]] = []

    def job(part: Sequence[int]) -> list[int]:
        if 99 in part:
            os._exit(3)  # dies like a killed process: no result through the pipe
        return list(part)

    with pytest.raises(PkiError, match=r"a worker process ended without a result \(exit code 3\)"):
        workers.run_in_forks(job, workers.split(range(100), 2), abandon=abandoned.append)
    assert abandoned == [list(range(50))]


@needs_fork
def test_results_come_back_in_slice_order() -> None:
    """Three slices, two of them in children: the results are in the order of the slices."""
    assert workers.run_in_forks(lambda part: [x * 2 for x in part], workers.split(range(7), 3), abandon=print) == [
        [0, 2, 4],
        [6, 8],
        [10, 12],
    ]


@needs_fork
def test_children_run_their_job_without_the_cyclic_gc_and_this_process_keeps_it() -> None:
    """A child never collects garbage it inherited: in this suite one spun for minutes in a gRPC
    completion queue's finalizer, collected while it pickled its result. This process's GC stays on."""
    assert gc.isenabled()
    slices = workers.split(range(4), 2)
    assert workers.run_in_forks(lambda part: [gc.isenabled() for _ in part], slices, abandon=print) == [
        [True, True],
        [False, False],
    ]
    assert gc.isenabled()


@needs_fork
def test_an_interrupted_batch_stops_its_children_and_does_not_wait_for_them() -> None:
    """Interrupted while a child still works (here a SIGALRM that raises, as pytest-timeout's does): the
    exception comes through at once and the child is killed and reaped, not waited for."""

    def job(part: Sequence[int]) -> list[int]:
        if 3 in part:
            time.sleep(30)  # the child, still busy when the interruption comes
        return list(part)

    def interrupt(signum: int, frame: object) -> None:
        raise TimeoutError("interrupted")

    def children() -> set[str]:  # this thread's children, zombies included
        return set(Path(f"/proc/self/task/{threading.get_native_id()}/children").read_text().split())

    before = children()
    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match="interrupted"):
            workers.run_in_forks(job, workers.split(range(4), 2), abandon=print)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < 10
    assert children() == before  # the child is gone and reaped


@pytest.mark.parametrize(
    ("items", "parts", "sizes"),
    [(10, 3, [4, 3, 3]), (2, 5, [1, 1]), (0, 2, []), (128, 2, [64, 64])],
)
def test_split_makes_near_equal_slices_in_order(items: int, parts: int, sizes: list[int]) -> None:
    """Slices differ in size by at most one, none is empty, and together they are ITEMS in order."""
    slices = workers.split(list(range(items)), parts)
    assert [len(s) for s in slices] == sizes
    assert [x for s in slices for x in s] == list(range(items))


def test_small_batches_are_not_forked() -> None:
    """Below MIN_ITEMS_PER_WORKER per extra process, the batch runs here alone."""
    assert workers.default_workers(workers.MIN_ITEMS_PER_WORKER * 2 - 1) == 1
    assert workers.default_workers(10_000) <= workers.MAX_WORKERS


@pytest.mark.parametrize(
    ("cpu_max", "cpus"),
    [("max 100000\n", None), ("100000 100000\n", 1), ("150000 100000\n", 2), ("50000 100000\n", 1), ("garbage\n", None)],
)
def test_a_cgroup_cpu_quota_caps_the_workers(tmp_path: Path, cpu_max: str, cpus: int | None) -> None:
    """cgroup v2 cpu.max: a quota of 1.5 CPUs allows 2 workers; no quota ('max') or no file allows what the CPUs allow."""
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    assert workers.cgroup_cpu_quota(str(path)) == cpus
    assert workers.cgroup_cpu_quota(str(tmp_path / "absent")) is None
