"""deploy/compose + deploy/docker: the one-shot certs script, the server and its healthcheck, run for real."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from deploy_support import DEPLOY, ETC, free_port, load_yaml_documents, run

COMPOSE = DEPLOY / "compose"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


def services() -> dict:
    (compose,) = load_yaml_documents(COMPOSE / "compose.yaml")
    return compose["services"]


def certs_script(certs: Path) -> list[str]:
    """The certs service's command, with Compose's `$$` unescaped and the volume at CERTS."""
    service = services()["certs"]
    (script,) = service["command"]
    return [*service["entrypoint"], script.replace("$$", "$").replace(f"{ETC}/certs", str(certs))]


def bind_mounts(service: str) -> dict[str, Path]:
    """Container path -> file in deploy/compose for each read-only bind mount of SERVICE."""
    mounts = {}
    for spec in services()[service]["volumes"]:
        source, target, *options = spec.split(":")
        if source.startswith("./"):
            assert options == ["ro"], f"{service}: {spec} should be read-only"
            mounts[target] = COMPOSE / source
    return mounts


def dockerfile_instruction(name: str) -> str:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    (line,) = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return line.removeprefix(f"{name} ").strip()


@pytest.fixture
def volume(tmp_path: Path, env: dict[str, str]) -> Path:
    """The named volume after the certs service ran once."""
    certs = tmp_path / "etc-securechat" / "certs"
    certs.mkdir(parents=True, mode=0o700)
    result = run(certs_script(certs), env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return certs


def test_certs_service_runs_once_and_is_then_a_no_op(volume: Path, env: dict[str, str]) -> None:
    """First run issues ca/server/alice/bob/probe; a second run changes nothing and exits 0."""
    names = {"ca", "server", "alice", "bob", "probe"}
    assert {p.name for p in volume.glob("*.pem")} >= {f"{n}.pem" for n in names} | {f"{n}-key.pem" for n in names}
    before = {p.name: p.read_bytes() for p in volume.iterdir()}

    again = run(certs_script(volume), env)

    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    assert {p.name: p.read_bytes() for p in volume.iterdir()} == before


def test_certs_service_refuses_a_half_initialised_volume(volume: Path, env: dict[str, str]) -> None:
    """The failing twin: a volume with a CA but no server cert is reported, not papered over."""
    (volume / "server.pem").unlink()

    result = run(certs_script(volume), env)

    assert result.returncode == 1
    assert "docker compose down -v" in result.stderr


@pytest.mark.slow
def test_server_healthcheck_and_client_work_with_the_volume(volume: Path, env, start_server) -> None:
    """The server's command and mounts serve; its healthcheck and the example client succeed."""
    root = volume.parent
    port = free_port()
    for target, source in {**bind_mounts("server"), **bind_mounts("client")}.items():
        text = source.read_text(encoding="utf-8").replace(":50051", f":{port}").replace("server:", "localhost:")
        (root / Path(target).relative_to(ETC)).write_text(text.replace("0.0.0.0:", "127.0.0.1:"), encoding="utf-8")

    server = start_server(["securechat", *(a.replace(ETC, str(root)) for a in services()["server"]["command"])])
    server.wait_for(rf"listening on 127\.0\.0\.1:{port}\b")

    health = run([a.replace(ETC, str(root)) for a in services()["server"]["healthcheck"]["test"][1:]], env)
    assert health.returncode == 0, health.stderr
    hello = run(["securechat", *(a.replace(ETC, str(root)) for a in services()["client"]["command"])], env)
    assert hello.returncode == 0, hello.stderr
    assert hello.stdout.strip() == "Hello, alice!"
    assert server.terminate() == 0


def test_image_defaults_match_compose() -> None:
    """The image's CMD and HEALTHCHECK use the paths Compose mounts; Compose hardens every service."""
    assert json.loads(dockerfile_instruction("ENTRYPOINT")) == ["securechat"]
    assert json.loads(dockerfile_instruction("CMD")) == services()["server"]["command"]
    healthcheck = dockerfile_instruction("HEALTHCHECK")
    assert json.loads(healthcheck[healthcheck.index("CMD ") + 4 :]) == services()["server"]["healthcheck"]["test"][1:]
    assert dockerfile_instruction("USER") == "10001:10001"
    assert dockerfile_instruction("STOPSIGNAL") == "SIGTERM"
    for name, service in services().items():
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert service["user"] == "10001:10001", name
        assert "network_mode" not in service and not service.get("privileged"), name
    assert bind_mounts("server")[f"{ETC}/health.yaml"].is_file()
    assert services()["server"]["depends_on"]["certs"]["condition"] == "service_completed_successfully"
