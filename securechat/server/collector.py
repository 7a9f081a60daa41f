"""When the server runs the cyclic garbage collector: after ended streams, from a timer, never in a delivery.

The server raises the collector's young threshold to 50,000
(`app.GC_THRESHOLDS`) so that a busy room's deliveries are not interrupted
hundreds of times a second. The price was memory: ended streams and
aborted calls leave reference cycles (their exceptions' frames and
tracebacks, gRPC's per-call closures, the ended members' queues), and at
50,000 those waited 11-14 minutes for a collection under the soak's churn
while the replicas' RSS rose +15 to +23 MB/h (README "Soak").

`Collector` closes that gap without touching the hot path. The server
counts ended calls (`ServerMetrics.calls_ended`: every chat stream,
however it ended -- refused at open, client gone, cancelled, refused,
shut down -- and every call refused before its handler); a timer task looks at
the count every `CollectionPolicy.check_seconds` and runs `gc.collect(1)`
(generations 0 and 1: what was allocated since the last collection, plus
what survived one) once `every_ends` have ended, or once
`max_wait_seconds` have passed since the first of fewer. Every
`full_every`-th collection is a full one (`gc.collect(2)`), for the
cycles of long-lived streams that were promoted to the oldest generation
before they ended; objects loaded at start-up are frozen (`gc.freeze()`
in `serve_until_signalled`) and never traversed. A server whose streams
do not end never collects from here: the threshold alone applies, as
before. In the soak a young collection took 0.6-0.7 ms and a full one
2-3 ms; with 1,000 open streams a full one takes about 24 ms.

What this does not do: it does not return freed native memory to the
system (glibc keeps it for reuse; `malloc_trim` measured 1-3 MB), and it
does not make a young collection cheaper: its pause grows with the objects
allocated since the previous one (the `securechat_gc_pause_seconds`
counter on `metrics_port` sums the pauses).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectionPolicy:
    every_ends: int = 100
    """A collection after this many ended streams and refused calls."""
    max_wait_seconds: float = 10.0
    """... or this long after the first of fewer ended (so a quiet server gives its memory back too)."""
    check_seconds: float = 0.5
    """How often the timer looks at the count (the looking is one comparison)."""
    full_every: int = 10
    """Every this-many-th collection is a full one (the oldest generation too)."""


@dataclass(frozen=True)
class CollectionStats:
    collections: int
    full_collections: int
    pause_seconds: float
    """Summed over all collections."""
    max_pause_seconds: float
    collected: int
    """Unreachable objects found (gc.collect's return values, summed)."""


class Collector:
    """Runs `gc.collect` when enough streams or calls have ended; see the module docstring."""

    def __init__(
        self,
        ends: Callable[[], int],
        *,
        policy: CollectionPolicy = CollectionPolicy(),
        on_collect: Callable[[float, bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ends = ends
        self._on_collect = on_collect
        self._policy = policy
        self._clock = clock
        self._seen = ends()
        self._first_pending: float | None = None
        self._collections = 0
        self._full = 0
        self._pause = 0.0
        self._max_pause = 0.0
        self._collected = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def stats(self) -> CollectionStats:
        return CollectionStats(
            collections=self._collections,
            full_collections=self._full,
            pause_seconds=self._pause,
            max_pause_seconds=self._max_pause,
            collected=self._collected,
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="securechat-gc")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def collect_if_due(self) -> bool:
        """Collect if `every_ends` have ended, or fewer have for `max_wait_seconds`; True if it collected."""
        pending = self._ends() - self._seen
        if pending <= 0:
            return False
        now = self._clock()
        if self._first_pending is None:
            self._first_pending = now
        if pending < self._policy.every_ends and now - self._first_pending < self._policy.max_wait_seconds:
            return False
        self._seen += pending
        self._first_pending = None
        full = (self._collections + 1) % self._policy.full_every == 0
        started = time.perf_counter()
        collected = gc.collect(2 if full else 1)
        pause = time.perf_counter() - started
        self._collections += 1
        self._full += full
        self._pause += pause
        self._max_pause = max(self._max_pause, pause)
        self._collected += collected
        if self._on_collect is not None:
            self._on_collect(pause, full)
        log.debug(
            "gc: %s collection after %d ended streams/calls: %d unreachable, %.1f ms",
            "full" if full else "young",
            pending,
            collected,
            pause * 1000,
        )
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._policy.check_seconds)
            self.collect_if_due()
