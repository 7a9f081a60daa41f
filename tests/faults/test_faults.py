"""The fault checker in CI: a short, bounded set of seeds over real processes (see fault_run.py).

Each seed is a schedule of faults drawn from its number alone; a seed that
once exposed a bug stays here, so the bug stays fixed. Longer runs, any
seed, any duration: `python -m benchmarks.faults --seed N --duration S`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fault_run import RunOptions, run, schedule

SOAK_FAULTS = ("drop", "stall", "slow-consumer", "replica-stop", "nats-restart", "nats-quorum")  # benchmarks/soak.py's

SEEDS = [
    # (seed, mode, seconds of faults); the ids say what each seed exercises and what it found.
    # Seed 10 (cluster) found three bugs, all fixed: a client whose rooms come from separate
    # JetStream subscriptions advanced one room's resume mark by another room's later event
    # and skipped events after a slow-consumer cut; resends were skipped while echoes arrived
    # (the list was walked as it shrank); a resume's history read from a lagging JetStream
    # replica came back short. It needs its quorum losses, so it runs for 30 s.
    pytest.param(10, "cluster", 30.0, (), id="cluster-10-quorum-losses-slow-consumer-found-3-bugs"),
    pytest.param(6, "single", 15.0, (), id="single-6-kills-and-slow-consumers"),
    # Seed 3 with the soak's faults (benchmarks/soak.py) found a fourth: after a quorum loss a
    # resume's history came back short of what the replica's own feed had delivered (7 events
    # lost, 140 s into its 30-minute run). Its schedule's opening stays here; the bug itself is
    # pinned deterministically by tests/broker/test_short_history.py.
    pytest.param(3, "cluster", 8.0, SOAK_FAULTS, id="cluster-3-soak-faults-found-short-history"),
]


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("seed, mode, seconds, kinds", SEEDS)
async def test_nothing_lost_nothing_twice(tmp_path: Path, seed: int, mode: str, seconds: float, kinds: tuple[str, ...]) -> None:
    """Every acknowledged message reaches every member once, in one order; every gap was reported; nothing twice."""
    result = await run(RunOptions(seed=seed, mode=mode, duration=seconds, kinds=kinds), root=tmp_path)
    assert result.report.ok, result.summary()
    assert result.faults, "the schedule injected no fault"
    assert result.report.sent > 100, result.table()


def test_a_seed_is_its_schedule() -> None:
    """Same seed, same faults (kinds, targets, durations, order); another seed, another schedule."""
    options = RunOptions(seed=7, duration=60)
    assert schedule(options) == schedule(RunOptions(seed=7, duration=60))
    assert schedule(options) != schedule(RunOptions(seed=8, duration=60))
    kinds = {fault.kind for fault in schedule(RunOptions(seed=7, duration=600))}
    assert kinds == {"replica-kill", "replica-stop", "replica-term", "nats-restart", "nats-quorum", "drop", "stall", "slow-consumer"}
