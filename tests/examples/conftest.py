"""Fixtures for tests/examples: a quickstart set, a real `securechat serve`, and each example built once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from examples_support import EXAMPLES, ROOT, Served, run_quickstart
from serve_process import ServeProcess

BUILD_TIMEOUT = 600


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """`securechat quickstart --dir` and `securechat serve` from it, on 127.0.0.1 and a free port."""
    directory = tmp_path / "quickstart"
    run_quickstart(directory)
    server = ServeProcess(directory)
    yield Served(directory, f"localhost:{server.port}", server)
    server.stop()


def _setup(argv: list[str], what: str) -> None:
    """Run a build/install step; skip only when the packages it needs cannot be installed here."""
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
    if result.returncode == 0:
        return
    output = result.stdout + result.stderr
    cannot_install = "install-deps: missing packages" in output and (
        os.geteuid() != 0 or shutil.which("apt-get") is None
    )
    if cannot_install:
        pytest.skip(
            f"{what}: its packages are missing and this user cannot apt-get them: {output.strip().splitlines()[-1]}"
        )
    pytest.fail(f"{what} failed ({' '.join(argv)}, exit {result.returncode}):\n{output}")


@pytest.fixture(scope="session")
def go_example() -> list[str]:
    """examples/go built by its own script (which apt-get installs Go and grpc-go when missing)."""
    _setup(["bash", str(EXAMPLES / "go" / "build.sh")], "building examples/go")
    return [str(EXAMPLES / "go" / "bin" / "securechat-example")]


@pytest.fixture(scope="session")
def node_example() -> list[str]:
    """examples/node with its locked dependencies (`npm ci`, skipped when node_modules is current)."""
    _setup(["bash", str(EXAMPLES / "node" / "setup.sh")], "installing examples/node")
    node = shutil.which("node")
    assert node is not None, "examples/node/setup.sh succeeded but there is no node on PATH"
    return [node, str(EXAMPLES / "node" / "client.js")]


@pytest.fixture(scope="session")
def python_example() -> list[str]:
    """examples/python under this interpreter (grpcio and grpcio-tools are securechat's own dependencies)."""
    return [sys.executable, str(EXAMPLES / "python" / "client.py")]
