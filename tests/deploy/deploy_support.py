"""Helpers for tests/deploy: run the deploy/ files for real, without their platforms.

The tests read the shipped unit files, manifests and Compose file, take the
exact command lines and config files from them, and run those against a
temporary directory standing in for /etc/securechat. Only these are
rewritten, and only in the copies: /etc/securechat itself, the install
prefix of the `securechat` executable, and listen host and ports (loopback
and free ports, so parallel runs do not collide).
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ETC = "/etc/securechat"
INSTALLED = "/opt/securechat/bin/securechat"

START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_yaml_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


@dataclass
class Server:
    """A `securechat serve` process started from a deploy/ command line."""

    argv: list[str]
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        """Wait until the server's log matches PATTERN; fail if it exits first."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            match = regex.search(self.output)
            if match:
                return match
            if self.process.poll() is not None:
                time.sleep(0.1)  # let the reader thread drain the pipe
                pytest.fail(f"server exited {self.process.returncode} before logging {pattern!r}:\n{self.output}")
            time.sleep(0.05)
        pytest.fail(f"server did not log {pattern!r} within {timeout}s:\n{self.output}")

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, as systemd and the kubelet send it; return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
            pytest.fail(f"server ignored SIGTERM for {timeout}s:\n{self.output}")


def run(argv: Sequence[str], env: dict[str, str], *, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a command to completion with no stdin; output captured."""
    return subprocess.run(  # noqa: S603 - argv from our own deploy files
        list(argv), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
    )
