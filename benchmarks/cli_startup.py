"""Whole-process start-up time of the `securechat` CLI: what a person waits for at the prompt.

    .venv/bin/python -m benchmarks.cli_startup                    # this checkout
    .venv/bin/python -m benchmarks.cli_startup --source /tmp/base  # another checkout's package, same venv
    .venv/bin/python -m benchmarks.cli_startup --compare /tmp/base # both, alternating, in one run

Each command runs as a new process (`python -m securechat ...`, the same code
path as the console script), in a directory made by `securechat quickstart`,
`--rounds` times; the report is JSON with the median wall time and the
median CPU time (user + system of the child: steadier than wall time on a
shared, loaded machine), and the ratio to `python -c pass` in the same run
(the interpreter's own start). With --compare the other checkout's package
runs alternately with this one and each command gets their ratio. It
measures, it never fails: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def time_one(argv: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ARGV."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def summary(samples: list[tuple[float, float]], python_start: float) -> dict[str, float]:
    walls = [wall for wall, _ in samples]
    median = statistics.median(walls)
    return {
        "median_s": round(median, 4),
        "min_s": round(min(walls), 4),
        "max_s": round(max(walls), 4),
        "cpu_median_s": round(statistics.median(cpu for _, cpu in samples), 4),
        "vs_python_start": round(median / python_start, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--source", type=Path, help="a checkout whose securechat package to time instead of this one")
    parser.add_argument(
        "--compare", type=Path, help="a checkout to time alternately with this one (e.g. main before a change)"
    )
    options = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    sources = {"this": options.source or here}
    if options.compare is not None:
        sources["compare"] = options.compare
    envs = {label: {**os.environ, "PYTHONPATH": str(path.resolve())} for label, path in sources.items()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "securechat", "quickstart", "--dir", "."],
            cwd=root,
            env=envs["this"],
            check=True,
            capture_output=True,
        )
        python_start = statistics.median(
            time_one([sys.executable, "-c", "pass"], cwd=root, env=envs["this"])[0] for _ in range(options.rounds)
        )
        results = []
        for command in COMMANDS:
            argv = [sys.executable, "-m", "securechat", *command]
            samples: dict[str, list[tuple[float, float]]] = {label: [] for label in sources}
            for env in envs.values():
                time_one(argv, cwd=root, env=env)  # warm the page cache and bytecode
            for _ in range(options.rounds):
                for label, env in envs.items():  # alternating, so load changes hit both alike
                    samples[label].append(time_one(argv, cwd=root, env=env))
            row: dict[str, object] = {"command": "securechat " + " ".join(command)}
            row.update({label: summary(found, python_start) for label, found in samples.items()})
            if "compare" in samples:
                row["cpu_ratio_this_vs_compare"] = round(
                    row["this"]["cpu_median_s"] / row["compare"]["cpu_median_s"], 2
                )  # type: ignore[index]
            results.append(row)
    report = {
        "benchmark": "cli_startup",
        "rounds": options.rounds,
        "sources": {label: str(path) for label, path in sources.items()},
        "python": sys.version.split()[0],
        "python_start_median_s": round(python_start, 4),
        "load_average": os.getloadavg(),
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
