"""A grpc.aio channel from a client config, and the unary calls on it.

    async with open_channel(config) as channel:
        print(await say_hello(channel))

Connection failures are raised as ConnectError whose text says why in plain
words (see securechat.client.explain), not a gRPC dump.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from securechat._gen import chat_pb2, chat_pb2_grpc
from securechat.client.explain import explain_error
from securechat.config import ClientConfig
from securechat.errors import ConnectError, SecureChatError
from securechat.tls.identity import PeerIdentity, PeerRejected
from securechat.tls.material import TlsMaterial, load_client_material
from securechat.tls.watch import FileWatch

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0


@contextlib.asynccontextmanager
async def open_channel(config: ClientConfig, *, renew: bool = True) -> AsyncIterator[Channel]:
    """A grpc.aio channel to the configured target, TLS unless insecure: true.

    With `tls.renew` (and RENEW) the certificate is renewed from the online
    CA while the channel is open, and the channel follows the new files
    (`securechat.client.rotation.rotating_channel`).
    """
    from securechat.client.rotation import build_channel, check_server_id, rotating_channel

    if renew and config.tls is not None and config.tls.renew is not None:
        async with rotating_channel(config) as rotating:
            yield Channel(config, rotating.material, rotating)
        return
    material = load_client_material(config)
    await check_server_id(config)
    async with build_channel(config, material) as raw:
        yield Channel(config, material, raw)


@dataclass(frozen=True)
class Channel:
    config: ClientConfig
    material: TlsMaterial | None
    grpc_channel: grpc.aio.Channel

    @property
    def stub(self) -> chat_pb2_grpc.ChatServiceStub:
        return chat_pb2_grpc.ChatServiceStub(self.grpc_channel)  # type: ignore[no-untyped-call]  # generated, untyped

    def explain(self, error: grpc.aio.AioRpcError) -> ConnectError:
        return explain_error(error, self.config, self.material)


async def say_hello(channel: Channel, name: str = "", *, timeout: float = DEFAULT_TIMEOUT) -> str:
    try:
        reply = await channel.stub.SayHello(chat_pb2.HelloRequest(name=name), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        raise channel.explain(exc) from exc
    return str(reply.message)


async def who_am_i(channel: Channel, *, timeout: float = DEFAULT_TIMEOUT) -> chat_pb2.Identity:
    try:
        identity: chat_pb2.Identity = await channel.stub.WhoAmI(chat_pb2.WhoAmIRequest(), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        raise channel.explain(exc) from exc
    return identity


async def check_health(channel: Channel, service: str = "", *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """The serving status name (SERVING, NOT_SERVING, ...) of `service` ('' is the whole server)."""
    stub = health_pb2_grpc.HealthStub(channel.grpc_channel)
    try:
        # The stubs type HealthStub for the sync API; on an aio channel Check is awaitable.
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)  # type: ignore[attr-defined]
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            return "SERVICE_UNKNOWN"
        raise channel.explain(exc) from exc
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def own_identity(material: TlsMaterial | None) -> str | None:
    """The name the server will see for this client, read from our own certificate."""
    if material is None or material.certificate is None:
        return None
    try:
        return PeerIdentity.from_certificate(material.certificate).name
    except PeerRejected:
        return None


ROTATION_POLL_SECONDS = 1.0


async def certificate_rotations(
    config: ClientConfig, *, interval: float = ROTATION_POLL_SECONDS
) -> AsyncIterator[TlsMaterial]:
    """Yield the new checked material each time tls.cert / tls.key / tls.ca change on disk.

    gRPC cannot swap the credentials of an open channel, so a long-running
    client reconnects when this yields (`securechat chat` does). A change
    that does not load (a key that does not match yet, half-way through a
    rotation) is skipped until the files change again. Returns at once when
    the config has no client certificate.
    """
    if config.tls is None or config.tls.cert is None:
        return
    watch = FileWatch([config.tls.cert, config.tls.key, config.tls.ca])
    while True:
        await asyncio.sleep(interval)
        if not await asyncio.to_thread(watch.changed):
            continue
        try:
            material = await asyncio.to_thread(load_client_material, config)
        except SecureChatError as exc:
            log.warning("client certificate changed but cannot be used yet: %s", exc)
            continue
        if material is not None:
            yield material
