"""Long runs of the fault checker (tests/faults): any seed, any duration, a table of what happened.

    .venv/bin/python -m benchmarks.faults --seed 7 --duration 600 --mode cluster
    .venv/bin/python -m benchmarks.faults --seed 7 --duration 120 --mode single --json result.json

Prints the table (faults injected, messages sent / acknowledged / delivered,
duplicates, losses, unreported gaps, p99 time to recover per fault kind)
and the violations, if any; exits 1 when the checker found one. The run's
logs (every client's, every process's) stay in --keep DIR when given.
A failing seed is replayed from its number: the schedule depends on it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "faults"))

from fault_run import CLUSTER_FAULTS, SINGLE_FAULTS, RunOptions, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults (default 60)")
    parser.add_argument("--mode", choices=("cluster", "single"), default="cluster")
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--rooms", type=int, default=3)
    parser.add_argument("--kinds", default="", help=f"comma-separated fault kinds; cluster: {','.join(CLUSTER_FAULTS)}; single: {','.join(SINGLE_FAULTS)}")
    parser.add_argument("--keep", type=Path, help="keep the run's logs in this directory")
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    options = RunOptions(
        seed=args.seed, mode=args.mode, duration=args.duration, clients=args.clients, rooms=args.rooms,
        kinds=tuple(kind for kind in args.kinds.split(",") if kind),
    )
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(run(options, root=args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="securechat-faults-") as raw:
            result = asyncio.run(run(options, root=Path(raw)))
    print(result.table())
    if result.report.violations:
        print("\nviolations (first 30):")
        for line in result.report.violations[:30]:
            print(f"  {line}")
    if args.json:
        args.json.write_text(json.dumps(result.as_dict(), indent=1), encoding="utf-8")
    return 0 if result.report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
