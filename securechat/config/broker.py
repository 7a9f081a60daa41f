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
bad one is a ConfigError naming the field. Every problem of the section is
reported, not just the first.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from securechat.config.address import Address
from securechat.config.yaml_reader import Problems, Section, config_source, kind_of, quoted, read_yaml, shown
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
    "seed_ordered_restart",
)
BROKER_TLS_KEYS = ("ca", "cert", "key", "server_name")
RETENTION_KEYS = ("max_age", "max_bytes", "max_msgs", "max_msgs_per_room")
DEFAULT_STREAM = "SECURECHAT"
DEFAULT_NATS_PORT = 4222
DEFAULT_DUPLICATE_WINDOW = 600.0
STREAM_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
"""A JetStream stream name securechat accepts (NATS allows more; these survive every tool)."""


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
    # The quarantined nats-py private field (securechat.broker.ordered_restart); false = public path only.
    seed_ordered_restart: bool = True

    def error(self, key: str | None, problem: str, fix: str = "") -> ConfigError:
        """A ConfigError naming this config file and `broker.KEY`."""
        return ConfigError(self.source.name, f"broker.{key}" if key else "broker", problem, fix)


def parse_broker(section: Section) -> BrokerConfig:
    """Check a `broker:` mapping read as `section` (prefix 'broker'); problems go to `section.problems`.

    The result is only meaningful once the caller has checked that no problem was recorded.
    """
    kind = section.choice("type", BROKER_TYPES, "memory")
    if section.raw("type") not in (None, kind):
        return BrokerConfig(source=section.source)  # an unknown type: nothing else can be judged
    if kind == "memory":
        for key in BROKER_KEYS:
            if key != "type" and key in section.data:
                section.problem(key, "only applies with type: nats.", "Remove it, or set broker.type: nats.")
        return BrokerConfig(source=section.source)
    insecure = section.boolean("insecure", False)
    servers = _servers(section, insecure)
    retention = _retention(section.section("retention", RETENTION_KEYS))
    default_window = DEFAULT_DUPLICATE_WINDOW
    if retention.max_age_seconds is not None:
        default_window = max(1.0, min(default_window, retention.max_age_seconds))
    duplicate_window = section.duration("duplicate_window", default_window, minimum=1.0)
    if retention.max_age_seconds is not None and duplicate_window > retention.max_age_seconds:
        # JetStream refuses a stream whose dedup window outlives its messages.
        section.problem(
            "duplicate_window",
            f"{duplicate_window:g}s is longer than retention.max_age ({retention.max_age_seconds:g}s).",
            "Make it at most retention.max_age.",
        )
    return BrokerConfig(
        source=section.source,
        type=kind,
        servers=servers,
        tls=_tls(section, insecure),
        insecure=insecure,
        stream=_stream(section),
        replicas=section.integer("replicas", 1, minimum=1, maximum=5),
        retention=retention,
        duplicate_window_seconds=duplicate_window,
        publish_timeout_seconds=section.duration("publish_timeout", 5.0, minimum=0.05, maximum=300.0),
        connect_timeout_seconds=section.duration("connect_timeout", 5.0, minimum=0.05, maximum=300.0),
        reconnect_wait_seconds=section.duration("reconnect_wait", 1.0, minimum=0.01, maximum=300.0),
        seed_ordered_restart=section.boolean("seed_ordered_restart", True),
    )


def load_broker_config(path: str | os.PathLike[str]) -> BrokerConfig | None:
    """Read the `broker:` section of a YAML file (other top-level keys are left to their own loader)."""
    source = config_source(path)
    data = read_yaml(source)
    if not isinstance(data, dict):
        raise ConfigError(source.name, None, f"must be a mapping of keys to values, got {kind_of(data)}.")
    if data.get("broker") is None:
        return None
    problems = Problems(source)
    config = parse_broker(Section(problems, data["broker"], "broker", BROKER_KEYS))
    problems.raise_if_any()
    return config


def _servers(section: Section, insecure: bool) -> tuple[str, ...]:
    value = section.raw("servers")
    example = f"tls://nats.example.internal:{DEFAULT_NATS_PORT}"
    if value is None:
        section.missing("servers", "missing.", f"List the NATS server URLs, e.g. servers: [{example}].")
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        section.problem(
            "servers", f"expected a list of URLs, got {kind_of(value)}.", f"Write e.g. servers: [{example}]."
        )
        return ()
    if not value:
        section.problem("servers", "is empty.", f"List at least one NATS server URL, e.g. servers: [{example}].")
        return ()
    urls = []
    for index, url in enumerate(value):
        key = f"servers[{index}]"
        if not isinstance(url, str) or not url.strip():
            section.problem(key, f"expected a URL string, got {kind_of(url)} ({shown(url)}).", f"Write e.g. {example}.")
            continue
        checked = _server_url(section, key, url.strip(), insecure)
        if checked is not None:
            urls.append(checked)
    return tuple(urls)


def _server_url(section: Section, key: str, url: str, insecure: bool) -> str | None:
    parts = urlsplit(url if "://" in url else f"//{url}")
    scheme = parts.scheme
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        section.problem(key, f"{quoted(url)} has an invalid port.", "Write tls://HOST:PORT, e.g. tls://nats:4222.")
        return None
    if scheme not in ("tls", "nats") or not host or parts.path not in ("", "/") or parts.username or parts.password:
        section.problem(
            key,
            f"{quoted(url)} is not a NATS URL.",
            f"Write tls://HOST:PORT, e.g. tls://{host or 'nats'}:{DEFAULT_NATS_PORT}.",
        )
        return None
    port = port or DEFAULT_NATS_PORT
    if scheme == "nats" and not insecure:
        section.problem(
            key,
            f"{quoted(url)} is plaintext: securechat will not send chat events to NATS unencrypted unless asked.",
            f"Use tls://{host}:{port} with broker.tls (see deploy/nats/README.md), or set broker.insecure: true for a loopback-only test.",
        )
        return None
    if scheme == "tls" and insecure:
        section.problem(
            key,
            f"{quoted(url)} is a TLS URL but broker.insecure is true.",
            "Remove broker.insecure to use TLS, or use a nats:// URL.",
        )
        return None
    if insecure and not Address(host, port).is_loopback:
        section.problem(
            key,
            f"insecure: true would send events in plaintext to non-loopback host {host}.",
            f"Use tls://{host}:{port} with broker.tls, or a NATS server on 127.0.0.1.",
        )
        return None
    bracketed = f"[{host}]" if ":" in host else host
    return f"{scheme}://{bracketed}:{port}"


def _tls(section: Section, insecure: bool) -> BrokerTls | None:
    if insecure:
        if section.has("tls"):
            section.problem(
                "insecure",
                "is true but a tls section is configured too.",
                "Remove one: the broker link is either TLS or, when asked by name, plaintext.",
            )
        return None
    if not section.has("tls"):
        section.missing(
            "tls",
            "missing: the link to NATS is mutual TLS.",
            "Add tls: {ca, cert, key} with our CA and this replica's client certificate ('securechat certs client NAME').",
        )
        return None
    tls = section.section("tls", BROKER_TLS_KEYS)
    hints = {
        "ca": "the CA that signed the NATS server certificate (e.g. certs/ca.pem)",
        "cert": "this replica's client certificate (securechat certs client NAME)",
        "key": "this replica's client key",
    }
    for key, what in hints.items():
        if not tls.has(key):
            tls.missing(key, "missing.", f"Set broker.tls.{key} to {what}.")
    ca, cert, key_path = tls.path("ca"), tls.path("cert"), tls.path("key")
    server_name = tls.string("server_name")
    if ca is None or cert is None or key_path is None:
        return None
    return BrokerTls(ca=ca, cert=cert, key=key_path, server_name=server_name)


def _stream(section: Section) -> str:
    stream = section.string("stream", DEFAULT_STREAM)
    if not STREAM_PATTERN.fullmatch(stream):
        section.problem(
            "stream",
            f"{quoted(stream)} is not a usable stream name.",
            "Use 1 to 32 of A-Z a-z 0-9 _ -, starting with a letter or digit.",
        )
        return DEFAULT_STREAM
    return stream


def _retention(section: Section) -> Retention:
    defaults = Retention()
    limits: dict[str, tuple[int | None, int, int]] = {
        "max_bytes": (defaults.max_bytes, 1024, 1 << 50),
        "max_msgs": (defaults.max_msgs, 1, 1 << 50),
        "max_msgs_per_room": (defaults.max_msgs_per_room, 1, 1 << 40),
    }
    values: dict[str, int | None] = {}
    for key, (default, low, high) in limits.items():
        # `none` (YAML null) keeps the default; 0 or -1 would be ambiguous, so
        # "no limit" is spelled `unlimited`.
        if section.raw(key) == "unlimited":
            values[key] = None
        elif default is None:
            values[key] = section.integer(key, None, minimum=low, maximum=high)
        else:
            values[key] = section.integer(key, default, minimum=low, maximum=high)
    max_age = (
        None
        if section.raw("max_age") == "unlimited"
        else section.duration("max_age", defaults.max_age_seconds, minimum=1.0)
    )
    if max_age is None and all(value is None for value in values.values()):
        section.problem(
            None,
            "every limit is unlimited: the stream would grow until the disk is full.",
            "Keep at least one of max_age, max_bytes, max_msgs, max_msgs_per_room.",
        )
    return Retention(
        max_age_seconds=max_age,
        max_bytes=values["max_bytes"],
        max_msgs=values["max_msgs"],
        max_msgs_per_room=values["max_msgs_per_room"],
    )
