"""`securechat doctor`: each broken setup built for real, and the exact line the doctor prints for it."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket

import pytest
from typer.testing import CliRunner

from securechat import pki
from securechat.cli import app
from securechat.doctor import Finding, run_checks

runner = CliRunner()


def failed(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings if not f.ok}


async def doctor(path) -> list[Finding]:
    # run_checks is synchronous (it runs its own WhoAmI event loop); the server runs on this loop.
    return await asyncio.to_thread(run_checks, path)


async def test_a_healthy_client_passes_every_check(deployment, start):
    """The passing twin of everything below: every check OK, ending with WhoAmI naming us."""
    server = await start()
    findings = await doctor(deployment.client_yaml("alice", server.port))
    assert failed(findings) == {}
    checks = [f.check for f in findings]
    for check in ("key permissions", "key matches certificate", "chain", "extended key usage", "validity", "revocation",
                  "reachable", "server name", "ALPN", "server accepts our certificate", "WhoAmI"):  # fmt: skip
        assert check in checks
    serial = f"{pki.load_certificate(deployment.store.cert_path('alice')).serial_number:x}"
    by_check = {finding.check: finding for finding in findings}
    assert by_check["WhoAmI"].message == f"the server says we are 'alice' (serial {serial})"
    assert [f.check for f in findings][-3:] == ["WhoAmI", "SayHello", "Chat"]
    assert by_check["Chat"].message == "allowed: a chat stream opens (no room was joined)"


async def test_server_not_reachable(deployment):
    """Nothing listens on the port: 'reachable' fails and names the target."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bad = failed(await doctor(deployment.client_yaml("alice", port)))
    assert bad["reachable"].message.startswith(f"cannot connect to localhost:{port}")
    assert "Start the server" in bad["reachable"].fix


async def test_ip_target_without_an_ip_san(deployment, start):
    """A server certificate for 'localhost' only, reached as 127.0.0.1: the name check says an IP SAN is needed."""
    deployment.issue_server("server", sans=["localhost"])
    server = await start()
    bad = failed(await doctor(deployment.client_yaml("alice", server.port, target=f"127.0.0.1:{server.port}")))
    assert bad["server name"].message == "'127.0.0.1' is not among the server certificate's names (DNS:localhost); it needs an IP SAN"
    assert "--san 127.0.0.1" in bad["server name"].fix
    assert set(bad) == {"server name", "WhoAmI"}  # gRPC refuses the name as well


async def test_untrusted_server(deployment, start, pki_foreign_ca):
    """tls.ca is another CA: the doctor says the server's certificate is not signed by it."""
    server = await start()
    (deployment.root / "foreign-ca.pem").write_bytes(pki.certificate_pem(pki_foreign_ca.cert))
    bad = failed(await doctor(deployment.client_yaml("alice", server.port, tls={"ca": "foreign-ca.pem"})))
    assert bad["server trusted"].message.startswith("the server's certificate is not signed by the CA in")


async def test_server_does_not_trust_our_ca(deployment, start, pki_foreign_ca):
    """Our certificate comes from a CA the server does not trust: decoded from the TLS alert as unknown CA."""
    server = await start()
    deployment.issue_client("mallory", ca=pki_foreign_ca)
    both = deployment.root / "both.pem"
    both.write_bytes(pki.certificate_pem(deployment.ca.cert) + pki.certificate_pem(pki_foreign_ca.cert))
    bad = failed(await doctor(deployment.client_yaml("mallory", server.port, tls={"ca": "both.pem"})))
    assert bad["server accepts our certificate"].message.startswith(
        "the server refused our certificate: it does not trust the CA that signed our certificate"
    )


async def test_no_client_certificate(deployment, start):
    """No tls.cert/tls.key against an mTLS server: 'certificate required'."""
    server = await start()
    bad = failed(await doctor(deployment.client_yaml("alice", server.port, tls={"cert": None, "key": None})))
    assert "it requires a client certificate and we sent none" in bad["server accepts our certificate"].message


async def test_expired_client_certificate(deployment, start):
    """An expired certificate fails locally and the server's alert says so too."""
    server = await start()
    long_ago = pki.utc_now() - dt.timedelta(days=30)
    deployment.issue_client("old", not_before=long_ago, not_after=long_ago + dt.timedelta(days=1))
    bad = failed(await doctor(deployment.client_yaml("old", server.port)))
    assert bad["validity"].message.startswith(f"{deployment.store.cert_path('old')} expired on")
    assert "(29 days ago)" in bad["validity"].message  # the same day count as certs inspect ("expired 29 days ago")
    assert bad["validity"].fix == f"Run 'securechat certs renew old --dir {deployment.store.directory}'."
    assert "our certificate has expired" in bad["server accepts our certificate"].message


async def test_wrong_extended_key_usage(deployment, start):
    """A server certificate used as a client certificate: EKU fails locally, the server says unsupported purpose."""
    server = await start()
    bad = failed(await doctor(deployment.client_yaml("server", server.port)))
    # The decision core's wording, the same the config loader raises (issue 12: one core, one message).
    assert bad["extended key usage"].message.endswith("is not a client certificate (its extended key usage lacks clientAuth).")
    assert bad["extended key usage"].code == "wrong-eku"
    assert "unsupported purpose" in bad["server accepts our certificate"].message


async def test_key_mismatch_and_world_readable_key(deployment, start):
    """bob's key with alice's certificate, mode 0644: both named, with their fixes."""
    server = await start()
    key = deployment.root / "wrong-key.pem"
    key.write_bytes(deployment.store.key_path("bob").read_bytes())
    key.chmod(0o644)
    bad = failed(await doctor(deployment.client_yaml("alice", server.port, tls={"key": "wrong-key.pem"})))
    assert bad["key matches certificate"].message == f"{key} does not match the certificate {deployment.store.cert_path('alice')}."
    assert bad["key permissions"].message.endswith("is readable by other users (mode 0644)")
    assert bad["key permissions"].fix.startswith("Run 'chmod 600 ")


async def test_an_identity_that_cannot_call_chat_fails_doctor_naming_the_rule(deployment, start):
    """WhoAmI allowed but authz.methods keeps bob out of Chat: doctor checks Chat too and names the rule."""
    server = await start(authz={"allow": ["alice", "bob"], "methods": {"Chat": ["alice"]}})
    bad = failed(await doctor(deployment.client_yaml("bob", server.port)))
    assert set(bad) == {"Chat"}
    assert bad["Chat"].message == (
        "server refused the call: identity 'bob' is not allowed to call /securechat.v1.ChatService/Chat"
        " by authz.methods['/securechat.v1.ChatService/Chat']. Ask its operator to add us to that rule."
    )


async def test_revoked_client(deployment, start):
    """Revoked: the local CRL says so, and WhoAmI is refused naming the serial."""
    deployment.store.revoke(deployment.ca, "bob")
    server = await start()
    serial = f"{pki.load_certificate(deployment.store.cert_path('bob')).serial_number:x}"
    bad = failed(await doctor(deployment.client_yaml("bob", server.port)))
    assert bad["revocation"].message.startswith(f"our certificate (serial {serial}) is revoked in")
    assert bad["WhoAmI"].message.startswith(f"server refused our identity: certificate serial {serial} (bob) is revoked. Ask")
    assert "Chat" not in bad  # said once: a revoked identity is refused every method


def test_server_config_and_cli_output(deployment) -> None:
    """A server certificate 10 days from expiry, past 2/3 of its 30, with nothing renewing it: one WARN line, exit 0."""
    now = pki.utc_now()
    deployment.issue_server("server", not_before=now - dt.timedelta(days=20), not_after=now + dt.timedelta(days=10))
    result = runner.invoke(app, ["doctor", "--config", str(deployment.server_yaml())])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "OK   config: server.yaml is a valid server config"
    (warning,) = [line for line in lines if line.startswith("WARN")]
    assert warning.startswith("WARN validity: ") and "expires soon" in warning and "(10 days left, 67% of its lifetime gone)" in warning
    assert warning.endswith(f"Fix: Run 'securechat certs renew server --dir {deployment.store.directory}', or set tls.renew so it renews itself.")
    assert not [line for line in lines if line.startswith("FAIL")]


def test_a_fresh_short_lived_certificate_is_fine(deployment) -> None:
    """The twin of the old 30-day rule: a fresh 1-day certificate is OK, not 'expires soon'."""
    deployment.issue_server("server", days=1)
    result = runner.invoke(app, ["doctor", "--config", str(deployment.server_yaml())])
    assert result.exit_code == 0, result.output
    assert any(line.startswith("OK   validity: valid until") for line in result.stdout.splitlines())


def test_renewal_configured_but_failing_fails(deployment) -> None:
    """With tls.renew, a certificate past 80% of its lifetime means renewal is failing: FAIL, and the CA probe says why."""
    now = pki.utc_now()
    deployment.issue_server("server", not_before=now - dt.timedelta(hours=20), not_after=now + dt.timedelta(hours=4))
    config = deployment.server_yaml(tls={"renew": {"ca": "localhost:1"}})
    result = runner.invoke(app, ["doctor", "--config", str(config)])
    assert result.exit_code == 1, result.output
    fails = {line.split(":", 1)[0]: line for line in result.stdout.splitlines() if line.startswith("FAIL")}
    assert "renewal is failing: it should have been renewed by" in fails["FAIL validity"]
    assert "CA service not reachable at localhost:1" in fails["FAIL renewal CA"]


def test_a_broken_config_is_one_failing_line(deployment) -> None:
    """An invalid config stops at the first check, naming the problem."""
    path = deployment.write_yaml("broken.yaml", {"target": "localhost:1", "tls": {"ca": "missing.pem"}, "extra": 1})
    (finding,) = run_checks(path)
    assert (finding.ok, finding.check) == (False, "config")
    assert "extra: unknown key" in finding.message


@pytest.mark.parametrize("missing", ["cert", "key"])
def test_server_missing_file(deployment, missing: str) -> None:
    """A missing server certificate or key file is named with the command that issues it."""
    target = deployment.store.cert_path("server") if missing == "cert" else deployment.store.key_path("server")
    target.unlink()
    bad = failed(run_checks(deployment.server_yaml()))
    label = f"tls.{missing} file"
    assert bad[label].message.endswith("not found")
    assert bad[label].fix == f"Run 'securechat certs server server --dir {deployment.store.directory}' or fix the path."
