"""`securechat serve`: run the chat server until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from securechat.cli.output import reports_errors

log = logging.getLogger("securechat.serve")


@reports_errors
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="Server YAML file.", metavar="FILE")],
    listen: Annotated[
        str | None,
        typer.Option(
            help="Address to listen on, overriding the config (port 0 picks a free one).",
            metavar="HOST:PORT",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the mTLS chat server. Every file is checked before the port opens.

    Example: securechat serve --config server.yaml --listen 127.0.0.1:0
    Exit codes: 0 after a clean shutdown; 1 for a config or bind error.
    """
    from securechat.config import load_server_config
    from securechat.logs import configure_logging
    from securechat.server.app import RunningServer, serve_until_signalled  # grpc and the server: only when serving
    from securechat.server.core_log import CoreLogBridge

    settings = load_server_config(config, listen=listen)
    # gRPC core writes to fd 2 in its own format and reports refused TLS
    # handshakes nowhere else: read them into our logs and metrics.
    bridge = CoreLogBridge()
    bridge.start()
    try:
        configure_logging(settings.log_level, settings.log_format, repeats_per_second=settings.log_repeats_per_second)

        def on_ready(running: RunningServer) -> None:
            if running.metrics is not None:
                bridge.on_handshake_failure = running.metrics.handshake_failed

        import asyncio  # here, not at module level: --help and certs do not load it

        code = asyncio.run(serve_until_signalled(settings, on_ready=on_ready))
    finally:
        bridge.stop()
    raise typer.Exit(code)
