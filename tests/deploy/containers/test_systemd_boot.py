"""deploy/systemd under a real systemd: PID 1 in a podman container (--systemd=always), on the host network.

The image (systemd/Containerfile) is the Debian base plus systemd, the
image's /opt/securechat venv, and deploy/systemd/* installed as
deploy/README.md says. The unit's hardening is left as shipped; the
container gets CAP_SYS_ADMIN and CAP_SYS_PTRACE so that systemd can build
the unit's namespaces (deploy/README.md, "systemd inside a container").
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from containers_support import BASE_IMAGE, DEPLOY, TIMINGS, Container, Engine
from deploy_support import free_port

HERE = Path(__file__).resolve().parent
TAG = "localhost/securechat-systemd:test"
SECURECHAT = "/opt/securechat/bin/securechat"
CERTS = "/etc/securechat/certs"
CAPS = "SYS_ADMIN,SYS_PTRACE"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="session")
def systemd_image(engine: Engine, image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    if engine.name != "podman":
        pytest.skip("booting systemd in a container is done with podman --systemd=always; this machine runs Docker")
    context = tmp_path_factory.mktemp("systemd-image")
    for unit in (DEPLOY / "systemd").iterdir():
        shutil.copy(unit, context / unit.name)
    shutil.copy(HERE / "systemd" / "Containerfile", context / "Containerfile")
    start = time.monotonic()
    engine.run(
        ["build", "--format", "docker", "--network=host", "--pull=never", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
         "--build-arg", f"APP_IMAGE={image}", "-t", TAG, str(context)],
        timeout=900,
    )  # fmt: skip
    TIMINGS["systemd image build"] = time.monotonic() - start
    return TAG


class Machine:
    """A booted container; `sh` runs a shell command in it as root."""

    def __init__(self, engine: Engine, container: Container) -> None:
        self.engine, self.name = engine, container.name

    def sh(self, script: str, *, check: bool = True, timeout: float = 60) -> str:
        result = self.engine.run(["exec", self.name, "sh", "-c", script], check=False, timeout=timeout)
        if check and result.returncode != 0:
            pytest.fail(
                f"in {self.name}: {script}\nexit {result.returncode}\n{result.stdout}{result.stderr}\n{self.journal()}"
            )
        return result.stdout

    def journal(self, unit: str = "securechat.service") -> str:
        return self.engine.run(
            ["exec", self.name, "journalctl", "--no-pager", "-o", "cat", "-u", unit], check=False
        ).stdout

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in properties))
        return dict(line.split("=", 1) for line in out.splitlines())

    def wait_until(self, what: str, condition, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout}s\n{self.journal()}")
            time.sleep(0.2)


@pytest.fixture
def machine(engine: Engine, systemd_image: str, container) -> Iterator[tuple[Machine, int]]:
    """systemd booted as PID 1, /etc/securechat laid out as deploy/README.md's systemd section, on a free port."""
    c = container()
    port = free_port()
    start = time.monotonic()
    engine.run(
        ["run", "--detach", "--name", c.name, "--systemd=always", "--network=host", "--cap-add", CAPS, systemd_image]
    )
    m = Machine(engine, c)
    m.wait_until(
        "systemd boots", lambda: m.sh("systemctl is-system-running", check=False).strip() in {"running", "degraded"}
    )
    TIMINGS["systemd: boot to running"] = time.monotonic() - start
    as_user = f"runuser -u securechat -- {SECURECHAT}"
    m.sh(
        f"set -e; sed -i 's/^listen: .*/listen: 127.0.0.1:{port}/' /etc/securechat/server.yaml;"
        f"sed -i 's/localhost:50051/localhost:{port}/' /etc/securechat/health.yaml;"
        f"{as_user} certs init --dir {CERTS} --no-passphrase --insecure >/dev/null 2>&1;"  # a test CA: unencrypted
        f"{as_user} certs server server --san localhost --san 127.0.0.1 --dir {CERTS} >/dev/null;"
        f"{as_user} certs client probe alice --dir {CERTS} >/dev/null;"
        f"printf 'target: localhost:{port}\\ntls:\\n  ca: {CERTS}/ca.pem\\n  cert: {CERTS}/alice.pem\\n"
        f"  key: {CERTS}/alice-key.pem\\n' > /root/alice.yaml"
    )
    yield m, port
    engine.run(["stop", "--time", "20", c.name], check=False)


def serial_of(m: Machine, name: str) -> str:
    """The certificate's serial as the server logs it (lowercase hex)."""
    path = f"{CERTS}/{name}.pem"
    program = f"from cryptography import x509; print('%x' % x509.load_pem_x509_certificate(open({path!r}, 'rb').read()).serial_number)"
    return m.engine.run(["exec", m.name, "/opt/securechat/bin/python", "-c", program]).stdout.strip()


def test_unit_runs_hardened_reloads_renews_and_stops_under_systemd(machine: tuple[Machine, int]) -> None:
    """start -> hardened process as `securechat`; hello works; reload re-reads; the timer renews; stop exits 0."""
    m, port = machine
    started = time.monotonic()
    m.sh("systemctl start securechat.service")  # returns once ExecStartPost saw SERVING over mTLS
    TIMINGS["systemd: systemctl start (until SERVING)"] = time.monotonic() - started
    assert m.show("securechat.service", "ActiveState", "SubState") == {"ActiveState": "active", "SubState": "running"}
    # journald may record the server's own lines a moment after systemd's "Started".
    m.wait_until(
        "the journal has the server's start line",
        lambda: f"securechat listening on 127.0.0.1:{port} (mTLS)" in m.journal(),
    )

    # The hardening is in force on the running process, not only in the file.
    pid = m.show("securechat.service", "MainPID")["MainPID"]
    status = dict(re.findall(r"^(\w+):\s*(.*)$", m.sh(f"cat /proc/{pid}/status"), re.MULTILINE))
    uid = m.sh("id -u securechat").strip()
    assert status["Uid"].split() == [uid] * 4 and uid != "0"
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    in_unit = f"nsenter --target {pid} --mount -- setpriv --reuid securechat --regid securechat --clear-groups"
    assert "Read-only file system" in m.sh(f"{in_unit} touch /etc/securechat/x 2>&1 || true")
    assert "Read-only file system" in m.sh(f"{in_unit} touch /opt/securechat/x 2>&1 || true")
    assert "Permission denied" in m.sh(f"{in_unit} cat {CERTS}/ca-key.pem 2>&1 || true")
    assert "BEGIN" in m.sh(f"runuser -u securechat -- head -c 40 {CERTS}/ca-key.pem")  # outside the unit it is there

    assert m.sh(f"{SECURECHAT} hello --config /root/alice.yaml").strip() == "Hello, alice!"

    # systemctl reload = SIGHUP: the server re-reads its certificate.
    before = serial_of(m, "server")
    m.sh(
        f"runuser -u securechat -- {SECURECHAT} certs renew server --dir {CERTS} >/dev/null && systemctl reload securechat"
    )
    renewed = serial_of(m, "server")
    assert renewed != before
    m.wait_until(
        "the reload re-reads the certificate",
        lambda: f"new handshakes get certificate serial {renewed}" in m.journal().lower(),
    )
    assert "SIGHUP received: reloading server.yaml, certificates and CRL" in m.journal()

    # The renew timer fires (a drop-in makes it fire now) and renews a certificate that is due.
    m.sh(
        f"runuser -u securechat -- {SECURECHAT} certs server server --days 10 --force --san localhost --san 127.0.0.1 --dir {CERTS} >/dev/null"
    )
    due = serial_of(m, "server")
    m.wait_until("the server picks up the reissued certificate", lambda: f"serial {due}" in m.journal().lower())
    m.sh(
        "mkdir -p /etc/systemd/system/securechat-renew.timer.d && printf '[Timer]\\nOnCalendar=\\nOnActiveSec=1s\\n"
        "RandomizedDelaySec=0\\nPersistent=false\\n' > /etc/systemd/system/securechat-renew.timer.d/now.conf"
        " && systemctl daemon-reload && systemctl start securechat-renew.timer"
    )
    m.wait_until(
        "securechat-renew.service ran",
        lambda: (
            m.show("securechat-renew.service", "Result", "ExecMainExitTimestampMonotonic")[
                "ExecMainExitTimestampMonotonic"
            ]
            != "0"
        ),
        timeout=60,
    )
    assert m.show("securechat-renew.service", "Result", "ExecMainStatus") == {
        "Result": "success",
        "ExecMainStatus": "0",
    }
    fresh = serial_of(m, "server")
    assert fresh != due
    rows = [row.split() for row in m.sh(f"{SECURECHAT} certs list --dir {CERTS}").splitlines()]
    (current,) = [row for row in rows if row[0] == "server" and row[-1] == "valid"]
    assert current[2] == fresh[:16] and current[4] == "365", rows  # renewed for the full default lifetime
    m.wait_until("the renew job's reload reaches the server", lambda: f"serial {fresh}" in m.journal().lower())
    assert m.sh(f"{SECURECHAT} hello --config /root/alice.yaml").strip() == "Hello, alice!"

    stopping = time.monotonic()
    m.sh("systemctl stop securechat.service")
    TIMINGS["systemd: systemctl stop"] = time.monotonic() - stopping
    assert m.show("securechat.service", "ActiveState", "Result", "ExecMainStatus") == {
        "ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0",
    }  # fmt: skip
    m.wait_until("the journal has the shutdown", lambda: "securechat.server.app: server stopped" in m.journal())
    journal = m.journal()
    assert "SIGTERM received: shutting down" in journal
    assert "Traceback" not in journal


def test_unit_with_a_broken_config_fails_once_and_stays_failed(machine: tuple[Machine, int]) -> None:
    """The twin: exit 1 (a config problem) is not restarted (RestartPreventExitStatus=1); the journal names the file."""
    m, _ = machine
    m.sh(f"rm {CERTS}/server-key.pem")

    result = m.engine.run(["exec", m.name, "systemctl", "start", "securechat.service"], check=False)

    if result.returncode != 1:  # Type=simple did this under load (see the unit); the state, files and journal say why
        state = m.show("securechat.service", "ActiveState", "SubState", "Result", "ExecMainStatus", "NRestarts")
        files = m.sh(f"ls -la {CERTS}", check=False)
        pytest.fail(f"systemctl start exited {result.returncode}; {state}\n{files}\n{m.journal()}")
    time.sleep(3)  # longer than RestartSec=2s: a restart would have happened by now
    state = m.show("securechat.service", "ActiveState", "Result", "ExecMainStatus", "NRestarts")
    assert state == {"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "1", "NRestarts": "0"}, state
    assert "certs/server-key.pem" in m.journal()
