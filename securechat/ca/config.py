"""`ca.yaml`: the online CA's config, checked before any port opens.

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

TODO(merge): move this schema into the securechat/config/ package (branch
configpkg) once it lands; it uses config.py's section reader until then.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from securechat.config import LOG_FORMATS, LOG_LEVELS, Address, _flag_address, _read_yaml, _Section
from securechat.errors import ConfigError, SecureChatError

DEFAULT_CA_PORT = 50052
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

_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> dt.timedelta:
    """'30s', '15m', '24h', '7d', '2w' or combinations like '1h30m'; ValueError naming the fix otherwise."""
    cleaned = text.strip().lower()
    parts = _DURATION_PART.findall(cleaned)
    if not cleaned or "".join(f"{n}{u}" for n, u in parts) != cleaned:
        raise ValueError(f"'{text}' is not a duration. Write e.g. 30s, 15m, 24h, 7d or 1h30m.")
    total = dt.timedelta(0)
    for number, unit in parts:
        total += dt.timedelta(**{_UNITS[unit]: int(number)})
    return total


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


def _duration(
    section: _Section, key: str, default: dt.timedelta, *, low: dt.timedelta, high: dt.timedelta
) -> dt.timedelta:
    value = section.data.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise section.error(key, f"expected a duration such as 24h, got {value!r}.", "Quote it: '24h'.")
    try:
        duration = parse_duration(value)
    except ValueError as exc:
        raise section.error(key, str(exc)) from exc
    if not low <= duration <= high:
        raise section.error(
            key,
            f"{value} is out of range; use {format_duration(low)} to {format_duration(high)}.",
            "Short lifetimes under 5 minutes need testing_short_lifetimes: true."
            if duration < low and low == MIN_LIFETIME
            else "",
        )
    return duration


def load_ca_config(path: Path | str, *, listen: str | None = None) -> CaConfig:
    """Read and check ca.yaml; `listen` overrides its listen address (port 0 picks one)."""
    source = Path(os.path.abspath(path))
    root = _Section(source, _read_yaml(source), "", CA_KEYS)
    default = f"127.0.0.1:{DEFAULT_CA_PORT}"
    address = root.address("listen", default) if listen is None else _flag_address("--listen", listen)
    assert address is not None
    certs = root.path("certs")
    if certs is None:
        raise root.error(
            "certs", "missing.", "Set certs to the directory holding the issuing CA's ca.pem and ca-key.pem."
        )
    tls = root.section("tls", CA_TLS_KEYS)
    if not root.has("tls"):
        raise root.error(
            "tls",
            "missing: the CA service only serves over TLS.",
            "Add tls: {cert, key} with a server certificate from the same CA"
            " ('securechat certs server ca-service --dir certs').",
        )
    for key in CA_TLS_KEYS:
        if not tls.has(key):
            raise tls.error(key, "missing.", "Set tls.cert and tls.key to the CA service's server certificate and key.")
    database = root.path("database")
    if database is None:
        raise root.error("database", "missing.", "Set database to a file path, e.g. ca.db (created on first start).")
    testing = root.boolean("testing_short_lifetimes", False)
    floor = TESTING_MIN_LIFETIME if testing else MIN_LIFETIME
    life = root.section("lifetimes", KINDS)
    lifetimes = Lifetimes(
        **{kind: _duration(life, kind, DEFAULT_LIFETIME, low=floor, high=MAX_LIFETIME) for kind in KINDS}
    )
    tok = root.section("tokens", ("default_ttl", "max_ttl"))
    max_ttl = _duration(tok, "max_ttl", MAX_TOKEN_TTL, low=dt.timedelta(minutes=1), high=dt.timedelta(days=30))
    default_ttl = _duration(
        tok, "default_ttl", min(DEFAULT_TOKEN_TTL, max_ttl), low=dt.timedelta(seconds=1), high=max_ttl
    )
    log = root.section("log", ("level", "format"))
    mtls = root.address("mtls_listen", None)
    return CaConfig(
        source=source,
        listen=address,
        mtls_listen=mtls,
        certs=certs,
        tls_cert=tls.path("cert"),  # type: ignore[arg-type]
        tls_key=tls.path("key"),  # type: ignore[arg-type]
        database=database,
        lifetimes=lifetimes,
        tokens=TokenPolicy(default_ttl=default_ttl, max_ttl=max_ttl),
        crl_days=root.integer("crl_days", DEFAULT_CRL_DAYS, minimum=1, maximum=366) or DEFAULT_CRL_DAYS,
        ca_passphrase_file=root.path("ca_passphrase_file"),
        metrics_port=root.integer("metrics_port", None, minimum=0, maximum=65535),
        log_level=log.choice("level", LOG_LEVELS, "info"),
        log_format=log.choice("format", LOG_FORMATS, "text"),
        testing_short_lifetimes=testing,
    )


def config_error(config: CaConfig, field_name: str | None, problem: str, fix: str = "") -> ConfigError:
    return ConfigError(config.source.name, field_name, problem, fix)


# -- `tls.renew` in server and client configs ----------------------------------

RENEW_KEYS = ("ca", "ca_cert", "server_name", "at", "retry_max_seconds")
DEFAULT_RENEW_AT = 2 / 3
DEFAULT_RETRY_MAX_SECONDS = 60.0


@dataclass(frozen=True)
class RenewConfig:
    """`tls.renew`: renew tls.cert / tls.key from the CA service at about AT of their lifetime.

    tls:
      renew:
        ca: ca.internal:50052     # the CA service (its `listen` address)
        ca_cert: certs/root.pem   # what to trust for its TLS; default tls.ca (client) / tls.client_ca (server)
        # server_name: ca.internal  # when the address is not in its certificate
        # at: 0.67                # fraction of the lifetime, 0.5 to 0.9; jittered by +-0.05
        # retry_max_seconds: 60   # longest wait between attempts while the CA is down
    """

    ca: Address
    ca_cert: Path
    server_name: str | None = None
    at: float = DEFAULT_RENEW_AT
    retry_max_seconds: float = DEFAULT_RETRY_MAX_SECONDS


def parse_renew(tls: _Section, *, default_ca_cert: Path | None, ca_cert_field: str) -> RenewConfig | None:
    """The `renew` subsection of a `tls` section, or None when absent."""
    if not tls.has("renew"):
        return None
    section = tls.section("renew", RENEW_KEYS)
    address = section.address("ca", None)
    if address is None:
        raise section.error(
            "ca", "missing.", f"Set tls.renew.ca to the CA service's HOST:PORT, e.g. localhost:{DEFAULT_CA_PORT}."
        )
    ca_cert = section.path("ca_cert") or default_ca_cert
    if ca_cert is None:
        raise section.error(
            "ca_cert",
            f"missing, and {ca_cert_field} is not set to fall back on.",
            "Set tls.renew.ca_cert to the CA's root.pem.",
        )
    return RenewConfig(
        ca=address,
        ca_cert=ca_cert,
        server_name=section.string("server_name"),
        at=section.number("at", DEFAULT_RENEW_AT, minimum=0.5, maximum=0.9),
        retry_max_seconds=section.number("retry_max_seconds", DEFAULT_RETRY_MAX_SECONDS, minimum=0.1, maximum=3600.0),
    )


def parse_server_id(tls: _Section) -> str | None:
    """`tls.server_id`: a DNS name (checked in the handshake) or a SPIFFE ID `spiffe://TD/PATH`."""
    value = tls.string("server_id")
    if value is None:
        return None
    if value.lower().startswith("spiffe:"):
        from securechat.tls import names  # the identity syntax, by the SPIFFE ID standard

        try:
            spiffe = names.spiffe_id(value)
        except names.InvalidName as exc:
            raise tls.error("server_id", f"{exc}.", "Write it as spiffe://TRUST_DOMAIN/PATH.") from None
        if "/" not in spiffe.value.removeprefix("spiffe://"):
            raise tls.error(
                "server_id", f"{value} names a trust domain, not a workload.", "Write it as spiffe://TRUST_DOMAIN/PATH."
            )
        return spiffe.value
    from securechat.pki import parse_san  # a DNS name or an IP, as a SAN would be

    try:
        parse_san(value)
    except SecureChatError as exc:
        raise tls.error("server_id", str(exc)) from exc
    if tls.has("server_name"):
        raise tls.error(
            "server_id", "is set together with server_name.", "Keep one: server_id is checked as the server's name."
        )
    return value


def parse_address_text(flag: str, text: str) -> Address:
    """HOST:PORT given on the command line as FLAG; ConfigError naming the flag otherwise."""
    return _flag_address(flag, text)
