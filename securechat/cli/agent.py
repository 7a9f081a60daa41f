"""`securechat agent`: keep a certificate renewed for a program that is not securechat (nginx, a Go service)."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from securechat.cli.output import reports_errors
from securechat.errors import ConfigError

log = logging.getLogger("securechat.agent")


@reports_errors
def agent(
    config: Annotated[
        Path,
        typer.Option(
            "--config", "-c", help="A securechat client or server config with tls.cert, tls.key and tls.renew."
        ),
    ],
    exec_command: Annotated[
        str | None,
        typer.Option("--exec", help="Run this command after each renewal (no shell; e.g. 'nginx -s reload')."),
    ] = None,
    send_signal: Annotated[
        str | None,
        typer.Option("--signal", help="Send this signal (e.g. HUP) to the process in --pid-file after each renewal."),
    ] = None,
    pid_file: Annotated[Path | None, typer.Option("--pid-file", help="The file holding the PID to signal.")] = None,
) -> None:
    """Renew tls.cert/tls.key from the CA in tls.renew at 2/3 of their lifetime, until SIGTERM.

    Like 'step ca renew --daemon': the new files are written atomically (key 0600); then
    --exec runs, or --signal goes to the PID in --pid-file, so the program loads them.
    The trust file (tls.ca, or tls.client_ca in a server config) follows the CA's trust
    bundle, fetched only over the connection verified with it (tls.renew.trust_bundle:
    false turns that off).

    Example: securechat agent --config nginx-tls.yaml --signal HUP --pid-file /run/nginx.pid
    """
    from securechat.ca.renewal import Renewal, Renewer
    from securechat.config import load_client_config, load_server_config
    from securechat.logs import configure_logging

    if exec_command is not None and send_signal is not None:
        raise ConfigError("--exec", None, "cannot be combined with --signal.", "Use one of them.")
    if (send_signal is None) != (pid_file is None):
        raise ConfigError(
            "--signal", None, "and --pid-file go together.", "Give both, e.g. --signal HUP --pid-file /run/app.pid."
        )
    signum = _signal_number(send_signal) if send_signal is not None else None
    argv = shlex.split(exec_command) if exec_command is not None else None
    text = config.read_text(encoding="utf-8") if config.is_file() else ""
    settings = load_client_config(config) if "target:" in text else load_server_config(config)
    tls = settings.tls
    if tls is None or tls.cert is None or tls.key is None or tls.renew is None:
        raise ConfigError(
            config.name,
            "tls.renew",
            "missing: the agent needs tls.cert, tls.key and tls.renew.",
            "Add tls.renew: {ca: HOST:PORT}.",
        )
    configure_logging("info", "text")

    def after(renewal: Renewal) -> None:
        if argv is not None:
            result = subprocess.run(argv, check=False)
            log.info("ran %s after renewal: exit code %d", shlex.join(argv), result.returncode)
        elif signum is not None and pid_file is not None:
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signum)
                log.info("sent %s to %d (from %s) after renewal", signal.Signals(signum).name, pid, pid_file)
            except (OSError, ValueError, IndexError) as exc:
                log.error("could not signal the process in %s: %s", pid_file, exc)

    renewer = Renewer(cert=tls.cert, key=tls.key, settings=tls.renew, on_renewed=after)

    async def run() -> None:
        task = asyncio.create_task(renewer.run())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for each in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(each, stop.set)
        log.info("securechat agent: renewing %s from the CA at %s", tls.cert, tls.renew.ca)  # type: ignore[union-attr]
        await stop.wait()
        task.cancel()

    asyncio.run(run())


def _signal_number(name: str) -> int:
    cleaned = name.strip().upper().removeprefix("SIG")
    try:
        return int(signal.Signals[f"SIG{cleaned}"])
    except KeyError:
        raise ConfigError("--signal", None, f"'{name}' is not a signal name.", "Use e.g. HUP, USR1 or TERM.") from None
