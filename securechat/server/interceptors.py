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
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn, Protocol

import grpc

from securechat.protocol import Reason, Refusal
from securechat.server.handlers import Handler, rewrapped
from securechat.tls.identity import (
    PEM_CERT_KEY,
    PEM_CHAIN_KEY,
    AuthzPolicy,
    PeerIdentity,
    PeerRejected,
    identity_from_pem,
)

log = logging.getLogger(__name__)

KNOWN_CONNECTIONS = 10_000
KNOWN_METHODS = 256

current_peer: contextvars.ContextVar[PeerIdentity | None] = contextvars.ContextVar("current_peer", default=None)

OnRefusal = Callable[[Refusal], None]


class CallPolicy(Protocol):
    """What may change while serving (trust anchors, CRL, authz): asked for every authenticated call."""

    def identify(self, pem: bytes, chain_pem: bytes | None) -> PeerIdentity:
        """The caller's identity from its certificate and chain; PeerRejected (escaped text) if refused."""
        ...

    def refusal(self, peer: PeerIdentity, method: str) -> Refusal | None: ...


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Names the caller from its certificate and enforces the allow-list.

    The server applies it to every method once, at registration (`guard_methods`):
    gRPC's interceptor chain costs two coroutines and a handler lookup per
    call, measured as the larger part of what securechat added to a unary
    call (README "Performance"). `intercept_service` does the same for a
    server that takes it as an interceptor.
    """

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

    def guard_methods(self, methods: Mapping[str, Handler]) -> grpc.GenericRpcHandler:
        """One generic handler serving METHODS ('/package.Service/Method' -> handler), each authenticated first."""
        return MethodTable({method: self.guard(method, handler) for method, handler in methods.items()})

    def guard(self, method: str, handler: Handler) -> Handler:
        """HANDLER with the caller authenticated (and `current_peer` set) before its behaviour runs."""
        return rewrapped(handler, lambda behavior: _wrap(behavior, method, self))

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
        guarded = self.guard(method, handler)
        if len(self._guarded) < KNOWN_METHODS:  # a bounded cache: method paths come from the client
            self._guarded[method] = (handler, guarded)
        return guarded

    def decide(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> PeerIdentity | Refusal | None:
        """The caller's identity (None without a certificate where none is required), or why it is refused.

        Plain code, no coroutine: on the common path (a known certificate,
        allowed) a call costs the auth context read and a few dictionary
        lookups; only a refusal awaits (`refuse`).
        """
        auth_context = context.auth_context()
        pems = auth_context.get(PEM_CERT_KEY)
        if not pems:
            if self._require_identity:
                return NO_CERTIFICATE
            return None
        try:
            if self._policy is not None:
                chain = auth_context.get(PEM_CHAIN_KEY)
                peer = self._policy.identify(next(iter(pems)), next(iter(chain), None) if chain else None)
            else:
                peer = identity_from_pem(next(iter(pems)))
        except PeerRejected as exc:
            return Refusal(grpc.StatusCode.UNAUTHENTICATED, Reason.BAD_CERTIFICATE, str(exc))
        if self._policy is not None:
            refusal = self._policy.refusal(peer, method)
            if refusal is not None:
                return refusal
        elif self._allow is not None and not self._allow.permits(peer, method):
            return Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                Reason.NOT_ALLOWED,
                f"identity '{peer.name}' is not allowed to call {method} by authz.allow",
            )
        address = context.peer()
        if address not in self._known_connections:
            self._note_connection(address, peer)
        if log.isEnabledFor(logging.DEBUG):  # per call: no formatting work unless asked for
            log.debug("call %s from %s (serial %s, peer %s)", method, peer.name, peer.serial, address)
        return peer

    def _note_connection(self, address: str, peer: PeerIdentity) -> None:
        """Log a connection's identity once; remembered for the last KNOWN_CONNECTIONS connections seen."""
        self._known_connections[address] = None
        if len(self._known_connections) > KNOWN_CONNECTIONS:
            self._known_connections.popitem(last=False)
        log.info("connection from %s authenticated as %s (serial %s)", address, peer.name, peer.serial)

    async def refuse(self, context: grpc.aio.ServicerContext[Any, Any], refusal: Refusal, method: str) -> NoReturn:
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


NO_CERTIFICATE = Refusal(grpc.StatusCode.UNAUTHENTICATED, Reason.NO_CERTIFICATE, "no client certificate was presented")


class MethodTable(grpc.GenericRpcHandler):
    """Handlers by full method name: one dictionary lookup per call.

    Everything the chat port serves is registered through one of these, as a
    generic handler: the aio server waits for each new call on one future
    per registered method plus one for all generic ones, so fewer
    registrations make its per-call wait cheaper.
    """

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self._handlers = dict(handlers)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        return self._handlers.get(handler_call_details.method)


class MethodCollector:
    """Stands in for a server in `add_*Servicer_to_server`: collects what they register, by full method name."""

    def __init__(self) -> None:
        self.methods: dict[str, Handler] = {}

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        for name, handler in handlers.items():
            self.methods[f"/{service}/{name}"] = handler

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        """The same handlers as the registered ones (generated code adds both): nothing more to collect."""


def _wrap(behavior: Callable[..., Any], method: str, auth: AuthInterceptor) -> Callable[..., Any]:
    decide, refuse = auth.decide, auth.refuse
    if inspect.isasyncgenfunction(behavior):

        async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            peer = decide(method, context)
            if type(peer) is Refusal:
                await refuse(context, peer, method)
            current_peer.set(peer)  # type: ignore[arg-type]  # a Refusal never gets here
            async for response in behavior(request, context):
                yield response

        return streaming

    if inspect.iscoroutinefunction(behavior):

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            peer = decide(method, context)
            if type(peer) is Refusal:
                await refuse(context, peer, method)
            current_peer.set(peer)  # type: ignore[arg-type]  # a Refusal never gets here
            return await behavior(request, context)

        return call

    async def sync_call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        peer = decide(method, context)
        if type(peer) is Refusal:
            await refuse(context, peer, method)
        current_peer.set(peer)  # type: ignore[arg-type]  # a Refusal never gets here
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return sync_call
