"""The command line of the hierarchy and the online CA: what each command writes and says, and its refusals."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from typer.testing import CliRunner

from securechat import pki
from securechat.config.ca import load_ca_config
from securechat.cli import app
from securechat.config import load_client_config, load_server_config
from tests.ca.conftest import CaEnv
from tests.ca.processes import Proc, start_ca_process, write_yaml

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args))


def test_certs_init_intermediate_says_where_the_root_key_goes(tmp_path: Path) -> None:
    """init --intermediate: root + intermediate written; the output names both and says to move the root key offline."""
    directory = tmp_path / "certs"
    result = _run("certs", "init", "--intermediate", "--dir", str(directory))
    assert result.exit_code == 0, result.output
    assert f"root key:     {directory}/root-key.pem   (signs only intermediates: move it offline)" in result.stdout
    assert (directory / "root.pem").is_file() and (directory / "ca.pem").is_file()
    issued = _run("certs", "client", "alice", "--dir", str(directory))
    assert issued.exit_code == 0, issued.output
    assert len(pki.load_certificates(directory / "alice.pem")) == 2
    again = _run("certs", "init", "--intermediate", "--dir", str(directory))
    assert again.exit_code == 1 and "root.pem already exists; refusing to overwrite it" in again.stderr


def test_certs_intermediate_from_an_offline_root(tmp_path: Path) -> None:
    """certs intermediate --root-dir: a new intermediate under the same root; a missing root key is one error line."""
    online = tmp_path / "certs"
    assert _run("certs", "init", "--intermediate", "--dir", str(online)).exit_code == 0
    offline = tmp_path / "offline"
    offline.mkdir(mode=0o700)
    for name in ("root.pem", "root-key.pem"):
        (offline / name).write_bytes((online / name).read_bytes())
    (online / "root-key.pem").chmod(0o600)
    (online / "root-key.pem").unlink()
    before = pki.load_certificate(online / "ca.pem")
    result = _run("certs", "intermediate", "--root-dir", str(offline), "--dir", str(online))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Installed a new intermediate")
    assert pki.load_certificate(online / "ca.pem") != before
    missing = _run("certs", "intermediate", "--root-dir", str(online), "--dir", str(online))
    assert missing.exit_code == 1
    assert "root-key.pem not found. Point --root-dir at the directory holding the root's root.pem and root-key.pem" in missing.stderr


def test_quickstart_ca_service_writes_configs_that_load(tmp_path: Path) -> None:
    """quickstart --ca-service: the hierarchy, ca.yaml and server/alice/bob configs with tls.renew; all load."""
    result = _run("quickstart", "--ca-service", "--dir", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output
    demo = tmp_path / "demo"
    assert "securechat ca serve --config" in result.stdout
    ca = load_ca_config(demo / "ca.yaml")
    assert ca.lifetimes.client == dt.timedelta(hours=24) and ca.listen.port == 50052
    server = load_server_config(demo / "server.yaml")
    assert server.tls is not None and server.tls.renew is not None and server.tls.client_ca == demo / "certs" / "root.pem"
    alice = load_client_config(demo / "alice.yaml")
    assert alice.tls is not None and alice.tls.renew is not None and str(alice.tls.renew.ca) == "localhost:50052"
    leaf = pki.load_certificates(demo / "certs" / "alice.pem")
    assert len(leaf) == 2 and leaf[0].not_valid_after_utc - leaf[0].not_valid_before_utc == dt.timedelta(hours=24, minutes=5)


def test_ca_token_prints_the_enroll_command(ca_env: CaEnv) -> None:
    """ca token: the token once, its grant, and the exact enroll command; --ttl beyond tokens.max_ttl is refused."""
    ca_env.ca_yaml(listen="127.0.0.1:50099")
    result = _run("ca", "token", "alice", "--config", str(ca_env.root / "ca.yaml"), "--ttl", "10m")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Token for client 'alice' (DNS:alice), single use, expires ")
    assert lines[1].startswith("sct1.")
    assert lines[3].startswith("  securechat certs enroll alice --ca 127.0.0.1:50099 --ca-cert ") and f"--token {lines[1]} --dir DIR" in lines[3]
    too_long = _run("ca", "token", "alice", "--config", str(ca_env.root / "ca.yaml"), "--ttl", "30d")
    assert too_long.exit_code == 1 and "--ttl 30d is outside what ca.yaml allows (1s to tokens.max_ttl, 7d). Pass a shorter --ttl." in too_long.stderr
    bad = _run("ca", "token", "Alice!", "--config", str(ca_env.root / "ca.yaml"))
    assert bad.exit_code == 1 and "certificate name 'Alice!' is not allowed" in bad.stderr


def test_enroll_renew_and_revoke_from_the_command_line(ca_env: CaEnv, tmp_path: Path) -> None:
    """certs enroll, certs renew --ca and ca revoke against a real CA process; the revoked one cannot renew."""
    ca_env.ca_yaml()
    ca, port = start_ca_process(ca_env)
    try:
        config = str(ca_env.root / "ca.yaml")
        token = json.loads(_run("ca", "token", "alice", "--config", config, "--json").stdout)["token"]
        out = tmp_path / "alice-certs"
        root = str(ca_env.store.root_cert_path)
        enrolled = _run("certs", "enroll", "alice", "--ca", f"localhost:{port}", "--ca-cert", root, "--token", token, "--dir", str(out))
        assert enrolled.exit_code == 0, enrolled.output
        assert enrolled.stdout.startswith('Enrolled "alice" (DNS:alice): serial ')
        assert (out / "alice-key.pem").stat().st_mode & 0o077 == 0
        assert (out / "root.pem").read_bytes() == ca_env.store.root_cert_path.read_bytes()
        first = pki.load_certificate(out / "alice.pem")
        renewed = _run("certs", "renew", "alice", "--ca", f"localhost:{port}", "--dir", str(out))
        assert renewed.exit_code == 0, renewed.output
        second = pki.load_certificate(out / "alice.pem")
        assert second.serial_number != first.serial_number
        assert f"(was {first.serial_number:x}), new key" in renewed.stdout
        revoked = _run("ca", "revoke", "alice", "--config", config, "--reason", "key-compromise")
        assert revoked.exit_code == 0, revoked.output
        assert f"serial {second.serial_number:x} (reason: key-compromise)" in revoked.stdout
        assert "Renewals of these certificates are refused now." in revoked.stdout
        refused = _run("certs", "renew", "alice", "--ca", f"localhost:{port}", "--dir", str(out))
        assert refused.exit_code == 1
        assert f"refused to renew: the certificate of alice (serial {second.serial_number:x}) is revoked in" in refused.stderr
        assert refused.stderr.rstrip().endswith(": a revoked certificate cannot renew")
        assert pki.load_certificate(out / "alice.pem") == second  # nothing written
    finally:
        ca.stop()


def test_agent_renews_and_runs_the_command(ca_env: CaEnv, tmp_path: Path) -> None:
    """securechat agent: a due certificate is renewed at once and --exec runs after it."""
    ca_env.ca_yaml(lifetimes={"client": "10s"}, testing_short_lifetimes=True)
    now = pki.utc_now()
    ca_env.store.write_leaves(
        [pki.issue_client_cert(ca_env.ca, "nginx", not_before=now - dt.timedelta(seconds=20), not_after=now + dt.timedelta(seconds=20))]
    )
    ca, port = start_ca_process(ca_env)
    marker = tmp_path / "reloaded"
    config = write_yaml(
        ca_env.root / "agent.yaml",
        {
            "target": "localhost:1",
            "tls": {"ca": "certs/root.pem", "cert": "certs/nginx.pem", "key": "certs/nginx-key.pem", "renew": {"ca": f"localhost:{port}"}},
        },
    )
    before = pki.load_certificate(ca_env.store.cert_path("nginx"))
    agent = Proc(ca_env.root, "agent", "--config", str(config), "--exec", f"touch {marker}")
    try:
        agent.wait_for(r"ran touch .* after renewal: exit code 0")
        assert marker.exists()
        assert pki.load_certificate(ca_env.store.cert_path("nginx")).serial_number != before.serial_number
    finally:
        agent.stop()
        ca.stop()


def test_agent_refuses_exec_with_signal(ca_env: CaEnv) -> None:
    """Failing twin: --exec and --signal together is one error line, nothing runs."""
    result = _run("agent", "--config", str(ca_env.root / "x.yaml"), "--exec", "true", "--signal", "HUP", "--pid-file", "p")
    assert result.exit_code == 1 and "--exec: cannot be combined with --signal. Use one of them." in result.stderr
