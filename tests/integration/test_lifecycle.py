"""A running server honours revocation, rotation and authz changes: real files, real TLS, no restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from securechat import pki
from securechat.protocol import Reason
from securechat._gen import chat_pb2
from securechat.client import open_channel, open_chat, say_hello
from securechat.errors import ConnectError
from securechat.server.app import start_server

Kind = chat_pb2.ChatEvent.Kind
STEP = 5.0
REVOCATION_BOUND = 2.0  # the issue's bound for ending an open stream of a revoked certificate


async def next_message(events) -> chat_pb2.ChatEvent:
    while True:
        event = await asyncio.wait_for(anext(events), STEP)
        if event.kind == Kind.MESSAGE:
            return event


async def say(chat, events, text: str, room: str = "general") -> None:
    """Post TEXT and wait for its echo (the server's acknowledgement)."""
    await chat.send(text, room=room)
    while (await next_message(events)).text != text:
        pass


def served_serial(port: int, deployment, identity: str = "alice") -> int:
    """The serial of the certificate the server presents to a new TLS handshake (Python's ssl, not gRPC)."""
    context = ssl.create_default_context(cafile=str(deployment.store.ca_cert_path))
    context.check_hostname = False
    context.load_cert_chain(deployment.store.cert_path(identity), deployment.store.key_path(identity))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=STEP) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def wait_for_serial(port: int, deployment, serial: int, timeout: float = STEP) -> None:
    deadline = time.monotonic() + timeout
    while (seen := await asyncio.to_thread(served_serial, port, deployment)) != serial:
        assert time.monotonic() < deadline, f"still serving {seen:x}, expected {serial:x}"
        await asyncio.sleep(0.1)


async def wait_for_log(caplog, text: str, timeout: float = STEP) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in record.getMessage() for record in caplog.records):
        assert time.monotonic() < deadline, f"no log containing {text!r}"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def alice_and_bob_chatting(deployment, port: int):
    """alice and bob in 'general', each having posted once: yields (alice, alice_events, bob, bob_events)."""
    async with (
        open_chat(deployment.client("alice", port)) as alice,
        open_chat(deployment.client("bob", port)) as bob,
    ):
        alice_events, bob_events = aiter(alice), aiter(bob)
        await say(alice, alice_events, "hi bob")
        await say(bob, bob_events, "hi alice")
        yield alice, alice_events, bob, bob_events


async def hello_status(config) -> tuple[grpc.StatusCode, str]:
    async with open_channel(config) as channel:
        try:
            reply = await channel.stub.SayHello(chat_pb2.HelloRequest(), timeout=STEP)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, reply.message


# -- revocation --------------------------------------------------------------------


async def test_revoking_bob_ends_his_stream_and_his_calls_while_alice_keeps_chatting(deployment, start):
    """certs revoke bob: his open stream ends UNAUTHENTICATED within 2 s, new calls fail, alice is untouched."""
    server = await start()
    bob_serial = f"{pki.load_certificate(deployment.store.cert_path('bob')).serial_number:x}"
    async with alice_and_bob_chatting(deployment, server.port) as (alice, alice_events, _, bob_events):
        deployment.store.revoke(deployment.ca, "bob", reason="key-compromise")
        revoked_at = time.monotonic()
        with pytest.raises(ConnectError) as ended:
            while True:
                await asyncio.wait_for(anext(bob_events), REVOCATION_BOUND)
        assert time.monotonic() - revoked_at < REVOCATION_BOUND
        assert f"certificate serial {bob_serial} (bob) is revoked" in str(ended.value)
        assert isinstance(ended.value.__cause__, grpc.aio.AioRpcError)
        assert ended.value.__cause__.code() is grpc.StatusCode.UNAUTHENTICATED
        assert ended.value.reason is Reason.REVOKED

        await say(alice, alice_events, "still here")
    code, details = await hello_status(deployment.client("bob", server.port))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert details == f"certificate serial {bob_serial} (bob) is revoked"
    assert await hello_status(deployment.client("alice", server.port)) == (grpc.StatusCode.OK, "Hello, alice!")


async def test_a_crl_signed_by_another_ca_changes_nothing(deployment, start, pki_foreign_ca, caplog):
    """A CRL from a same-named foreign CA that lists bob is logged and ignored; bob keeps chatting."""
    caplog.set_level(logging.INFO, logger="securechat")
    server = await start()
    bob = pki.load_certificate(deployment.store.cert_path("bob"))
    async with open_chat(deployment.client("bob", server.port)) as chat:
        events = aiter(chat)
        await say(chat, events, "before")
        forged = pki.build_crl(pki_foreign_ca, [pki.Revocation(bob.serial_number, pki.utc_now())], number=99)
        deployment.store.crl_path.write_bytes(pki.crl_pem(forged))
        await wait_for_log(caplog, "is not signed by the client CA")
        await say(chat, events, "after")
    assert await hello_status(deployment.client("bob", server.port)) == (grpc.StatusCode.OK, "Hello, bob!")


async def test_a_good_crl_after_a_bad_one_is_enforced_and_the_previous_stays_on_errors(deployment, start, caplog):
    """Garbage in crl.pem keeps the last good CRL in force (bob stays revoked)."""
    caplog.set_level(logging.INFO, logger="securechat")
    deployment.store.revoke(deployment.ca, "bob")
    server = await start()
    bob = deployment.client("bob", server.port)
    assert (await hello_status(bob))[0] is grpc.StatusCode.UNAUTHENTICATED
    deployment.store.crl_path.write_bytes(b"-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n")
    await wait_for_log(caplog, "CRL rejected, CRL number 1 stays in force")
    assert (await hello_status(bob))[0] is grpc.StatusCode.UNAUTHENTICATED


async def test_a_foreign_crl_at_start_is_a_config_error(deployment, pki_foreign_ca):
    """Fail closed: a CRL the client CA did not sign stops the server before it opens a port."""
    deployment.store.crl_path.write_bytes(pki.crl_pem(pki.build_crl(pki_foreign_ca, [], number=1)))
    with pytest.raises(Exception, match=r"server.yaml: tls.client_ca: .*crl.pem is not signed by the client CA"):
        await start_server(deployment.server())


# -- rotation ----------------------------------------------------------------------


async def test_rotated_server_certificate_reaches_new_clients_and_open_streams_continue(deployment, start):
    """Re-issue server.pem under an open chat: a new handshake sees the new serial; the old stream still works."""
    server = await start()
    old = served_serial(server.port, deployment)
    async with open_chat(deployment.client("alice", server.port)) as alice:
        events = aiter(alice)
        await say(alice, events, "before rotation")
        renewed = deployment.store.renew(deployment.ca, "server")
        assert renewed.cert.serial_number != old
        await wait_for_serial(server.port, deployment, renewed.cert.serial_number)
        await say(alice, events, "after rotation")
    assert await hello_status(deployment.client("bob", server.port)) == (grpc.StatusCode.OK, "Hello, bob!")


async def test_a_new_key_that_does_not_match_is_rejected_and_the_old_pair_stays(deployment, start, caplog):
    """A new cert with the wrong key is logged and ignored; once the right key lands it is served."""
    caplog.set_level(logging.INFO, logger="securechat")
    server = await start()
    old = served_serial(server.port, deployment)
    fresh = pki.issue_server_cert(deployment.ca, "server")
    cert_path, key_path = deployment.store.cert_path("server"), deployment.store.key_path("server")
    cert_path.write_bytes(pki.certificate_pem(fresh.cert))  # the key on disk is still the old one
    await wait_for_log(caplog, "does not match the certificate")
    assert f"still serving serial {old:x}" in caplog.text
    assert served_serial(server.port, deployment) == old
    assert await hello_status(deployment.client("alice", server.port)) == (grpc.StatusCode.OK, "Hello, alice!")
    key_path.write_bytes(pki.private_key_pem(fresh.key))
    await wait_for_serial(server.port, deployment, fresh.cert.serial_number)


def _mount(directory: Path, files: dict[str, bytes], stamp: str) -> None:
    """Kubernetes Secret volume layout: NAME -> ..data/NAME -> ..STAMP/NAME, updated by swapping ..data."""
    target = directory / f"..{stamp}"
    target.mkdir()
    for name, data in files.items():
        (target / name).write_bytes(data)
        (target / name).chmod(0o440)
    (directory / "..data_tmp").symlink_to(target.name)
    os.replace(directory / "..data_tmp", directory / "..data")
    for name in files:
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")


async def test_kubernetes_data_symlink_swap_is_picked_up(deployment, start):
    """The kubelet's atomic ..data swap rotates certificate and key together."""
    tls = deployment.root / "tls"
    tls.mkdir()

    def secret(issued: pki.IssuedCert) -> dict[str, bytes]:
        ca = pki.certificate_pem(deployment.ca.cert)
        return {"tls.crt": pki.certificate_pem(issued.cert), "tls.key": pki.private_key_pem(issued.key), "ca.crt": ca}

    first = pki.issue_server_cert(deployment.ca, "server")
    _mount(tls, secret(first), "1")
    server = await start(tls={"cert": "tls/tls.crt", "key": "tls/tls.key", "client_ca": "tls/ca.crt"})
    assert served_serial(server.port, deployment) == first.cert.serial_number
    second = pki.issue_server_cert(deployment.ca, "server")
    _mount(tls, secret(second), "2")
    await wait_for_serial(server.port, deployment, second.cert.serial_number)


async def test_ca_rollover_lets_clients_of_both_cas_in(deployment, start):
    """Appending a second CA to the client CA bundle admits its clients; the first CA's clients stay in."""
    bundle = deployment.root / "client-cas.pem"
    bundle.write_bytes(pki.certificate_pem(deployment.ca.cert))
    server = await start(tls={"client_ca": "client-cas.pem"})
    new_ca = pki.create_ca(common_name="securechat CA 2")
    carol = pki.issue_client_cert(new_ca, "carol")
    deployment.store.write_leaves([carol])
    (deployment.root / "both.pem").write_bytes(pki.certificate_pem(deployment.ca.cert) + pki.certificate_pem(new_ca.cert))
    carol_config = deployment.client("carol", server.port, tls={"ca": "both.pem"})
    with pytest.raises(ConnectError, match="server refused our certificate"):
        async with open_channel(carol_config) as channel:
            await say_hello(channel)
    bundle.write_bytes(pki.certificate_pem(deployment.ca.cert) + pki.certificate_pem(new_ca.cert))
    deadline = time.monotonic() + STEP
    while (status := await hello_status(carol_config))[0] is not grpc.StatusCode.OK:
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.1)
    assert status == (grpc.StatusCode.OK, "Hello, carol!")
    assert await hello_status(deployment.client("alice", server.port)) == (grpc.StatusCode.OK, "Hello, alice!")


# -- authorization ---------------------------------------------------------------


async def test_per_method_rules_override_allow_and_match_spiffe_ids(deployment, start):
    """allow: [alice] + methods: {WhoAmI: [spiffe://example.org/carol]}: each gets exactly what the rules say."""
    deployment.issue_client("carol", spiffe_trust_domain="example.org")
    server = await start(authz={"allow": ["alice"], "methods": {"WhoAmI": ["spiffe://example.org/carol", "alice"]}})
    alice, bob, carol = (deployment.client(name, server.port) for name in ("alice", "bob", "carol"))
    assert await hello_status(alice) == (grpc.StatusCode.OK, "Hello, alice!")
    assert await hello_status(bob) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "identity 'bob' is not allowed to call /securechat.v1.ChatService/SayHello by authz.allow",
    )
    assert (await hello_status(carol))[0] is grpc.StatusCode.PERMISSION_DENIED
    async with open_channel(bob) as channel:  # the denial names the rule that decided it
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await channel.stub.WhoAmI(chat_pb2.WhoAmIRequest(), timeout=STEP)
    assert denied.value.details() == (
        "identity 'bob' is not allowed to call /securechat.v1.ChatService/WhoAmI"
        " by authz.methods['/securechat.v1.ChatService/WhoAmI']"
    )
    async with open_channel(carol) as channel:
        identity = await channel.stub.WhoAmI(chat_pb2.WhoAmIRequest(), timeout=STEP)
    assert (identity.name, identity.spiffe_id) == ("carol", "spiffe://example.org/carol")


async def test_changing_authz_ends_only_streams_no_longer_allowed(deployment, start):
    """Rewriting authz.allow to [alice] ends bob's stream with PERMISSION_DENIED; alice's continues."""
    server = await start(authz={"allow": ["alice", "bob"]})
    async with alice_and_bob_chatting(deployment, server.port) as (alice, alice_events, _, bob_events):
        deployment.server_yaml(authz={"allow": ["alice"]})
        with pytest.raises(ConnectError, match="identity 'bob' is not allowed to call /securechat.v1.ChatService/Chat"):
            while True:
                await asyncio.wait_for(anext(bob_events), STEP)
        await say(alice, alice_events, "three")


async def test_a_broken_config_edit_keeps_the_running_policy(deployment, start, caplog):
    """An invalid server.yaml is logged; the old authz stays in force."""
    caplog.set_level(logging.INFO, logger="securechat")
    server = await start(authz={"allow": ["alice"]})
    (deployment.root / "server.yaml").write_text("listen: [\n")
    await wait_for_log(caplog, "config reload refused, the running config stays")
    assert (await hello_status(deployment.client("bob", server.port)))[0] is grpc.StatusCode.PERMISSION_DENIED
    assert (await hello_status(deployment.client("alice", server.port)))[0] is grpc.StatusCode.OK


# -- long-running clients ----------------------------------------------------------


async def test_chat_client_reconnects_with_a_renewed_certificate(deployment, start, caplog):
    """`securechat chat` notices alice's renewed certificate, reconnects with it, and keeps chatting."""
    import sys

    caplog.set_level(logging.INFO, logger="securechat")
    server = await start()
    config = deployment.client_yaml("alice", server.port)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "securechat", "chat", "--config", str(config),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None

    async def read_until(stream, text: str) -> None:
        while text not in (line := (await asyncio.wait_for(stream.readline(), 3 * STEP)).decode()):
            assert line, f"the chat client ended before printing {text!r}: {(await proc.stderr.read()).decode()}"

    try:
        proc.stdin.write(b"first\n")
        await proc.stdin.drain()
        await read_until(proc.stdout, "alice: first")
        renewed = deployment.store.renew(deployment.ca, "alice")
        serial = f"{renewed.cert.serial_number:x}"
        await read_until(proc.stderr, f"client certificate changed (serial {serial}): reconnecting")
        proc.stdin.write(b"second\n")
        await proc.stdin.drain()
        await read_until(proc.stdout, "alice: second")
        await wait_for_log(caplog, f"authenticated as alice (serial {serial})")
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), STEP) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
