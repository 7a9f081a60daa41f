"""Helpers for tests/terminal: the real `securechat` entry point, on a pseudo-terminal (pexpect) or through pipes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pexpect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # serve_process.py
from serve_process import ServeProcess  # noqa: E402

__all__ = ["SECURECHAT", "TIMEOUT", "ServeProcess", "post_as", "run", "screen", "spawn_chat", "terminal_env"]

SECURECHAT = [sys.executable, "-m", "securechat"]
TIMEOUT = 30


def run(
    *args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SECURECHAT, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env={**os.environ, **(env or {})},
    )


def terminal_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    # pexpect's terminal does not answer cursor-position requests; a real one does.
    env.update(TERM="xterm", NO_COLOR="1", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="140", LINES="40")
    return env


def spawn_chat(cwd: Path, config: str, port: int, *extra: str) -> pexpect.spawn:
    """`securechat chat` on a pseudo-terminal, its banner read."""
    child = pexpect.spawn(
        SECURECHAT[0],
        [*SECURECHAT[1:], "chat", "--config", config, "--target", f"localhost:{port}", *extra],
        cwd=str(cwd),
        env=terminal_env(),
        encoding="utf-8",
        dimensions=(40, 140),
        timeout=TIMEOUT,
    )
    child.logfile_read = io.StringIO()  # everything the terminal received, for assertions over the whole session
    child.expect("Ctrl-D leaves")
    return child


def screen(child: pexpect.spawn) -> str:
    """Every character the client wrote to its terminal so far."""
    return child.logfile_read.getvalue()


def post_as(cwd: Path, config: str, port: int, *texts: str, room: str = "general") -> None:
    """Another member posts TEXTS through the Python API (any characters, newlines included) and waits for each echo."""
    script = (
        "import asyncio, sys\n"
        "from securechat.client import open_chat\n"
        "from securechat.config import load_client_config\n"
        "async def main():\n"
        f"    config = load_client_config({config!r}, target='localhost:{port}')\n"
        "    async with open_chat(config) as chat:\n"
        f"        for text in {list(texts)!r}:\n"
        f"            await chat.send(text, room={room!r})\n"
        "            async for event in chat:\n"
        "                if event.kind == 1 and event.text == text:\n"
        "                    break\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr
