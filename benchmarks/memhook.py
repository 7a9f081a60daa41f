"""Run the securechat CLI with a memory probe: tracemalloc and live objects by type, sampled to a JSON-lines file.

    python -m benchmarks.memhook OUT.jsonl [--every 60] [--frames 1] [--trim] -- serve --config server.yaml

A debugging aid for the soak (`benchmarks.soak --memhook`), never on by
default: tracemalloc slows the process and adds its own memory. Every
--every seconds a daemon thread appends one line to OUT.jsonl with the
process's RSS, tracemalloc's traced total, the Python objects alive per
type (`gc.get_objects()`, top 40), and the source lines whose allocations
grew most since the first sample (top 25 by size), and gc's collections
per generation so far (objects in reference cycles wait for a generation-2
collection: they pile up between two of those, then go at once). Lines growing sample
after sample with the messages sent are a per-message leak; growth that
stops once a window or cache is full is warm-up. `--frames 0` leaves
tracemalloc off (object counts only: close to the real process's RSS).
`--trim` also calls glibc's malloc_trim(0) after each sample and records
the RSS after it: memory the allocator holds free (high-water marks of a
flood, fragmentation) comes back then, memory still referenced does not.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import json
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _probe(out: Path, every: float, trim: bool) -> None:
    baseline: tracemalloc.Snapshot | None = None
    base_counts: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    filters = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
    while True:
        time.sleep(every)
        rss = _rss_kb()
        # Counted before the snapshot: its traces are ~one tuple per allocation.
        counts = collections.Counter(type(o).__module__ + "." + type(o).__qualname__ for o in gc.get_objects())
        if not base_counts:
            base_counts = counts
        grew: list[tracemalloc.StatisticDiff] = []
        if tracemalloc.is_tracing():
            snapshot = tracemalloc.take_snapshot().filter_traces(filters)
            baseline = baseline or snapshot
            grew = snapshot.compare_to(baseline, "lineno")[:25]
        current, peak = tracemalloc.get_traced_memory()
        line: dict[str, Any] = {
            "t": round(time.monotonic() - started, 1),
            "rss_kb": rss,
            "traced_kb": current // 1024,
            "traced_peak_kb": peak // 1024,
            "objects": sum(counts.values()),
            "gc_collections": [generation["collections"] for generation in gc.get_stats()],
            "gc_collected": [generation["collected"] for generation in gc.get_stats()],
            "by_type": dict(counts.most_common(40)),
            "type_growth": dict(collections.Counter({k: counts[k] - base_counts[k] for k in counts}).most_common(20)),
            "line_growth": [
                {"where": str(stat.traceback), "kb": stat.size // 1024, "kb_diff": stat.size_diff // 1024, "count_diff": stat.count_diff}
                for stat in grew
            ],
        }
        if trim:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            line["rss_after_trim_kb"] = _rss_kb()
        with out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--every", type=float, default=60.0)
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc frames per allocation; 0 = tracemalloc off")
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) after each sample; record the RSS after it")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    rest = argv[split + 1 :]
    if args.frames > 0:
        tracemalloc.start(args.frames)
    threading.Thread(target=_probe, args=(args.out, args.every, args.trim), daemon=True, name="memhook").start()
    from securechat.cli import main as cli_main

    sys.argv = ["securechat", *rest]
    cli_main()


if __name__ == "__main__":
    main()
