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
) -> None:
    """Make a CA, a server certificate, clients alice and bob, and their YAML configs.

    Example: securechat quickstart --dir demo && securechat serve --config demo/server.yaml
    """
    if directory.is_symlink():
        warn(f"{directory} is a symbolic link to {os.readlink(directory)}; the certs and configs are written there.")
    made = make_quickstart(directory, force=force)
    stdout.print(f"Created a CA and certificates for server, alice and bob in {made.certs}/")
    stdout.print(f"Wrote {made.server_config}, " + ", ".join(str(p) for p in made.client_configs.values()))
    stdout.print("Next:")
    stdout.print(f"  securechat serve --config {made.server_config}")
    for path in made.client_configs.values():
        stdout.print(f"  securechat hello --config {path}")
        break
    stdout.print(f"  securechat chat --config {made.client_configs['alice']} --room general")
