"""`bash deploy/check.sh` -- the offline validation of deploy/ -- passes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_deploy_check_passes() -> None:
    """Every linter and validator in deploy/check.sh reports no finding."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.fail("bash is needed to run deploy/check.sh")
    env = {**os.environ, "CI": "true", "PYTHON": sys.executable}
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [bash, str(ROOT / "deploy" / "check.sh")],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert result.returncode == 0, (
        f"deploy/check.sh exited {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )
    assert "deploy-check: all checks passed." in result.stdout
