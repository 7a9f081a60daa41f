"""Authentication and authorization for every call, before the servicer runs.

Under mutual TLS gRPC has verified the client's chain with BoringSSL's
defaults; this interceptor reads the peer certificate and its chain from the
auth context and has the policy decide about them with securechat's own
rules (`tls.identity.PeerVerifier`: end entity, clientAuth, basicConstraints
and pathLen up to the client CA, a valid DNS name or SPIFFE ID as the
identity; cached per certificate, so a call costs a dictionary lookup), checks
revocation and the allow-list, and hands the identity to the servicer through
`current_peer`. Failures end the call with UNAUTHENTICATED or
PERMISSION_DENIED and a message naming the reason (escaped: nothing from a
certificate reaches a log raw); each is logged with the peer's address.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, Protocol

import grpc

from securechat.protocol import Reason, Refusal
from securechat.server.handlers import Handler, rewrapped
from securechat.tls.identity import (
    AuthzPolicy,
    PeerIdentity,
    PeerRejected,
    identity_from_pem,
    peer_certificate_pem,
    peer_chain_pem,
)

log = logging.getLogger(__name__)

KNOWN_CONNECTIONS = 10_000
KNOWN_METHODS = 256

current_peer: contextvars.ContextVar[PeerIdentity | None] = contextvars.ContextVar("current_peer", default=None)

Authenticate = Callable[[grpc.aio.ServicerContext[Any, Any]], Awaitable[PeerIdentity | None]]
OnRefusal = Callable[[Refusal], None]


class CallPolicy(Protocol):
    """What may change while serving (trust anchors, CRL, authz): asked for every authenticated call."""

    def identify(self, pem: bytes, chain_pem: bytes | None) -> PeerIdentity:
        """The caller's identity from its certificate and chain; PeerRejected (escaped text) if refused."""
        ...

    def refusal(self, peer: PeerIdentity, method: str) -> Refusal | None: ...


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Names the caller from its certificate and enforces the allow-list."""

    def __init__(
        self,
        *,
        require_identity: bool,
        allow: frozenset[str] | None,
        policy: CallPolicy | None = None,
        on_refusal: OnRefusal | None = None,
    ) -> None:
        self._require_identity = require_identity
        self._allow = AuthzPolicy(allow) if allow is not None else None
        self._policy = policy  # when set, it replaces the static allow-list
        self._on_refusal = on_refusal
        # gRPC Python has no connection hook: the first call on a connection
        # (peer address and port) is where we learn who connected.
        self._known_connections: OrderedDict[str, None] = OrderedDict()
        # Per method, the guarded handler built for the handler gRPC resolved: built once, not per call.
        self._guarded: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._guarded.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]

        async def authenticate(context: grpc.aio.ServicerContext[Any, Any]) -> PeerIdentity | None:
            return await self._authenticate(method, context)

        guarded = _guarded(handler, authenticate)
        if len(self._guarded) < KNOWN_METHODS:  # a bounded cache: method paths come from the client
            self._guarded[method] = (handler, guarded)
        return guarded

    async def _authenticate(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> PeerIdentity | None:
        auth_context = context.auth_context()
        pem = peer_certificate_pem(auth_context)
        if pem is None:
            if self._require_identity:
                await self._refuse(
                    context,
                    Refusal(
                        grpc.StatusCode.UNAUTHENTICATED, Reason.NO_CERTIFICATE, "no client certificate was presented"
                    ),
                    method,
                )
            return None
        try:
            if self._policy is not None:
                peer = self._policy.identify(pem, peer_chain_pem(auth_context))
            else:
                peer = identity_from_pem(pem)
        except PeerRejected as exc:
            await self._refuse(
                context, Refusal(grpc.StatusCode.UNAUTHENTICATED, Reason.BAD_CERTIFICATE, str(exc)), method
            )
        if self._policy is not None:
            refusal = self._policy.refusal(peer, method)
            if refusal is not None:
                await self._refuse(context, refusal, method)
        elif self._allow is not None and not self._allow.permits(peer, method):
            await self._refuse(
                context,
                Refusal(
                    grpc.StatusCode.PERMISSION_DENIED,
                    Reason.NOT_ALLOWED,
                    f"identity '{peer.name}' is not allowed to call {method} by authz.allow",
                ),
                method,
            )
        address = context.peer()
        self._note_connection(address, peer)
        if log.isEnabledFor(logging.DEBUG):  # per call: no formatting work unless asked for
            log.debug("call %s from %s (serial %s, peer %s)", method, peer.name, peer.serial, address)
        return peer

    def _note_connection(self, address: str, peer: PeerIdentity) -> None:
        if address in self._known_connections:
            self._known_connections.move_to_end(address)
            return
        self._known_connections[address] = None
        if len(self._known_connections) > KNOWN_CONNECTIONS:
            self._known_connections.popitem(last=False)
        log.info("connection from %s authenticated as %s (serial %s)", address, peer.name, peer.serial)

    async def _refuse(self, context: grpc.aio.ServicerContext[Any, Any], refusal: Refusal, method: str) -> NoReturn:
        log.warning(
            "refused %s from %s: %s (%s): %s",
            method,
            context.peer(),
            refusal.code.name,
            refusal.reason.value,
            refusal.message,
            extra={"peer": context.peer(), "code": refusal.code.name, "reason": refusal.reason.value},
        )
        if self._on_refusal is not None:
            self._on_refusal(refusal)
        await refusal.abort(context)


def _guarded(handler: Handler, authenticate: Authenticate) -> Handler:
    """The same handler, with `authenticate` run first in the call's own task."""
    return rewrapped(handler, lambda behavior: _wrap(behavior, authenticate))


def _wrap(behavior: Callable[..., Any], authenticate: Authenticate) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            current_peer.set(await authenticate(context))
            async for response in behavior(request, context):
                yield response

        return streaming

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        current_peer.set(await authenticate(context))
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return call
