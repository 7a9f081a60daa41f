"""`securechat serve`: run the chat server until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

from securechat.cli.output import reports_errors
from securechat.config import load_server_config
from securechat.logs import configure_logging

log = logging.getLogger("securechat.serve")


@reports_errors
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="Server YAML file.")],
    listen: Annotated[str | None, typer.Option(help="HOST:PORT to listen on, overriding the config (port 0 picks a free one).")] = None,
) -> None:
    """Run the mTLS chat server. Every file is checked before the port opens.

    Example: securechat serve --config server.yaml --listen 127.0.0.1:0
    Exit codes: 0 after a clean shutdown; 1 for a config or bind error.
    """
    from securechat.server.app import serve_until_signalled  # grpc and the server: only when serving

    settings = load_server_config(config, listen=listen)
    configure_logging(settings.log_level, settings.log_format)
    raise typer.Exit(asyncio.run(serve_until_signalled(settings)))
