"""Whole-process start-up time of the `securechat` CLI: what a person waits for at the prompt.

    .venv/bin/python -m benchmarks.cli_startup                    # this checkout
    .venv/bin/python -m benchmarks.cli_startup --source /tmp/base  # another checkout's package, same venv

Each command runs as a new process (`python -m securechat ...`, the same code
path as the console script), in a directory made by `securechat quickstart`,
`--rounds` times; the report is JSON with the median and the spread, and the
ratio to `python -c pass` in the same run (the interpreter's own start). It
measures, it never fails: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = (
    ("--help",),
    ("--version",),
    ("certs", "list", "--dir", "certs"),
    ("certs", "list", "--dir", "certs", "--json"),
    ("certs", "--help"),
    ("chat", "--help"),
    ("hello", "--help"),
)


def time_one(argv: list[str], *, cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--source", type=Path, help="a checkout whose securechat package to time instead of this one")
    options = parser.parse_args()
    env = dict(os.environ)
    if options.source is not None:
        env["PYTHONPATH"] = str(options.source.resolve())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run([sys.executable, "-m", "securechat", "quickstart", "--dir", "."], cwd=root, env=env, check=True, capture_output=True)
        baseline = [time_one([sys.executable, "-c", "pass"], cwd=root, env=env) for _ in range(options.rounds)]
        results = []
        for command in COMMANDS:
            argv = [sys.executable, "-m", "securechat", *command]
            time_one(argv, cwd=root, env=env)  # warm the page cache and bytecode
            samples = [time_one(argv, cwd=root, env=env) for _ in range(options.rounds)]
            median = statistics.median(samples)
            results.append(
                {
                    "command": "securechat " + " ".join(command),
                    "median_s": round(median, 4),
                    "min_s": round(min(samples), 4),
                    "max_s": round(max(samples), 4),
                    "vs_python_start": round(median / statistics.median(baseline), 2),
                }
            )
    report = {
        "benchmark": "cli_startup",
        "rounds": options.rounds,
        "source": str(options.source or Path(__file__).resolve().parent.parent),
        "python": sys.version.split()[0],
        "python_start_median_s": round(statistics.median(baseline), 4),
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
