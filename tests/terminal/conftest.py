"""Fixtures for tests/terminal: one quickstart directory and one real `securechat serve` process per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from terminal_support import ServeProcess, run


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `securechat quickstart` directory for the module."""
    root = tmp_path_factory.mktemp("terminal")
    done = run("quickstart", "--dir", ".", cwd=root)
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[ServeProcess]:
    running = ServeProcess(site)
    yield running
    running.stop()
