"""serve, hello, chat, health and quickstart through the real `securechat` entry point."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_process import ServeProcess

SECURECHAT = [sys.executable, "-m", "securechat"]
TIMEOUT = 30


def securechat(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SECURECHAT, *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


Server = ServeProcess


@pytest.fixture(scope="module")
def quickstarted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `securechat quickstart` for the module's tests."""
    root = tmp_path_factory.mktemp("quickstart")
    done = securechat("quickstart", "--dir", ".", cwd=root)
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture(scope="module")
def server(quickstarted: Path) -> Iterator[Server]:
    running = Server(quickstarted)
    yield running
    running.stop()


def test_quickstart_makes_a_working_set(quickstarted: Path):
    """quickstart writes the CA, server, alice, bob and three configs, keys 0600."""
    for name in ("ca", "server", "alice", "bob"):
        assert (quickstarted / "certs" / f"{name}.pem").is_file()
        assert oct((quickstarted / "certs" / f"{name}-key.pem").stat().st_mode & 0o777) in ("0o600", "0o400")
    for name in ("server", "alice", "bob"):
        assert (quickstarted / f"{name}.yaml").is_file()
    assert "target: localhost:50051" in (quickstarted / "alice.yaml").read_text()
    assert "listen: 127.0.0.1:50051" in (quickstarted / "server.yaml").read_text()


def test_quickstart_refuses_to_overwrite(quickstarted: Path):
    """A second quickstart into the same directory names the file it will not replace."""
    done = securechat("quickstart", "--dir", ".", cwd=quickstarted)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: server.yaml already exists; refusing to overwrite it. Pass --force to replace it."
    ]


def test_hello_prints_the_certificate_identity(quickstarted: Path, server: Server):
    """`securechat hello` prints the server's greeting for alice's certificate."""
    done = securechat("hello", "--config", "alice.yaml", "--target", f"localhost:{server.port}", "--name", "eve", cwd=quickstarted)
    assert (done.returncode, done.stdout.strip()) == (0, "Hello, alice!")


def test_health_reports_serving(quickstarted: Path, server: Server):
    """`securechat health` exits 0 and says SERVING over mTLS."""
    done = securechat("health", "--config", "bob.yaml", "--target", f"localhost:{server.port}", cwd=quickstarted)
    assert (done.returncode, done.stdout.strip()) == (0, "server: SERVING")


def test_health_of_unknown_service_exits_1(quickstarted: Path, server: Server):
    """An unknown service is not SERVING: exit 1 with one line."""
    done = securechat("health", "--config", "bob.yaml", "--target", f"localhost:{server.port}", "--service", "nope", cwd=quickstarted)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: nope is SERVICE_UNKNOWN"


def test_piped_chat_sends_each_line_and_exits_0(quickstarted: Path, server: Server):
    """With piped stdin every line is sent, its echo printed, and the command exits 0 at EOF."""
    done = securechat(
        "chat", "--config", "alice.yaml", "--target", f"localhost:{server.port}", "--room", "piped",
        cwd=quickstarted, stdin="first line\nsecond line\n",
    )
    assert done.returncode == 0, done.stderr
    messages = [line for line in done.stdout.splitlines() if "alice:" in line]
    assert [line.split("alice: ", 1)[1] for line in messages] == ["first line", "second line"]
    assert "[piped] * alice joined" in done.stdout


def test_piped_chats_see_each_other(quickstarted: Path, server: Server):
    """bob, already in the room, receives what alice posts; sender names come from certificates."""
    target = f"localhost:{server.port}"
    bob = subprocess.Popen(
        [*SECURECHAT, "chat", "--config", "bob.yaml", "--target", target, "--room", "duo"],
        cwd=quickstarted, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        server.wait_for(r"chat stream opened by bob")
        time.sleep(0.3)  # bob's join is on the wire before alice posts
        alice = securechat("chat", "--config", "alice.yaml", "--target", target, "--room", "duo", cwd=quickstarted, stdin="hi bob\n")
        assert alice.returncode == 0, alice.stderr
        out, err = bob.communicate(input="hi alice\n", timeout=TIMEOUT)
    finally:
        bob.kill()
    assert bob.returncode == 0, err
    assert "[duo] alice: hi bob" in out
    assert "[duo] bob: hi alice" in out


def test_client_errors_are_one_line_without_traceback(quickstarted: Path):
    """A server that is not running: exit 1, one line, no traceback."""
    done = securechat("hello", "--config", "alice.yaml", "--target", "localhost:1", cwd=quickstarted)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: server not reachable at localhost:1: Connection refused")
    assert "Traceback" not in done.stderr


def test_serve_logs_each_stream_with_identity_and_exits_0_on_sigterm(quickstarted: Path):
    """SIGTERM: the server logs the shutdown and exits 0; stream events name the identity."""
    running = Server(quickstarted)
    done = securechat("chat", "--config", "bob.yaml", "--target", f"localhost:{running.port}", cwd=quickstarted, stdin="x\n")
    assert done.returncode == 0, done.stderr
    running.wait_for(r"connection from ipv4:127\.0\.0\.1:\d+ authenticated as bob \(serial [0-9a-f]+\)")
    running.wait_for(r"chat stream of bob ended: OK")
    assert running.stop() == 0
    running.wait_for(r"SIGTERM received: shutting down")
    assert any("(mTLS)" in line for line in running.lines)


def test_sighup_does_not_stop_the_server(quickstarted: Path):
    """SIGHUP (systemctl reload) reloads config and certificates and the server keeps serving."""
    running = Server(quickstarted)
    running.proc.send_signal(signal.SIGHUP)
    running.wait_for(r"SIGHUP received: reloading server.yaml, certificates and CRL")
    done = securechat("hello", "--config", "alice.yaml", "--target", f"localhost:{running.port}", cwd=quickstarted)
    assert (done.returncode, done.stdout.strip()) == (0, "Hello, alice!")
    assert running.stop() == 0


def test_serve_refuses_a_port_in_use(quickstarted: Path, server: Server):
    """Binding a port another server holds is one clear line and exit 1."""
    done = securechat("serve", "--config", "server.yaml", "--listen", f"127.0.0.1:{server.port}", cwd=quickstarted)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: cannot listen on 127.0.0.1:{server.port}")


def test_insecure_server_warns_loudly(tmp_path: Path):
    """insecure: true serves plaintext on loopback only after a loud INSECURE warning."""
    (tmp_path / "plain.yaml").write_text("listen: 127.0.0.1:0\ninsecure: true\n")
    running = Server(tmp_path, "plain.yaml")
    try:
        running.wait_for(r"WARNING .*INSECURE: serving PLAINTEXT on 127\.0\.0\.1:0")
    finally:
        assert running.stop() == 0
