"""The `broker:` section of a server config -> a frozen BrokerConfig.

    broker:
      type: nats                     # memory (default: one server, no extra process) | nats
      servers: [tls://nats-0.nats:4222, tls://nats-1.nats:4222]
      tls: {ca: certs/ca.pem, cert: certs/replica-a.pem, key: certs/replica-a-key.pem}
      stream: SECURECHAT             # one JetStream stream per deployment
      replicas: 1                    # JetStream replicas of the stream (3 on a 3-node cluster)
      retention: {max_age: 24h, max_bytes: 1073741824, max_msgs_per_room: 10000}

Secure by default, like the chat port: every server URL must be `tls://`
and `tls` must name our CA and this replica's client certificate. A
plaintext `nats://` URL is refused unless `insecure: true` is said, and
then only to a loopback host. Paths resolve against the config file.
Files are read when the broker starts (`securechat.broker.tls`), and a
bad one is a ConfigError naming the field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from securechat.broker.subjects import STREAM_PATTERN
from securechat.config import Address, _kind, _read_yaml, _Section
from securechat.errors import ConfigError

BROKER_TYPES = ("memory", "nats")
BROKER_KEYS = (
    "type",
    "servers",
    "tls",
    "insecure",
    "stream",
    "replicas",
    "retention",
    "duplicate_window",
    "publish_timeout",
    "connect_timeout",
    "reconnect_wait",
)
BROKER_TLS_KEYS = ("ca", "cert", "key", "server_name")
RETENTION_KEYS = ("max_age", "max_bytes", "max_msgs", "max_msgs_per_room")
DEFAULT_STREAM = "SECURECHAT"
DEFAULT_NATS_PORT = 4222
DEFAULT_DUPLICATE_WINDOW = 600.0

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True)
class Retention:
    """What the stream keeps; older events are dropped oldest-first (JetStream limits, discard old).

    None means no limit of that kind. `max_msgs_per_room` is JetStream's
    max_msgs_per_subject: each room keeps at most that many of its newest events.
    """

    max_age_seconds: float | None = 24 * 3600.0
    max_bytes: int | None = 1 << 30
    max_msgs: int | None = None
    max_msgs_per_room: int | None = 10_000


@dataclass(frozen=True)
class BrokerTls:
    """Our CA (to verify the NATS server) and this replica's client certificate and key."""

    ca: Path
    cert: Path
    key: Path
    server_name: str | None = None


@dataclass(frozen=True)
class BrokerConfig:
    """Where events are ordered and kept: in this process (memory) or in NATS JetStream."""

    source: Path
    type: str = "memory"
    servers: tuple[str, ...] = ()
    tls: BrokerTls | None = None
    insecure: bool = False
    stream: str = DEFAULT_STREAM
    replicas: int = 1
    retention: Retention = field(default_factory=Retention)
    # Idempotent sends (issue 16): a resent client_msg_id is stored once if it
    # arrives within this window; 10 minutes, or retention.max_age if shorter.
    duplicate_window_seconds: float = DEFAULT_DUPLICATE_WINDOW
    publish_timeout_seconds: float = 5.0
    connect_timeout_seconds: float = 5.0
    reconnect_wait_seconds: float = 1.0

    def error(self, key: str | None, problem: str, fix: str = "") -> ConfigError:
        """A ConfigError naming this config file and `broker.KEY`."""
        return ConfigError(self.source.name, f"broker.{key}" if key else "broker", problem, fix)


def parse_broker(section: _Section) -> BrokerConfig:
    """Check a `broker:` mapping read as `section` (prefix 'broker'); raise ConfigError on any problem."""
    kind = section.choice("type", BROKER_TYPES, "memory")
    if kind == "memory":
        extra = [key for key in BROKER_KEYS if key != "type" and key in section.data]
        if extra:
            raise section.error(extra[0], "only applies with type: nats.", "Remove it, or set broker.type: nats.")
        return BrokerConfig(source=section.source)
    insecure = section.boolean("insecure", False)
    servers = _servers(section, insecure)
    retention = _retention(section.section("retention", RETENTION_KEYS))
    default_window = DEFAULT_DUPLICATE_WINDOW
    if retention.max_age_seconds is not None:
        default_window = max(1.0, min(default_window, retention.max_age_seconds))
    duplicate_window = _duration(section, "duplicate_window", default_window, minimum=1.0)
    assert duplicate_window is not None
    if retention.max_age_seconds is not None and duplicate_window > retention.max_age_seconds:
        # JetStream refuses a stream whose dedup window outlives its messages.
        raise section.error("duplicate_window", f"{duplicate_window:g}s is longer than retention.max_age ({retention.max_age_seconds:g}s).", "Make it at most retention.max_age.")
    return BrokerConfig(
        source=section.source,
        type=kind,
        servers=servers,
        tls=_tls(section, insecure),
        insecure=insecure,
        stream=_stream(section),
        replicas=section.integer("replicas", 1, minimum=1, maximum=5),  # type: ignore[arg-type]
        retention=retention,
        duplicate_window_seconds=duplicate_window,
        publish_timeout_seconds=_duration(section, "publish_timeout", 5.0, minimum=0.05, maximum=300.0),  # type: ignore[arg-type]
        connect_timeout_seconds=_duration(section, "connect_timeout", 5.0, minimum=0.05, maximum=300.0),  # type: ignore[arg-type]
        reconnect_wait_seconds=_duration(section, "reconnect_wait", 1.0, minimum=0.01, maximum=300.0),  # type: ignore[arg-type]
    )


def load_broker_config(path: Path | str) -> BrokerConfig | None:
    """Read the `broker:` section of a YAML file (other top-level keys are left to their own loader)."""
    source = Path(path).resolve()
    data = _read_yaml(source)
    if not isinstance(data, dict):
        raise ConfigError(source.name, None, f"must be a mapping of keys to values, got {_kind(data)}.")
    if data.get("broker") is None:
        return None
    return parse_broker(_Section(source, data["broker"], "broker", BROKER_KEYS))


def _servers(section: _Section, insecure: bool) -> tuple[str, ...]:
    value = section.data.get("servers")
    example = f"tls://nats.example.internal:{DEFAULT_NATS_PORT}"
    if value is None:
        raise section.error("servers", "missing.", f"List the NATS server URLs, e.g. servers: [{example}].")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise section.error("servers", f"expected a list of URLs, got {_kind(value)}.", f"Write e.g. servers: [{example}].")
    if not value:
        raise section.error("servers", "is empty.", f"List at least one NATS server URL, e.g. servers: [{example}].")
    urls = []
    for index, url in enumerate(value):
        key = f"servers[{index}]"
        if not isinstance(url, str) or not url.strip():
            raise section.error(key, f"expected a URL string, got {_kind(url)} ({url!r}).", f"Write e.g. {example}.")
        urls.append(_server_url(section, key, url.strip(), insecure))
    return tuple(urls)


def _server_url(section: _Section, key: str, url: str, insecure: bool) -> str:
    parts = urlsplit(url if "://" in url else f"//{url}")
    scheme = parts.scheme
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise section.error(key, f"'{url}' has an invalid port.", "Write tls://HOST:PORT, e.g. tls://nats:4222.") from exc
    if scheme not in ("tls", "nats") or not host or parts.path not in ("", "/") or parts.username or parts.password:
        raise section.error(key, f"'{url}' is not a NATS URL.", f"Write tls://HOST:PORT, e.g. tls://{host or 'nats'}:{DEFAULT_NATS_PORT}.")
    port = port or DEFAULT_NATS_PORT
    if scheme == "nats" and not insecure:
        raise section.error(
            key,
            f"'{url}' is plaintext: securechat will not send chat events to NATS unencrypted unless asked.",
            f"Use tls://{host}:{port} with broker.tls (see deploy/nats/README.md), or set broker.insecure: true for a loopback-only test.",
        )
    if scheme == "tls" and insecure:
        raise section.error(key, f"'{url}' is a TLS URL but broker.insecure is true.", "Remove broker.insecure to use TLS, or use a nats:// URL.")
    if insecure and not Address(host, port).is_loopback:
        raise section.error(
            key,
            f"insecure: true would send events in plaintext to non-loopback host {host}.",
            f"Use tls://{host}:{port} with broker.tls, or a NATS server on 127.0.0.1.",
        )
    bracketed = f"[{host}]" if ":" in host else host
    return f"{scheme}://{bracketed}:{port}"


def _tls(section: _Section, insecure: bool) -> BrokerTls | None:
    if insecure:
        if section.has("tls"):
            raise section.error("insecure", "is true but a tls section is configured too.", "Remove one: the broker link is either TLS or, when asked by name, plaintext.")
        return None
    if not section.has("tls"):
        raise section.error(
            "tls",
            "missing: the link to NATS is mutual TLS.",
            "Add tls: {ca, cert, key} with our CA and this replica's client certificate ('securechat certs client NAME').",
        )
    tls = section.section("tls", BROKER_TLS_KEYS)
    hints = {
        "ca": "the CA that signed the NATS server certificate (e.g. certs/ca.pem)",
        "cert": "this replica's client certificate (securechat certs client NAME)",
        "key": "this replica's client key",
    }
    for key, what in hints.items():
        if not tls.has(key):
            raise tls.error(key, "missing.", f"Set broker.tls.{key} to {what}.")
    return BrokerTls(ca=tls.path("ca"), cert=tls.path("cert"), key=tls.path("key"), server_name=tls.string("server_name"))  # type: ignore[arg-type]


def _stream(section: _Section) -> str:
    stream = section.string("stream", DEFAULT_STREAM)
    assert stream is not None
    if not STREAM_PATTERN.fullmatch(stream):
        raise section.error("stream", f"'{stream}' is not a usable stream name.", "Use 1 to 32 of A-Z a-z 0-9 _ -, starting with a letter or digit.")
    return stream


def _retention(section: _Section) -> Retention:
    defaults = Retention()
    limits = {
        "max_bytes": (defaults.max_bytes, 1024, 1 << 50),
        "max_msgs": (defaults.max_msgs, 1, 1 << 50),
        "max_msgs_per_room": (defaults.max_msgs_per_room, 1, 1 << 40),
    }
    values: dict[str, Any] = {}
    for key, (default, low, high) in limits.items():
        # `none` (YAML null) keeps the default; 0 or -1 would be ambiguous, so
        # "no limit" is spelled `unlimited`.
        values[key] = None if section.data.get(key) == "unlimited" else section.integer(key, default, minimum=low, maximum=high)
    max_age = None if section.data.get("max_age") == "unlimited" else _duration(section, "max_age", defaults.max_age_seconds, minimum=1.0)
    if max_age is None and values["max_bytes"] is None and values["max_msgs"] is None and values["max_msgs_per_room"] is None:
        raise section.error(None, "every limit is unlimited: the stream would grow until the disk is full.", "Keep at least one of max_age, max_bytes, max_msgs, max_msgs_per_room.")
    return Retention(max_age_seconds=max_age, **values)


def _duration(section: _Section, key: str, default: float | None, *, minimum: float, maximum: float = math.inf) -> float | None:
    """A number of seconds, or a string like '90s', '15m', '24h', '7d', '250ms'."""
    value = section.data.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        raise section.error(key, f"expected a duration, got a boolean ({value}).", "Write seconds (30) or a duration such as 30s, 15m, 24h, 7d.")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise section.error(key, f"expected a duration, got {_kind(value)} ({value!r}).", "Write seconds (30) or a duration such as 30s, 15m, 24h, 7d.")
    if not minimum <= seconds <= maximum:
        top = "" if math.isinf(maximum) else f" to {maximum:g}"
        raise section.error(key, f"{value} is out of range; use {minimum:g}{top} seconds.")
    return seconds
