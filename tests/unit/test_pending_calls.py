"""gRPC core's hold on new calls: a reconnect storm is neither shed by count nor cancelled by age (server/app.py)."""

from __future__ import annotations

from securechat.config import Limits
from securechat.server.app import PENDING_CALL_SECONDS, pending_call_options


def test_pending_calls_scale_with_max_connections_and_wait_long_enough() -> None:
    """Two pending calls per allowed connection, hard at four, held up to PENDING_CALL_SECONDS (core's default is 30)."""
    options = dict(pending_call_options(Limits(max_connections=10_000)))
    assert options == {
        "grpc.server.max_pending_requests": 20_000,
        "grpc.server.max_pending_requests_hard_limit": 40_000,
        "grpc.server_max_unrequested_time_in_server": PENDING_CALL_SECONDS,
    }
    assert PENDING_CALL_SECONDS > 30


def test_a_small_server_keeps_cores_floor_of_pending_calls() -> None:
    """Below 500 connections the soft limit stays at core's default of 1,000."""
    assert dict(pending_call_options(Limits(max_connections=10)))["grpc.server.max_pending_requests"] == 1000
