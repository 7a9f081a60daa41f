"""`securechat quickstart`: everything needed for a first mTLS chat, in one directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from securechat.cli.output import reports_errors, stdout, warn
from securechat.quickstart import make_quickstart


@reports_errors
def quickstart(
    directory: Annotated[Path, typer.Option("--dir", help="Directory to create the certs and configs in.")] = Path("."),
    force: Annotated[bool, typer.Option(help="Replace existing keys, certificates and configs.")] = False,
    ca_service: Annotated[
        bool,
        typer.Option(
            "--ca-service",
            help="A root + intermediate and DIR/ca.yaml for the online CA; certificates are short-lived and renew themselves.",
        ),
    ] = False,
    ca_lifetime: Annotated[
        str, typer.Option("--ca-lifetime", help="With --ca-service: how long certificates live, e.g. 24h (under 5m: demos only).")
    ] = "24h",
) -> None:
    """Make a CA, a server certificate, clients alice and bob, and their YAML configs.

    Example: securechat quickstart --dir demo && securechat serve --config demo/server.yaml
    Example: securechat quickstart --ca-service --dir demo && securechat ca serve --config demo/ca.yaml
    """
    if directory.is_symlink():
        warn(f"{directory} is a symbolic link to {os.readlink(directory)}; the certs and configs are written there.")
    if ca_service:
        _ca_quickstart(directory, force=force, lifetime=ca_lifetime)
        return
    made = make_quickstart(directory, force=force)
    stdout.print(f"Created a CA and certificates for server, alice and bob in {made.certs}/")
    stdout.print(f"Wrote {made.server_config}, " + ", ".join(str(p) for p in made.client_configs.values()))
    stdout.print("Next:")
    stdout.print(f"  securechat serve --config {made.server_config}")
    for path in made.client_configs.values():
        stdout.print(f"  securechat hello --config {path}")
        break
    stdout.print(f"  securechat chat --config {made.client_configs['alice']} --room general")


def _ca_quickstart(directory: Path, *, force: bool, lifetime: str) -> None:
    from securechat.ca.quickstart import make_ca_quickstart
    from securechat.config.ca import parse_duration
    from securechat.errors import PkiError

    try:
        duration = parse_duration(lifetime)
    except ValueError as exc:
        raise PkiError(f"--ca-lifetime: {exc}") from None
    made = make_ca_quickstart(directory, force=force, lifetime=duration)
    typer.echo(f"Created a root CA, an issuing intermediate and certificates for server, alice and bob in {made.certs}/")
    typer.echo(f"  {made.certs}/root-key.pem signs only new intermediates: move it offline (see README).")
    typer.echo(f"Wrote {made.ca_config}, {made.server_config}, " + ", ".join(str(p) for p in made.client_configs.values()))
    typer.echo("Next, each in its own terminal:")
    typer.echo(f"  securechat ca serve --config {made.ca_config}")
    typer.echo(f"  securechat serve --config {made.server_config}")
    typer.echo(f"  securechat chat --config {made.client_configs['alice']} --room general")
    typer.echo(f"A new client: securechat ca token carol --config {made.ca_config}, then 'securechat certs enroll carol ...'")
