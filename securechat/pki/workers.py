"""Run one job per slice of a batch on every CPU, in forked processes.

Used by `CertStore.issue_clients` for bulk issuance: key generation and
signing are CPU-bound Python, so a thousand client certificates take about
half as long on two cores. Each slice runs in its own process: one in this
process, the others in children forked after the CA is loaded (so they
inherit it; nothing is imported again). Children hand back their result
pickled through a pipe and leave with `os._exit`, never through the CLI's
exit path.

What is *not* done: threads (the GIL serializes this work), a pool
(nothing is reused between batches), and forking a process that already
runs threads (the job then runs in this process alone).
"""

from __future__ import annotations

import gc
import os
import signal
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from securechat.errors import PkiError

T = TypeVar("T")
R = TypeVar("R")

MIN_ITEMS_PER_WORKER = 64
"""Smaller slices cost more in forking and copying than they save."""

MAX_WORKERS = 8


def default_workers(items: int) -> int:
    """How many processes a batch of ITEMS deserves on this machine (1 = no fork)."""
    if not hasattr(os, "fork") or not _single_threaded():
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, quota)  # a container limited to 1 CPU may still see all of the host's
    return max(1, min(cpus, MAX_WORKERS, items // MIN_ITEMS_PER_WORKER))


def cgroup_cpu_quota(path: str = "/sys/fs/cgroup/cpu.max") -> int | None:
    """The CPUs a cgroup v2 quota allows this process, rounded up; None without a quota."""
    try:
        with open(path, encoding="ascii") as cpu_max:
            limit, period = cpu_max.read().split()[:2]
    except (OSError, ValueError):
        return None
    if limit == "max":
        return None
    try:
        return max(1, -(-int(limit) // int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def _single_threaded() -> bool:
    """True if this process runs one thread; native ones (gRPC core's, say) count too, where Linux shows them."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return threading.active_count() == 1


def split(items: Sequence[T], parts: int) -> list[Sequence[T]]:
    """ITEMS in PARTS contiguous slices of near-equal size, in order; no slice is empty."""
    if not items:
        return []
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    slices, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        slices.append(items[start:end])
        start = end
    return slices


def run_in_forks(
    job: Callable[[Sequence[T]], R], slices: Sequence[Sequence[T]], *, abandon: Callable[[R], None]
) -> list[R]:
    """JOB(slice) for every slice at once; the results in slice order.

    The first slice runs here, the rest in forked children. If any slice
    fails, ABANDON is called on every result that succeeded (to undo what it
    left behind, e.g. temp files) and the first failure is raised as a
    PkiError carrying its message.
    """
    if len(slices) <= 1:
        return [job(s) for s in slices]
    children = [_fork(job, s) for s in slices[1:]]
    outcomes: list[tuple[bool, object]] = []
    try:
        try:
            outcomes.append((True, job(slices[0])))
        finally:
            for child in children:  # reap every child, whatever happened here
                outcomes.append(_collect(child))
    except BaseException:
        _abandon_results(outcomes, abandon)
        raise
    failures = [str(value) for ok, value in outcomes if not ok]
    if failures:
        _abandon_results(outcomes, abandon)
        raise PkiError(failures[0])
    return [value for _, value in outcomes]  # type: ignore[misc]


def _abandon_results(outcomes: list[tuple[bool, object]], abandon: Callable[[R], None]) -> None:
    for ok, value in outcomes:
        if ok:
            abandon(value)  # type: ignore[arg-type]


def _fork(job: Callable[[Sequence[T]], R], items: Sequence[T]) -> tuple[int, int]:
    """Start JOB(ITEMS) in a child; returns (pid, read end of its result pipe)."""
    import pickle  # only a forking batch needs it

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, report, leave without running any exit handler
        # No cyclic GC here: a collection would run the finalizers of garbage
        # inherited from the parent (a process that embeds securechat may hold
        # a gRPC completion queue whose finalizer waits for a poller thread the
        # child does not have, and spins; seen in the test suite). What the job
        # makes is freed at os._exit.
        gc.disable()
        status = 0
        try:
            os.close(read_end)
            try:
                message: tuple[bool, object] = (True, job(items))
            except BaseException as exc:  # reported to the parent, which decides
                message = (False, str(exc) or type(exc).__name__)
                status = 1
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(message, pipe, protocol=pickle.HIGHEST_PROTOCOL)
        finally:
            os._exit(status)
    os.close(write_end)
    return pid, read_end


def _collect(child: tuple[int, int]) -> tuple[bool, object]:
    """Wait for a child's result: (True, result) or (False, error text)."""
    import pickle

    pid, read_end = child
    try:
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
    except BaseException:  # interrupted (Ctrl-C, a timeout): the child's work goes too, or waitpid waits for it
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        _, status = os.waitpid(pid, 0)
    if not data:
        code = os.waitstatus_to_exitcode(status)
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return False, f"a worker process ended without a result ({how}). Try again."
    outcome: tuple[bool, object] = pickle.loads(data)  # noqa: S301 - our own child, through our own pipe
    return outcome
