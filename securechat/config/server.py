"""The server config: YAML -> a frozen ServerConfig, every problem of the file reported at once.

`load_server_config(path)` reads the file with the one YAML reader
(`securechat.config.yaml_reader`), rejects unknown keys (suggesting the
nearest valid one) and wrong types, resolves relative paths against the
config file's own directory, and insists on an explicit `insecure: true` for
plaintext. The `broker:` section is checked by `securechat.config.broker`.
The certificate files the config names are read and checked when the server
starts, before any port opens -- not here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from securechat.config.address import DEFAULT_PORT, Address
from securechat.config.broker import BROKER_KEYS, BrokerConfig, parse_broker
from securechat.config.renew import RenewConfig, parse_renew
from securechat.config.yaml_reader import Problems, Section, config_source, flag_address, kind_of, read_yaml
from securechat.logs import REPEATS_PER_SECOND

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Limits:
    """What one stream may do; breaking a limit ends the call with a status naming it."""

    max_text_length: int = 4096
    max_rooms_per_stream: int = 32
    max_message_bytes: int = 64 * 1024
    announce_max_members: int = 100
    queue_size: int = 1024
    # Delivery and protection (issue 5). A resumed member may be a whole
    # queue behind, so history_size should be at least queue_size.
    history_size: int = 1024
    history_rooms: int = 1000
    max_messages_per_second: int = 10
    message_burst: int = 20
    max_streams_per_identity: int = 16
    max_connections: int = 10_000
    # Connection floods (issue 13). Connections still in their TLS handshake
    # have their own allowance on top of max_connections and a deadline; see
    # securechat.server.connections.
    handshake_timeout_seconds: float = 5.0
    max_handshakes: int = 1000
    max_concurrent_streams: int = 100
    """Per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)."""
    max_resets_per_second: int = 100
    """Per connection, averaged over 10 s: a client cancelling streams faster is disconnected (HTTP/2 rapid reset)."""
    health_max_connections: int = 64
    health_max_streams: int = 64
    """Open calls (Watch streams) on the plaintext health_port, all connections together."""
    metrics_max_connections: int = 8
    # Idempotent sends (issue 16): a repeated client_msg_id is answered with
    # the original event for this long, for at most this many ids (in memory;
    # replicas use broker.duplicate_window instead).
    idempotency_window_seconds: int = 600
    idempotency_ids: int = 100_000
    connection_guard: bool = True
    """Watch connections from outside gRPC (kernel table + channelz) and close floods; false: only core's caps."""
    buffered_writes: bool = True
    """Chat: a member's queued events leave in one write, held in gRPC core (quarantined: server/core_writes.py)."""


LIMIT_BOUNDS: dict[str, tuple[int, int]] = {
    "max_text_length": (1, 1 << 20),
    "max_rooms_per_stream": (1, 10_000),
    "max_message_bytes": (1024, 64 << 20),
    "announce_max_members": (0, 1_000_000),
    "queue_size": (1, 1_000_000),
    "history_size": (0, 1_000_000),
    "history_rooms": (1, 1_000_000),
    "max_messages_per_second": (1, 1_000_000),
    "message_burst": (1, 1_000_000),
    "max_streams_per_identity": (1, 1_000_000),
    "max_connections": (1, 10_000_000),
    "max_handshakes": (1, 1_000_000),
    "max_concurrent_streams": (1, 1_000_000),
    "max_resets_per_second": (1, 1_000_000),
    "health_max_connections": (1, 100_000),
    "health_max_streams": (1, 100_000),
    "metrics_max_connections": (1, 10_000),
    "idempotency_window_seconds": (0, 30 * 86_400),
    "idempotency_ids": (0, 10_000_000),
}
"""`limits.*`: (lowest, highest) accepted value of each."""


@dataclass(frozen=True)
class Keepalive:
    """HTTP/2 keepalive and connection age (gRPC channel arguments, in seconds).

    The server pings an idle connection every `time_seconds` and closes it if
    no answer comes within `timeout_seconds`. A client pinging more often than
    `min_client_ping_interval_seconds` gets a strike; after `max_ping_strikes`
    the server sends GOAWAY (ENHANCE_YOUR_CALM) and closes the connection.
    `max_connection_age_seconds` (0: unlimited) makes clients reconnect now and
    then, e.g. to rebalance; streams get `max_connection_age_grace_seconds` to
    finish and then end with UNAVAILABLE (clients resume with last-event-id).
    """

    time_seconds: float = 60.0
    timeout_seconds: float = 20.0
    min_client_ping_interval_seconds: float = 30.0
    max_ping_strikes: int = 2
    max_connection_age_seconds: float = 0.0
    max_connection_age_grace_seconds: float = 30.0


@dataclass(frozen=True)
class ServerTls:
    cert: Path
    key: Path
    client_ca: Path | None
    mtls: bool = True
    renew: RenewConfig | None = None
    """`tls.renew`: renew cert/key from the online CA (securechat.config.renew.RenewConfig)."""


@dataclass(frozen=True)
class ServerConfig:
    source: Path
    listen: Address
    tls: ServerTls | None
    insecure: bool = False
    insecure_allow_non_loopback: bool = False
    allow: frozenset[str] | None = None
    crl: Path | None = None
    health_port: int | None = None
    limits: Limits = field(default_factory=Limits)
    log_level: str = "info"
    log_format: str = "text"
    log_repeats_per_second: int = REPEATS_PER_SECOND
    grace_seconds: float = 5.0
    authz_methods: tuple[tuple[str, frozenset[str]], ...] = ()
    """`authz.methods`: (full method name or '/pkg.Service/*', identities), overriding `allow` there."""
    keepalive: Keepalive = field(default_factory=Keepalive)
    metrics_port: int | None = None
    broker: BrokerConfig | None = None
    """`broker:` with type nats: replicas share rooms through NATS JetStream. None: the in-memory broker."""


SERVER_KEYS = (
    "listen",
    "tls",
    "insecure",
    "insecure_allow_non_loopback",
    "authz",
    "crl",
    "health_port",
    "limits",
    "log",
    "grace_seconds",
    "keepalive",
    "metrics_port",
    "broker",
)
SERVER_TLS_KEYS = ("cert", "key", "client_ca", "mtls", "renew")
AUTHZ_KEYS = ("allow", "methods")
CHAT_METHODS = ("SayHello", "Chat", "ChatBatched", "WhoAmI")
# ChatBatched is Chat with batched responses: a rule for Chat covers it too,
# unless the file gives ChatBatched a rule of its own (protocol.RULE_INHERITS).
_METHOD_NAME = re.compile(r"/?[A-Za-z_][\w.]*\.[A-Za-z_]\w*/(\*|[A-Za-z_]\w*)")


def load_server_config(path: str | os.PathLike[str], *, listen: str | None = None) -> ServerConfig:
    """Read and check a server YAML file; `listen` overrides its listen address.

    Raises ConfigError carrying every problem found in the file.
    """
    source = config_source(path)
    problems = Problems(source)
    root = Section(problems, read_yaml(source), "", SERVER_KEYS)
    default = Address("127.0.0.1", DEFAULT_PORT)
    address = (
        root.address("listen", str(default)) if listen is None else flag_address(problems, "--listen", listen)
    ) or default
    insecure = root.boolean("insecure", False)
    allow_remote = root.boolean("insecure_allow_non_loopback", False)
    tls = _server_tls(root, insecure)
    if insecure and not address.is_loopback and not allow_remote:
        root.problem(
            "listen",
            f"insecure: true would serve plaintext on non-loopback address {address}.",
            "Listen on 127.0.0.1, configure tls, or set insecure_allow_non_loopback: true if you really mean it.",
        )
    authz = root.section("authz", AUTHZ_KEYS)
    log = root.section("log", ("level", "format", "repeats_per_second"))
    config = ServerConfig(
        source=source,
        listen=address,
        tls=tls,
        insecure=insecure,
        insecure_allow_non_loopback=allow_remote,
        allow=_allow_list(authz),
        authz_methods=_authz_methods(authz),
        crl=root.path("crl"),
        health_port=root.integer("health_port", None, minimum=0, maximum=65535),
        limits=_limits(root.section("limits", tuple(f.name for f in fields(Limits)))),
        log_level=log.choice("level", LOG_LEVELS, "info"),
        log_format=log.choice("format", LOG_FORMATS, "text"),
        log_repeats_per_second=log.integer("repeats_per_second", REPEATS_PER_SECOND, minimum=0, maximum=1_000_000),
        grace_seconds=root.number("grace_seconds", 5.0, minimum=0.0, maximum=3600.0),
        keepalive=_keepalive(root.section("keepalive", tuple(f.name for f in fields(Keepalive)))),
        metrics_port=root.integer("metrics_port", None, minimum=0, maximum=65535),
        broker=_broker(root),
    )
    problems.raise_if_any()
    return config


def crl_location(config: ServerConfig) -> tuple[Path | None, bool]:
    """(the CRL path, whether the config names it): `crl:`, else crl.pem next to tls.client_ca."""
    if config.crl is not None:
        return config.crl, True
    if config.tls is not None and config.tls.client_ca is not None:
        return config.tls.client_ca.parent / "crl.pem", False
    return None, False


def _broker(root: Section) -> BrokerConfig | None:
    if root.raw("broker") is None:
        return None
    broker = parse_broker(root.section("broker", BROKER_KEYS))
    return broker if broker.type == "nats" else None


def _server_tls(root: Section, insecure: bool) -> ServerTls | None:
    if insecure:
        if root.has("tls"):
            root.problem(
                "insecure",
                "is true but a tls section is configured too.",
                "Remove one: securechat serves either TLS or, when asked by name, plaintext.",
            )
        return None
    if not root.has("tls"):
        root.missing(
            "tls",
            "missing: securechat will not serve plaintext unless asked.",
            "Add tls: {cert, key, client_ca} (see 'securechat quickstart'), or set insecure: true for a loopback-only test.",
        )
        return None
    tls = root.section("tls", SERVER_TLS_KEYS)
    cert, key = tls.path("cert"), tls.path("key")
    if not tls.has("cert"):
        tls.missing("cert", "missing.", "Set tls.cert to the server's certificate file.")
    if not tls.has("key"):
        tls.missing("key", "missing.", "Set tls.key to the server's private key file.")
    mtls = tls.boolean("mtls", True)
    client_ca = tls.path("client_ca")
    if mtls and client_ca is None and not tls.has("client_ca"):
        tls.missing(
            "client_ca",
            "missing while mtls is true: the server cannot verify client certificates without it.",
            "Set tls.client_ca to the CA that signs client certificates (e.g. certs/ca.pem), or set tls.mtls: false.",
        )
    renew = parse_renew(tls, default_ca_cert=client_ca, ca_cert_field="tls.client_ca")
    if cert is None or key is None:
        return None
    return ServerTls(cert=cert, key=key, client_ca=client_ca, mtls=mtls, renew=renew)


def _authz_methods(authz: Section) -> tuple[tuple[str, frozenset[str]], ...]:
    """`authz.methods`: {METHOD: [identity, ...]}; METHOD is a ChatService method name or '/pkg.Service/Method|*'."""
    data = authz.raw("methods")
    if data is None:
        return ()
    if not isinstance(data, Mapping):
        authz.problem(
            "methods",
            f"expected a mapping of method to identities, got {kind_of(data)}.",
            "Write e.g. methods: {Chat: [alice]}.",
        )
        return ()
    methods = Section(authz.problems, data, "authz.methods", tuple(str(k) for k in data))
    rules: list[tuple[str, frozenset[str]]] = []
    example = "Write e.g. Chat: [alice, 'spiffe://example.org/bob']."
    for raw_key, names in methods.data.items():
        key = str(raw_key)
        shown_key = key if key.isprintable() and len(key) <= 60 else repr(key)[:60]
        if key in CHAT_METHODS:
            full = f"/securechat.v1.ChatService/{key}"
        elif _METHOD_NAME.fullmatch(key):
            full = key if key.startswith("/") else f"/{key}"
        else:
            methods.problem(
                shown_key,
                "is not a method.",
                f"Use one of {', '.join(CHAT_METHODS)}, or a full name such as /grpc.health.v1.Health/Check or /grpc.health.v1.Health/*.",
            )
            continue
        if not isinstance(names, list):
            methods.problem(shown_key, f"expected a list of identities, got {kind_of(names)}.", example)
            continue
        identities = [name for name in names if isinstance(name, str) and name]
        if len(identities) != len(names):
            methods.problem(shown_key, "holds an empty or non-text identity.", example)
            continue
        rules.append((full, frozenset(identities)))
    return tuple(rules)


def _allow_list(authz: Section) -> frozenset[str] | None:
    allow = authz.raw("allow")
    if allow is None:
        return None
    names = [name for name in allow if isinstance(name, str) and name] if isinstance(allow, list) else []
    if not isinstance(allow, list) or len(names) != len(allow):
        authz.problem(
            "allow", f"expected a list of identity names, got {kind_of(allow)}.", "Write e.g. allow: [alice, bob]."
        )
        return None
    return frozenset(names)


def _limits(section: Section) -> Limits:
    defaults = Limits()
    handshake = section.number(
        "handshake_timeout_seconds", defaults.handshake_timeout_seconds, minimum=0.1, maximum=600.0
    )
    return Limits(
        **{
            name: section.integer(name, getattr(defaults, name), minimum=low, maximum=high)
            for name, (low, high) in LIMIT_BOUNDS.items()
        },
        handshake_timeout_seconds=handshake,
        connection_guard=section.boolean("connection_guard", defaults.connection_guard),
        buffered_writes=section.boolean("buffered_writes", defaults.buffered_writes),
    )


def _keepalive(section: Section) -> Keepalive:
    defaults = Keepalive()
    day = 86_400.0
    return Keepalive(
        time_seconds=section.number("time_seconds", defaults.time_seconds, minimum=1.0, maximum=day),
        timeout_seconds=section.number("timeout_seconds", defaults.timeout_seconds, minimum=1.0, maximum=day),
        min_client_ping_interval_seconds=section.number(
            "min_client_ping_interval_seconds", defaults.min_client_ping_interval_seconds, minimum=0.0, maximum=day
        ),
        max_ping_strikes=section.integer("max_ping_strikes", defaults.max_ping_strikes, minimum=0, maximum=1000),
        max_connection_age_seconds=section.number("max_connection_age_seconds", 0.0, minimum=0.0, maximum=30 * day),
        max_connection_age_grace_seconds=section.number(
            "max_connection_age_grace_seconds", defaults.max_connection_age_grace_seconds, minimum=0.0, maximum=day
        ),
    )
