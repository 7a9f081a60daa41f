"""Real `securechat` processes for the online-CA tests: the CA service, a server, chat clients."""

from __future__ import annotations

import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from securechat import pki
from tests.ca.conftest import CaEnv

SECURECHAT = [sys.executable, "-m", "securechat"]
TIMEOUT = 30.0


class Proc:
    """A securechat subprocess whose output lines are collected as they come."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None, stdin: bool = False) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [*SECURECHAT, *args],
            cwd=cwd,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    @property
    def lines(self) -> list[str]:
        return [*self.out, *self.err]

    def wait_for(self, pattern: str, *, timeout: float = TIMEOUT, stream: str = "any") -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            source = self.out if stream == "out" else self.err if stream == "err" else self.lines
            for line in list(source):
                if match := re.search(pattern, line):
                    return match
            if self.proc.poll() is not None and not any(r.is_alive() for r in self._readers):
                break
            time.sleep(0.05)
        raise AssertionError(f"{' '.join(self.args)} never printed {pattern!r}; output:\n" + "\n".join(self.lines))

    def count(self, pattern: str) -> int:
        return sum(1 for line in list(self.lines) if re.search(pattern, line))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=TIMEOUT)

    def wait(self, timeout: float = TIMEOUT) -> int:
        return self.proc.wait(timeout=timeout)


def start_ca_process(env: CaEnv, *, port: int = 0, extra_env: dict[str, str] | None = None) -> tuple[Proc, int]:
    import os

    environment = {**os.environ, **(extra_env or {})}
    proc = Proc(env.root, "ca", "serve", "--config", "ca.yaml", "--listen", f"127.0.0.1:{port}", env=environment)
    bound = int(proc.wait_for(r"securechat CA listening on \S+:(\d+)").group(1))
    return proc, bound


def start_server_process(root: Path, config: str = "server.yaml") -> tuple[Proc, int]:
    proc = Proc(root, "serve", "--config", config, "--listen", "127.0.0.1:0")
    return proc, int(proc.wait_for(r"listening on \S+:(\d+)").group(1))


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def served_serial(port: int, trust: Path, client: tuple[Path, Path]) -> str:
    """The serial of the certificate the server presents to a new handshake."""
    import socket

    from cryptography import x509

    context = ssl.create_default_context(cafile=str(trust))
    context.load_cert_chain(*client)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return f"{x509.load_der_x509_certificate(der).serial_number:x}"


def issue_short(env: CaEnv, name: str, *, kind: str, seconds: int) -> None:
    """A leaf as 'certs server|client' would issue it, but SECONDS long (the CA imports it from index.json)."""
    import datetime as dt

    ca = env.ca
    window = pki.lifetime_window(dt.timedelta(seconds=seconds), ca_not_after=ca.cert.not_valid_after_utc)
    issue = pki.issue_server_cert if kind == "server" else pki.issue_client_cert
    env.store.write_leaves([issue(ca, name, not_before=window.not_before, not_after=window.not_after)], force=True)
