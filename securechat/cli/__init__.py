"""The `securechat` command: one Typer app per area, joined here.

Library code raises SecureChatError; this is the one place that turns it
into a single line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import sys

import typer

from securechat.cli.certs import certs_app
from securechat.cli.output import fail
from securechat.errors import SecureChatError

# show_locals=False: Typer's pretty tracebacks would otherwise print local
# variables, and here those can be private keys.
app = typer.Typer(
    name="securechat",
    help="Issue certificates, run an mTLS gRPC chat server, connect authenticated clients.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.add_typer(certs_app, name="certs")


def main() -> None:
    """Console-script entry point."""
    try:
        app(standalone_mode=True)
    except SecureChatError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        sys.exit(130)
