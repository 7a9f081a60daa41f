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
It runs on the server's event loop (`MetricsEndpoint`), not a thread per
connection: at most `limits.metrics_max_connections` connections at once
(one more is answered 503 and closed), REQUEST_SECONDS to send the request
head (at most REQUEST_HEAD_BYTES), one request per connection, and `GET
/metrics` only (404 for other paths, 405 for other methods).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import grpc
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from securechat.protocol import Reason, Refusal

# The label values this counter has always had, by refusal reason.
_AUTH_LABELS = {
    Reason.NOT_ALLOWED: "not_allowed",
    Reason.NO_CERTIFICATE: "no_certificate",
    Reason.BAD_CERTIFICATE: "rejected_certificate",
    Reason.REVOKED: "rejected_certificate",
}

log = logging.getLogger(__name__)

REQUEST_SECONDS = 5.0
WRITE_SECONDS = 10.0
REQUEST_HEAD_BYTES = 8192
FAN_OUT_BUCKETS = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.connections = Gauge(
            "securechat_connections", "Connections with at least one open chat stream.", registry=registry
        )
        self.streams = Gauge("securechat_streams", "Open chat streams.", registry=registry)
        self.queue_depth = Gauge(
            "securechat_queue_depth_events", "Events queued to members and not yet written, summed.", registry=registry
        )
        self.messages_accepted = Counter(
            "securechat_messages_accepted", "Chat messages given an id.", registry=registry
        )
        self.deliveries = Counter("securechat_deliveries", "Events handed to a member's queue.", registry=registry)
        self.slow_consumers = Counter(
            "securechat_slow_consumer_disconnects",
            "Streams ended because the member fell a whole queue behind.",
            registry=registry,
        )
        self.refusals = Counter(
            "securechat_auth_failures",
            "Calls refused after the TLS handshake, by reason.",
            ["reason"],
            registry=registry,
        )
        self.handshake_failures = Counter(
            "securechat_tls_handshake_failures",
            "TLS handshakes gRPC core refused, by reason (read from its log).",
            ["reason"],
            registry=registry,
        )
        self.stream_ends = Counter(
            "securechat_streams_ended", "Chat streams ended, by status code.", ["code"], registry=registry
        )
        self.fan_out = Histogram(
            "securechat_fan_out_seconds",
            "Time to hand one event to every member of its room.",
            buckets=FAN_OUT_BUCKETS,
            registry=registry,
        )
        self.tasks = Gauge(
            "securechat_event_loop_tasks",
            "asyncio tasks alive on the server's event loop (a soak watches it stay flat).",
            registry=registry,
        )
        self.handshaking = Gauge(
            "securechat_handshaking_connections",
            "Connections to the chat port that have not completed the TLS handshake (sampled each second).",
            registry=registry,
        )
        self.connections_closed = Counter(
            "securechat_connections_closed",
            "Connections the server closed itself: stuck in the TLS handshake, or resetting streams in a flood.",
            ["reason"],
            registry=registry,
        )
        self.gc_collections = Counter(
            "securechat_gc_collections",
            "Cyclic-GC collections the server ran after ended streams (server/collector.py), by kind.",
            ["kind"],
            registry=registry,
        )
        self.gc_pause = Counter(
            "securechat_gc_pause_seconds",
            "Event-loop time those collections took, summed, by kind.",
            ["kind"],
            registry=registry,
        )
        for kind in ("young", "full"):  # both series from the start, at 0
            self.gc_collections.labels(kind=kind)
            self.gc_pause.labels(kind=kind)
        self.calls_ended = 0
        """Chat streams ended so far, however they ended, and calls refused before their handler.

        What server/collector.py reads: each leaves reference cycles behind
        (its exception's frames, gRPC's per-call closures, a member's queue).
        """
        self.calls_refused = 0
        """Of those, the ones the server itself ended with an error status (refusals, slow consumers, limits).

        What the connection guard takes off channelz's failed calls: no client reset them.
        """
        self._http: MetricsEndpoint | None = None

    def watch(
        self,
        *,
        streams: Callable[[], int],
        connections: Callable[[], int],
        queue_depth: Callable[[], int],
        tasks: Callable[[], int] | None = None,
    ) -> None:
        if tasks is not None:
            self.tasks.set_function(tasks)
        self.streams.set_function(streams)
        self.connections.set_function(connections)
        self.queue_depth.set_function(queue_depth)

    def observe_fan_out(self, members: int, seconds: float) -> None:
        self.deliveries.inc(members)
        self.fan_out.observe(seconds)

    def refused(self, refusal: Refusal) -> None:
        self.calls_ended += 1
        self.calls_refused += 1
        self.refusals.labels(reason=_AUTH_LABELS.get(refusal.reason, refusal.reason.value)).inc()

    def handshake_failed(self, reason: str) -> None:
        self.handshake_failures.labels(reason=reason).inc()

    def stream_ended(self, code: grpc.StatusCode) -> None:
        """Once for every chat stream, with the status it ended with (CANCELLED: the client went away)."""
        self.calls_ended += 1
        if code not in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
            self.calls_refused += 1
        self.stream_ends.labels(code=code.name).inc()

    def collected(self, seconds: float, *, full: bool) -> None:
        kind = "full" if full else "young"
        self.gc_collections.labels(kind=kind).inc()
        self.gc_pause.labels(kind=kind).inc(seconds)

    def connection_closed(self, reason: str) -> None:
        self.connections_closed.labels(reason=reason).inc()

    async def serve(self, host: str, port: int, *, max_connections: int) -> int:
        """Serve /metrics over HTTP on host:port (0 picks one); returns the bound port."""
        self._http = MetricsEndpoint(self.registry, max_connections=max_connections)
        return await self._http.start(host, port)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


class MetricsEndpoint:
    """A minimal HTTP/1.1 server for Prometheus on the event loop: bounded connections, one GET each."""

    def __init__(self, registry: CollectorRegistry, *, max_connections: int) -> None:
        self._registry = registry
        self._max = max_connections
        self._open: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._turned_away = 0

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._accept, host, port, limit=REQUEST_HEAD_BYTES)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._open):
                task.cancel()
            await asyncio.gather(*self._open, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._open) >= self._max:
            self._turned_away += 1
            if self._turned_away == 1 or self._turned_away % 1000 == 0:
                log.warning(
                    "metrics port: turned away %d connection(s) so far: %d open (limits.metrics_max_connections)",
                    self._turned_away,
                    len(self._open),
                )
            await _respond(writer, 503, b"too many connections\n")
            return
        self._open.add(task)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_SECONDS)
            except (
                TimeoutError,
                asyncio.TimeoutError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                ConnectionError,
            ):
                await _respond(writer, 408, b"request head not received in time or too long\n")
                return
            method, _, rest = head.split(b"\r\n", 1)[0].partition(b" ")
            target = rest.partition(b" ")[0].partition(b"?")[0]
            if method not in (b"GET", b"HEAD"):
                await _respond(writer, 405, b"only GET\n", extra=b"Allow: GET, HEAD\r\n")
            elif target != b"/metrics":
                await _respond(writer, 404, b"not found: metrics are at /metrics\n")
            else:
                body = generate_latest(self._registry)
                await _respond(
                    writer, 200, body, content_type=CONTENT_TYPE_LATEST.encode(), head_only=method == b"HEAD"
                )
        finally:
            self._open.discard(task)


_REASONS = {
    200: b"OK",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    503: b"Service Unavailable",
}


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
    extra: bytes = b"",
    head_only: bool = False,
) -> None:
    head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n" % (
        status,
        _REASONS[status],
        content_type,
        len(body),
        extra,
    )
    try:
        writer.write(head if head_only else head + body)
        await asyncio.wait_for(writer.drain(), WRITE_SECONDS)
    except (TimeoutError, asyncio.TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
