"""deploy/systemd: the unit's exact command lines work against its file layout."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest
from deploy_support import DEPLOY, ETC, INSTALLED, free_port, run

from securechat import pki

SYSTEMD = DEPLOY / "systemd"


def unit_settings(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment; systemd allows repeated keys."""
    settings, section = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        settings.append((section, key.strip(), value.strip()))
    return settings


def unit_value(path: Path, key: str) -> str:
    values = [value for _, k, value in unit_settings(path) if k == key]
    assert len(values) == 1, f"{path.name}: expected one {key}=, found {values}"
    return values[0]


def localize(command: str, etc: Path, shim: Path) -> list[str]:
    """A unit's command line with /etc/securechat and the install prefix pointed at the test's stand-ins."""
    # systemd unescapes "$$" to "$" before running the line.
    command = command.replace(INSTALLED, str(shim)).replace(ETC, str(etc)).replace("$$", "$")
    return shlex.split(command)


@pytest.fixture
def etc(tmp_path: Path, env: dict[str, str]) -> tuple[Path, int]:
    """/etc/securechat as deploy/README.md's systemd section builds it, on a free port."""
    etc = tmp_path / "etc-securechat"
    etc.mkdir()
    port = free_port()
    for name in ("server.yaml", "health.yaml"):
        text = (SYSTEMD / name).read_text(encoding="utf-8")
        assert ":50051" in text, f"{name} no longer names port 50051; update this test"
        (etc / name).write_text(text.replace(":50051", f":{port}"), encoding="utf-8")
    certs = str(etc / "certs")
    for argv in (
        ["securechat", "certs", "init", "--dir", certs],
        ["securechat", "certs", "server", "server", "--san", "localhost", "--san", "127.0.0.1", "--dir", certs],
        ["securechat", "certs", "client", "probe", "--dir", certs],
    ):
        result = run(argv, env)
        assert result.returncode == 0, result.stderr
    return etc, port


@pytest.mark.slow
def test_unit_starts_becomes_ready_and_stops_cleanly(etc, shim, env, start_server) -> None:
    """ExecStart serves, ExecStartPost sees SERVING over mTLS, SIGTERM exits 0 within TimeoutStopSec."""
    root, port = etc
    unit = SYSTEMD / "securechat.service"
    server = start_server(localize(unit_value(unit, "ExecStart"), root, shim), cwd=root)
    server.wait_for(rf"listening on 0\.0\.0\.0:{port}\b")

    ready = run(localize(unit_value(unit, "ExecStartPost"), root, shim), env)
    assert ready.returncode == 0, ready.stdout + ready.stderr

    health = run(["securechat", "health", "--config", str(root / "health.yaml")], env)
    assert health.returncode == 0, health.stderr
    assert "SERVING" in health.stdout

    timeout = float(unit_value(unit, "TimeoutStopSec").removesuffix("s"))
    assert server.terminate(timeout=timeout) == 0, server.output


@pytest.mark.slow
def test_health_without_a_client_certificate_fails(etc, shim, env, start_server) -> None:
    """The failing twin: the readiness check's config minus its certificate is refused, exit 1."""
    root, port = etc
    unit = SYSTEMD / "securechat.service"
    server = start_server(localize(unit_value(unit, "ExecStart"), root, shim), cwd=root)
    server.wait_for(rf"listening on 0\.0\.0\.0:{port}\b")
    anonymous = root / "anonymous.yaml"
    anonymous.write_text(f"target: localhost:{port}\ntls:\n  ca: certs/ca.pem\n", encoding="utf-8")

    result = run(["securechat", "health", "--config", str(anonymous)], env)

    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, f"expected one line, got:\n{result.stderr}"


def test_readiness_wait_starts_once_the_server_runs_as_its_user() -> None:
    """ExecStartPost asks kill -0 about the server: Type=exec starts it only after the server's exec.

    With Type=simple both start together; under load the wait asked while the
    server was still root, kill -0 failed with EPERM and `systemctl start`
    succeeded for a server that then exited 1 (tests/deploy/containers shows
    the start failing as it should).
    """
    unit = SYSTEMD / "securechat.service"
    assert unit_value(unit, "Type") == "exec"
    assert 'kill -0 "$MAINPID"' in unit_value(unit, "ExecStartPost")


def test_unit_hides_the_ca_key_and_reads_certs_read_only(etc) -> None:
    """The CA key `certs init` writes is the path the unit makes inaccessible; certs are read-only."""
    root, _ = etc
    unit = SYSTEMD / "securechat.service"
    hidden = unit_value(unit, "InaccessiblePaths").removeprefix("-")
    assert (root / Path(hidden).relative_to(ETC)).is_file()
    assert unit_value(unit, "ReadOnlyPaths") == ETC
    assert unit_value(unit, "ProtectSystem") == "strict"
    assert unit_value(unit, "CapabilityBoundingSet") == ""
    assert unit_value(unit, "ExecReload") == "/bin/sh -c 'kill -HUP \"$MAINPID\"'"


def test_renew_unit_skips_a_fresh_certificate(etc, shim, env) -> None:
    """securechat-renew.service's ExecCondition skips (exit 1..254) a fresh certificate; ExecStart is a real command."""
    root, _ = etc
    unit = SYSTEMD / "securechat-renew.service"
    condition = run(localize(unit_value(unit, "ExecCondition"), root, shim), env)
    assert condition.returncode == 1, condition.stdout + condition.stderr
    assert "Nothing to renew within 30d: server" in condition.stdout
    renew = run([*localize(unit_value(unit, "ExecStart"), root, shim), "--help"], env)
    assert renew.returncode == 0, renew.stderr
    assert shutil.which("systemctl") is None or unit_value(unit, "ExecStartPost").startswith("+")


def test_renew_unit_renews_a_certificate_that_is_due(etc, shim, env) -> None:
    """The twin: a server certificate 10 days from expiry makes ExecCondition pass (0); ExecStart renews it."""
    root, _ = etc
    certs = root / "certs"
    reissued = run(["securechat", "certs", "server", "server", "--days", "10", "--force", "--dir", str(certs)], env)
    assert reissued.returncode == 0, reissued.stderr
    before = pki.load_certificate(certs / "server.pem")
    unit = SYSTEMD / "securechat-renew.service"

    condition = run(localize(unit_value(unit, "ExecCondition"), root, shim), env)
    assert condition.returncode == 0, condition.stdout + condition.stderr
    assert "server: expires" in condition.stdout and "(10 days left)" in condition.stdout
    renewed = run(localize(unit_value(unit, "ExecStart"), root, shim), env)
    assert renewed.returncode == 0, renewed.stderr

    after = pki.load_certificate(certs / "server.pem")
    assert after.serial_number != before.serial_number
    assert pki.subject_alternative_names(after) == pki.subject_alternative_names(before)
    assert run(localize(unit_value(unit, "ExecCondition"), root, shim), env).returncode == 1


def test_renew_unit_fails_loudly_when_it_cannot_check(tmp_path, shim, env) -> None:
    """A missing certs directory is neither due nor fine: ExecCondition exits 255, which fails the unit."""
    unit = SYSTEMD / "securechat-renew.service"
    condition = run(localize(unit_value(unit, "ExecCondition"), tmp_path / "missing", shim), env)
    assert condition.returncode == 255, condition.stdout + condition.stderr
    assert "not found" in condition.stderr
