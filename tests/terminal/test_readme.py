"""README's console examples, run for real in the order a reader types them, so they cannot drift.

The "Five minutes with securechat" and "Certificate lifecycle" blocks are one
session in one directory: the YAML blocks named `server.yaml` and `alice.yaml`
are written as README shows them (bob.yaml is alice's with bob, as README
says), the server is started from that server.yaml on free ports (50051 and
8081 in the text are mapped to them), and every `$ securechat ...` line is run
through bash, its stdout and stderr compared with the lines README shows.
What changes from run to run (serials, dates, times, ports) is compared as a
placeholder; the CA passphrase prompts README shows are answered here by
$SECURECHAT_CA_PASSPHRASE (tests/conftest.py sets it), so they are not printed. Blocks that only show a long-running server, its logs or a
benchmark are not run; each is named below with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from terminal_support import ServeProcess

BASH = shutil.which("bash") or "/bin/bash"
README = Path(__file__).resolve().parents[2] / "README.md"
NOT_RUN = {
    "securechat serve": "starts a server that runs until stopped; its start is the fixture's",
    ".venv/bin/python -m benchmarks": "a benchmark, minutes long",
}


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Block:
    line: int
    steps: list[Step]


def console_blocks(text: str) -> list[Block]:
    blocks, current, start = [], None, 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() == "```console":
            current, start = [], number
        elif line.strip() == "```" and current is not None:
            blocks.append(Block(start, current))
            current = None
        elif current is not None:
            if line.startswith("$ "):
                current.append(Step(line[2:]))
            elif current:
                current[-1].expected.append(line)
    return blocks


def yaml_block(text: str, name: str) -> str:
    match = re.search(rf"`{re.escape(name)}`[^\n]*:\n\n```yaml\n(.*?)```", text, re.S)
    assert match, f"README has no yaml block for {name}"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PLACEHOLDERS = [
    (re.compile(r"\b[0-9a-f]{16,}\b"), "<HEX>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}\b"), "<DATE>"),
    (re.compile(r"\b\d{2}:\d{2}(:\d{2})?\b"), "<TIME>"),
    (re.compile(r"(peer ipv[46]:\S+?):\d+"), r"\1:<PORT>"),
]


PROMPTS = ("New CA key passphrase:", "Repeat for confirmation:", "CA key passphrase:")


def normal(line: str, ports: dict[str, str]) -> str:
    for documented, real in ports.items():
        line = line.replace(documented, real)
    for pattern, placeholder in PLACEHOLDERS:
        line = pattern.sub(placeholder, line)
    return line.rstrip()


def checked(block: Block) -> str | None:
    """None if the block is run, else why not."""
    for step in block.steps:
        for prefix, why in NOT_RUN.items():
            if step.command.startswith(prefix):
                return why
    return None if block.steps else "shows output only"


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory):
    text = README.read_text()
    root = tmp_path_factory.mktemp("readme")
    ports = {"50051": str(free_port()), "8081": str(free_port())}
    state: dict[str, object] = {"server": None, "root": root, "ports": ports, "text": text, "last": 0}
    yield state
    server = state["server"]
    if isinstance(server, ServeProcess):
        server.stop()


def start_server(state: dict) -> None:
    root: Path = state["root"]
    text: str = state["text"]
    ports: dict[str, str] = state["ports"]
    alice = yaml_block(text, "alice.yaml")
    for name, body in (("server.yaml", yaml_block(text, "server.yaml")), ("alice.yaml", alice), ("bob.yaml", alice.replace("alice", "bob"))):
        for documented, real in ports.items():
            body = body.replace(documented, real)
        (root / name).write_text(body)
    state["server"] = ServeProcess(root, "server.yaml", listen=None)


# README: a revocation reaches the running server "within a second" (it polls the CRL):
# a command right after one waits for that, as a person reading the output would.
AFTER_REVOKE_SECONDS = 1.5


def run_step(state: dict, step: Step) -> list[str]:
    if step.command == "echo $?":
        return [str(state["last"])]
    if state.get("revoked") and state["server"] is not None:
        time.sleep(AFTER_REVOKE_SECONDS)
    state["revoked"] = " certs revoke " in f" {step.command} "
    if state["server"] is None and re.search(r"securechat (hello|health|chat|doctor|whoami)", step.command):
        start_server(state)
    command = step.command
    for documented, real in state["ports"].items():
        command = command.replace(documented, real)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "COLUMNS": "200", "NO_COLOR": "1"}
    done = subprocess.run([BASH, "-c", command + " 2>&1"], cwd=state["root"], env=env, capture_output=True, text=True, timeout=60, check=False)
    state["last"] = done.returncode
    return done.stdout.splitlines()


BLOCKS = console_blocks(README.read_text())


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README line {b.line}" for b in BLOCKS])
def test_readme_console_block(session, block: Block):
    """Each README console block, run for real, prints what README shows (in order: one session)."""
    why = checked(block)
    if why is not None:
        pytest.skip(f"not run: {why}")
    for step in block.steps:
        got = [normal(line, session["ports"]) for line in run_step(session, step)]
        want = [normal(line, session["ports"]) for line in step.expected if line.strip() not in PROMPTS]
        assert got == want, f"README line {block.line}: $ {step.command}"


def test_readme_python_example_runs(session):
    """The Python example prints the greeting, then the first message (not the JOIN event)."""
    text = session["text"]
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    if session["server"] is None:
        start_server(session)
    done = subprocess.run([sys.executable, "-c", code], cwd=session["root"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["Hello, alice!", "alice hello"]
