"""The broker: section (securechat.config.broker) and room subjects: every mistake names the file, the field and the fix."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import yaml

from securechat.broker import BrokerConfig, BrokerTls, Retention, load_broker_config
from securechat.broker.subjects import room_subject, room_token, subject_room, token_room, validate_room
from securechat.broker.tls import client_context
from securechat.errors import ConfigError

TLS = {"ca": "certs/ca.pem", "cert": "certs/replica-a.pem", "key": "certs/replica-a-key.pem"}


def load(tmp_path: Path, broker: Any, name: str = "server.yaml") -> BrokerConfig | None:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"listen": "127.0.0.1:0", "broker": broker}, sort_keys=False))
    return load_broker_config(path)


def nats(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"type": "nats", "servers": ["tls://nats.internal:4222"], "tls": dict(TLS)}
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def test_nats_config_with_defaults(tmp_path: Path) -> None:
    """A minimal nats broker loads with paths resolved against the config file and secure defaults."""
    config = load(tmp_path, nats())
    certs = tmp_path / "certs"
    assert config == BrokerConfig(
        source=tmp_path / "server.yaml",
        type="nats",
        servers=("tls://nats.internal:4222",),
        tls=BrokerTls(ca=certs / "ca.pem", cert=certs / "replica-a.pem", key=certs / "replica-a-key.pem"),
    )
    assert config.insecure is False and config.stream == "SECURECHAT" and config.replicas == 1
    assert config.retention == Retention(max_age_seconds=86400.0, max_bytes=1 << 30, max_msgs=None, max_msgs_per_room=10_000)


def test_nats_config_every_option(tmp_path: Path) -> None:
    """Durations take units, 'unlimited' lifts a limit, a port defaults to 4222, server_name is kept."""
    config = load(
        tmp_path,
        nats(
            servers=["tls://nats-0.nats:4222", "tls://nats-1.nats"],
            tls={**TLS, "server_name": "nats"},
            stream="chat-prod",
            replicas=3,
            retention={"max_age": "7d", "max_bytes": "unlimited", "max_msgs": 5_000_000, "max_msgs_per_room": 500},
            duplicate_window="2m",
            publish_timeout=2.5,
            connect_timeout="250ms",
            reconnect_wait="1s",
        ),
    )
    assert config is not None
    assert config.servers == ("tls://nats-0.nats:4222", "tls://nats-1.nats:4222")
    assert config.tls is not None and config.tls.server_name == "nats"
    assert (config.stream, config.replicas) == ("chat-prod", 3)
    assert config.retention == Retention(max_age_seconds=7 * 86400.0, max_bytes=None, max_msgs=5_000_000, max_msgs_per_room=500)
    assert (config.duplicate_window_seconds, config.publish_timeout_seconds) == (120.0, 2.5)
    assert (config.connect_timeout_seconds, config.reconnect_wait_seconds) == (0.25, 1.0)


def test_memory_broker_and_absent_section(tmp_path: Path) -> None:
    """type: memory needs nothing else; no broker section at all is None (the server's default, in memory)."""
    assert load(tmp_path, {"type": "memory"}) == BrokerConfig(source=tmp_path / "server.yaml")
    assert load(tmp_path, None) is None


def test_plaintext_url_is_allowed_only_when_asked_and_on_loopback(tmp_path: Path) -> None:
    """insecure: true with a loopback nats:// URL is the one plaintext setup; it carries no tls section."""
    config = load(tmp_path, nats(servers=["nats://127.0.0.1:4222"], tls=None, insecure=True))
    assert config is not None and config.insecure and config.tls is None


@pytest.mark.parametrize(
    ("broker", "field", "text"),
    [
        (
            nats(servers=["nats://nats.internal:4222"]),
            "broker.servers[0]",
            "server.yaml: broker.servers[0]: 'nats://nats.internal:4222' is plaintext: securechat will not send chat events to NATS unencrypted unless asked. "
            "Use tls://nats.internal:4222 with broker.tls (see deploy/nats/README.md), or set broker.insecure: true for a loopback-only test.",
        ),
        (
            nats(servers=["nats://10.0.0.5:4222"], tls=None, insecure=True),
            "broker.servers[0]",
            "server.yaml: broker.servers[0]: insecure: true would send events in plaintext to non-loopback host 10.0.0.5. "
            "Use tls://10.0.0.5:4222 with broker.tls, or a NATS server on 127.0.0.1.",
        ),
        (
            nats(servers=["nats://127.0.0.1:4222"], insecure=True),
            "broker.insecure",
            "server.yaml: broker.insecure: is true but a tls section is configured too. Remove one: the broker link is either TLS or, when asked by name, plaintext.",
        ),
        (
            nats(tls=None),
            "broker.tls",
            "server.yaml: broker.tls: missing: the link to NATS is mutual TLS. Add tls: {ca, cert, key} with our CA and this replica's client certificate ('securechat certs client NAME').",
        ),
        (
            nats(tls={"ca": "certs/ca.pem", "cert": "certs/a.pem"}),
            "broker.tls.key",
            "server.yaml: broker.tls.key: missing. Set broker.tls.key to this replica's client key.",
        ),
        (
            nats(tls={**TLS, "cert_file": "x"}),
            "broker.tls.cert_file",
            "server.yaml: broker.tls.cert_file: unknown key. Did you mean 'broker.tls.cert'?",
        ),
        (nats(server=["tls://x:4222"]), "broker.server", "server.yaml: broker.server: unknown key. Did you mean 'broker.servers'?"),
        (nats(servers=None), "broker.servers", "server.yaml: broker.servers: missing. List the NATS server URLs, e.g. servers: [tls://nats.example.internal:4222]."),
        (nats(servers={"a": 1}), "broker.servers", "server.yaml: broker.servers: expected a list of URLs, got a mapping. Write e.g. servers: [tls://nats.example.internal:4222]."),
        (nats(servers=[]), "broker.servers", "server.yaml: broker.servers: is empty. List at least one NATS server URL, e.g. servers: [tls://nats.example.internal:4222]."),
        (nats(servers=["http://nats:4222"]), "broker.servers[0]", "server.yaml: broker.servers[0]: 'http://nats:4222' is not a NATS URL. Write tls://HOST:PORT, e.g. tls://nats:4222."),
        (nats(servers=["tls://nats:99999"]), "broker.servers[0]", "server.yaml: broker.servers[0]: 'tls://nats:99999' has an invalid port. Write tls://HOST:PORT, e.g. tls://nats:4222."),
        (nats(type="kafka"), "broker.type", "server.yaml: broker.type: 'kafka' is not one of memory, nats."),
        ({"type": "memory", "servers": ["tls://x"]}, "broker.servers", "server.yaml: broker.servers: only applies with type: nats. Remove it, or set broker.type: nats."),
        (nats(stream="my.stream"), "broker.stream", "server.yaml: broker.stream: 'my.stream' is not a usable stream name. Use 1 to 32 of A-Z a-z 0-9 _ -, starting with a letter or digit."),
        (nats(replicas=True), "broker.replicas", "server.yaml: broker.replicas: expected a whole number, got a boolean (True)."),
        (nats(retention={"max_age": "forever"}), "broker.retention.max_age", "server.yaml: broker.retention.max_age: expected a duration, got a string ('forever'). Write seconds (30) or a duration such as 30s, 15m, 24h, 7d."),
        (
            nats(retention={"max_age": "unlimited", "max_bytes": "unlimited", "max_msgs_per_room": "unlimited"}),
            "broker.retention",
            "server.yaml: broker.retention: every limit is unlimited: the stream would grow until the disk is full. Keep at least one of max_age, max_bytes, max_msgs, max_msgs_per_room.",
        ),
        (
            nats(retention={"max_age": "1m"}, duplicate_window="2m"),
            "broker.duplicate_window",
            "server.yaml: broker.duplicate_window: 120s is longer than retention.max_age (60s). Make it at most retention.max_age.",
        ),
        (nats(publish_timeout=0), "broker.publish_timeout", "server.yaml: broker.publish_timeout: 0 is out of range; use 0.05 to 300 seconds."),
        ("nats", "broker", "server.yaml: broker: must be a mapping of keys to values, got a string."),
    ],
)
def test_broker_config_errors(tmp_path: Path, broker: Any, field: str, text: str) -> None:
    """Each mistake is one line naming the file, the field and the fix."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, broker)
    assert caught.value.field == field
    assert str(caught.value) == text
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("room", "token"),
    [
        ("general", "general"),
        ("ops.eu", "ops_2Eeu"),
        ("a_b", "a_5Fb"),
        ("a_2Eb", "a_5F2Eb"),  # an escape-looking name stays distinct from 'a.b'
        ("A-9.x_y", "A-9_2Ex_5Fy"),
        ("x" * 64, "x" * 64),
    ],
)
def test_room_subject_tokens_round_trip(room: str, token: str) -> None:
    """Each room is one subject token (no '.'), and decoding gives the room back."""
    assert room_token(room) == token
    assert "." not in token and "*" not in token and ">" not in token
    assert token_room(token) == room
    assert subject_room("SECURECHAT", room_subject("SECURECHAT", room)) == room


@pytest.mark.parametrize("room", ["", ".x", "_x", "-x", "a b", "a*", "a>", "x" * 65, "é"])
def test_room_names_outside_the_rule_are_refused(room: str) -> None:
    """A name outside [A-Za-z0-9][A-Za-z0-9._-]{0,63} never becomes a subject."""
    with pytest.raises(ValueError, match="is not allowed"):
        validate_room(room)


def test_tls_context_from_our_certificates(tmp_path: Path, pki_issued_store) -> None:
    """The context verifies the server against our CA only, checks its name, and offers TLS 1.2 or later."""
    config = load(tmp_path, nats(tls={"ca": "certs/ca.pem", "cert": "certs/alice.pem", "key": "certs/alice-key.pem"}))
    context = client_context(config)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert len(context.get_ca_certs()) == 1


@pytest.mark.parametrize(
    ("tls", "field", "problem"),
    [
        ({"ca": "certs/nope.pem", "cert": "certs/alice.pem", "key": "certs/alice-key.pem"}, "broker.tls.ca", "nope.pem not found."),
        ({"ca": "certs/ca.pem", "cert": "certs/nope.pem", "key": "certs/alice-key.pem"}, "broker.tls.cert", "nope.pem not found."),
        ({"ca": "certs/ca.pem", "cert": "certs/alice.pem", "key": "certs/bob-key.pem"}, "broker.tls.cert", "are not a matching PEM certificate and unencrypted key"),
        ({"ca": "certs/alice-key.pem", "cert": "certs/alice.pem", "key": "certs/alice-key.pem"}, "broker.tls.ca", "holds no usable PEM certificate"),
    ],
)
def test_tls_context_errors_name_the_field(tmp_path: Path, pki_issued_store, tls: dict[str, str], field: str, problem: str) -> None:
    """A missing or mismatched file is a one-line ConfigError naming broker.tls.*, never an ssl traceback."""
    config = load(tmp_path, nats(tls=tls))
    with pytest.raises(ConfigError, match=problem) as caught:
        client_context(config)
    assert caught.value.field == field
    assert "\n" not in str(caught.value)
