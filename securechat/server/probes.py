"""The plaintext health port: grpc.health.v1 for probes that cannot present a client certificate.

Anyone who can reach the port can call it, so it is bounded (issue 13: 20,000
unauthenticated Watch streams took the server from 60 to 470 MB):

- at most `limits.health_max_connections` connections (gRPC core's cap);
- at most `limits.health_max_streams` open calls over all of them; one more
  is refused with RESOURCE_EXHAUSTED (reason `too-many-streams`) by `CallCap`;
- per connection, STREAMS_PER_CONNECTION streams of HTTP/2 and the same handshake
  deadline as the chat port; a connection with no call for
  IDLE_SECONDS is closed by gRPC (kubelet and grpc_health_probe open a new
  one per probe);
- a `ConnectionGuard` closes connections that reset streams in a flood or
  never get through the HTTP/2 preface.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from securechat.config import ServerConfig
from securechat.protocol import Reason, Refusal
from securechat.server.handlers import Handler, rewrapped

log = logging.getLogger(__name__)

IDLE_SECONDS = 30.0
STREAMS_PER_CONNECTION = 16
"""HTTP/2 MAX_CONCURRENT_STREAMS here; a probe needs one. Calls beyond health_max_streams are refused, not queued."""


class CallCap(grpc.aio.ServerInterceptor):
    """At most `limit` calls open at once on a server; the next is refused, not queued."""

    def __init__(self, limit: int, *, limit_name: str) -> None:
        self.limit = limit
        self.open = 0
        self._limit_name = limit_name
        self._refused = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return rewrapped(handler, self._wrap)

    def _refusal(self) -> Refusal:
        return Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            Reason.TOO_MANY_STREAMS,
            f"this port has {self.open} calls open; the limit {self._limit_name} is {self.limit}",
        )

    def _admit(self) -> bool:
        if self.open >= self.limit:
            self._refused += 1
            if self._refused == 1 or self._refused % 1000 == 0:
                log.warning(
                    "health port: refused %d call(s) so far: %d open (limits.%s)",
                    self._refused,
                    self.open,
                    self._limit_name,
                )
            return False
        self.open += 1
        return True

    def _wrap(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                if not self._admit():
                    await self._refusal().abort(context)
                try:
                    async for response in behavior(request, context):
                        yield response
                finally:
                    self.open -= 1

            return stream

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if not self._admit():
                await self._refusal().abort(context)
            try:
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result
            finally:
                self.open -= 1

        return unary


def health_server_options(config: ServerConfig) -> list[tuple[str, int]]:
    """gRPC core's arguments for the health port: its own connection cap, the chat port's handshake deadline."""
    limits = config.limits
    return [
        ("grpc.so_reuseport", 0),
        ("grpc.max_allowed_incoming_connections", limits.health_max_connections),
        ("grpc.max_concurrent_streams", min(limits.max_concurrent_streams, STREAMS_PER_CONNECTION)),
        ("grpc.server_handshake_timeout_ms", int(limits.handshake_timeout_seconds * 1000)),
        ("grpc.max_connection_idle_ms", int(IDLE_SECONDS * 1000)),
        ("grpc.max_receive_message_length", 4096),  # a HealthCheckRequest is a service name
    ]


def health_server(config: ServerConfig, servicer: health.aio.HealthServicer) -> tuple[grpc.aio.Server, CallCap]:
    """A server for grpc.health.v1 alone, bounded as the module says; the caller binds and starts it."""
    cap = CallCap(config.limits.health_max_streams, limit_name="health_max_streams")
    server = grpc.aio.server(interceptors=[cap], options=health_server_options(config))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return server, cap
