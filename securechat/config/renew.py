"""`tls.renew` and `tls.server_id` in server and client configs (the online CA's side of them).

Parsed with the one YAML reader's `Section`: problems are recorded, not
raised, so they are reported with the rest of the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from securechat.config.address import Address
from securechat.config.yaml_reader import Section
from securechat.errors import SecureChatError

DEFAULT_CA_PORT = 50052
RENEW_KEYS = ("ca", "ca_cert", "server_name", "at", "retry_max_seconds", "trust_bundle")
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
        # trust_bundle: true      # keep tls.ca / tls.client_ca in step with the CA's TrustBundle
    """

    ca: Address
    ca_cert: Path
    server_name: str | None = None
    at: float = DEFAULT_RENEW_AT
    retry_max_seconds: float = DEFAULT_RETRY_MAX_SECONDS
    trust_file: Path | None = None
    """The config's own trust anchors (tls.ca for a client, tls.client_ca for a server): what
    `trust_bundle` keeps up to date (during a root rollover the CA adds the next root)."""
    trust_bundle: bool = True


def parse_renew(tls: Section, *, default_ca_cert: Path | None, ca_cert_field: str) -> RenewConfig | None:
    """The `renew` subsection of a `tls` section, or None when absent (or wrong: the problem is recorded)."""
    if not tls.has("renew"):
        return None
    section = tls.section("renew", RENEW_KEYS)
    address = section.address("ca", None)
    if address is None and not section.has("ca"):
        section.missing(
            "ca", "missing.", f"Set tls.renew.ca to the CA service's HOST:PORT, e.g. localhost:{DEFAULT_CA_PORT}."
        )
    ca_cert = section.path("ca_cert") or default_ca_cert
    if ca_cert is None and not section.has("ca_cert"):
        section.missing(
            "ca_cert",
            f"missing, and {ca_cert_field} is not set to fall back on.",
            "Set tls.renew.ca_cert to the CA's root.pem.",
        )
    server_name = section.string("server_name")
    at = section.number("at", DEFAULT_RENEW_AT, minimum=0.5, maximum=0.9)
    retry = section.number("retry_max_seconds", DEFAULT_RETRY_MAX_SECONDS, minimum=0.1, maximum=3600.0)
    trust_bundle = section.boolean("trust_bundle", True)
    if address is None or ca_cert is None:
        return None
    return RenewConfig(
        ca=address,
        ca_cert=ca_cert,
        server_name=server_name,
        at=at,
        retry_max_seconds=retry,
        trust_file=default_ca_cert,
        trust_bundle=trust_bundle,
    )


def parse_server_id(tls: Section) -> str | None:
    """`tls.server_id`: a DNS name (checked in the handshake) or a SPIFFE ID `spiffe://TD/PATH`."""
    value = tls.string("server_id")
    if value is None:
        return None
    if value.lower().startswith("spiffe:"):
        from securechat.tls import names  # the identity syntax, by the SPIFFE ID standard

        try:
            spiffe = names.spiffe_id(value)
        except names.InvalidName as exc:
            tls.problem("server_id", f"{exc}.", "Write it as spiffe://TRUST_DOMAIN/PATH.")
            return None
        if "/" not in spiffe.value.removeprefix("spiffe://"):
            tls.problem(
                "server_id",
                f"{names.escape(value)} names a trust domain, not a workload.",
                "Write it as spiffe://TRUST_DOMAIN/PATH.",
            )
            return None
        return spiffe.value
    from securechat.pki import parse_san  # a DNS name or an IP, as a SAN would be

    try:
        parse_san(value)
    except SecureChatError as exc:
        tls.problem("server_id", str(exc))
        return None
    if tls.has("server_name"):
        tls.problem(
            "server_id", "is set together with server_name.", "Keep one: server_id is checked as the server's name."
        )
        return None
    return value
