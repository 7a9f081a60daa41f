"""Rebuild a gRPC method handler around a wrapped behaviour, with grpc's public constructors.

Server interceptors (authentication, the health port's call cap) run code in
the call's own task by handing gRPC the same handler with its behaviour
wrapped. `RpcMethodHandler` has no public copy-with-changes, so the handler is
built again with the `grpc.*_rpc_method_handler` constructor of its kind,
keeping its (de)serializers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]  # generic in the type stubs only
else:
    Handler = grpc.RpcMethodHandler
Behavior = Callable[..., Any]

# grpc's public constructor for each kind of method handler.
_CONSTRUCTORS: tuple[tuple[str, Callable[..., Handler]], ...] = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


def rewrapped(handler: Handler, wrap: Callable[[Behavior], Behavior]) -> Handler:
    """HANDLER with its behaviour replaced by WRAP(behaviour); the same kind and (de)serializers."""
    for kind, constructor in _CONSTRUCTORS:
        behavior = getattr(handler, kind)
        if behavior is not None:
            return constructor(
                wrap(behavior),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler
