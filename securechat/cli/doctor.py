"""`securechat doctor`: one line per check, OK or FAIL with the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from securechat.cli.inert import inert
from securechat.cli.output import reports_errors


@reports_errors
def doctor(
    config: Annotated[Path, typer.Option("--config", "-c", help="A server or client YAML file.", metavar="FILE")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as a JSON list.")] = False,
) -> None:
    """Check a config end to end and name the exact problem and its fix.

    Client configs are checked against the running server too (reachable, server
    name, certificate accepted, ALPN h2, and every method a client calls:
    WhoAmI, SayHello, Chat). Exit codes: 0 all OK; 1 any FAIL.

    JSON (stable): [{"ok", "warning", "check", "message", "fix"}], in the order checked.

    Example: securechat doctor --config alice.yaml
    """
    from securechat.cli.output import stdout
    from securechat.doctor import run_checks  # ssl, sockets, cryptography: only when it runs

    findings = run_checks(config)
    if as_json:
        rows = [
            {"ok": f.ok, "warning": f.warning, "check": f.check, "message": f.message, "fix": f.fix} for f in findings
        ]
        typer.echo(json.dumps(rows, indent=2))
    else:
        from rich.text import Text

        for finding in findings:
            if finding.warning:
                status = Text("WARN", style="bold yellow")
            else:
                status = Text("OK  ", style="green") if finding.ok else Text("FAIL", style="bold red")
            plain = finding.ok and not finding.warning
            line = finding.message if plain or not finding.fix else f"{finding.message.rstrip('.')}. Fix: {finding.fix}"
            # Text, never markup: messages carry certificate fields and the server's words, made inert.
            stdout.print(Text.assemble(status, " ", inert(f"{finding.check}: {line}")), soft_wrap=True, emoji=False)
    if not all(f.ok for f in findings):
        raise typer.Exit(code=1)
