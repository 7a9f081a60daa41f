"""`securechat ca ...`: run the online CA, mint enrolment tokens, revoke.

Exit codes: 0 on success; 1 for an error (one line on stderr); 2 for a usage error.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from securechat.cli.output import reports_errors

ca_app = typer.Typer(
    help="The online CA: short-lived certificates, enrolment tokens, passive revocation.", no_args_is_help=True
)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The CA service's ca.yaml.")]


class KindChoice(str, Enum):
    client = "client"
    server = "server"
    peer = "peer"


class ReasonChoice(str, Enum):
    unspecified = "unspecified"
    key_compromise = "key-compromise"
    affiliation_changed = "affiliation-changed"
    superseded = "superseded"
    cessation_of_operation = "cessation-of-operation"
    privilege_withdrawn = "privilege-withdrawn"


def _say(text: str = "") -> None:
    typer.echo(text)


def _shown(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


@ca_app.command()
@reports_errors
def serve(
    config: ConfigOption,
    listen: Annotated[
        str | None, typer.Option(help="HOST:PORT to listen on, overriding ca.yaml (port 0 picks one).")
    ] = None,
) -> None:
    """Run the CA service (securechat.ca.v1.CertificateAuthority) until SIGTERM/SIGINT.

    The service renews its own TLS certificate (tls.cert in ca.yaml) in-process at about 2/3 of its lifetime and
    serves the new one to new handshakes at once; it also follows tls.cert / tls.key when someone else replaces
    them. crl.pem never goes back: the highest CRL number published is kept in the database, and a crl.pem
    rolled back or deleted is published anew above it (at start, or at the next renewal).

    Example: securechat ca serve --config ca.yaml --listen 127.0.0.1:50052
    """
    from securechat.config.ca import load_ca_config
    from securechat.logs import configure_logging

    settings = load_ca_config(config, listen=listen)
    configure_logging(settings.log_level, settings.log_format)
    _lean_log_records()
    asyncio.run(_serve(settings))


def _lean_log_records() -> None:
    """Log records without what no securechat format prints: the caller's frame, thread and process.

    The CA writes an audit line per certificate; these lookups were a third
    of that line's cost (the Logging HOWTO's "Optimization" section).
    """
    import logging

    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None


async def _serve(settings: object) -> None:
    import logging

    from securechat.ca.service import start_ca_server
    from securechat.config.ca import CaConfig, format_duration

    assert isinstance(settings, CaConfig)
    log = logging.getLogger("securechat.ca")
    running = await start_ca_server(settings)
    lifetimes = settings.lifetimes
    log.info(
        "securechat CA listening on %s:%d (TLS: Enroll, Renew, TrustBundle)%s; issuing CA %s; lifetimes client %s,"
        " server %s; database %s",
        settings.listen.host,
        running.port,
        f", mTLS renewals on {settings.mtls_listen.host}:{running.mtls_port}" if settings.mtls_listen else "",
        running.authority.issuer,
        format_duration(lifetimes.client),
        format_duration(lifetimes.server),
        settings.database,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("signal received: stopping the CA service")
    await running.stop()


@ca_app.command()
@reports_errors
def token(
    name: Annotated[str, typer.Argument(help="The identity the certificate will carry (its CN and file name).")],
    config: ConfigOption,
    kind: Annotated[KindChoice, typer.Option("--kind", help="What the certificate is for.")] = KindChoice.client,
    san: Annotated[
        list[str] | None,
        typer.Option(
            "--san",
            help="A DNS name, IP or spiffe:// ID the certificate may carry; repeat for more."
            " Clients always get DNS:NAME; servers default to localhost, 127.0.0.1, ::1.",
            show_default=False,
        ),
    ] = None,
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="How long the token works, e.g. 15m (default: tokens.default_ttl).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the token and its grant as JSON.")] = False,
) -> None:
    """Print a single-use enrolment token for NAME; the CA stores only its hash.

    Example: securechat ca token alice --config ca.yaml --ttl 15m
    """
    from securechat.ca.authority import OnlineCa
    from securechat.config.ca import load_ca_config, parse_duration
    from securechat.errors import PkiError

    settings = load_ca_config(config)
    try:
        lifetime = parse_duration(ttl) if ttl is not None else None
    except ValueError as exc:
        raise PkiError(f"--ttl: {exc}") from None
    authority = OnlineCa(settings)
    try:
        secret, grant = authority.mint_token(name, kind=kind.value, sans=tuple(san or ()), ttl=lifetime)
    finally:
        authority.close()
    address = f"{settings.listen.host}:{settings.listen.port}" if settings.listen.port else "HOST:PORT"
    anchor = _shown(authority.store.trust_anchor_path)
    if as_json:
        _say(
            json.dumps(
                {
                    "token": secret,
                    "name": grant.name,
                    "kind": grant.kind,
                    "sans": list(grant.san_texts),
                    "expires_at": grant.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "ca": address,
                    "ca_cert": anchor,
                },
                indent=2,
            )
        )
        return
    _say(
        f"Token for {grant.kind} {grant.name!r} ({', '.join(grant.san_texts)}), single use, expires {grant.expires_at:%Y-%m-%d %H:%M:%S} UTC:"
    )
    _say(secret)
    _say("Enroll with:")
    _say(f"  securechat certs enroll {grant.name} --ca {address} --ca-cert {anchor} --token {secret} --dir DIR")


@ca_app.command()
@reports_errors
def revoke(
    name: Annotated[str, typer.Argument(help="The identity whose certificates to revoke.")],
    config: ConfigOption,
    serial: Annotated[str | None, typer.Option("--serial", help="Revoke only this serial.")] = None,
    reason: Annotated[
        ReasonChoice, typer.Option("--reason", help="Why; written as the CRL entry's reason code.")
    ] = ReasonChoice.unspecified,
) -> None:
    """Revoke NAME in the CA's database (renewal refused at once) and publish crl.pem (servers enforce it live).

    Example: securechat ca revoke bob --config ca.yaml --reason key-compromise
    """
    from securechat import pki
    from securechat.ca.authority import OnlineCa
    from securechat.config.ca import load_ca_config

    authority = OnlineCa(load_ca_config(config))
    try:
        revoked = authority.revoke(name, serial=serial, reason=reason.value)
    finally:
        authority.close()
    for record in revoked:
        _say(f"Revoked {record.kind} certificate {record.name!r} serial {record.serial} (reason: {reason.value}).")
    crl_path = authority.store.crl_path
    crl = pki.parse_crl(crl_path.read_bytes(), where=str(crl_path))
    _say(
        f"Wrote {_shown(crl_path)} (CRL number {pki.crl_number(crl)}, {len(crl)} revoked,"
        f" next update {crl.next_update_utc:%Y-%m-%d %H:%M} UTC). Renewals of these certificates are refused now."
    )
