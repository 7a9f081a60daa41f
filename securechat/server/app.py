"""Build, start and stop the server: `start_server(config) -> RunningServer`.

Everything the config names is read and checked before a port opens. The
chat port serves ChatService, grpc.health.v1 and reflection behind the
auth interceptor; the optional health port serves grpc.health.v1 alone, in
plaintext, for probes that cannot present a client certificate.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import signal
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from securechat._gen import chat_pb2
from securechat.config import Keepalive, Limits, ServerConfig
from securechat.errors import SecureChatError
from securechat.protocol import Reason, Refusal
from securechat.server.broker import InMemoryBroker
from securechat.server.collector import Collector
from securechat.server.connections import ConnectionGuard, GuardLimits, channelz_server_ids
from securechat.server.core_writes import CoreWrites
from securechat.server.interceptors import AuthInterceptor, MethodCollector
from securechat.server.lifecycle import ServerLifecycle
from securechat.server.metrics import ServerMetrics
from securechat.server.probes import CallCap, health_server
from securechat.server.rooms import Hub, RoomHub
from securechat.server.service import SERVICE_NAME, ChatService, chat_handlers
from securechat.tls.material import load_server_material

log = logging.getLogger(__name__)

SHUTDOWN = Refusal(grpc.StatusCode.UNAVAILABLE, Reason.SHUTTING_DOWN, "server is shutting down; reconnect to continue")


class BindError(SecureChatError):
    """The listen address could not be bound."""


@dataclass
class RunningServer:
    config: ServerConfig
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service: ChatService
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    lifecycle: ServerLifecycle | None = None
    metrics: ServerMetrics | None = None
    metrics_port: int | None = None
    hub: Hub | None = None
    guards: list[ConnectionGuard] = field(default_factory=list)
    health_cap: CallCap | None = None
    renewal: asyncio.Task[None] | None = None
    """`tls.renew`: the task renewing tls.cert/tls.key from the online CA (the lifecycle serves the new files)."""
    collector: Collector | None = None
    """Runs the cyclic GC after ended streams and refused calls (server/collector.py)."""

    @property
    def mode(self) -> str:
        tls = self.config.tls
        if tls is None:
            return "PLAINTEXT (insecure)"
        return "mTLS" if tls.mtls else "server-only TLS"

    async def stop(self, grace: float | None = None) -> None:
        """Turn health NOT_SERVING, refuse new calls, drain open streams, stop."""
        grace = self.config.grace_seconds if grace is None else grace
        if self.renewal is not None:
            self.renewal.cancel()
        if self.collector is not None:
            await self.collector.stop()
        if self.lifecycle is not None:
            await self.lifecycle.stop()
        for guard in self.guards:
            await guard.stop()
        await self.health.enter_graceful_shutdown()
        stopping = asyncio.ensure_future(self.server.stop(grace))
        # Let each stream write what it was already given, then end it with
        # UNAVAILABLE so its client knows to reconnect.
        self.service.end_all_streams(SHUTDOWN)
        await stopping
        if self.hub is not None:
            await self.hub.close()
        if self.health_server is not None:
            await self.health_server.stop(0)
        if self.metrics is not None:
            await self.metrics.close()
        log.info("server stopped")


async def start_server(config: ServerConfig) -> RunningServer:
    material = load_server_material(config)
    lifecycle = ServerLifecycle(config, material)  # reads and verifies the CRL: fails before the port opens
    options = [
        ("grpc.max_receive_message_length", config.limits.max_message_bytes),
        ("grpc.so_reuseport", 0),
        *transport_options(config.limits),
        *pending_call_options(config.limits),
        *keepalive_options(config.keepalive),
    ]
    require_identity = config.tls is not None and config.tls.mtls
    metrics = ServerMetrics()
    servers_before = channelz_server_ids()
    auth = AuthInterceptor(
        require_identity=require_identity, allow=config.allow, policy=lifecycle, on_refusal=metrics.refused
    )
    # No interceptor chain: every method is wrapped with `auth` once, below (see AuthInterceptor).
    server = grpc.aio.server(options=options)
    server_id = _new_server_id(servers_before)
    limits = config.limits
    hub = await _room_hub(config, metrics)
    service = ChatService(hub, limits, metrics=metrics)
    loop = asyncio.get_running_loop()
    metrics.watch(
        streams=lambda: service.open_streams,
        connections=lambda: service.admission.connections,
        queue_depth=lambda: service.queued_events,
        # Read from the metrics thread: all_tasks() copies the loop's task set, retrying if it changes meanwhile.
        tasks=lambda: len(asyncio.all_tasks(loop)),
    )
    health_servicer = health.aio.HealthServicer()
    methods = MethodCollector()
    methods.add_registered_method_handlers(SERVICE_NAME, chat_handlers(service))
    # The generated add_*_to_server functions only call add_registered_method_handlers and
    # add_generic_rpc_handlers: the collector takes the server's place.
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, methods)  # type: ignore[arg-type]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(  # type: ignore[no-untyped-call]
        reflection.aio.ReflectionServicer(
            (
                chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            )
        ),
        methods,
    )
    server.add_generic_rpc_handlers((auth.guard_methods(methods.methods),))
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    try:
        port = await _open_port(config, server, lifecycle, material)
    except BaseException:
        await hub.close()
        raise
    # Chat's held writes (quarantined): the self-test runs against the started server; public writes if it fails.
    if limits.buffered_writes:
        service.core_writes = await CoreWrites.start(server)
    else:
        service.core_writes = CoreWrites.off("limits.buffered_writes is false")
    running = RunningServer(
        config=config, server=server, port=port, health=health_servicer, service=service, metrics=metrics, hub=hub
    )
    lifecycle.start(service)
    running.lifecycle = lifecycle
    running.collector = Collector(
        lambda: metrics.calls_ended,
        on_collect=lambda seconds, full: metrics.collected(seconds, full=full),
    )
    running.collector.start()
    if config.tls is not None and config.tls.renew is not None:
        from securechat.ca.renewal import Renewer  # only a server with tls.renew loads the CA client

        renewer = Renewer(cert=config.tls.cert, key=config.tls.key, settings=config.tls.renew)
        running.renewal = asyncio.create_task(renewer.run(), name="securechat-renewal")
        log.info("tls.renew: %s renews from the CA at %s", config.tls.cert.name, config.tls.renew.ca)
    guard_limits = GuardLimits(
        max_handshakes=limits.max_handshakes,
        handshake_timeout_seconds=limits.handshake_timeout_seconds,
        max_resets_per_second=limits.max_resets_per_second,
        cap=limits.max_connections + limits.max_handshakes,
    )
    guard = ConnectionGuard(
        name="chat port",
        port=port,
        server_id=server_id,
        limits=guard_limits,
        on_close=metrics.connection_closed,
        refused_calls=lambda: metrics.calls_refused,
    )
    if limits.connection_guard:
        guard.start()
    else:
        log.warning(
            "limits.connection_guard is false: connections are not watched; only gRPC core's caps and deadlines apply"
        )
    running.guards.append(guard)
    metrics.handshaking.set_function(lambda: guard.handshaking)
    if config.health_port is not None:
        await _start_health_server(config, health_servicer, running)
    if config.metrics_port is not None:
        running.metrics_port = await metrics.serve(
            config.listen.host, config.metrics_port, max_connections=limits.metrics_max_connections
        )
        log.info("Prometheus metrics on http://%s:%d/metrics", config.listen.host, running.metrics_port)
    return running


async def _open_port(
    config: ServerConfig, server: grpc.aio.Server, lifecycle: ServerLifecycle, material: object
) -> int:
    address = str(config.listen)
    if config.tls is None:
        log.warning(
            "INSECURE: serving PLAINTEXT on %s because %s says insecure: true. Anyone on the network "
            "can read and forge traffic, and callers have no identity. Never do this outside a test.",
            address,
            config.source.name,
        )
        port = _bind(lambda: server.add_insecure_port(address), address)
    else:
        assert material is not None
        credentials = lifecycle.credentials()  # dynamic: rotated files are served without a restart
        port = _bind(lambda: server.add_secure_port(address, credentials), address)
    await server.start()
    return port


async def _room_hub(config: ServerConfig, metrics: ServerMetrics) -> Hub:
    """The in-memory hub (one server), or a SharedRoomHub over NATS JetStream when the config has broker.type nats."""
    limits = config.limits
    if config.broker is None:
        broker = InMemoryBroker(
            history_size=limits.history_size,
            history_rooms=limits.history_rooms,
            idempotency_window=limits.idempotency_window_seconds,
            idempotency_ids=limits.idempotency_ids,
        )
        return RoomHub(broker, announce_max_members=limits.announce_max_members, on_fan_out=metrics.observe_fan_out)
    # Imported here: a single server never loads nats-py.
    from securechat.broker.jetstream import JetStreamBroker
    from securechat.server.shared import SharedRoomHub

    replica = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    shared = JetStreamBroker(config.broker, name=f"securechat {replica}")
    await shared.start()  # BrokerUnavailable / ConfigError before the port opens
    return SharedRoomHub(
        shared, announce_max_members=limits.announce_max_members, on_fan_out=metrics.observe_fan_out, replica=replica
    )


def pending_call_options(limits: Limits) -> list[tuple[str, int]]:
    """How many new calls gRPC core holds for us before it sheds them with a bare CANCELLED.

    Core's defaults (1,000, shedding at random up to a hard 3,000) turn away a
    fleet reconnecting after a restart: every client opens its streams in the
    same second. Two pending calls per allowed connection, hard at four, let
    a full reconnect storm in while still bounding what a flood can queue.
    See GRPC_ARG_SERVER_MAX_PENDING_REQUESTS in gRPC core's src/core/server/server.h.
    """
    soft = max(1000, 2 * limits.max_connections)
    return [
        ("grpc.server.max_pending_requests", soft),
        ("grpc.server.max_pending_requests_hard_limit", 2 * soft),
        # A call core holds longer than this (30 s by default) is cancelled, also with a bare
        # CANCELLED: measured, half of a 10,000-stream reconnect storm waited longer than that
        # for the aio server to take it (benchmarks/paths.py storm). The pending limits above
        # still bound what is held. GRPC_ARG_SERVER_MAX_UNREQUESTED_TIME_IN_SERVER_SECONDS.
        ("grpc.server_max_unrequested_time_in_server", PENDING_CALL_SECONDS),
    ]


PENDING_CALL_SECONDS = 300
"""How long gRPC core may hold a new call before the server takes it (a storm drains within this)."""


def keepalive_options(keepalive: Keepalive) -> list[tuple[str, int]]:
    """gRPC core channel arguments for the server's keepalive and connection-age policy."""
    ms = 1000
    options = [
        ("grpc.keepalive_time_ms", int(keepalive.time_seconds * ms)),
        ("grpc.keepalive_timeout_ms", int(keepalive.timeout_seconds * ms)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", int(keepalive.min_client_ping_interval_seconds * ms)),
        ("grpc.http2.max_ping_strikes", keepalive.max_ping_strikes),
    ]
    if keepalive.max_connection_age_seconds > 0:
        options += [
            ("grpc.max_connection_age_ms", int(keepalive.max_connection_age_seconds * ms)),
            ("grpc.max_connection_age_grace_ms", int(keepalive.max_connection_age_grace_seconds * ms)),
        ]
    return options


def transport_options(limits: Limits) -> list[tuple[str, int]]:
    """gRPC core channel arguments that bound what unauthenticated and abusive clients can hold."""
    return [
        # Silent and stalled connections count here too: core cannot tell them
        # apart. max_handshakes is their allowance; ConnectionGuard keeps them to it.
        ("grpc.max_allowed_incoming_connections", limits.max_connections + limits.max_handshakes),
        ("grpc.server_handshake_timeout_ms", int(limits.handshake_timeout_seconds * 1000)),
        ("grpc.max_concurrent_streams", limits.max_concurrent_streams),
        # Count a stream against max_concurrent_streams until the server has
        # released it, not until the client reset it (core's default; said
        # explicitly because rapid reset depends on it).
        ("grpc.http.overload_protection", 1),
    ]


def _new_server_id(before: set[int]) -> int | None:
    """The channelz id of the gRPC server made since BEFORE was taken (None if not exactly one)."""
    new = channelz_server_ids() - before
    return new.pop() if len(new) == 1 else None


def raise_open_file_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (each connection is a file); return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft, hard


async def _start_health_server(
    config: ServerConfig, servicer: health.aio.HealthServicer, running: RunningServer
) -> None:
    host = config.listen.host
    address = f"[{host}]:{config.health_port}" if ":" in host else f"{host}:{config.health_port}"
    before = channelz_server_ids()
    server, cap = health_server(config, servicer)
    server_id = _new_server_id(before)
    port = _bind(lambda: server.add_insecure_port(address), address)
    await server.start()
    running.health_server, running.health_port, running.health_cap = server, port, cap
    limits = config.limits
    guard = ConnectionGuard(
        name="health port",
        port=port,
        server_id=server_id,
        limits=GuardLimits(
            max_handshakes=max(1, limits.health_max_connections // 2),
            handshake_timeout_seconds=limits.handshake_timeout_seconds,
            max_resets_per_second=limits.max_resets_per_second,
            cap=limits.health_max_connections,
        ),
        on_close=running.metrics.connection_closed if running.metrics is not None else None,
    )
    if limits.connection_guard:
        guard.start()
    running.guards.append(guard)
    log.info("health probes (grpc.health.v1 only, plaintext) on %s", address.rsplit(":", 1)[0] + f":{port}")


def _bind(add_port: Callable[[], int], address: str) -> int:
    try:
        port = add_port()
    except RuntimeError as exc:
        raise BindError(
            f"cannot listen on {address}: {exc}. Is another server using the port? Pick another with --listen."
        ) from exc
    if port == 0:
        raise BindError(
            f"cannot listen on {address}: the address is in use or not available here. Pick another with --listen."
        )
    return port


GC_THRESHOLDS = (50_000, 10, 10)
"""The cyclic GC's thresholds while serving (Python's default: 700, 10, 10).

At 700 a busy server collects its young generation hundreds of times a
second, and every collection promotes whatever is alive at that instant
(in-flight futures and call state) to the older generations, which soon
triggers full collections. Those walk every open stream's objects: 17 to
57 ms each with 1,000 streams, measured, which set the light-load p99 at
N=1,000 (130 ms against the baseline's 114). At 50,000, a run of the
benchmark collects twice instead of about 550 times, and the pooled p99 fell
to 108 ms (baseline 121). Most objects are freed by reference counting and
never wait for the collector; cycles still are collected, in bigger batches
(a young collection of up to 50,000 objects takes a few ms).
"""


async def serve_until_signalled(config: ServerConfig, *, on_ready: object = None) -> int:
    """Run until SIGTERM or SIGINT, then shut down gracefully; a second signal exits at once."""
    soft, hard = raise_open_file_limit()
    running = await start_server(config)
    log.info(
        "open-file limit raised to %d (hard %s): about that many connections fit; limits.max_connections is %d",
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
        config.limits.max_connections,
    )
    log.info(
        "securechat listening on %s:%d (%s%s)",
        config.listen.host,
        running.port,
        running.mode,
        f", allow: {', '.join(sorted(config.allow))}" if config.allow is not None else "",
    )
    if callable(on_ready):
        on_ready(running)
    # What is loaded by now (modules, descriptors, gRPC, config) lives as long
    # as the process: keep it out of the cyclic GC's full collections, whose
    # pauses otherwise show in the delivery latency of a busy room.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            logging.shutdown()
            os._exit(1)
        log.info("%s received: shutting down (grace %.1fs)", signal.Signals(signum).name, config.grace_seconds)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    # SIGHUP (systemctl reload, kill -HUP): re-read config, certificates and CRL; never stop.
    assert running.lifecycle is not None
    loop.add_signal_handler(signal.SIGHUP, running.lifecycle.request_reload)
    await stop.wait()
    await running.stop()
    return 0
