"""Fixtures for tests/deploy: a `securechat` stand-in, its environment, server processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from deploy_support import ROOT, Server


@pytest.fixture
def shim(tmp_path: Path) -> Path:
    """A `securechat` executable (this checkout, this interpreter) standing in for the installed one."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "securechat"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m securechat "$@"\n', encoding="utf-8")
    exe.chmod(0o755)
    return exe


@pytest.fixture
def env(shim: Path) -> dict[str, str]:
    """The environment for child processes: `securechat` on PATH, this checkout importable."""
    path = os.pathsep.join([str(shim.parent), os.environ.get("PATH", "/usr/bin:/bin")])
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PATH": path, "PYTHONPATH": pythonpath, "CI": "true", "NO_COLOR": "1"}


@pytest.fixture
def start_server(env: dict[str, str]) -> Iterator:
    """Start servers from argv lists; every one is stopped (SIGKILL if need be) after the test."""
    started: list[Server] = []

    def start(argv: Sequence[str], *, cwd: Path | None = None) -> Server:
        process = subprocess.Popen(  # noqa: S603 - argv from our own deploy files
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        server = Server(list(argv), process)

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                server.lines.append(line)

        threading.Thread(target=pump, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=5)
