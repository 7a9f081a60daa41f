"""The `securechat` command: one Typer app per area, joined here.

Library code raises SecureChatError; this is the one place that turns it
into a single line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import os
import sys

# gRPC core logs handshake details to stderr. A client command explains
# failures itself in one line, so it silences core unless the user asked for
# its logs. The server needs core's handshake lines, which its default
# verbosity prints, whatever GRPC_VERBOSITY the environment has: refused
# handshakes are reported nowhere else (server/core_log.py reads them; the
# rest go to the grpc.core logger, whose level `log.level` sets). An
# explicit INFO would also make core warn at start that INFO is "not
# suitable for production", so a quieter setting is dropped, not raised.
if sys.argv[1:2] == ["serve"]:
    if os.environ.get("GRPC_VERBOSITY", "").upper() not in ("DEBUG", "INFO"):
        os.environ.pop("GRPC_VERBOSITY", None)
else:
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import typer  # noqa: E402

from securechat.cli.output import fail  # noqa: E402
from securechat.errors import SecureChatError  # noqa: E402


def build_app(*, certs_only: bool = False) -> typer.Typer:
    """The `securechat` app; `certs_only` leaves out the commands that load gRPC.

    A `securechat certs ...` run can reach nothing but the certs group, so
    `main` builds only that: issuing certificates does not pay for importing
    grpc, asyncio and the server at every start.
    """
    from securechat.cli.certs import certs_app

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
    if certs_only:
        return app
    from securechat.cli.agent import agent
    from securechat.cli.ca import ca_app
    from securechat.cli.client import chat, health, hello
    from securechat.cli.doctor import doctor
    from securechat.cli.quickstart import quickstart
    from securechat.cli.serve import serve

    app.command()(quickstart)
    app.command()(serve)
    app.command()(hello)
    app.command()(chat)
    app.command()(health)
    app.command()(doctor)
    app.add_typer(ca_app, name="ca")
    app.command()(agent)
    return app


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # the whole CLI, for tests and tools that import it
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console-script entry point."""
    app = build_app(certs_only=sys.argv[1:2] == ["certs"])
    try:
        app(standalone_mode=True)
    except SecureChatError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        sys.exit(130)
