"""deploy/docker: the image built for real (`make image`'s script) and run read-only, non-root, on the host network."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from containers_support import DEPLOY, TIMINGS, Engine
from deploy_support import free_port

SECURECHAT = [sys.executable, "-m", "securechat"]
# What podman itself puts into a --read-only container's upper layer: the
# mount points of the files it bind-mounts (hosts, resolv.conf, ...).
RUNTIME_MOUNT_POINTS = {"/etc", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run", "/run/.containerenv"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def securechat(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SECURECHAT, *args], capture_output=True, text=True, timeout=timeout, check=False)


def quickstart(tmp_path: Path) -> Path:
    directory = tmp_path / "quickstart"
    result = securechat("quickstart", "--dir", str(directory))
    assert result.returncode == 0, result.stderr
    return directory


def mount_dir(qs: Path, out: Path, port: int) -> Path:
    """deploy/docker/from-quickstart.sh: the quickstart set as the image mounts it, on 127.0.0.1:PORT."""
    env = {**os.environ, "SECURECHAT": " ".join(SECURECHAT)}
    result = subprocess.run(
        ["bash", str(DEPLOY / "docker" / "from-quickstart.sh"), str(qs), str(out), "--listen", f"127.0.0.1:{port}"],  # noqa: S607
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def run_server(engine: Engine, container, image: str, mount: Path, *extra: str):
    c = container()
    engine.run([
        "run", "--detach", "--name", c.name, "--network=host", "--read-only", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "-v", f"{mount}:/etc/securechat:ro", *extra, image,
    ])  # fmt: skip
    return c


def test_image_serves_read_only_as_non_root_and_stops_cleanly(
    engine: Engine, image: str, container, tmp_path: Path
) -> None:
    """Host client over loopback, HEALTHCHECK healthy, UID 10001, nothing written to /, SIGTERM exits 0."""
    qs = quickstart(tmp_path)
    port = free_port()
    mount = mount_dir(qs, tmp_path / "etc-securechat", port)

    started = time.monotonic()
    server = run_server(engine, container, image, mount)
    server.wait_for_log(rf"securechat listening on 127\.0\.0\.1:{port} \(mTLS\)")
    hello = securechat("hello", "--config", str(qs / "alice.yaml"), "--target", f"localhost:{port}")
    assert hello.returncode == 0, hello.stderr + server.logs()
    assert hello.stdout.strip() == "Hello, alice!"

    # podman 4.3 runs HEALTHCHECK from systemd timers, and there is no systemd
    # here; `healthcheck run` runs the image's own check, in the container.
    health = engine.run(["healthcheck", "run", server.name], check=False)
    assert health.returncode == 0, health.stdout + health.stderr + server.logs()
    assert server.state("{{.State.Health.Status}}") == "healthy"
    TIMINGS["container: start to healthy"] = time.monotonic() - started

    top = engine.run(["top", server.name, "huser", "hgroup", "args"]).stdout.splitlines()
    (process,) = [line for line in top[1:] if "securechat serve" in line]
    assert process.split()[:2] == ["10001", "10001"], top
    touch = engine.run(["exec", server.name, "touch", "/opt/securechat/written"], check=False)
    assert touch.returncode == 1 and "Read-only file system" in touch.stderr
    changed = {line.split(maxsplit=1)[1] for line in engine.run(["diff", server.name]).stdout.splitlines()}
    assert changed <= RUNTIME_MOUNT_POINTS, (
        f"the container wrote to its root filesystem: {changed - RUNTIME_MOUNT_POINTS}"
    )

    stopping = time.monotonic()
    engine.run(["stop", "--time", "15", server.name])
    TIMINGS["container: podman stop (SIGTERM) to exit"] = time.monotonic() - stopping
    assert server.state("{{.State.ExitCode}}") == "0"
    log = server.logs()
    assert "SIGTERM received: shutting down" in log
    assert log.rstrip().splitlines()[-1].endswith("securechat.server.app: server stopped"), log
    assert "Traceback" not in log


def test_image_without_a_client_certificate_is_refused(engine: Engine, image: str, container, tmp_path: Path) -> None:
    """The twin of the hello above: the same server, a client config with no certificate, exit 1 in one line."""
    qs = quickstart(tmp_path)
    port = free_port()
    server = run_server(engine, container, image, mount_dir(qs, tmp_path / "etc-securechat", port))
    server.wait_for_log(rf"listening on 127\.0\.0\.1:{port}")
    anonymous = qs / "anonymous.yaml"
    anonymous.write_text(f"target: localhost:{port}\ntls:\n  ca: certs/ca.pem\n", encoding="utf-8")

    result = securechat("hello", "--config", str(anonymous))

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr


def test_image_refuses_a_quickstart_set_mounted_as_is(engine: Engine, image: str, container, tmp_path: Path) -> None:
    """A certs directory owned by root, 0700, is unreadable to UID 10001: exit 1, one line naming the file, no port."""
    qs = quickstart(tmp_path)
    server = run_server(engine, container, image, qs)
    engine.run(["wait", server.name], timeout=60)
    log = server.logs()

    assert server.state("{{.State.ExitCode}}") == "1", log
    assert log == (
        "error: server.yaml: tls.client_ca: certs/ca.pem cannot be read by this user (uid 10001). "
        "Fix its owner or permissions.\n"
    )


def test_image_is_built_for_running_only(engine: Engine, image: str) -> None:
    """HEALTHCHECK survives (docker format), user 10001, no pip, setuptools or grpc_tools, no CA bundle inside."""
    config = engine.run(
        ["image", "inspect", "--format", "{{json .Config.Healthcheck.Test}} {{.Config.User}}", image]
    ).stdout
    assert config.split() == ['["CMD","securechat","health","--config","/etc/securechat/health.yaml"]', "10001:10001"]
    probe = (
        "import importlib.util as u, os; "
        "print([m for m in ('pip', 'setuptools', 'grpc_tools') if u.find_spec(m)], os.path.exists('/run/secrets/ca-bundle'))"
    )
    result = engine.run(["run", "--rm", "--network=host", "--entrypoint", "python3", image, "-c", probe])
    assert result.stdout.split("\n")[0] == "[] False"
