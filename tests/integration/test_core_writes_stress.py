"""limits.buffered_writes under races, briefly: `benchmarks.write_stress` in subprocesses, zero crashes.

The long run (thousands of iterations; README Performance) is
`python -m benchmarks.write_stress --iterations 5000`. This one is bounded
to 40 s of iterations: server stop with and without grace, client cancel,
killed TCP connections and slow consumers, each racing held writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from securechat import __file__ as package_file

pytestmark = pytest.mark.slow
ROOT = Path(package_file).resolve().parent.parent


def test_races_against_held_writes_crash_nothing_and_reorder_nothing():
    """Hundreds of iterations of every race: every worker exits 0, ids stay in order, nothing hangs, and held sends happened."""
    command = [sys.executable, "-m", "benchmarks.write_stress", "--iterations", "400", "--max-seconds", "40", "--seed", "7"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["crashes"] == 0, report["crash_details"]
    assert report["iterations"] >= 100
    assert report["order_violations"] == 0
    assert report["hangs"] == 0
    assert report["held_sends"] > 10_000
    assert set(report["actions"]) == {"stop-grace", "stop-now", "cancel", "disconnect", "slow", "all"}
    assert report["connections_killed"] > 0
    assert report["streams_ended"].get("RESOURCE_EXHAUSTED", 0) > 0  # slow consumers were aborted mid-write


def test_a_worker_that_crashes_is_counted_with_its_signal():
    """The failing twin: a worker killed by SIGSEGV is a crash in the report, with the signal and its stderr."""
    command = [sys.executable, "-m", "benchmarks.write_stress", "--iterations", "2", "--crash"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    report = json.loads(proc.stdout)
    assert report["crashes"] == 1
    (crash,) = report["crash_details"]
    assert crash["how"] == "SIGSEGV"
    assert "Fatal Python error: Segmentation fault" in crash["stderr_tail"]
