"""`make demo`: issue certificates, start the mTLS server, let alice and bob chat, stop.

Every step runs the real `securechat` command in a subprocess and prints it
first, so the output reads like a terminal session a person could repeat.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SECURECHAT = [sys.executable, "-m", "securechat"]
LISTENING = re.compile(r"listening on \S+:(\d+)")
STEP_TIMEOUT = 20.0


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(args: list[str], cwd: Path) -> None:
    print(f"$ securechat {shlex.join(args)}", flush=True)


def run(args: list[str], cwd: Path, *, expect_ok: bool = True) -> subprocess.CompletedProcess[str]:
    show(args, cwd)
    done = subprocess.run([*SECURECHAT, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    for line in (done.stdout + done.stderr).splitlines():
        print(f"  {line}", flush=True)
    if expect_ok and done.returncode != 0:
        raise SystemExit(f"demo failed: 'securechat {shlex.join(args)}' exited {done.returncode}")
    if not expect_ok and done.returncode == 0:
        raise SystemExit(f"demo failed: 'securechat {shlex.join(args)}' should have been refused")
    return done


class Process:
    """A long-running securechat command whose output lines we can wait for."""

    def __init__(self, name: str, args: list[str], cwd: Path) -> None:
        show(args, cwd)
        self.name = name
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            [*SECURECHAT, *args],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            print(f"  {self.name:>6} | {line}", flush=True)
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + STEP_TIMEOUT
        with self._changed:
            while True:
                for line in self.lines:
                    if match := re.search(pattern, line):
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not self._changed.wait(0.2):
                    raise SystemExit(f"demo failed: {self.name} never printed {pattern!r}")
                self._changed.wait(left)

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close_input(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=STEP_TIMEOUT)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="securechat-demo-") as raw:
        work = Path(raw)
        say("1. Issue a private CA, a server certificate and client certificates for alice and bob")
        run(["quickstart", "--dir", "."], work)
        run(["certs", "list", "--dir", "certs"], work)
        run(["certs", "inspect", "certs/alice.pem", "--dir", "certs"], work)

        say("2. Start the mTLS server (port 0: the OS picks a free port)")
        server = Process("server", ["serve", "--config", "server.yaml", "--listen", "127.0.0.1:0"], work)
        try:
            port = server.wait_for(LISTENING.pattern).group(1)
            target = f"localhost:{port}"

            say("3. Each client proves who it is with its certificate; the server greets the certificate's name")
            run(["hello", "--config", "alice.yaml", "--target", target, "--name", "not-alice"], work)
            run(["hello", "--config", "bob.yaml", "--target", target], work)

            say("4. alice and bob chat in room 'general' (sender names come from their certificates)")
            alice = Process("alice", ["chat", "--config", "alice.yaml", "--target", target, "--room", "general"], work)
            alice.wait_for(r"\* alice joined")
            bob = Process("bob", ["chat", "--config", "bob.yaml", "--target", target, "--room", "general"], work)
            alice.wait_for(r"\* bob joined")
            bob.type("hi alice, this is bob")
            alice.wait_for(r"bob: hi alice")
            alice.type("hello bob! alice here")
            bob.wait_for(r"alice: hello bob")
            if bob.close_input() != 0 or alice.close_input() != 0:
                raise SystemExit("demo failed: a chat client exited non-zero")

            say("5. A client whose certificate comes from another CA is refused, with one line saying why")
            # A throwaway CA for the demo: its key is not encrypted, and init says so.
            run(["certs", "init", "--dir", "rogue-ca", "--no-passphrase", "--insecure"], work)
            run(["certs", "client", "mallory", "--dir", "rogue-ca"], work)
            # mallory trusts both CAs, so her own config checks pass and the
            # refusal we see is the server's, during the TLS handshake.
            bundle = (work / "certs" / "ca.pem").read_text() + (work / "rogue-ca" / "ca.pem").read_text()
            (work / "mallory-trust.pem").write_text(bundle)
            (work / "mallory.yaml").write_text(
                f"target: {target}\ntls:\n  ca: mallory-trust.pem\n  cert: rogue-ca/mallory.pem\n  key: rogue-ca/mallory-key.pem\n"
            )
            run(["hello", "--config", "mallory.yaml"], work, expect_ok=False)

            say("6. Stop the server with SIGTERM: health turns NOT_SERVING, streams drain, exit 0")
        finally:
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(timeout=STEP_TIMEOUT)
        print(f"  server exited with {code}", flush=True)
        if code != 0:
            return 1
        say("Demo complete: certificates issued, mTLS server started, alice and bob authenticated and chatted.")
        return 0


if __name__ == "__main__":
    sys.exit(main())
