"""deploy/compose with podman-compose for real: certs job, server, healthcheck, and two clients chatting.

Everything runs on the host network (server on 127.0.0.1 and a free port).
The test derives that variant from compose.yaml itself instead of passing a
second `-f` override: podman-compose concatenates lists from override files
(a healthcheck `test` becomes both commands), so an override cannot
replace `command` or `healthcheck` there.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from containers_support import DEPLOY, ROOT, TIMINGS, Engine
from deploy_support import free_port

COMPOSE = DEPLOY / "compose"
PODMAN_COMPOSE = "podman-compose==1.6.0"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="session")
def podman_compose(engine: Engine) -> list[str]:
    """podman-compose from PyPI, into this interpreter's environment (a no-op once installed)."""
    if engine.name != "podman":
        pytest.skip("the Compose stack test drives podman-compose; this machine runs Docker")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", PODMAN_COMPOSE],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"pip install {PODMAN_COMPOSE} failed:\n{result.stderr}"
    return [sys.executable, "-m", "podman_compose"]


def host_network_variant(port: int, directory: Path) -> Path:
    """compose.yaml with every service on the host network and the server on 127.0.0.1:PORT."""
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text(encoding="utf-8"))
    listen = ["--listen", f"127.0.0.1:{port}"]
    target = ["--target", f"localhost:{port}"]
    for name, service in compose["services"].items():
        service["network_mode"] = "host"
        service.pop("ports", None)
        service["build"]["context"] = str(ROOT)
        service["volumes"] = [
            str(COMPOSE / spec.split(":", 1)[0]) + ":" + spec.split(":", 1)[1] if spec.startswith("./") else spec
            for spec in service["volumes"]
        ]
        if name == "server":
            service["command"] = [*service["command"], *listen]
            service["healthcheck"] = {**service["healthcheck"], "test": [*service["healthcheck"]["test"], *target]}
    path = directory / "compose.host-network.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(compose), sort_keys=False), encoding="utf-8")
    return path


class Chatter:
    """`podman-compose run client chat ...` with its stdin held open; its stdout is collected as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def say(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def wait_for(self, needle: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if needle in line:
                    return line
            if self.process.poll() is not None:
                time.sleep(0.2)
                break
            time.sleep(0.05)
        pytest.fail(f"never saw {needle!r}; output:\n" + "\n".join(self.lines))

    def finish(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(timeout=60)


def test_compose_stack_certs_server_and_two_clients_chatting(
    engine: Engine, image: str, podman_compose: list[str], tmp_path: Path
) -> None:
    """certs runs once, the server turns healthy, alice and bob chat through it, `down -v` leaves nothing."""
    port = free_port()
    project = f"securechat-test-{uuid.uuid4().hex[:8]}"
    compose = [
        *podman_compose,
        "--project-name",
        project,
        "--profile",
        "client",
        "--file",
        str(host_network_variant(port, tmp_path)),
    ]

    def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*compose, *args], env=engine.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    started = time.monotonic()
    try:
        up = run("up", "--detach", "--no-build", "server")
        assert up.returncode == 0, up.stdout + up.stderr
        server = f"{project}_server_1"
        # podman < 4.6 ignores depends_on conditions and podman 4.3 runs health
        # checks only from systemd timers: wait, then run the check by hand.
        deadline = time.monotonic() + 60
        while engine.run(["healthcheck", "run", server], check=False).returncode != 0:
            assert time.monotonic() < deadline, engine.run(["logs", server], check=False).stdout
            time.sleep(0.5)
        TIMINGS["compose: up to healthy"] = time.monotonic() - started
        certs_log = engine.run(["logs", f"{project}_certs_1"]).stdout
        assert certs_log.count("Created a new CA") == 1, certs_log
        assert {"server", "alice", "bob", "probe"} <= {
            line.split()[0] for line in certs_log.splitlines() if line.strip()
        }

        room = f"compose-{uuid.uuid4().hex[:6]}"
        chat = ["run", "--rm", "-T", "--no-deps", "client", "chat", "--room", room, "--target", f"localhost:{port}"]
        bob = Chatter([*compose, *chat, "--config", "/etc/securechat/bob.yaml"], engine.env)
        bob.wait_for("bob joined")
        alice = Chatter([*compose, *chat, "--config", "/etc/securechat/alice.yaml"], engine.env)
        alice.wait_for("alice joined")

        alice.say("hello bob, from a container")
        assert bob.wait_for("alice: hello bob, from a container").endswith(
            f"[{room}] alice: hello bob, from a container"
        )
        bob.say("hello alice")
        alice.wait_for("bob: hello alice")
        assert alice.finish() == 0, alice.lines
        assert bob.finish() == 0, bob.lines

        hello = run("run", "--rm", "-T", "--no-deps", "client", "hello", "--config", "/etc/securechat/alice.yaml",
                    "--target", f"localhost:{port}")  # fmt: skip
        assert hello.returncode == 0 and hello.stdout.strip().splitlines()[-1] == "Hello, alice!", (
            hello.stdout + hello.stderr
        )
        again = run("run", "--rm", "-T", "--no-deps", "certs")
        assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    finally:
        down = run("down", "--volumes", "--timeout", "15")
    assert down.returncode == 0, down.stdout + down.stderr
    left = engine.run(["ps", "--all", "--filter", f"name={project}", "--format", "{{.Names}}"]).stdout.split()
    assert left == []
    assert engine.run(["volume", "exists", f"{project}_certs"], check=False).returncode == 1
