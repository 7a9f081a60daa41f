"""Shared by tests/examples: where the examples live, a quickstart set and the server running from it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from serve_process import SECURECHAT, ServeProcess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@dataclass(frozen=True)
class Served:
    """A quickstart directory and the server running from its server.yaml."""

    directory: Path
    target: str
    server: ServeProcess


def run_quickstart(directory: Path) -> None:
    result = subprocess.run(
        [*SECURECHAT, "quickstart", "--dir", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
