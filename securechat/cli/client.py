"""`securechat hello`, `chat` and `health`: the client side of the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from securechat.cli.inert import inert
from securechat.cli.output import reports_errors
from securechat.errors import ConnectError

# grpc, the client and the generated stubs are imported by the commands that
# use them: `securechat certs ...` should not pay for them at start-up.

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Client YAML file.", metavar="FILE")]
TargetOption = Annotated[
    str | None,
    typer.Option(help="The server, overriding the config's target.", metavar="HOST:PORT", show_default=False),
]


@reports_errors
def hello(
    config: ConfigOption,
    target: TargetOption = None,
    name: Annotated[
        str,
        typer.Option(help="Name to send; the server ignores it under mTLS and uses our certificate.", metavar="NAME"),
    ] = "",
) -> None:
    """Call SayHello once and print the reply.

    Example: securechat hello --config alice.yaml   ->   Hello, alice!
    """

    from securechat.client import open_channel, say_hello
    from securechat.config import load_client_config

    async def run() -> str:
        async with open_channel(load_client_config(config, target=target)) as channel:
            return await say_hello(channel, name)

    import asyncio  # here, not at module level: --help and certs do not load it

    typer.echo(inert(asyncio.run(run())))  # the server's words: inert


@reports_errors
def health(
    config: ConfigOption,
    target: TargetOption = None,
    service: Annotated[str, typer.Option(help="Service to check; '' means the whole server.", metavar="SERVICE")] = "",
) -> None:
    """Check grpc.health.v1 over the configured (m)TLS channel.

    Example: securechat health --config alice.yaml

    Exit codes: 0 when SERVING; 1 otherwise, with a one-line reason.
    """

    from securechat.client import check_health, open_channel
    from securechat.config import load_client_config

    async def run() -> str:
        async with open_channel(load_client_config(config, target=target)) as channel:
            return await check_health(channel, service)

    import asyncio  # here, not at module level: --help and certs do not load it

    status = asyncio.run(run())
    label = service or "server"
    if status != "SERVING":
        raise ConnectError(f"{label} is {status}")
    typer.echo(f"{label}: SERVING")


@reports_errors
def chat(
    config: ConfigOption,
    target: TargetOption = None,
    room: Annotated[
        str, typer.Option(help="Room to join first; what you type goes there.", metavar="ROOM")
    ] = "general",
    ids: Annotated[bool, typer.Option("--ids", help="Show each event's id before it.")] = False,
) -> None:
    """Chat in a room: what you type is sent, events print as they arrive.

    On a terminal: a prompt with line editing and history; /join ROOM
    switches rooms, /leave, /rooms, /who, /help; /quit or Ctrl-D leaves.
    With piped stdin each line is sent and its echo awaited; at EOF it exits.

    Exit codes: 0 done; 1 could not connect, the session ended with an
    error, or (piped) the server refused a line (said on stderr).

    Example: securechat chat --config alice.yaml --room general

    Example: printf 'hi bob\\n' | securechat chat --config alice.yaml
    """
    from securechat.cli.chat import ChatOptions, run_chat
    from securechat.config import load_client_config

    settings = load_client_config(config, target=target)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    import asyncio  # here, not at module level: --help and certs do not load it

    code = asyncio.run(run_chat(settings, ChatOptions(room=room, show_ids=ids, interactive=interactive)))
    if code:
        raise typer.Exit(code=code)


@reports_errors
def whoami(
    config: ConfigOption,
    target: TargetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the identity as a JSON object.")] = False,
) -> None:
    """Ask the server who our certificate says we are (WhoAmI).

    \b
    Examples:
      securechat whoami --config alice.yaml
      securechat whoami --config alice.yaml --json | jq -r .name

    JSON (stable): {"name", "spiffe_id", "serial", "not_after"}; spiffe_id is
    "" without a SPIFFE ID. Exit codes: 0 answered; 1 could not ask (one line).
    """
    from securechat.client import open_channel, who_am_i
    from securechat.config import load_client_config

    async def run() -> dict[str, str]:
        async with open_channel(load_client_config(config, target=target)) as channel:
            identity = await who_am_i(channel)
        return {
            "name": identity.name,
            "spiffe_id": identity.spiffe_id,
            "serial": identity.serial,
            "not_after": identity.not_after,
        }

    import asyncio  # here, not at module level: --help and certs do not load it

    identity = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps(identity))
        return
    typer.echo(f"{inert(identity['name'])}{' (' + inert(identity['spiffe_id']) + ')' if identity['spiffe_id'] else ''}")
    typer.echo(f"  serial:    {inert(identity['serial'])}")
    typer.echo(f"  not after: {inert(identity['not_after'])}")
