"""Prometheus metrics for one server, on their own registry and (optionally) their own port.

Counting is per accepted message, never per delivery: a fan-out to N members
adds N to `securechat_deliveries_total` in one call. Gauges that would cost
work on the hot path (streams, connections, queue depth) are computed when
Prometheus scrapes. TLS handshakes that gRPC core refuses are counted by
reason when `securechat serve` reads them from core's log
(`server.core_log`); refusals after the handshake (no, rejected or
not-allowed identity) are counted by reason too.

The endpoint is plain HTTP (it carries no message text or identities);
bind it to a private address. Enable it with `metrics_port:` in server.yaml.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from securechat.protocol import Reason, Refusal

# The label values this counter has always had, by refusal reason.
_AUTH_LABELS = {
    Reason.NOT_ALLOWED: "not_allowed",
    Reason.NO_CERTIFICATE: "no_certificate",
    Reason.BAD_CERTIFICATE: "rejected_certificate",
    Reason.REVOKED: "rejected_certificate",
}

FAN_OUT_BUCKETS = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.connections = Gauge("securechat_connections", "Connections with at least one open chat stream.", registry=registry)
        self.streams = Gauge("securechat_streams", "Open chat streams.", registry=registry)
        self.queue_depth = Gauge("securechat_queue_depth_events", "Events queued to members and not yet written, summed.", registry=registry)
        self.messages_accepted = Counter("securechat_messages_accepted", "Chat messages given an id.", registry=registry)
        self.deliveries = Counter("securechat_deliveries", "Events handed to a member's queue.", registry=registry)
        self.slow_consumers = Counter("securechat_slow_consumer_disconnects", "Streams ended because the member fell a whole queue behind.", registry=registry)
        self.refusals = Counter("securechat_auth_failures", "Calls refused after the TLS handshake, by reason.", ["reason"], registry=registry)
        self.handshake_failures = Counter(
            "securechat_tls_handshake_failures", "TLS handshakes gRPC core refused, by reason (read from its log).", ["reason"], registry=registry
        )
        self.stream_ends = Counter("securechat_streams_ended", "Chat streams ended, by status code.", ["code"], registry=registry)
        self.fan_out = Histogram(
            "securechat_fan_out_seconds", "Time to hand one event to every member of its room.", buckets=FAN_OUT_BUCKETS, registry=registry
        )
        self._http: object | None = None

    def watch(self, *, streams: Callable[[], int], connections: Callable[[], int], queue_depth: Callable[[], int]) -> None:
        self.streams.set_function(streams)
        self.connections.set_function(connections)
        self.queue_depth.set_function(queue_depth)

    def observe_fan_out(self, members: int, seconds: float) -> None:
        self.deliveries.inc(members)
        self.fan_out.observe(seconds)

    def refused(self, refusal: Refusal) -> None:
        self.refusals.labels(reason=_AUTH_LABELS.get(refusal.reason, refusal.reason.value)).inc()

    def handshake_failed(self, reason: str) -> None:
        self.handshake_failures.labels(reason=reason).inc()

    def stream_ended(self, code: grpc.StatusCode) -> None:
        self.stream_ends.labels(code=code.name).inc()

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics over HTTP on host:port (0 picks one); returns the bound port."""
        httpd, _ = start_http_server(port, addr=host, registry=self.registry)
        self._http = httpd
        return httpd.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()  # type: ignore[attr-defined]
            self._http.server_close()  # type: ignore[attr-defined]
            self._http = None
