"""`securechat serve` in a subprocess, for tests that need the real entry point or a process to signal."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

SECURECHAT = [sys.executable, "-m", "securechat"]
TIMEOUT = 30


class ServeProcess:
    """Starts `securechat serve` and waits until it logs its port; its log lines are collected as they come."""

    def __init__(self, cwd: Path, config: str = "server.yaml", *, listen: str | None = "127.0.0.1:0") -> None:
        args = [*SECURECHAT, "serve", "--config", config, *(["--listen", listen] if listen else [])]
        self.proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.port = int(self.wait_for(r"listening on \S+:(\d+)").group(1))
        except BaseException:
            self.kill()  # a server that never said it listens is not left running after the failed test
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"server never logged {pattern!r}; log:\n" + "\n".join(self.lines))

    def stop(self) -> int:
        """SIGTERM, then the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=TIMEOUT)

    def kill(self) -> None:
        """SIGKILL: no goodbye."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=TIMEOUT)
