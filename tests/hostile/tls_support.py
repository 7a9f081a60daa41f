"""What the hostile TLS tests share: a real server trusting extra CAs, and raw clients with hand-made chains."""

from __future__ import annotations

import asyncio
import logging

import grpc
from chains import Cert

from securechat import pki
from securechat._gen import chat_pb2, chat_pb2_grpc

STEP = 5.0


def as_cert(ca: pki.CertificateAuthority) -> Cert:
    """A securechat CA as a `chains.Cert`, to sign hand-made certificates with it."""
    return Cert(ca.cert, ca.key)  # type: ignore[arg-type]


def trust(deployment, *cas: Cert, name: str = "bundle.pem") -> str:
    """A client CA bundle of the deployment's CA plus CAS; returns the path for tls.client_ca."""
    path = deployment.root / "certs" / name
    path.write_bytes(pki.certificate_pem(deployment.ca.cert) + b"".join(c.pem for c in cas))
    return f"certs/{name}"


async def hello(deployment, port: int, leaf: Cert, *chain: Cert) -> tuple[grpc.StatusCode, str]:
    """SayHello presenting LEAF and CHAIN (its intermediates); (status, reply or details)."""
    credentials = grpc.ssl_channel_credentials(
        pki.certificate_pem(deployment.ca.cert), leaf.key_pem, leaf.pem + b"".join(c.pem for c in chain)
    )
    async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
        try:
            reply = await chat_pb2_grpc.ChatServiceStub(channel).SayHello(chat_pb2.HelloRequest(), timeout=STEP)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, reply.message


async def wait_for_log(caplog, text: str, *, timeout: float = 5.0) -> logging.LogRecord:
    """The first log record whose message contains TEXT, waiting up to TIMEOUT."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for record in caplog.records:
            if text in record.getMessage():
                return record
        assert loop.time() < deadline, f"no log containing {text!r}"
        await asyncio.sleep(0.05)
