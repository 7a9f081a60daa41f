"""`securechat hello`, `chat` and `health`: the client side of the CLI."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from securechat.cli.output import reports_errors, stderr, stdout
from securechat.config import load_client_config
from securechat.errors import ConnectError

if TYPE_CHECKING:
    from securechat._gen import chat_pb2
    from securechat.config import ClientConfig
    from securechat.reconnect import ReconnectingChat, ResumeGap

# grpc, the client and the generated stubs are imported by the commands that
# use them: `securechat certs ...` should not pay for them at start-up.

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Client YAML file.")]
TargetOption = Annotated[str | None, typer.Option(help="HOST:PORT of the server, overriding the config's target.")]


@reports_errors
def hello(
    config: ConfigOption,
    target: TargetOption = None,
    name: Annotated[str, typer.Option(help="Name to send; the server ignores it under mTLS and uses our certificate.")] = "",
) -> None:
    """Call SayHello once and print the reply.

    Example: securechat hello --config alice.yaml   ->   Hello, alice!
    """

    from securechat.client import open_channel, say_hello

    async def run() -> str:
        async with open_channel(load_client_config(config, target=target)) as channel:
            return await say_hello(channel, name)

    stdout.print(asyncio.run(run()), markup=False)


@reports_errors
def health(
    config: ConfigOption,
    target: TargetOption = None,
    service: Annotated[str, typer.Option(help="Service to check; '' means the whole server.")] = "",
) -> None:
    """Check grpc.health.v1 over the configured (m)TLS channel.

    Exit codes: 0 when SERVING; 1 otherwise, with a one-line reason.
    """

    from securechat.client import check_health, open_channel

    async def run() -> str:
        async with open_channel(load_client_config(config, target=target)) as channel:
            return await check_health(channel, service)

    status = asyncio.run(run())
    label = service or "server"
    if status != "SERVING":
        raise ConnectError(f"{label} is {status}")
    stdout.print(f"{label}: SERVING")


@reports_errors
def chat(
    config: ConfigOption,
    target: TargetOption = None,
    room: Annotated[str, typer.Option(help="Room to join and post to.")] = "general",
) -> None:
    """Chat in a room: lines from stdin are sent, events are printed as they arrive.

    With piped stdin each line is sent and its echo awaited; at EOF it exits 0.
    Interactively, '/join ROOM' switches rooms and Ctrl-D leaves.
    """
    settings = load_client_config(config, target=target)
    asyncio.run(_chat(settings, room, interactive=sys.stdin.isatty()))


async def _chat(config: ClientConfig, room: str, *, interactive: bool) -> None:
    from securechat.reconnect import reconnecting_chat

    lines = _stdin_lines()

    def on_gap(gap: ResumeGap) -> None:
        stderr.print(f"warning: {gap} Continuing with new events.", markup=False, highlight=False, soft_wrap=True)

    # The session reconnects by itself (bounded backoff with jitter) and
    # resumes with last-event-id; unechoed lines are resent. A renewed client
    # certificate moves it onto a new channel the same way.
    async with reconnecting_chat(config, on_gap=on_gap) as session:
        # With tls.renew the session follows its own renewals; otherwise watch the files here.
        renewing = config.tls is not None and config.tls.renew is not None
        watcher = asyncio.create_task(_follow_rotations(config, session) if not renewing else asyncio.sleep(0))
        await session.join(room)
        echoes: asyncio.Queue[chat_pb2.ChatEvent] = asyncio.Queue()
        printer = asyncio.create_task(_print_events(session, session.me, echoes))
        try:
            current = room
            while (line := await lines.get()) is not None:
                if line.startswith("/join "):
                    current = line.removeprefix("/join ").strip()
                    await session.join(current)
                    continue
                if not line:
                    continue
                await session.send(line, room=current)
                if not interactive:
                    await _wait_for_echo(echoes, printer, line, current)
            await session.done_writing()
            await printer
        finally:
            printer.cancel()
            watcher.cancel()


async def _follow_rotations(config: ClientConfig, session: ReconnectingChat) -> None:
    """gRPC cannot swap an open channel's credentials: reconnect when our certificate is renewed."""
    from securechat.client import certificate_rotations

    async for material in certificate_rotations(config):
        serial = f"{material.certificate.serial_number:x}" if material.certificate is not None else "?"
        stderr.print(f"client certificate changed (serial {serial}): reconnecting", markup=False, highlight=False, soft_wrap=True)
        await session.reopen_channel()


async def _print_events(session: ReconnectingChat, me: str | None, echoes: asyncio.Queue[chat_pb2.ChatEvent]) -> None:
    from securechat._gen.chat_pb2 import ChatEvent

    Kind = ChatEvent.Kind  # noqa: N806 - the proto's enum, named as in the proto
    async for event in session:
        if event.kind == Kind.MESSAGE:
            stdout.print(f"[dim]#{event.id}[/] [bold]\\[{event.room}] {event.sender}:[/] ", end="")
            stdout.print(event.text, markup=False, highlight=False, emoji=False)
            if me is None or event.sender == me:
                echoes.put_nowait(event)
        elif event.kind == Kind.JOIN:
            stdout.print(f"[dim]#{event.id} \\[{event.room}] * {event.sender} joined[/]")
        elif event.kind == Kind.LEAVE:
            stdout.print(f"[dim]#{event.id} \\[{event.room}] * {event.sender} left[/]")


async def _wait_for_echo(echoes: asyncio.Queue[chat_pb2.ChatEvent], printer: asyncio.Task[None], text: str, room: str) -> None:
    """Block until the server's copy of our message arrives: that is its acknowledgement."""
    while True:
        getter = asyncio.ensure_future(echoes.get())
        done, _ = await asyncio.wait({getter, printer}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            printer.result()  # raises why the stream ended
            raise ConnectError("the server ended the chat before acknowledging our message")
        event = getter.result()
        if event.text == text and event.room == room:
            return


def _stdin_lines() -> asyncio.Queue[str | None]:
    """Lines of stdin, read on a daemon thread so a blocked read never holds up exit."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\r\n"))
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    return queue
