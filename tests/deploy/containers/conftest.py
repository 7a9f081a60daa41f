"""Fixtures for tests/deploy/containers: the engine, the image built once per session, containers cleaned up."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from containers_support import DEPLOY, IMAGE, ROOT, TIMINGS, Container, Engine, engine_from_env_sh

BUILD_TIMEOUT = 1200


@pytest.fixture(scope="session")
def engine() -> Engine:
    start = time.monotonic()
    found = engine_from_env_sh()
    TIMINGS["engine setup (apt-get when missing)"] = time.monotonic() - start
    return found


@pytest.fixture(scope="session")
def image(engine: Engine) -> str:
    """`make image`'s script, with the Debian-bootstrapped base (tests never try an image registry)."""
    base_cached = engine.run(["image", "inspect", "localhost/securechat-base:bookworm"], check=False).returncode == 0
    env = {**engine.env, "ENGINE": engine.name, "BASE": os.environ.get("SECURECHAT_TEST_BASE", "bootstrap")}
    start = time.monotonic()
    result = subprocess.run(  # noqa: S603
        ["bash", str(DEPLOY / "docker" / "build.sh")],  # noqa: S607 - bash from PATH
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,  # noqa: S607
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    TIMINGS[f"make image ({'base cached' if base_cached else 'base bootstrapped too'})"] = time.monotonic() - start
    assert result.returncode == 0, (
        f"deploy/docker/build.sh exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return IMAGE


@pytest.fixture
def container(engine: Engine) -> Iterator[Callable[[], Container]]:
    """Make Container handles; each is removed after the test."""
    made: list[Container] = []

    def make() -> Container:
        made.append(Container(engine))
        return made[-1]

    yield make
    for c in made:
        c.remove()


def pytest_terminal_summary(terminalreporter) -> None:
    if TIMINGS:
        terminalreporter.section("container costs (tests/deploy/containers)")
        for what, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{seconds:7.1f}s  {what}")
