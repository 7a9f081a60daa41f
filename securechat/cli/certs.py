"""`securechat certs ...` (placeholder until the PKI lands)."""

from __future__ import annotations

import typer

certs_app = typer.Typer(help="Issue and inspect certificates.", no_args_is_help=True)
