"""`securechat doctor`: one line per check, OK or FAIL with the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from securechat.cli.output import reports_errors, stdout
from securechat.doctor import run_checks


@reports_errors
def doctor(config: Annotated[Path, typer.Option("--config", "-c", help="A server or client YAML file.")]) -> None:
    """Check a config end to end and name the exact problem and its fix.

    Client configs are checked against the running server too (reachable, server
    name, certificate accepted, ALPN h2, WhoAmI). Exit codes: 0 all OK; 1 any FAIL.

    Example: securechat doctor --config alice.yaml
    """
    findings = run_checks(config)
    for finding in findings:
        status = "[bold yellow]WARN[/]" if finding.warning else "[green]OK  [/]" if finding.ok else "[bold red]FAIL[/]"
        stdout.print(f"{status} {finding.check}: ", end="", soft_wrap=True)
        line = finding.message if finding.ok and not finding.warning else f"{finding.message}. Fix: {finding.fix}"
        stdout.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
    if not all(f.ok for f in findings):
        raise typer.Exit(code=1)
