"""`securechat quickstart`: everything needed for a first mTLS chat, in one directory."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated

import typer

from securechat.cli.output import reports_errors, warn

DEFAULT_PORT = 50051  # securechat.config.DEFAULT_PORT, without loading the config reader at every start


@reports_errors
def quickstart(
    directory: Annotated[
        Path, typer.Option("--dir", help="Directory to create the certs and configs in.", metavar="DIR")
    ] = Path("."),
    port: Annotated[
        int, typer.Option("--port", help="Port the server listens on and the clients connect to.", metavar="PORT")
    ] = DEFAULT_PORT,
    force: Annotated[bool, typer.Option(help="Replace existing keys, certificates and configs.")] = False,
    ca_service: Annotated[
        bool,
        typer.Option(
            "--ca-service",
            help="A root + intermediate and DIR/ca.yaml for the online CA; certificates are short-lived and renew themselves.",
        ),
    ] = False,
    ca_lifetime: Annotated[
        str,
        typer.Option(
            "--ca-lifetime",
            help="With --ca-service: how long certificates live, e.g. 24h (under 5m: demos only).",
            metavar="DURATION",
        ),
    ] = "24h",
) -> None:
    """Make a CA, a server certificate, clients alice and bob, and their YAML configs.

    The CA key is written without a passphrase, for a first try on one
    machine: for anything else, use 'securechat certs init' (encrypted).

    \b
    Examples:
      securechat quickstart --dir demo
      securechat quickstart --dir demo --port 50052
      securechat serve --config demo/server.yaml
      securechat quickstart --ca-service --dir demo
      securechat ca serve --config demo/ca.yaml
    """
    if directory.is_symlink():
        warn(f"{directory} is a symbolic link to {os.readlink(directory)}; the certs and configs are written there.")
    if ca_service:
        _ca_quickstart(directory, force=force, lifetime=ca_lifetime)
        return
    from securechat.quickstart import make_quickstart

    made = make_quickstart(directory, force=force, port=port)
    # Plain lines, never wrapped: the "Next:" commands must paste as they are.
    typer.echo(f"Created a CA and certificates for server, alice and bob in {made.certs}/")
    typer.echo(f"  (the CA key {made.certs / 'ca-key.pem'} has no passphrase: fine for a demo, not for real use)")
    typer.echo(f"Wrote {made.server_config}, " + ", ".join(str(p) for p in made.client_configs.values()))
    typer.echo(f"The server listens on 127.0.0.1:{port}; the clients connect to localhost:{port}.")
    typer.echo("Next:")
    typer.echo(f"  securechat serve --config {shlex.quote(str(made.server_config))}")
    typer.echo(f"  securechat hello --config {shlex.quote(str(made.client_configs['alice']))}")
    typer.echo(f"  securechat chat --config {shlex.quote(str(made.client_configs['alice']))} --room general")


def _ca_quickstart(directory: Path, *, force: bool, lifetime: str) -> None:
    from securechat.ca.quickstart import make_ca_quickstart
    from securechat.config.ca import parse_duration
    from securechat.errors import PkiError

    try:
        duration = parse_duration(lifetime)
    except ValueError as exc:
        raise PkiError(f"--ca-lifetime: {exc}") from None
    made = make_ca_quickstart(directory, force=force, lifetime=duration)
    typer.echo(
        f"Created a root CA, an issuing intermediate and certificates for server, alice and bob in {made.certs}/"
    )
    typer.echo(f"  {made.certs}/root-key.pem signs only new intermediates: move it offline (see README).")
    typer.echo(
        f"Wrote {made.ca_config}, {made.server_config}, " + ", ".join(str(p) for p in made.client_configs.values())
    )
    typer.echo("Next, each in its own terminal:")
    typer.echo(f"  securechat ca serve --config {made.ca_config}")
    typer.echo(f"  securechat serve --config {made.server_config}")
    typer.echo(f"  securechat chat --config {made.client_configs['alice']} --room general")
    typer.echo(
        f"A new client: securechat ca token carol --config {made.ca_config}, then 'securechat certs enroll carol ...'"
    )
