"""A grpc.aio channel that follows its certificate files, and client-side renewal with `tls.renew`.

Python gRPC cannot change an open channel's credentials (grpc/grpc#41779).
`rotating_channel(config)` gives any grpc.aio application a channel that
does the next best thing: it looks at tls.cert, tls.key and tls.ca by
content once a second and, when they change and load cleanly (a key that
does not match yet, half-way through someone's rotation, is skipped), opens
a new underlying channel with the new credentials. New calls go to the new
channel at once; calls already running finish on the old one, which is
closed when its last call ends. Stubs made once keep working: the
multicallables they hold look up the current channel on every call.

It follows the files whoever changes them: securechat's own renewal,
cert-manager's Secret swap, a person with `securechat certs renew`. With a
`tls.renew` section in the config it also runs the renewer (`renewing`).

    async with rotating_channel(load_client_config("alice.yaml")) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        while True:
            await stub.SayHello(chat_pb2.HelloRequest())   # always with the current certificate
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from cryptography import x509

from securechat import pki
from securechat.config import ClientConfig
from securechat.errors import ConnectError, SecureChatError
from securechat.tls import checks, names
from securechat.tls.credentials import channel_credentials
from securechat.tls.material import TlsMaterial, load_client_material
from securechat.tls.watch import FileWatch

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
RENEW_AT_START_TIMEOUT = 10.0
"""A client whose certificate is already due tries to renew before connecting, for at most this long."""


def build_channel(config: ClientConfig, material: TlsMaterial | None) -> grpc.aio.Channel:
    """A plain grpc.aio channel for CONFIG with MATERIAL's credentials (tls.server_name / tls.server_id as the name)."""
    target = str(config.target)
    if material is None:
        return grpc.aio.insecure_channel(target)
    options: list[tuple[str, str]] = []
    name = _expected_server_name(config)
    if name:
        # gRPC core checks the server's certificate against this name in the
        # handshake: a server_id that is a DNS name or IP is required that way.
        options.append(("grpc.ssl_target_name_override", name))
    return grpc.aio.secure_channel(target, channel_credentials(material), options=options)


def _expected_server_name(config: ClientConfig) -> str | None:
    tls = config.tls
    if tls is None:
        return None
    if tls.server_id is not None and not tls.server_id.startswith("spiffe://"):
        return tls.server_id
    return tls.server_name


async def check_server_id(config: ClientConfig, *, timeout: float = 5.0) -> None:
    """For a SPIFFE `tls.server_id`: raise ConnectError unless the server's certificate carries that URI SAN.

    grpcio gives a client neither a verification callback nor the server's
    certificate, so this is a separate TLS handshake to the same address
    with the same trust, before the channel is used. It is not bound to the
    channel's own connection: what it proves is that the server at that
    address holds a certificate, chained to tls.ca, for that SPIFFE ID. A
    DNS or IP server_id has no such gap: gRPC core checks it in the
    channel's own handshake.
    """
    tls = config.tls
    if tls is None or tls.server_id is None or not tls.server_id.startswith("spiffe://"):
        return
    cert = await asyncio.to_thread(_server_certificate, config, timeout)
    expected = names.spiffe_id(tls.server_id)  # its syntax was checked when the config was loaded
    problem = (
        checks.match_identity(cert, expected, where=f"the server at {config.target}")
        if cert is not None
        else checks.Problem(checks.Code.NO_IDENTITY, "identity", f"the server at {config.target} sent no certificate")
    )
    if problem is not None:
        uris = (
            []
            if cert is None
            else [
                n.value for n in checks.subject_alternative_names(cert) if isinstance(n, x509.UniformResourceIdentifier)
            ]
        )
        raise ConnectError(
            f"the server at {config.target} is not {names.escape(expected)}: its certificate names"
            f" {', '.join(names.escape(u) for u in uris) or 'no SPIFFE ID'}. Fix tls.server_id in {config.source.name}, or the target."
        )


def _server_certificate(config: ClientConfig, timeout: float) -> x509.Certificate | None:
    import socket
    import ssl

    assert config.tls is not None
    context = ssl.create_default_context(cafile=str(config.tls.ca))
    context.check_hostname = False  # the name checked is the SPIFFE ID, by tls.checks; the chain is verified
    context.set_alpn_protocols(["h2"])
    if config.tls.cert is not None and config.tls.key is not None:
        context.load_cert_chain(config.tls.cert, config.tls.key)
    try:
        with socket.create_connection((config.target.host, config.target.port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=config.target.host) as tls_socket:
                der = tls_socket.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise ConnectError(f"cannot check the server's identity at {config.target}: {exc}") from exc
    return None if der is None else x509.load_der_x509_certificate(der)


class _Following:
    """A multicallable that looks up the current channel's on every call."""

    def __init__(self, owner: RotatingChannel, kind: str, args: tuple[Any, ...]) -> None:
        self._owner = owner
        self._kind = kind
        self._args = args

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._owner._call(self._kind, self._args, args, kwargs)


class RotatingChannel(grpc.aio.Channel):
    """A grpc.aio.Channel over a sequence of channels, the newest built from the current files."""

    def __init__(
        self, config: ClientConfig, material: TlsMaterial | None, *, poll_seconds: float = POLL_SECONDS
    ) -> None:
        self.config = config
        self.material = material
        self.rotations = 0
        self._poll_seconds = poll_seconds
        self._current = build_channel(config, material)
        self._active: dict[grpc.aio.Channel, int] = {self._current: 0}
        self._retired: set[grpc.aio.Channel] = set()
        self._multicallables: dict[tuple[str, tuple[Any, ...]], Any] = {}
        self._listeners: list[Callable[[TlsMaterial], object]] = []
        paths = [config.tls.cert, config.tls.key, config.tls.ca] if config.tls is not None else []
        self._watch = FileWatch(paths)
        self._task: asyncio.Task[None] | None = None

    @property
    def serial(self) -> str | None:
        cert = self.material.certificate if self.material is not None else None
        return f"{cert.serial_number:x}" if cert is not None else None

    def on_rotate(self, listener: Callable[[TlsMaterial], object]) -> None:
        """Call LISTENER with the new material after each rotation (e.g. to reopen a long stream)."""
        self._listeners.append(listener)

    def start(self) -> None:
        if self._task is None and self.config.tls is not None and self.config.tls.cert is not None:
            self._task = asyncio.create_task(self._follow(), name="securechat-rotating-channel")

    # -- the files -------------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                if await asyncio.to_thread(self._watch.changed):
                    material = await asyncio.to_thread(load_client_material, self.config)
                    if material is not None:
                        self.rotate(material)
            except SecureChatError as exc:
                log.warning("client certificate files changed but cannot be used yet: %s", exc)
            except Exception:  # a poll must never stop polling
                log.exception("following the client certificate files failed; will retry")

    def rotate(self, material: TlsMaterial) -> None:
        """Send new calls over a channel with MATERIAL; the old one closes once its calls end."""
        old, previous = self._current, self.serial
        self._current = build_channel(self.config, material)
        self._active[self._current] = 0
        self._multicallables.clear()
        self.material = material
        self.rotations += 1
        self._retired.add(old)
        log.info("client certificate changed: new calls use serial %s (was %s)", self.serial, previous)
        if self._active.get(old, 0) == 0:
            self._close_retired(old)
        for listener in self._listeners:
            listener(material)

    def _close_retired(self, channel: grpc.aio.Channel) -> None:
        self._retired.discard(channel)
        self._active.pop(channel, None)
        asyncio.get_running_loop().create_task(channel.close())

    # -- calls -----------------------------------------------------------------

    def _call(self, kind: str, args: tuple[Any, ...], call_args: tuple[Any, ...], call_kwargs: dict[str, Any]) -> Any:
        channel = self._current
        key = (kind, args)
        multicallable = self._multicallables.get(key)
        if multicallable is None:
            multicallable = getattr(channel, kind)(*args)
            self._multicallables[key] = multicallable
        call = multicallable(*call_args, **call_kwargs)
        self._active[channel] = self._active.get(channel, 0) + 1
        call.add_done_callback(lambda _: self._call_done(channel))
        return call

    def _call_done(self, channel: grpc.aio.Channel) -> None:
        left = self._active.get(channel, 0) - 1
        self._active[channel] = max(0, left)
        if left <= 0 and channel in self._retired:
            self._close_retired(channel)

    def unary_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: Any = False,
    ) -> Any:
        return _Following(self, "unary_unary", (method, request_serializer, response_deserializer, _registered_method))

    def unary_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: Any = False,
    ) -> Any:
        return _Following(self, "unary_stream", (method, request_serializer, response_deserializer, _registered_method))

    def stream_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: Any = False,
    ) -> Any:
        return _Following(self, "stream_unary", (method, request_serializer, response_deserializer, _registered_method))

    def stream_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: Any = False,
    ) -> Any:
        return _Following(
            self, "stream_stream", (method, request_serializer, response_deserializer, _registered_method)
        )

    # -- the rest of grpc.aio.Channel: the current channel's ----------------------

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._current.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._current.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._current.channel_ready()

    async def close(self, grace: float | None = None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        channels = [self._current, *self._retired]
        self._retired.clear()
        await asyncio.gather(*(channel.close(grace) for channel in channels))

    async def __aenter__(self) -> RotatingChannel:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@contextlib.asynccontextmanager
async def renewing(config: ClientConfig) -> AsyncIterator[None]:
    """While the block runs, keep tls.cert / tls.key renewed from `tls.renew` (nothing without it).

    Before the block: a certificate that is already due is renewed now (for
    at most RENEW_AT_START_TIMEOUT; if the CA does not answer, the current
    one is used while it is valid and the renewer keeps trying); an expired
    one is refused with ConnectError saying why, since it can no longer renew.
    """
    tls = config.tls
    if tls is None or tls.renew is None or tls.cert is None or tls.key is None:
        yield
        return
    from securechat.ca.client import CaError
    from securechat.ca.renewal import Renewer, describe

    renewer = Renewer(cert=tls.cert, key=tls.key, settings=tls.renew)
    cert = await asyncio.to_thread(pki.load_certificate, tls.cert)
    now = dt.datetime.now(dt.timezone.utc)
    if cert.not_valid_after_utc <= now:
        raise ConnectError(
            f"our certificate {tls.cert.name} (serial {cert.serial_number:x}) expired at"
            f" {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC ({describe(now - cert.not_valid_after_utc)} ago) and was not"
            f" renewed in time from the CA at {tls.renew.ca}; an expired certificate cannot renew. Enroll again:"
            " 'securechat ca token NAME' on the CA, then 'securechat certs enroll NAME ...'."
        )
    if now >= renewer.due_at(cert):
        try:
            await asyncio.wait_for(renewer.renew_now(), RENEW_AT_START_TIMEOUT)
        except (CaError, asyncio.TimeoutError) as exc:
            log.warning(
                "our certificate is due for renewal but the CA at %s did not renew it (%s); using it while it is valid"
                " (%s left)",
                tls.renew.ca,
                exc or "timed out",
                describe(cert.not_valid_after_utc - now),
            )
    task = asyncio.create_task(renewer.run(), name="securechat-client-renewal")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def rotating_channel(config: ClientConfig, *, renew: bool = True) -> AsyncIterator[RotatingChannel]:
    """A channel that follows tls.cert / tls.key / tls.ca on disk; with `tls.renew` (and RENEW) it renews them too."""
    async with contextlib.AsyncExitStack() as stack:
        if renew:
            await stack.enter_async_context(renewing(config))
        material = await asyncio.to_thread(load_client_material, config)
        await check_server_id(config)
        channel = RotatingChannel(config, material)
        await stack.enter_async_context(channel)
        yield channel
