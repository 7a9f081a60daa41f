"""YAML config -> frozen dataclasses, checked before any port opens.

`load_server_config()` and `load_client_config()` parse the file once,
reject unknown keys (suggesting the nearest valid one) and wrong types,
resolve relative paths against the config file's own directory, and insist
on an explicit `insecure: true` for plaintext. The certificate files the
config names are read and checked once, by `securechat.tls.material`, when the
server starts or the client opens its channel, before any port opens.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from securechat.errors import ConfigError

if TYPE_CHECKING:
    from securechat.broker.config import BrokerConfig
    from securechat.ca.config import RenewConfig

DEFAULT_PORT = 50051
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Address:
    """A HOST:PORT pair; IPv6 hosts are written in brackets: [::1]:50051."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


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
    connection_guard: bool = True
    """Watch connections from outside gRPC (kernel table + channelz) and close floods; false: only core's caps."""


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
    """`tls.renew`: renew cert/key from the online CA (securechat.ca.config.RenewConfig)."""


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
    grace_seconds: float = 5.0
    authz_methods: tuple[tuple[str, frozenset[str]], ...] = ()
    """`authz.methods`: (full method name or '/pkg.Service/*', identities), overriding `allow` there."""
    keepalive: Keepalive = field(default_factory=Keepalive)
    metrics_port: int | None = None
    broker: BrokerConfig | None = None
    """`broker:` with type nats: replicas share rooms through NATS JetStream. None: the in-memory broker."""


@dataclass(frozen=True)
class ClientTls:
    ca: Path
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None
    renew: RenewConfig | None = None
    """`tls.renew`: renew cert/key from the online CA (securechat.ca.config.RenewConfig)."""
    server_id: str | None = None
    """`tls.server_id`: a DNS name or SPIFFE ID the server's certificate must carry."""


@dataclass(frozen=True)
class ClientConfig:
    source: Path
    target: Address
    tls: ClientTls | None
    insecure: bool = False


class _Section:
    """Reads one mapping of a YAML document, naming fields by their dotted path."""

    def __init__(self, source: Path, data: Any, prefix: str, allowed: tuple[str, ...]) -> None:
        self.source = source
        self.prefix = prefix
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise self.error(None, f"must be a mapping of keys to values, got {_kind(data)}.")
        for key in data:
            if key not in allowed:
                near = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"Did you mean '{self._name(near[0])}'?" if near else f"Valid keys: {', '.join(allowed)}."
                # repr() for odd keys, so the error stays one printable line.
                shown = key if isinstance(key, str) and key.isprintable() else repr(key)
                raise self.error(shown, "unknown key.", hint)
        self.data = data

    def _name(self, key: str | None) -> str | None:
        if key is None:
            return self.prefix or None
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str | None, problem: str, fix: str = "") -> ConfigError:
        return ConfigError(self.source.name, self._name(key), problem, fix)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def section(self, key: str, allowed: tuple[str, ...]) -> _Section:
        return _Section(self.source, self.data.get(key), self._name(key) or key, allowed)

    def _typed(self, key: str, kind: type | tuple[type, ...], expected: str, default: Any) -> Any:
        value = self.data.get(key)
        if value is None:
            return default
        # bool is an int in Python; YAML's `yes` must not pass as a port.
        if isinstance(value, bool) and kind is not bool:
            raise self.error(key, f"expected {expected}, got a boolean ({value}).")
        if not isinstance(value, kind):
            raise self.error(key, f"expected {expected}, got {_kind(value)} ({value!r}).")
        return value

    def string(self, key: str, default: str | None = None) -> str | None:
        value = self._typed(key, str, "a string", default)
        if value is not None and not value.strip():
            raise self.error(key, "must not be empty.")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        return self._typed(key, bool, "true or false", default)

    def integer(self, key: str, default: int | None, *, minimum: int, maximum: int) -> int | None:
        value = self._typed(key, int, "a whole number", default)
        if value is not None and not minimum <= value <= maximum:
            raise self.error(key, f"{value} is out of range; use {minimum} to {maximum}.")
        return value

    def number(self, key: str, default: float, *, minimum: float, maximum: float) -> float:
        value = float(self._typed(key, (int, float), "a number", default))
        if not minimum <= value <= maximum:
            raise self.error(key, f"{value} is out of range; use {minimum} to {maximum}.")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self._typed(key, str, "a string", default)
        if value not in choices:
            raise self.error(key, f"'{value}' is not one of {', '.join(choices)}.")
        return value

    def path(self, key: str) -> Path | None:
        value = self.string(key)
        if value is None:
            return None
        path = Path(value).expanduser()
        # normpath, not resolve(): symlinks must stay symlinks, so a Kubernetes
        # `..data` swap or a `current -> v2` link is followed at every read.
        return path if path.is_absolute() else Path(os.path.normpath(self.source.parent / path))

    def address(self, key: str, default: str | None) -> Address | None:
        # `listen:` with no value is YAML null: treat it as absent, like every other key.
        value = self.data.get(key)
        if value is None:
            value = default
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(key, f"expected HOST:PORT as a string, got {_kind(value)} ({value!r}).")
        try:
            return parse_address(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from exc


def parse_address(text: str) -> Address:
    """Parse HOST:PORT (IPv6 as [::1]:PORT); raise ValueError with the fix."""
    hint = "Write it as HOST:PORT, e.g. 127.0.0.1:50051 or [::1]:50051."
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"'{text}' is not HOST:PORT. {hint}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"'{text}' has an IPv6 host without brackets. {hint}")
    if not host:
        raise ValueError(f"'{text}' has an empty host. {hint}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} in '{text}' is out of range; use 0 to 65535.")
    return Address(host, port)


def _flag_address(flag: str, text: str) -> Address:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise ConfigError(flag, None, str(exc)) from exc


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice is an error, not a silent override."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (the second would silently replace the first)", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(str(path), None, "config file not found.", "Run 'securechat quickstart --dir DIR' to make one, or fix the path.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), None, f"cannot read the config file ({exc.__class__.__name__}).", "Check its permissions and encoding.") from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        fix = "Remove one of them." if "duplicate key" in problem else "Fix the syntax (indentation, colons, quotes)."
        raise ConfigError(path.name, None, f"is not valid YAML{where}: {problem}.", fix) from exc
    if data is None:
        # An empty (or comments-only) file is a wrong path or a truncated write,
        # not a request for defaults: say so instead of "tls: missing".
        raise ConfigError(path.name, None, "is empty.", "Run 'securechat quickstart --dir DIR' for a working example, or fix the path.")
    return data


SERVER_KEYS = ("listen", "tls", "insecure", "insecure_allow_non_loopback", "authz", "crl", "health_port", "limits", "log", "grace_seconds", "keepalive", "metrics_port", "broker")
SERVER_TLS_KEYS = ("cert", "key", "client_ca", "mtls", "renew")
CLIENT_KEYS = ("target", "tls", "insecure")
CLIENT_TLS_KEYS = ("ca", "cert", "key", "server_name", "renew", "server_id")


def load_server_config(path: Path | str, *, listen: str | None = None) -> ServerConfig:
    """Read and check a server YAML file; `listen` overrides its listen address."""
    source = Path(os.path.abspath(path))  # not resolve(): see _Section.path
    root = _Section(source, _read_yaml(source), "", SERVER_KEYS)
    default = f"127.0.0.1:{DEFAULT_PORT}"
    address = root.address("listen", default) if listen is None else _flag_address("--listen", listen)
    assert address is not None
    insecure = root.boolean("insecure", False)
    allow_remote = root.boolean("insecure_allow_non_loopback", False)
    tls = _server_tls(root, insecure)
    if insecure and not address.is_loopback and not allow_remote:
        raise root.error(
            "listen",
            f"insecure: true would serve plaintext on non-loopback address {address}.",
            "Listen on 127.0.0.1, configure tls, or set insecure_allow_non_loopback: true if you really mean it.",
        )
    return ServerConfig(
        source=source,
        listen=address,
        tls=tls,
        insecure=insecure,
        insecure_allow_non_loopback=allow_remote,
        allow=_allow_list(root),
        authz_methods=_authz_methods(root),
        crl=root.path("crl"),
        health_port=root.integer("health_port", None, minimum=0, maximum=65535),
        limits=_limits(root.section("limits", tuple(Limits.__dataclass_fields__))),
        log_level=(log := root.section("log", ("level", "format"))).choice("level", LOG_LEVELS, "info"),
        log_format=log.choice("format", LOG_FORMATS, "text"),
        grace_seconds=root.number("grace_seconds", 5.0, minimum=0.0, maximum=3600.0),
        keepalive=_keepalive(root.section("keepalive", tuple(Keepalive.__dataclass_fields__))),
        metrics_port=root.integer("metrics_port", None, minimum=0, maximum=65535),
        broker=_broker(root),
    )


def _broker(root: _Section) -> BrokerConfig | None:
    from securechat.broker.config import BROKER_KEYS, parse_broker  # it builds on this module

    if root.data.get("broker") is None:
        return None
    broker = parse_broker(root.section("broker", BROKER_KEYS))
    return broker if broker.type == "nats" else None


def _server_tls(root: _Section, insecure: bool) -> ServerTls | None:
    if insecure:
        if root.has("tls"):
            raise root.error("insecure", "is true but a tls section is configured too.", "Remove one: securechat serves either TLS or, when asked by name, plaintext.")
        return None
    if not root.has("tls"):
        raise root.error(
            "tls",
            "missing: securechat will not serve plaintext unless asked.",
            "Add tls: {cert, key, client_ca} (see 'securechat quickstart'), or set insecure: true for a loopback-only test.",
        )
    tls = root.section("tls", SERVER_TLS_KEYS)
    for key in ("cert", "key"):
        if not tls.has(key):
            raise tls.error(key, "missing.", f"Set tls.{key} to the server's {'certificate' if key == 'cert' else 'private key'} file.")
    mtls = tls.boolean("mtls", True)
    client_ca = tls.path("client_ca")
    if mtls and client_ca is None:
        raise tls.error(
            "client_ca",
            "missing while mtls is true: the server cannot verify client certificates without it.",
            "Set tls.client_ca to the CA that signs client certificates (e.g. certs/ca.pem), or set tls.mtls: false.",
        )
    from securechat.ca.config import parse_renew  # it builds on this module

    renew = parse_renew(tls, default_ca_cert=client_ca, ca_cert_field="tls.client_ca")
    return ServerTls(cert=tls.path("cert"), key=tls.path("key"), client_ca=client_ca, mtls=mtls, renew=renew)  # type: ignore[arg-type]


AUTHZ_KEYS = ("allow", "methods")
CHAT_METHODS = ("SayHello", "Chat", "WhoAmI")
_METHOD_NAME = re.compile(r"/?[A-Za-z_][\w.]*\.[A-Za-z_]\w*/(\*|[A-Za-z_]\w*)")


def _authz_methods(root: _Section) -> tuple[tuple[str, frozenset[str]], ...]:
    """`authz.methods`: {METHOD: [identity, ...]}; METHOD is a ChatService method name or '/pkg.Service/Method|*'."""
    authz = root.section("authz", AUTHZ_KEYS)
    data = authz.data.get("methods")
    if data is None:
        return ()
    if not isinstance(data, Mapping):
        raise authz.error("methods", f"expected a mapping of method to identities, got {_kind(data)}.", "Write e.g. methods: {Chat: [alice]}.")
    methods = _Section(root.source, data, "authz.methods", tuple(str(k) for k in data))
    rules: list[tuple[str, frozenset[str]]] = []
    for key, names in methods.data.items():
        key = str(key)
        if key in CHAT_METHODS:
            full = f"/securechat.v1.ChatService/{key}"
        elif _METHOD_NAME.fullmatch(key):
            full = key if key.startswith("/") else f"/{key}"
        else:
            raise methods.error(
                key,
                "is not a method.",
                f"Use one of {', '.join(CHAT_METHODS)}, or a full name such as /grpc.health.v1.Health/Check or /grpc.health.v1.Health/*.",
            )
        example = "Write e.g. Chat: [alice, 'spiffe://example.org/bob']."
        if not isinstance(names, list):
            raise methods.error(key, f"expected a list of identities, got {_kind(names)}.", example)
        if not all(isinstance(name, str) and name for name in names):
            raise methods.error(key, "holds an empty or non-text identity.", example)
        rules.append((full, frozenset(names)))
    return tuple(rules)


def _allow_list(root: _Section) -> frozenset[str] | None:
    authz = root.section("authz", AUTHZ_KEYS)
    allow = authz.data.get("allow")
    if allow is None:
        return None
    if not isinstance(allow, list) or not all(isinstance(name, str) and name for name in allow):
        raise authz.error("allow", f"expected a list of identity names, got {_kind(allow)}.", "Write e.g. allow: [alice, bob].")
    return frozenset(allow)


def _limits(section: _Section) -> Limits:
    defaults = Limits()
    bounds = {
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
    }
    values = {
        name: section.integer(name, getattr(defaults, name), minimum=low, maximum=high)
        for name, (low, high) in bounds.items()
    }
    handshake = section.number("handshake_timeout_seconds", defaults.handshake_timeout_seconds, minimum=0.1, maximum=600.0)
    guard = section.boolean("connection_guard", defaults.connection_guard)
    return Limits(**values, handshake_timeout_seconds=handshake, connection_guard=guard)


def _keepalive(section: _Section) -> Keepalive:
    defaults = Keepalive()
    day = 86_400.0
    return Keepalive(
        time_seconds=section.number("time_seconds", defaults.time_seconds, minimum=1.0, maximum=day),
        timeout_seconds=section.number("timeout_seconds", defaults.timeout_seconds, minimum=1.0, maximum=day),
        min_client_ping_interval_seconds=section.number(
            "min_client_ping_interval_seconds", defaults.min_client_ping_interval_seconds, minimum=0.0, maximum=day
        ),
        max_ping_strikes=section.integer("max_ping_strikes", defaults.max_ping_strikes, minimum=0, maximum=1000),  # type: ignore[arg-type]
        max_connection_age_seconds=section.number("max_connection_age_seconds", 0.0, minimum=0.0, maximum=30 * day),
        max_connection_age_grace_seconds=section.number(
            "max_connection_age_grace_seconds", defaults.max_connection_age_grace_seconds, minimum=0.0, maximum=day
        ),
    )


def load_client_config(path: Path | str, *, target: str | None = None) -> ClientConfig:
    """Read and check a client YAML file; `target` overrides its target address."""
    source = Path(os.path.abspath(path))  # not resolve(): see _Section.path
    root = _Section(source, _read_yaml(source), "", CLIENT_KEYS)
    address = root.address("target", None) if target is None else _flag_address("--target", target)
    if address is None:
        raise root.error("target", "missing.", f"Set target to the server's HOST:PORT, e.g. localhost:{DEFAULT_PORT}.")
    insecure = root.boolean("insecure", False)
    tls: ClientTls | None = None
    if insecure:
        if root.has("tls"):
            raise root.error("insecure", "is true but a tls section is configured too.", "Remove one: the client speaks either TLS or, when asked by name, plaintext.")
    else:
        if not root.has("tls"):
            raise root.error("tls", "missing: securechat will not connect in plaintext unless asked.", "Add tls: {ca, cert, key}, or set insecure: true for a loopback-only test.")
        section = root.section("tls", CLIENT_TLS_KEYS)
        if not section.has("ca"):
            raise section.error("ca", "missing: the client cannot verify the server without it.", "Set tls.ca to the CA that signed the server certificate (e.g. certs/ca.pem).")
        if section.has("cert") != section.has("key"):
            present, absent = ("cert", "key") if section.has("cert") else ("key", "cert")
            raise section.error(absent, f"missing while tls.{present} is set.", "Give both tls.cert and tls.key, or neither for server-only TLS.")
        from securechat.ca.config import parse_renew, parse_server_id  # they build on this module

        renew = parse_renew(section, default_ca_cert=section.path("ca"), ca_cert_field="tls.ca")
        if renew is not None and not section.has("cert"):
            raise section.error("renew", "is set but tls.cert and tls.key are not: there is nothing to renew.", "Add tls.cert and tls.key, or remove tls.renew.")
        tls = ClientTls(
            ca=section.path("ca"),  # type: ignore[arg-type]
            cert=section.path("cert"),
            key=section.path("key"),
            server_name=section.string("server_name"),
            renew=renew,
            server_id=parse_server_id(section),
        )
    return ClientConfig(source=source, target=address, tls=tls, insecure=insecure)
