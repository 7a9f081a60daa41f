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

from typing import Annotated, Any  # noqa: E402

import typer  # noqa: E402
from typer.core import TyperCommand  # noqa: E402

from securechat.cli.output import fail  # noqa: E402
from securechat.cli.proto import proto  # noqa: E402
from securechat.errors import SecureChatError  # noqa: E402

HELP = """Issue certificates, run an mTLS gRPC chat server, connect authenticated clients.

\b
Examples:
  securechat quickstart --dir demo
  securechat serve --config demo/server.yaml
  securechat chat --config demo/alice.yaml --room general
  securechat certs list --dir demo/certs --json

Every command prints one line on stderr for an error and exits non-zero;
'securechat COMMAND --help' shows its options, examples and exit codes.
"""

SHELLS = ("bash", "zsh", "fish")


def build_app(*, certs_only: bool = False) -> typer.Typer:
    """The `securechat` app; `certs_only` leaves out the commands that load gRPC.

    A `securechat certs ...` run can reach nothing but the certs group, so
    `main` builds only that: issuing certificates does not pay for importing
    grpc, asyncio and the server at every start.
    """
    from securechat.cli.certs import certs_app

    # show_locals=False: Typer's pretty tracebacks would otherwise print local
    # variables, and here those can be private keys. rich_markup_mode=None:
    # click's plain help, which wraps to the terminal (at most 80 columns)
    # instead of cutting option names, and does not load Rich at every start.
    app = typer.Typer(
        name="securechat",
        help=HELP,
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
        add_completion=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["--help", "-h"]},
    )
    app.callback()(_root)
    app.add_typer(certs_app, name="certs")
    app.command()(completion)
    app.command()(proto)
    if certs_only:
        return app
    from securechat.cli.agent import agent
    from securechat.cli.ca import ca_app
    from securechat.cli.client import chat, health, hello, whoami
    from securechat.cli.doctor import doctor
    from securechat.cli.quickstart import quickstart
    from securechat.cli.serve import serve

    app.command()(quickstart)
    app.command()(serve)
    app.command()(hello)
    app.command()(whoami)
    app.command()(chat)
    app.command()(health)
    app.command()(doctor)
    app.add_typer(ca_app, name="ca")
    app.command()(agent)
    return app


def _plain_usage(app: typer.Typer) -> None:
    """Make every command of APP write its usage line the usual way (see `_Command`)."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = _Command
    for group in app.registered_groups:
        if group.typer_instance is not None:
            _plain_usage(group.typer_instance)


class _Command(TyperCommand):
    """A command whose usage line reads `NAME...` for a required argument and `[NAME]` for an optional one.

    Typer writes a required argument as `{NAME}`, which no other tool does
    and which reads like a set of choices.
    """

    # typer.Context is the public name of the context Typer passes; the base method names its vendored parent.
    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                metavar = param.make_metavar(ctx)
                pieces.append(metavar if param.required else f"[{metavar}]")
        return pieces


def _print_version(value: bool) -> None:
    if value:
        from securechat import __version__

        typer.echo(f"securechat {__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Issue certificates, run an mTLS gRPC chat server, connect authenticated clients."""


def completion(shell: Annotated[str, typer.Argument(help="bash, zsh or fish.", metavar="SHELL")]) -> None:
    """Print the shell completion script for SHELL.

    \b
    Examples:
      securechat completion bash > /etc/bash_completion.d/securechat
      securechat completion zsh > "${fpath[1]}/_securechat"
      securechat completion fish > ~/.config/fish/completions/securechat.fish
      eval "$(securechat completion bash)"      # this shell only
    """
    if shell not in SHELLS:
        fail(f"no completion for shell '{shell}': use one of {', '.join(SHELLS)}.", code=2)
    from typer._completion_shared import get_completion_script

    typer.echo(get_completion_script(prog_name="securechat", complete_var="_SECURECHAT_COMPLETE", shell=shell))


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # the whole CLI, for tests and tools that import it
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# What an option's value is, where its declaration does not say (help reads "--config FILE", never "<path>").
_METAVARS = {
    "config": "FILE", "listen": "HOST:PORT", "target": "HOST:PORT", "ca": "HOST:PORT", "san": "NAME|IP",
    "ttl": "DURATION", "within": "DURATION", "serial": "SERIAL", "token": "TOKEN", "dir": "DIR", "root_dir": "DIR",
    "key_type": "TYPE", "days": "DAYS", "permit_dns": "DOMAIN", "exec_": "COMMAND", "exec": "COMMAND",
    "signal": "SIGNAL", "kind": "KIND", "name": "NAME", "namespace": "NAMESPACE", "ca_address": "HOST:PORT",
    "exec_command": "COMMAND", "send_signal": "SIGNAL", "directory": "DIR", "spiffe_trust_domain": "DOMAIN",
    "crl_days": "DAYS", "secret_name": "NAME",
}  # fmt: skip


def name_values(command: Any) -> None:
    """Give every option and argument of COMMAND (and its subcommands) a metavar that names its value."""
    for param in getattr(command, "params", ()):
        if getattr(param, "metavar", None) is not None or getattr(param, "is_flag", False) or param.name is None:
            continue
        if param.param_type_name == "argument":
            param.metavar = param.name.upper().rstrip("S") + ("..." if param.nargs != 1 else "")
            continue
        if param.name.endswith("_file") or param.name.endswith("_cert"):
            param.metavar = "FILE"
        elif param.name in _METAVARS:
            param.metavar = _METAVARS[param.name]
        elif getattr(param.type, "name", "") in ("str", "text", "int", "integer", "path", "float"):
            param.metavar = "FILE" if param.type.name == "path" else param.name.upper()
    for sub in getattr(command, "commands", {}).values():
        name_values(sub)


def main() -> None:
    """Console-script entry point."""
    if sys.argv[1:] in (["--version"], ["-V"]):  # answered before any command is built
        from securechat import __version__

        print(f"securechat {__version__}")
        return
    if "_SECURECHAT_COMPLETE" in os.environ:  # a shell asking for completions (see `securechat completion`)
        from typer._completion_classes import completion_init

        completion_init()
    app = build_app(certs_only=sys.argv[1:2] == ["certs"])
    _plain_usage(app)
    from typer.main import get_command

    command = get_command(app)
    name_values(command)
    try:
        command(standalone_mode=True, prog_name="securechat")
    except SecureChatError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        sys.exit(130)
