"""Every connect failure named right, in one line, each beside its passing twin: real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import re
import threading

import grpc
import pytest

from securechat import pki
from securechat.client import open_channel, say_hello
from securechat.config import load_client_config
from securechat.errors import ConfigError, ConnectError

WRONG_PORT = "not a securechat server (or the wrong port): localhost:{port} answered without TLS"


async def hello(config) -> str:
    async with open_channel(config) as channel:
        return await say_hello(channel)


async def test_the_server_port_works(deployment, start):
    """The passing twin of every case below: the listen address answers."""
    server = await start(health_port=0)
    assert await hello(deployment.client("alice", server.port)) == "Hello, alice!"


async def test_the_health_port_is_not_the_server(deployment, start):
    """The plaintext health port is 'not a securechat server / wrong port', not a refused certificate."""
    server = await start(health_port=0)
    port = server.health_port
    with pytest.raises(ConnectError, match=f"^{re.escape(WRONG_PORT.format(port=port))}") as raised:
        await hello(deployment.client("alice", port))
    assert "refused our certificate" not in str(raised.value)


async def test_an_http_server_is_not_the_server(deployment):
    """An HTTP server on the port: wrong port."""
    http_server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=http_server.serve_forever, daemon=True)
    thread.start()
    try:
        port = http_server.server_port
        with pytest.raises(ConnectError, match=f"^{re.escape(WRONG_PORT.format(port=port))}"):
            await hello(deployment.client("alice", port))
    finally:
        http_server.shutdown()


async def test_a_server_that_refuses_our_certificate_is_named_so(deployment, start, pki_foreign_ca):
    """A TLS server that does not trust our CA: 'server refused our certificate', with the commands that say why."""
    foreign = pki.issue_client_cert(pki_foreign_ca, "mallory")
    deployment.store.write_leaves([foreign], force=True)
    (deployment.root / "both-cas.pem").write_bytes(
        pki.certificate_pem(deployment.ca.cert) + pki.certificate_pem(pki_foreign_ca.cert)
    )
    server = await start()
    config = deployment.client("mallory", server.port, tls={"ca": "both-cas.pem"})
    with pytest.raises(ConnectError) as raised:
        await hello(config)
    assert str(raised.value) == (
        "server refused our certificate during the TLS handshake (not signed by its client CA, expired, revoked or"
        f" not a client certificate). Check it with 'securechat certs inspect {deployment.root / 'certs/mallory.pem'}',"
        " or run 'securechat doctor --config mallory.yaml'."
    )


async def test_an_expired_server_certificate_is_named_with_the_fix_on_the_server_side(deployment):
    """A server whose certificate expired: said as such, and the fix is the server's, not our tls.ca."""
    now = pki.utc_now()
    old = pki.issue_server_cert(deployment.ca, "old", not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=2))
    server = grpc.aio.server()
    port = server.add_secure_port(
        "127.0.0.1:0", grpc.ssl_server_credentials([(pki.private_key_pem(old.key), pki.certificate_pem(old.cert))])
    )
    await server.start()
    try:
        with pytest.raises(ConnectError) as raised:
            await hello(deployment.client("alice", port))
    finally:
        await server.stop(0)
    assert str(raised.value) == (
        f"the server's certificate has expired (the server at localhost:{port}, not ours)."
        " Its operator renews it where its CA is ('securechat certs renew NAME --dir DIR');"
        " a running securechat server picks the new files up by itself."
    )


async def test_an_unresolvable_host_gets_a_fix(deployment):
    """A host name that does not resolve: one line with what to do, no resolver dump."""
    config = deployment.client("alice", 50051, target="no-such-host.invalid:50051")
    with pytest.raises(ConnectError) as raised:
        await asyncio.wait_for(hello(config), 30)
    assert str(raised.value) == (
        "cannot resolve 'no-such-host.invalid' (target in alice.yaml): no such host."
        " Check its spelling, use an IP address, or add it to DNS or /etc/hosts."
    )


def test_config_that_is_a_directory(tmp_path):
    """--config pointing at a directory says so and how to fix it; a file there loads (its twin)."""
    with pytest.raises(ConfigError, match=r": is a directory, not a config file\. Pass the YAML file in it, e\.g\. --config "):
        load_client_config(tmp_path)
    (tmp_path / "c.yaml").write_text("target: localhost:1\ninsecure: true\n")
    assert load_client_config(tmp_path / "c.yaml").target.port == 1
