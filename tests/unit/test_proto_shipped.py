"""The installed package carries the wire API: copies of protos/ in the wheel, written by `securechat proto`."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from securechat.cli import app

REPO = Path(__file__).resolve().parents[2]
_TOOL = REPO / "tools" / "protogen.py"
_spec = importlib.util.spec_from_file_location("protogen", _TOOL)
assert _spec is not None and _spec.loader is not None
protogen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(protogen)


def test_shipped_protos_are_the_source_of_truth(tmp_path: Path):
    """securechat/protos holds exactly protos/ (run 'make proto' if not)."""
    for fresh in protogen.copy_protos(tmp_path):
        proto_path = fresh.relative_to(tmp_path)
        assert (protogen.SHIPPED_DIR / proto_path).read_bytes() == fresh.read_bytes(), f"{proto_path} is stale: run 'make proto'"


def test_securechat_proto_writes_them_and_will_not_overwrite(tmp_path: Path):
    """`securechat proto --out DIR` writes both files with their proto paths; a second run refuses without --force."""
    runner = CliRunner()
    done = runner.invoke(app, ["proto", "--out", str(tmp_path)])
    assert done.exit_code == 0, done.output
    for name in ("securechat/v1/chat.proto", "securechat/ca/v1/ca.proto"):
        assert (tmp_path / name).read_bytes() == (REPO / "protos" / name).read_bytes()
    again = runner.invoke(app, ["proto", "--out", str(tmp_path)])
    assert again.exit_code == 1
    assert "already exists; refusing to overwrite it. Pass --force to replace it." in again.stderr
    assert runner.invoke(app, ["proto", "--out", str(tmp_path), "--force"]).exit_code == 0


@pytest.mark.slow
def test_the_wheel_carries_the_protos(tmp_path: Path):
    """A wheel built from this tree holds securechat/protos/.../chat.proto and ca.proto."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("securechat-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"securechat/protos/securechat/v1/chat.proto", "securechat/protos/securechat/ca/v1/ca.proto"} <= names
