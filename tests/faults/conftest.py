"""tests/faults: the harness modules (fault_procs, fault_clients, fault_checker, fault_run) import each other by name."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
