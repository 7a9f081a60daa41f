"""CRLs that would undo a revocation, against a real server: each refused (or failing closed) beside its passing twin."""

from __future__ import annotations

import logging
import os

import grpc
import pytest
from chains import DAY, NOW, crl_pem, make_ca, make_crl, make_leaf
from tls_support import as_cert, hello, trust, wait_for_log

from securechat import pki
from securechat.errors import ConfigError
from securechat.server.app import start_server


def crl_path(deployment):
    return deployment.root / "certs" / "crl.pem"


async def test_revoked_intermediate_refuses_its_leaves(deployment, start, caplog):
    """The root's CRL revokes the intermediate: its leaf is refused; with the root's CRL not listing it (the twin), accepted."""
    caplog.set_level(logging.INFO, logger="securechat")
    root = make_ca("root")
    inter = make_ca("inter", root, path_length=0)
    leaf = make_leaf(inter, ["dave"])
    crl_path(deployment).write_bytes(crl_pem(make_crl(root, [], number=1)))
    server = await start(tls={"client_ca": trust(deployment, root)})
    assert await hello(deployment, server.port, leaf, inter) == (grpc.StatusCode.OK, "Hello, dave!")
    crl_path(deployment).write_bytes(crl_pem(make_crl(root, [inter], number=2)))
    await wait_for_log(caplog, "CRL number 2 from CN=root,O=tests accepted")
    code, details = await hello(deployment, server.port, leaf, inter)
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert details == (
        f"certificate serial {leaf.cert.serial_number:x} (dave) is refused: the CA certificate serial"
        f" {inter.cert.serial_number:x} in its chain is revoked by CN=root,O=tests"
    )


async def test_revoked_ca_true_certificate_refuses_what_it_signed(deployment, start):
    """A CA:TRUE certificate revoked in its issuer's CRL: what it signed is refused too (revocation walks the chain)."""
    root = make_ca("root")
    inter = make_ca("inter", root, path_length=0)
    leaf = make_leaf(inter, ["erin"])
    crl_path(deployment).write_bytes(crl_pem(make_crl(root, [inter], number=1)))
    server = await start(tls={"client_ca": trust(deployment, root)})
    assert (await hello(deployment, server.port, leaf, inter))[0] is grpc.StatusCode.UNAUTHENTICATED
    # The twin: a leaf of a sibling intermediate that is not revoked.
    sibling = make_ca("inter-2", root, path_length=0)
    assert (await hello(deployment, server.port, make_leaf(sibling, ["erin"]), sibling))[0] is grpc.StatusCode.OK


async def test_crl_rollback_is_refused_while_running(deployment, start, caplog):
    """CRL number 5 revokes bob; number 3 (older, empty) is refused and bob stays out; number 6 (newer) is accepted."""
    caplog.set_level(logging.INFO, logger="securechat")
    ca = as_cert(deployment.ca)
    bob = pki.load_certificate(deployment.store.cert_path("bob"))
    crl_path(deployment).write_bytes(crl_pem(make_crl(ca, [bob.serial_number], number=5)))
    server = await start()
    bob_config = deployment.client("bob", server.port)
    from securechat.client import open_channel, say_hello
    from securechat.errors import ConnectError

    async def bob_hello() -> str:
        async with open_channel(bob_config) as channel:
            try:
                return await say_hello(channel)
            except ConnectError as exc:
                return str(exc)

    assert "is revoked" in await bob_hello()
    crl_path(deployment).write_bytes(crl_pem(make_crl(ca, [], number=3)))
    record = await wait_for_log(caplog, "holds CRL number 3 of CN=securechat CA,O=securechat, older than number 5")
    assert record.levelno == logging.ERROR
    assert "is revoked" in await bob_hello()
    crl_path(deployment).write_bytes(crl_pem(make_crl(ca, [], number=6)))
    await wait_for_log(caplog, "CRL number 6 from CN=securechat CA,O=securechat accepted")
    assert await bob_hello() == "Hello, bob!"


async def test_crl_rollback_is_refused_after_a_restart(deployment, start):
    """The highest CRL number survives a restart: an older CRL then stops the server; a newer one (the twin) starts it."""
    ca = as_cert(deployment.ca)
    crl_path(deployment).write_bytes(crl_pem(make_crl(ca, [123], number=5)))
    first = await start()
    await first.stop(grace=0)
    crl_path(deployment).write_bytes(crl_pem(make_crl(ca, [], number=4)))
    with pytest.raises(ConfigError, match=r"holds CRL number 4 of .*, older than number 5 already seen") as error:
        await start_server(deployment.server())
    assert error.value.code == "crl-rollback"
    crl_path(deployment).write_bytes(crl_pem(make_crl(ca, [], number=7)))
    await start()


async def test_rollover_crl_is_matched_by_key_not_name(deployment, start, caplog):
    """Old and new CA share a name: the new CA's empty CRL does not un-revoke bob (old CA); new-CA leaves are fine."""
    new_ca = pki.create_ca()  # same name "securechat CA", a new key
    assert new_ca.cert.subject == deployment.ca.cert.subject
    bob = pki.load_certificate(deployment.store.cert_path("bob"))
    old_crl = make_crl(as_cert(deployment.ca), [bob.serial_number], number=1)
    new_crl = make_crl(as_cert(new_ca), [], number=1)
    crl_path(deployment).write_bytes(crl_pem(old_crl, new_crl))
    bundle = deployment.root / "certs" / "both.pem"
    bundle.write_bytes(pki.certificate_pem(deployment.ca.cert) + pki.certificate_pem(new_ca.cert))
    server = await start(tls={"client_ca": "certs/both.pem"}, crl="certs/crl.pem")
    from chains import Cert

    bob_cert = Cert(bob, pki.load_private_key(deployment.store.key_path("bob")))  # type: ignore[arg-type]
    code, details = await hello(deployment, server.port, bob_cert)
    assert (code, details.endswith("(bob) is revoked")) == (grpc.StatusCode.UNAUTHENTICATED, True)
    # The twin: bob re-issued by the new CA is accepted, although its CRL has the same issuer name.
    assert (await hello(deployment, server.port, make_leaf(as_cert(new_ca), ["bob"])))[0] is grpc.StatusCode.OK


async def test_missing_default_crl_fails_closed_when_a_revocation_is_known(deployment):
    """crl.pem deleted although index.json records a revocation: the server refuses to start, saying why."""
    deployment.store.revoke(deployment.ca, "bob")
    crl_path(deployment).unlink()
    with pytest.raises(ConfigError, match=r"crl.pem not found, but .*index.json records 1 revoked certificate\(s\)"):
        await start_server(deployment.server())


async def test_missing_default_crl_is_fine_when_nothing_was_ever_revoked(deployment, start):
    """The twin: a fresh certs directory has no crl.pem, and the server starts."""
    assert not crl_path(deployment).exists()
    await start()


async def test_missing_default_crl_fails_closed_after_one_was_seen(deployment, start):
    """A CRL was loaded once (high-water mark on disk); it vanishes before a restart: refuse to start."""
    crl_path(deployment).write_bytes(crl_pem(make_crl(as_cert(deployment.ca), [], number=2)))
    first = await start()
    await first.stop(grace=0)
    crl_path(deployment).unlink()
    with pytest.raises(ConfigError, match=r"crl.pem not found, but CRL number 2 of .* was loaded before"):
        await start_server(deployment.server())


async def test_fifo_at_the_crl_path_fails_closed_at_once(deployment):
    """A FIFO at the CRL path is refused without ever blocking on it; the server does not start."""
    os.mkfifo(crl_path(deployment))
    with pytest.raises(ConfigError, match=r"crl.pem is a FIFO \(named pipe\), not a regular file\. Point to the CRL file itself\."):
        await start_server(deployment.server())


async def test_fifo_replacing_the_crl_while_running_keeps_the_last_good_one(deployment, start, caplog):
    """While running, a FIFO in place of crl.pem is logged at ERROR and the last CRL stays in force."""
    caplog.set_level(logging.INFO, logger="securechat")
    ca = as_cert(deployment.ca)
    bob = pki.load_certificate(deployment.store.cert_path("bob"))
    crl_path(deployment).write_bytes(crl_pem(make_crl(ca, [bob.serial_number], number=1)))
    server = await start()
    crl_path(deployment).unlink()
    os.mkfifo(crl_path(deployment))
    record = await wait_for_log(caplog, "is a FIFO (named pipe), not a regular file")
    assert record.levelno == logging.ERROR and "CRL number 1 stays in force" in record.getMessage()
    from chains import Cert

    bob_cert = Cert(bob, pki.load_private_key(deployment.store.key_path("bob")))  # type: ignore[arg-type]
    assert (await hello(deployment, server.port, bob_cert))[0] is grpc.StatusCode.UNAUTHENTICATED


async def test_stale_crl_is_a_warning_at_start(deployment, start, caplog):
    """A CRL past its nextUpdate is enforced and logged at WARNING; a current one (the twin) is not warned about."""
    caplog.set_level(logging.INFO, logger="securechat")
    ca = as_cert(deployment.ca)
    crl_path(deployment).write_bytes(crl_pem(make_crl(ca, [], number=1, next_update=NOW + 7 * DAY)))
    first = await start()
    assert not [r for r in caplog.records if "past its nextUpdate" in r.getMessage()]
    await first.stop(grace=0)
    stale = make_crl(ca, [], number=2, next_update=NOW - DAY)
    crl_path(deployment).write_bytes(crl_pem(stale))
    await start()
    (record,) = [r for r in caplog.records if "past its nextUpdate" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "CRL number 2 from CN=securechat CA,O=securechat is past its nextUpdate" in record.getMessage()


async def test_crl_going_stale_while_running_is_a_warning(deployment, start, caplog):
    """A new CRL that is already stale, shipped while running, is logged at WARNING too."""
    caplog.set_level(logging.INFO, logger="securechat")
    ca = as_cert(deployment.ca)
    crl_path(deployment).write_bytes(crl_pem(make_crl(ca, [], number=1)))
    await start()
    crl_path(deployment).write_bytes(crl_pem(make_crl(ca, [], number=2, next_update=NOW - DAY)))
    record = await wait_for_log(caplog, "CRL number 2 from CN=securechat CA,O=securechat is past its nextUpdate")
    assert record.levelno == logging.WARNING
