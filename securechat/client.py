"""The async Python client: the same YAML as the CLI, one line for every failure.

    async with open_channel(config) as channel:
        print(await say_hello(channel))

    async with open_chat(config) as chat:
        await chat.send("hello", room="general")
        async for event in chat: ...

Connection failures are raised as ConnectError whose text says why in plain
words (server not reachable, server refused our certificate, server name
does not match its certificate, untrusted server), not a gRPC dump.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from securechat._gen import chat_pb2, chat_pb2_grpc
from securechat.chat_stream import ChatStream
from securechat.config import ClientConfig
from securechat.errors import ConnectError, SecureChatError
from securechat.protocol import reason_of
from securechat.tls import checks, failures
from securechat.tls.credentials import channel_credentials
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
    (`securechat.rotation.rotating_channel`).
    """
    from securechat.rotation import build_channel, check_server_id, rotating_channel

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
        return chat_pb2_grpc.ChatServiceStub(self.grpc_channel)

    def explain(self, error: grpc.aio.AioRpcError) -> ConnectError:
        return explain_error(error, self.config, self.material)


async def say_hello(channel: Channel, name: str = "", *, timeout: float = DEFAULT_TIMEOUT) -> str:
    try:
        reply = await channel.stub.SayHello(chat_pb2.HelloRequest(name=name), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        raise channel.explain(exc) from exc
    return reply.message


async def who_am_i(channel: Channel, *, timeout: float = DEFAULT_TIMEOUT) -> chat_pb2.Identity:
    try:
        return await channel.stub.WhoAmI(chat_pb2.WhoAmIRequest(), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        raise channel.explain(exc) from exc


async def check_health(channel: Channel, service: str = "", *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """The serving status name (SERVING, NOT_SERVING, ...) of `service` ('' is the whole server)."""
    stub = health_pb2_grpc.HealthStub(channel.grpc_channel)
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            return "SERVICE_UNKNOWN"
        raise channel.explain(exc) from exc
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


class ChatSession:
    """One open Chat stream: `send()` messages, iterate for events."""

    def __init__(self, channel: Channel, call: ChatStream) -> None:
        self._channel = channel
        self._call = call

    @property
    def batched(self) -> bool:
        """True while the stream is ChatBatched; False once it fell back to Chat (a server without ChatBatched)."""
        return self._call.batched

    async def send(self, text: str, *, room: str = "") -> None:
        """Post `text` to `room` (joining it); empty text only joins."""
        try:
            await self._call.write(chat_pb2.ChatMessage(room=room, text=text))
        except grpc.aio.AioRpcError as exc:
            raise self._channel.explain(exc) from exc
        except grpc.aio.UsageError:
            # The call already ended; reading it will say why.
            await self._raise_final_status()

    async def join(self, room: str) -> None:
        await self.send("", room=room)

    async def done_writing(self) -> None:
        with contextlib.suppress(grpc.aio.UsageError):
            await self._call.done_writing()

    def cancel(self) -> None:
        self._call.cancel()

    async def __aiter__(self) -> AsyncIterator[chat_pb2.ChatEvent]:
        try:
            async for event in self._call:
                yield event
        except grpc.aio.AioRpcError as exc:
            raise self._channel.explain(exc) from exc

    async def _raise_final_status(self) -> None:
        code = await self._call.code()
        details = await self._call.details()
        raise ConnectError(f"the chat stream ended: {code.name}: {details}")


@contextlib.asynccontextmanager
async def open_chat(config: ClientConfig, *, metadata: Sequence[tuple[str, str]] = ()) -> AsyncIterator[ChatSession]:
    """Open a Chat stream; it is cancelled when the block exits. With `tls.renew`, renewed meanwhile."""
    from securechat.rotation import renewing

    async with renewing(config), open_channel(config, renew=False) as channel:
        call = ChatStream(channel.stub, metadata=metadata)
        session = ChatSession(channel, call)
        try:
            yield session
        finally:
            call.cancel()


def own_identity(material: TlsMaterial | None) -> str | None:
    """The name the server will see for this client, read from our own certificate."""
    if material is None or material.certificate is None:
        return None
    try:
        return PeerIdentity.from_certificate(material.certificate).name
    except PeerRejected:
        return None


def explain_error(error: grpc.aio.AioRpcError, config: ClientConfig, material: TlsMaterial | None) -> ConnectError:
    """Turn a gRPC failure into one line a person can act on; the status and refusal reason ride along as data."""
    explained = _explain(error, config, material)
    explained.code = error.code()
    explained.reason = reason_of(error)
    return explained


def _explain(error: grpc.aio.AioRpcError, config: ClientConfig, material: TlsMaterial | None) -> ConnectError:
    code = error.code()
    details = error.details() or ""
    target = str(config.target)
    source = config.source.name
    cert = config.tls.cert if config.tls and config.tls.cert else "tls.cert"
    inspect_hint = f"Check it with 'securechat certs inspect {cert}'."
    if code is grpc.StatusCode.UNAVAILABLE:
        # TODO(merge): the terminal branch renders tls.failures fully; this only classifies with it.
        failure = failures.from_status(details)
        if failure is failures.TlsFailure.UNREACHABLE:
            return ConnectError(f"server not reachable at {target}: {_last_reason(details)}. Is it running, and is target right in {source}?")
        if failure is failures.TlsFailure.SERVER_NAME_MISMATCH:
            host = config.tls.server_name if config.tls and config.tls.server_name else config.target.host
            return ConnectError(
                f"server name does not match its certificate: '{host}' is not among the server certificate's names. "
                f"Issue the server certificate with '--san {host}', or set tls.server_name in {source}."
            )
        if failure is failures.TlsFailure.UNTRUSTED_SERVER:
            ca = config.tls.ca if config.tls else "tls.ca"
            return ConnectError(
                f"untrusted server: its certificate was not signed by the CA in {ca} ({_last_reason(details)}). "
                f"Point tls.ca in {source} at the CA that signed the server's certificate."
            )
        if failure in (failures.TlsFailure.BAD_CERTIFICATE, failures.TlsFailure.NOT_TLS):
            if material is None:
                return ConnectError(f"the server at {target} closed the connection: it probably expects TLS. Remove insecure: true and configure tls in {source}.")
            if material.cert_chain is None:
                return ConnectError(f"server refused our connection: it requires a client certificate and {source} sets no tls.cert/tls.key. Add them.")
            likely = _likely_refusal(material)
            return ConnectError(
                "server refused our certificate during the TLS handshake (not signed by its client CA, expired, revoked or not a client certificate)"
                f"{likely}. {inspect_hint}"
            )
        if "Deadline" in details or "timeout" in details.lower():
            return ConnectError(f"server not reachable at {target}: timed out.")
        return ConnectError(f"server unavailable at {target}: {_last_reason(details)}")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return ConnectError(f"server at {target} did not answer in time. Is it running and reachable?")
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return ConnectError(f"server refused our identity: {details}")
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return ConnectError(f"server refused the call: {details}. Ask its operator to add us to authz.allow.")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and (too_big := _SERVER_SIZE_LIMIT.search(details)):
        size, limit = too_big.groups()
        return ConnectError(
            f"server refused a {size}-byte message: its limit is {limit} bytes (limits.max_message_bytes in its config)."
            " Send a shorter message, or ask its operator to raise the limit."
        )
    return ConnectError(f"server ended the call: {code.name}: {details}")


def _likely_refusal(material: TlsMaterial) -> str:
    """'; most likely: <reason>' when our own certificate shows why (tls.checks + tls.failures), else ''."""
    cert = material.certificate
    if cert is None:
        return ""
    problems = checks.check_leaf(cert, purpose=checks.Purpose.CLIENT)
    if not problems:
        return ""
    failure = failures.diagnose(failures.Evidence(status_details="Socket closed", local=problems[0]))
    return f"; most likely: {failure.client_view}"


# gRPC core's own refusal of an oversized request; the server's code never sees it.
_SERVER_SIZE_LIMIT = re.compile(r"SERVER: Received message larger than max \((\d+) vs\. (\d+)\)")


def _last_reason(details: str) -> str:
    """The innermost reason in a gRPC 'failed to connect to all addresses' text."""
    reason = details.rsplit("last error: ", 1)[-1]
    for marker in ("Failed to connect to remote host: ", "SSL_ERROR_SSL: "):
        if marker in reason:
            reason = reason.split(marker, 1)[1]
    return reason.removesuffix(": OK").strip()


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
        yield material
