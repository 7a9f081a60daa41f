"""Reloads of a running server that never end (issue 13): one stuck source must not stall the others."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time

import pytest
import yaml

from securechat.client import open_channel, say_hello
from securechat.errors import SecureChatError
from securechat.server import lifecycle

STEP = 5.0


async def _hello_refused(deployment, port: int) -> str | None:
    """None if bob's SayHello is answered, else the error text."""
    try:
        async with open_channel(deployment.client("bob", port)) as channel:
            await say_hello(channel, timeout=2.0)
        return None
    except SecureChatError as exc:
        return str(exc)


async def _until_refused(deployment, port: int, seconds: float) -> str | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (refused := await _hello_refused(deployment, port)) is not None:
            return refused
        await asyncio.sleep(0.2)
    return None


def _allow_only_alice(deployment) -> None:
    path = deployment.root / "server.yaml"
    data = yaml.safe_load(path.read_text())
    data["authz"] = {"allow": ["alice"]}
    path.write_text(yaml.safe_dump(data))


@contextlib.contextmanager
def _release(fifo):
    """At the end, unblock a reader stuck on FIFO (a writer, then EOF) and remove it, so its thread ends."""
    try:
        yield
    finally:
        if fifo.exists():
            writer = os.open(fifo, os.O_RDWR)  # never blocks on Linux; completes a reader's open()
            os.unlink(fifo)  # a later look finds no file
            time.sleep(0.2)
            os.close(writer)  # the reader gets EOF


@pytest.mark.parametrize("fifo", [True, False])
async def test_an_authz_edit_is_applied_while_the_crl_is_a_fifo(deployment, start, monkeypatch, caplog, fifo):
    """A FIFO at the CRL path is refused at once (never read, never waited on): the authz edit is applied anyway."""
    monkeypatch.setattr(lifecycle, "RELOAD_SECONDS", 1.0)
    caplog.set_level(logging.ERROR, logger="securechat.server.lifecycle")
    server = await start()
    crl = deployment.root / "certs" / "crl.pem"  # the default CRL place, absent so far
    assert await _hello_refused(deployment, server.port) is None
    with _release(crl):
        if fifo:
            os.mkfifo(crl)
            await asyncio.sleep(1.5)
        _allow_only_alice(deployment)
        refused = await _until_refused(deployment, server.port, seconds=STEP)
        assert refused is not None and "not allowed" in refused
        if fifo:
            assert "is a FIFO (named pipe), not a regular file. Point to the CRL file itself." in caplog.text
        assert "reloading crl has taken" not in caplog.text


async def test_an_authz_edit_is_applied_while_a_crl_read_hangs(deployment, start, monkeypatch, caplog):
    """A CRL read that does not return (a hung mount, say) stalls only itself: the authz edit goes through, the hang is logged."""
    monkeypatch.setattr(lifecycle, "RELOAD_SECONDS", 1.0)
    caplog.set_level(logging.ERROR, logger="securechat.server.lifecycle")
    server = await start()
    release = threading.Event()
    real = lifecycle.load_revocations

    def hung(*args, **kwargs):
        release.wait(20)  # stands in for a read(2) on a hung network mount
        return real(*args, **kwargs)

    monkeypatch.setattr(lifecycle, "load_revocations", hung)
    try:
        (deployment.root / "certs" / "crl.pem").write_bytes(b"")  # a change: the CRL look starts, and hangs
        await asyncio.sleep(1.5)
        _allow_only_alice(deployment)
        refused = await _until_refused(deployment, server.port, seconds=STEP)
        assert refused is not None and "not allowed" in refused
        assert "reloading crl has taken more than 1 s" in caplog.text
    finally:
        release.set()


async def test_a_config_too_big_to_reload_is_refused_and_the_running_one_stays(deployment, start, caplog):
    """A server.yaml edited to more than MAX_CONFIG_BYTES is not parsed; the running policy stays."""
    caplog.set_level(logging.ERROR, logger="securechat.server.lifecycle")
    server = await start()
    path = deployment.root / "server.yaml"
    path.write_text(path.read_text() + "#" + "x" * lifecycle.MAX_CONFIG_BYTES + "\n")
    for _ in range(50):
        if "config reload refused" in caplog.text:
            break
        await asyncio.sleep(0.1)
    assert "is larger than 1 MiB, the limit for a config file" in caplog.text
    assert await _hello_refused(deployment, server.port) is None
