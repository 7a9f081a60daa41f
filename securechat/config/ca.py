"""The online CA's schemas: `ca.yaml` -> CaConfig, and `tls.renew` / `tls.server_id` in server and client configs.

    listen: 127.0.0.1:50052        # Enroll, Renew (proof of the current key), TrustBundle; TLS
    # mtls_listen: 127.0.0.1:50053 # optional: Renew authenticated by the client certificate (mTLS)
    certs: certs                   # the issuing CA: ca.pem, ca-key.pem; root.pem; crl.pem is written here
    tls:                           # the CA service's own server certificate, from the same CA
      cert: certs/ca-service.pem
      key: certs/ca-service-key.pem
    database: ca.db                # SQLite (WAL): issued, revoked, tokens
    lifetimes: {client: 24h, server: 24h, peer: 24h}
    tokens: {default_ttl: 15m, max_ttl: 7d}
    crl_days: 7                    # nextUpdate of the crl.pem `ca revoke` publishes
    # ca_passphrase_file: ca.pass  # when ca-key.pem is encrypted
    # metrics_port: 9465           # Prometheus /metrics, plain HTTP: bind privately
    # log: {level: info, format: text}

Lifetimes are durations (`30s`, `15m`, `24h`, `7d`, `1h30m`) between
MIN_LIFETIME and MAX_LIFETIME; `testing_short_lifetimes: true` lowers the
floor to TESTING_MIN_LIFETIME for tests and demos, and says so in the log.
A certificate never outlives the issuing CA (it is cut at the CA's expiry).
Read with the one YAML reader (`yaml_reader`): bounded, strict, and every
problem of the file is reported together.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from securechat.config.address import Address
from securechat.config.renew import DEFAULT_CA_PORT, RenewConfig, parse_renew, parse_server_id
from securechat.config.server import LOG_FORMATS, LOG_LEVELS
from securechat.config.yaml_reader import Problems, Section, config_source, flag_address, quoted, read_yaml, shown
from securechat.errors import ConfigError

__all__ = [
    "DEFAULT_CA_PORT",
    "CaConfig",
    "Lifetimes",
    "RenewConfig",
    "TokenPolicy",
    "format_duration",
    "load_ca_config",
    "parse_address_text",
    "parse_duration",
    "parse_renew",
    "parse_server_id",
]

DEFAULT_LIFETIME = dt.timedelta(hours=24)
MIN_LIFETIME = dt.timedelta(minutes=5)
MAX_LIFETIME = dt.timedelta(days=397)
TESTING_MIN_LIFETIME = dt.timedelta(seconds=10)
DEFAULT_TOKEN_TTL = dt.timedelta(minutes=15)
MAX_TOKEN_TTL = dt.timedelta(days=7)
DEFAULT_CRL_DAYS = 7
KINDS = ("client", "server", "peer")

CA_KEYS = (
    "listen",
    "mtls_listen",
    "certs",
    "tls",
    "database",
    "lifetimes",
    "tokens",
    "crl_days",
    "ca_passphrase_file",
    "metrics_port",
    "log",
    "testing_short_lifetimes",
)
CA_TLS_KEYS = ("cert", "key")

_DURATION_PART = re.compile(r"([0-9]+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_LONGEST = dt.timedelta(days=100 * 366)
"""No duration here is longer than a century; larger numbers are refused before timedelta overflows."""


def parse_duration(text: str) -> dt.timedelta:
    """'30s', '15m', '24h', '7d', '2w' or combinations like '1h30m'; ValueError naming the fix otherwise."""
    cleaned = text.strip().lower()
    parts = _DURATION_PART.findall(cleaned)
    if not cleaned or "".join(f"{n}{u}" for n, u in parts) != cleaned:
        raise ValueError(f"{quoted(text)} is not a duration. Write e.g. 30s, 15m, 24h, 7d or 1h30m.")
    # Whole seconds in Python ints first: 10**30 days must not overflow timedelta.
    seconds = sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if seconds > _LONGEST.total_seconds():
        raise ValueError(f"{quoted(text)} is longer than {_LONGEST.days} days.")
    return dt.timedelta(seconds=seconds)


def format_duration(value: dt.timedelta) -> str:
    """A duration the way ca.yaml writes one: '24h', '15m', '1h30m', '30s'."""
    seconds = int(value.total_seconds())
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out or "0s"


@dataclass(frozen=True)
class Lifetimes:
    """How long a certificate of each kind lives when the CA service issues it."""

    client: dt.timedelta = DEFAULT_LIFETIME
    server: dt.timedelta = DEFAULT_LIFETIME
    peer: dt.timedelta = DEFAULT_LIFETIME

    def of(self, kind: str) -> dt.timedelta:
        return {"client": self.client, "server": self.server, "peer": self.peer}[kind]


@dataclass(frozen=True)
class TokenPolicy:
    default_ttl: dt.timedelta = DEFAULT_TOKEN_TTL
    max_ttl: dt.timedelta = MAX_TOKEN_TTL


@dataclass(frozen=True)
class CaConfig:
    source: Path
    listen: Address
    certs: Path
    tls_cert: Path
    tls_key: Path
    database: Path
    mtls_listen: Address | None = None
    lifetimes: Lifetimes = field(default_factory=Lifetimes)
    tokens: TokenPolicy = field(default_factory=TokenPolicy)
    crl_days: int = DEFAULT_CRL_DAYS
    ca_passphrase_file: Path | None = None
    metrics_port: int | None = None
    log_level: str = "info"
    log_format: str = "text"
    testing_short_lifetimes: bool = False


def _lifetime(
    section: Section, key: str, default: dt.timedelta, *, low: dt.timedelta, high: dt.timedelta
) -> dt.timedelta:
    """A duration string such as 24h between LOW and HIGH; DEFAULT (and a problem recorded) otherwise."""
    value = section.raw(key)
    if value is None:
        return default
    if not isinstance(value, str):
        section.problem(key, f"expected a duration such as 24h, got {shown(value)}.", "Quote it: '24h'.")
        return default
    try:
        duration = parse_duration(value)
    except ValueError as exc:
        section.problem(key, str(exc))
        return default
    if not low <= duration <= high:
        section.problem(
            key,
            f"{value} is out of range; use {format_duration(low)} to {format_duration(high)}.",
            "Short lifetimes under 5 minutes need testing_short_lifetimes: true."
            if duration < low and low == MIN_LIFETIME
            else "",
        )
        return default
    return duration


def load_ca_config(path: str | os.PathLike[str], *, listen: str | None = None) -> CaConfig:
    """Read and check ca.yaml; `listen` overrides its listen address (port 0 picks one).

    Raises ConfigError carrying every problem found in the file.
    """
    source = config_source(path)
    problems = Problems(source)
    root = Section(problems, read_yaml(source), "", CA_KEYS)
    default = Address("127.0.0.1", DEFAULT_CA_PORT)
    address = (
        root.address("listen", str(default)) if listen is None else flag_address(problems, "--listen", listen)
    ) or default
    certs = root.path("certs")
    if certs is None and not root.has("certs"):
        root.missing("certs", "missing.", "Set certs to the directory holding the issuing CA's ca.pem and ca-key.pem.")
    tls = root.section("tls", CA_TLS_KEYS)
    if not root.has("tls"):
        root.missing(
            "tls",
            "missing: the CA service only serves over TLS.",
            "Add tls: {cert, key} with a server certificate from the same CA"
            " ('securechat certs server ca-service --dir certs').",
        )
    else:
        for key in CA_TLS_KEYS:
            if not tls.has(key):
                tls.missing(key, "missing.", "Set tls.cert and tls.key to the CA service's server certificate and key.")
    tls_cert, tls_key = tls.path("cert"), tls.path("key")
    database = root.path("database")
    if database is None and not root.has("database"):
        root.missing("database", "missing.", "Set database to a file path, e.g. ca.db (created on first start).")
    testing = root.boolean("testing_short_lifetimes", False)
    floor = TESTING_MIN_LIFETIME if testing else MIN_LIFETIME
    life = root.section("lifetimes", KINDS)
    lifetimes = Lifetimes(
        **{kind: _lifetime(life, kind, DEFAULT_LIFETIME, low=floor, high=MAX_LIFETIME) for kind in KINDS}
    )
    tok = root.section("tokens", ("default_ttl", "max_ttl"))
    max_ttl = _lifetime(tok, "max_ttl", MAX_TOKEN_TTL, low=dt.timedelta(minutes=1), high=dt.timedelta(days=30))
    default_ttl = _lifetime(
        tok, "default_ttl", min(DEFAULT_TOKEN_TTL, max_ttl), low=dt.timedelta(seconds=1), high=max_ttl
    )
    log = root.section("log", ("level", "format"))
    config = CaConfig(
        source=source,
        listen=address,
        mtls_listen=root.address("mtls_listen", None),
        certs=certs or Path(),
        tls_cert=tls_cert or Path(),
        tls_key=tls_key or Path(),
        database=database or Path(),
        lifetimes=lifetimes,
        tokens=TokenPolicy(default_ttl=default_ttl, max_ttl=max_ttl),
        crl_days=root.integer("crl_days", DEFAULT_CRL_DAYS, minimum=1, maximum=366),
        ca_passphrase_file=root.path("ca_passphrase_file"),
        metrics_port=root.integer("metrics_port", None, minimum=0, maximum=65535),
        log_level=log.choice("level", LOG_LEVELS, "info"),
        log_format=log.choice("format", LOG_FORMATS, "text"),
        testing_short_lifetimes=testing,
    )
    problems.raise_if_any()
    return config


def config_error(config: CaConfig, field_name: str | None, problem: str, fix: str = "") -> ConfigError:
    return ConfigError(config.source.name, field_name, problem, fix)


def parse_address_text(flag: str, text: str) -> Address:
    """HOST:PORT given on the command line as FLAG; ConfigError naming the flag otherwise."""
    problems = Problems(Path(flag))
    address = flag_address(problems, flag, text)
    problems.raise_if_any()
    assert address is not None
    return address
