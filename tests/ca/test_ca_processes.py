"""Real processes: a CA service, a server and chat clients with seconds-long certificates that renew themselves.

Lifetimes here are 10-15 s (ca.yaml testing_short_lifetimes) so several
renewals fit in a test; sleeps are bounded and every wait has a deadline.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from securechat import pki
from tests.ca.conftest import CaEnv
from tests.ca.processes import Proc, issue_short, served_serial, start_ca_process, start_server_process, write_yaml

pytestmark = pytest.mark.slow


def _deployment(env: CaEnv, *, seconds: int, ca_port: int | None = None) -> None:
    """ca.yaml with SECONDS lifetimes; server and alice issued for SECONDS; carol for a day (she does not renew)."""
    env.ca_yaml(lifetimes={"client": f"{seconds}s", "server": f"{seconds}s"}, testing_short_lifetimes=True)
    issue_short(env, "server", kind="server", seconds=seconds)
    issue_short(env, "alice", kind="client", seconds=seconds)
    env.store.write_leaves([pki.issue_client_cert(env.ca, "carol", days=1)], force=True)


def _configs(env: CaEnv, ca_port: int, server_port: int | None = None) -> None:
    renew = {"ca": f"localhost:{ca_port}", "retry_max_seconds": 1}
    write_yaml(
        env.root / "server.yaml",
        {
            "listen": "127.0.0.1:0",
            "tls": {"cert": "certs/server.pem", "key": "certs/server-key.pem", "client_ca": "certs/root.pem", "renew": renew},
        },
    )
    if server_port is None:
        return
    client_tls = {"ca": "certs/root.pem", "cert": "certs/alice.pem", "key": "certs/alice-key.pem", "renew": renew}
    write_yaml(env.root / "alice.yaml", {"target": f"localhost:{server_port}", "tls": client_tls})
    write_yaml(
        env.root / "carol.yaml",
        {"target": f"localhost:{server_port}", "tls": {"ca": "certs/root.pem", "cert": "certs/carol.pem", "key": "certs/carol-key.pem"}},
    )


def _serial(path: Path) -> str:
    return f"{pki.load_certificate(path).serial_number:x}"


def test_a_chat_keeps_running_through_renewals_and_a_short_ca_outage(ca_env: CaEnv) -> None:
    """15 s certificates, 20-75 s of chat: server and alice renew several times, the CA is down for 3 s once.

    Nothing is lost or repeated (carol sees every message once, in order), carol's stream is never cut
    (one stream opened in the server's log), and new handshakes see new server serials.
    """
    _deployment(ca_env, seconds=15)
    ca, ca_port = start_ca_process(ca_env)
    _configs(ca_env, ca_port)
    server, port = start_server_process(ca_env.root)
    _configs(ca_env, ca_port, port)
    carol = Proc(ca_env.root, "chat", "--config", "carol.yaml", "--room", "general", stdin=True)
    alice = None
    try:
        server.wait_for(r"chat stream opened by carol")
        alice = Proc(ca_env.root, "chat", "--config", "alice.yaml", "--room", "general", stdin=True)
        served: list[str] = []
        alice_serials = {_serial(ca_env.store.cert_path("alice"))}
        trust, carol_pair = ca_env.store.root_cert_path, (ca_env.store.cert_path("carol"), ca_env.store.key_path("carol"))
        start = time.monotonic()
        sent = 0
        outage_done = False
        # Until what is asserted below has happened (three served serials, three of alice's,
        # the outage), at most 75 s: under load the processes start and renew later, never less.
        while time.monotonic() - start < 75 and not (
            outage_done and len(set(served)) >= 3 and len(alice_serials) >= 3 and time.monotonic() - start > 20
        ):
            sent += 1
            alice.send(f"m{sent}")
            served.append(served_serial(port, trust, carol_pair))
            alice_serials.add(_serial(ca_env.store.cert_path("alice")))
            if not outage_done and time.monotonic() - start > 12:
                ca.stop()  # the CA is down for 3 s: shorter than what is left of any certificate
                time.sleep(3)
                ca, _ = start_ca_process(ca_env, port=ca_port)
                outage_done = True
            time.sleep(0.5)
        alice.close_stdin()
        assert alice.wait(timeout=30) == 0, "\n".join(alice.lines)
        carol.wait_for(rf"\[general\] alice: m{sent}$", stream="out")
        received = [line.rsplit(": ", 1)[1] for line in carol.out if "] alice: " in line]
        assert received == [f"m{i}" for i in range(1, sent + 1)]
        assert server.count(r"chat stream opened by carol") == 1
        assert server.count(r"chat stream opened by alice") >= 2  # alice moved to new connections as she renewed
        assert len(set(served)) >= 3, served
        assert len(alice_serials) >= 3, alice_serials
        assert server.count(r"TLS files changed: new handshakes get certificate serial") >= 2
        assert not [line for line in alice.err if "EXPIRED" in line or "error" in line.lower()]
    finally:
        for proc in (alice, carol, server, ca):
            if proc is not None:
                proc.stop()


def test_a_ca_down_for_longer_than_the_lifetime_is_said_clearly(ca_env: CaEnv) -> None:
    """Failing twin: the CA stays down; alice's renewer warns with the time left, then says it EXPIRED; hello refuses to start."""
    _deployment(ca_env, seconds=10)
    ca, ca_port = start_ca_process(ca_env)
    _configs(ca_env, ca_port)
    server, port = start_server_process(ca_env.root)
    _configs(ca_env, ca_port, port)
    ca.stop()
    alice = Proc(ca_env.root, "chat", "--config", "alice.yaml", "--room", "general", stdin=True)
    try:
        alice.wait_for(r"renewal of alice \(serial \w+\) failed: CA service not reachable at localhost:\d+: .*the certificate expires in \d+s", stream="err")
        alice.wait_for(r"the certificate EXPIRED at .*: new connections with it will be refused until it is renewed or enrolled again", stream="err", timeout=20)
        hello = Proc(ca_env.root, "hello", "--config", "alice.yaml")
        assert hello.wait() == 1
        hello.wait_for(r"error: our certificate alice.pem \(serial \w+\) expired at .* and was not renewed in time from the CA at localhost:\d+; an expired certificate cannot renew. Enroll again", stream="err")
    finally:
        for proc in (alice, server):
            proc.stop()


def test_a_ca_crash_between_signing_and_replying_loses_no_record(ca_env: CaEnv, tmp_path: Path) -> None:
    """The CA exits after the commit and before the reply: the record is there, and the token never works twice."""
    ca_env.ca_yaml()
    ca, ca_port = start_ca_process(ca_env, extra_env={"SECURECHAT_CA_CRASH_AFTER_COMMIT": "1"})
    token = Proc(ca_env.root, "ca", "token", "dave", "--config", "ca.yaml", "--json")
    assert token.wait() == 0
    secret = json.loads("\n".join(token.out))["token"]
    out = tmp_path / "dave"
    enroll = ["certs", "enroll", "dave", "--ca", f"localhost:{ca_port}", "--ca-cert", str(ca_env.store.root_cert_path), "--token", secret, "--dir", str(out)]
    first = Proc(ca_env.root, *enroll)
    assert first.wait() == 1
    first.wait_for(r"error: CA service not reachable at localhost:\d+|error: the CA at localhost:\d+ could not enrol", stream="err")
    assert ca.wait() == 75
    assert not (out / "dave.pem").exists()
    with sqlite3.connect(ca_env.root / "ca.db") as db:
        serial, via = db.execute("SELECT serial, via FROM certificates WHERE name = 'dave'").fetchone()
        assert via == "enroll"
        assert db.execute("SELECT used_serial FROM tokens WHERE name = 'dave'").fetchone() == (serial,)
    ca, _ = start_ca_process(ca_env, port=ca_port)
    try:
        second = Proc(ca_env.root, *enroll)
        assert second.wait() == 1
        second.wait_for(rf"refused to enrol: this token was already used at .* \(certificate serial {serial}\); a token works once", stream="err")
    finally:
        ca.stop()
