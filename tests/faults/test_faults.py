"""The fault checker in CI: a short, bounded set of seeds over real processes (see fault_run.py).

Each seed is a schedule of faults drawn from its number alone; a seed that
once exposed a bug stays here, so the bug stays fixed. Longer runs, any
seed, any duration: `python -m benchmarks.faults --seed N --duration S`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fault_run import RunOptions, run, schedule

SEEDS = [
    # (seed, mode, seconds of faults): ids say what the seed exercises
    pytest.param(1, "cluster", 20.0, id="cluster-1-mixed"),
    pytest.param(6, "single", 12.0, id="single-6-kills-and-slow-consumers"),
]


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("seed, mode, seconds", SEEDS)
async def test_nothing_lost_nothing_twice(tmp_path: Path, seed: int, mode: str, seconds: float) -> None:
    """Every acknowledged message reaches every member once, in one order; every gap was reported; nothing twice."""
    result = await run(RunOptions(seed=seed, mode=mode, duration=seconds), root=tmp_path)
    assert result.report.ok, result.summary()
    assert result.faults, "the schedule injected no fault"
    assert result.report.sent > 100 and result.report.acknowledged == result.report.sent, result.table()


def test_a_seed_is_its_schedule() -> None:
    """Same seed, same faults (kinds, targets, durations, order); another seed, another schedule."""
    options = RunOptions(seed=7, duration=60)
    assert schedule(options) == schedule(RunOptions(seed=7, duration=60))
    assert schedule(options) != schedule(RunOptions(seed=8, duration=60))
    kinds = {fault.kind for fault in schedule(RunOptions(seed=7, duration=600))}
    assert kinds == {"replica-kill", "replica-stop", "replica-term", "nats-restart", "nats-quorum", "drop", "stall", "slow-consumer"}
