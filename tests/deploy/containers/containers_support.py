"""Helpers for tests/deploy/containers: a container engine driven for real, containers on the host network.

Every container here runs with --network=host and its server on 127.0.0.1
and a free port: no packet goes to a bridge address.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
IMAGE = "securechat:local"
BASE_IMAGE = "localhost/securechat-base:bookworm"
# Costs measured in this run, printed at the end of the session (conftest.py).
TIMINGS: dict[str, float] = {}


@dataclass(frozen=True)
class Engine:
    """`podman` or `docker`, with the environment deploy/podman/env.sh chose."""

    name: str
    env: dict[str, str]

    def run(
        self, args: Sequence[str], *, timeout: float = 120, check: bool = True, **kwargs
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(  # noqa: S603 - argv built here
            [self.name, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=kwargs.pop("stdin", subprocess.DEVNULL),
            **kwargs,
        )
        if check and result.returncode != 0:
            pytest.fail(f"{self.name} {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result


def engine_from_env_sh() -> Engine:
    """Source deploy/podman/env.sh (installing podman when root and missing) and take ENGINE and CONTAINERS_CONF."""
    script = f'source "{DEPLOY}/podman/env.sh" && printf "%s\\n%s\\n" "$ENGINE" "${{CONTAINERS_CONF:-}}"'
    # podman always: the tests use podman's own verbs (healthcheck run, top huser, --systemd=always).
    env = {**os.environ, "ENGINE": "podman"}
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=900, check=False)  # noqa: S607
    if result.returncode != 0:
        output = result.stdout + result.stderr
        if "install-deps: missing packages" in output:
            pytest.skip(f"no container engine and this user cannot apt-get one: {output.strip().splitlines()[-1]}")
        pytest.fail(f"deploy/podman/env.sh failed:\n{output}")
    name, conf = result.stdout.splitlines()[-2:]
    env = {**os.environ}
    if conf:
        env["CONTAINERS_CONF"] = conf
    return Engine(name, env)


@dataclass
class Container:
    """A detached container; removed (forcibly) when the test ends."""

    engine: Engine
    name: str = field(default_factory=lambda: f"securechat-test-{uuid.uuid4().hex[:10]}")

    def logs(self) -> str:
        result = self.engine.run(["logs", self.name], check=False)
        return result.stdout + result.stderr

    def wait_for_log(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if match := re.search(pattern, self.logs()):
                return match
            if self.state("{{.State.Running}}") == "false":
                break
            time.sleep(0.1)
        pytest.fail(f"container {self.name} never logged {pattern!r}:\n{self.logs()}")

    def state(self, template: str) -> str:
        return self.engine.run(["inspect", "--format", template, self.name], check=False).stdout.strip()

    def remove(self) -> None:
        self.engine.run(["rm", "--force", "--time", "0", self.name], check=False)
