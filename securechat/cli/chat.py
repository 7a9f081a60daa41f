"""`securechat chat`: the conversation, on a terminal or through pipes.

On a terminal (stdin and stdout both are one) it is a prompt_toolkit prompt
that stays at the bottom while events print above it: line editing and
history, a banner (who we are from our certificate, which server, which
room), the current room in the prompt, our own message shown once (the
server's echo, marked delivered), readable times, slash commands. Without a
terminal it stays scriptable: each stdin line is sent and its echo awaited,
events go to stdout, every notice and error to stderr, and it exits at EOF.

Both modes share everything but the input: `Conversation` handles lines and
slash commands, `View` turns events and session news into lines of
(style, text) parts, and every part another party controls (text, sender,
room, the server's words) passes through `inert()`; parts are printed as
plain text, never as markup. Colour follows NO_COLOR and whether the stream
is a terminal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from securechat.cli.inert import inert
from securechat.errors import ConnectError
from securechat.protocol import ROOM_RULE, Reason, valid_room

if TYPE_CHECKING:
    from securechat._gen import chat_pb2
    from securechat.client.reconnect import ReconnectingChat, SessionStatus
    from securechat.config import ClientConfig
    from securechat.tls.material import TlsMaterial

Parts = list[tuple[str, str]]
"""One line as (style class, text) pairs; the style is '' or one of STYLES."""

STYLES = {
    "time": "ansibrightblack",
    "id": "ansibrightblack",
    "room": "ansicyan",
    "sender": "bold",
    "me": "bold ansigreen",
    "delivered": "ansigreen",
    "presence": "ansibrightblack",
    "notice": "ansiyellow",
    "error": "bold ansired",
    "prompt": "bold",
}
# The same classes as ANSI SGR parameters, for the plain (piped) output.
_SGR = {
    "time": "2",
    "id": "2",
    "room": "36",
    "sender": "1",
    "me": "1;32",
    "delivered": "32",
    "presence": "2",
    "notice": "33",
    "error": "1;31",
}

HELP = (
    ("/join ROOM", "switch to ROOM, joining it; what you type goes there"),
    ("/leave [ROOM]", "leave ROOM (default: the current room)"),
    ("/rooms", "the rooms you are in"),
    ("/who", "who is in the current room (joins, leaves and senders seen since you joined)"),
    ("/help", "this list"),
    ("/quit", "leave the chat (Ctrl-D too)"),
    ("//text", "send a line that starts with '/'"),
)
CONNECT_WAIT_SECONDS = 3.0
"""How long the interactive client waits for its first event before showing the prompt anyway (big rooms send no JOIN)."""


def use_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org) or TERM=dumb."""
    if os.environ.get("NO_COLOR", ""):
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@dataclass(frozen=True)
class ChatOptions:
    room: str
    show_ids: bool = False
    interactive: bool = False


class View:
    """Events and session news as lines of parts; knows nothing about where they go."""

    def __init__(self, *, me: str | None, show_ids: bool, interactive: bool, unicode: bool) -> None:
        self.me = me
        self._show_ids = show_ids
        self._interactive = interactive
        self._delivered = " \u2713" if unicode else " (delivered)"
        self._today = dt.datetime.now().astimezone().date()

    def time(self, unix_ms: int) -> str:
        """Local wall-clock time of an event; with the date when it is not from today."""
        if unix_ms <= 0:
            return "--:--:--"
        moment = dt.datetime.fromtimestamp(unix_ms / 1000, tz=dt.timezone.utc).astimezone()
        return moment.strftime("%H:%M:%S" if moment.date() == self._today else "%Y-%m-%d %H:%M:%S")

    def event(self, event: chat_pb2.ChatEvent, *, kind: str) -> Parts:
        parts: Parts = [("time", self.time(event.sent_at_unix_ms)), ("", " ")]
        if self._show_ids:
            parts += [("id", f"#{event.id}"), ("", " ")]
        parts += [("room", f"[{inert(event.room)}]"), ("", " ")]
        sender = inert(event.sender)
        if kind == "message":
            mine = event.sender == self.me
            parts += [("me" if mine else "sender", f"{sender}:"), ("", " "), ("", inert(event.text))]
            if mine and self._interactive:
                parts.append(("delivered", self._delivered))
        else:
            parts.append(("presence", f"* {sender} {kind}"))
        return parts

    def notice(self, text: str) -> Parts:
        return [("notice", text)]

    def error(self, text: str) -> Parts:
        return [("error", "error:"), ("", " " + inert(text))]

    def status(self, status: SessionStatus) -> Parts:
        from securechat.client.reconnect import HistoryLost, Reconnecting, Refused, Resumed, Unconfirmed

        if isinstance(status, Reconnecting):
            return self.notice(
                f"connection lost \u2014 reconnecting (attempt {status.attempt}, next in {status.delay:.1f}s): {inert(status.cause)}"
            )
        if isinstance(status, Resumed):
            if status.after_id is None:
                return self.notice("reconnected; showing new events")
            since = self.time(status.after_ms) if status.after_ms else f"event #{status.after_id}"
            return self.notice(f"reconnected, resumed from {since}: nothing sent meanwhile is missed")
        if isinstance(status, HistoryLost):
            gap = status.gap
            since = f"after {self.time(gap.lost_after_ms)}" if gap.lost_after_ms else "before it"
            if gap.resume_from is not None:
                return self.notice(
                    f"the server restarted or dropped old history: what was sent {since} until then is gone;"
                    " everything it holds since is shown, so nothing after that is missed"
                )
            return self.notice(
                f"the server restarted or dropped old history: what was sent {since} is gone,"
                " and messages posted before you reconnected may be missing; new messages are shown"
            )
        if isinstance(status, Unconfirmed):
            return self.error(
                f'may not have been delivered to [{inert(status.room)}]: "{inert(status.text)}" was sent before the server'
                " restarted and never confirmed; it was not resent (it could show twice). Send it again if it is missing."
            )
        assert isinstance(status, Refused)
        return self.error(refusal_line(status))


def refusal_line(status: object) -> str:
    """One line for a refused message or room: what was refused, the server's reason, the fix."""
    from securechat.client.reconnect import Refused

    assert isinstance(status, Refused)
    said = inert(status.message)
    room = inert(status.room)
    if status.reason is Reason.TEXT_TOO_LONG:
        return f"not sent to [{room}]: the server refused it as too long ({said}). Shorten it and send it again."
    if status.reason is Reason.INVALID_ROOM:
        return f"left [{room}]: the server refuses that room name ({said}). Use {ROOM_RULE}."
    if status.reason is Reason.TOO_MANY_ROOMS:
        return f"not joined [{room}]: that is more rooms than the server allows ({said}). /leave a room first."
    return f"refused in [{room}]: {said}"


class Output:
    """Where lines go: above the prompt_toolkit prompt, or plain to stdout/stderr (with SGR colour if wanted)."""

    def __init__(self, *, interactive: bool) -> None:
        self._interactive = interactive
        self._colour = {False: use_colour(sys.stdout), True: use_colour(sys.stderr)}
        if interactive:
            from prompt_toolkit.styles import Style

            self._style = Style.from_dict({f"c-{name}": value for name, value in STYLES.items()})

    @property
    def colour(self) -> bool:
        return self._colour[False]

    def line(self, parts: Parts, *, err: bool = False) -> None:
        """Print one line; in piped mode, notices and errors (err=True) go to stderr."""
        if self._interactive:
            from prompt_toolkit.formatted_text import FormattedText
            from prompt_toolkit.shortcuts import print_formatted_text

            styled = [(f"class:c-{style}" if style and self.colour else "", text) for style, text in parts]
            # FormattedText tuples are never parsed as markup; above the prompt when it runs.
            print_formatted_text(FormattedText(styled), style=self._style)
            return
        stream = sys.stderr if err else sys.stdout
        colour = self._colour[err]
        text = "".join(
            f"\x1b[{_SGR[style]}m{chunk}\x1b[0m" if colour and style in _SGR else chunk for style, chunk in parts
        )
        stream.write(text + "\n")
        stream.flush()


class Echoes:
    """Piped mode: wait for the server's echo of each line (its acknowledgement), or its refusal."""

    def __init__(self) -> None:
        self._waiting: list[tuple[str, str, asyncio.Future[bool]]] = []

    def expect(self, room: str, text: str) -> asyncio.Future[bool]:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((room, text, future))
        return future

    def settle(self, room: str, text: str, *, delivered: bool) -> None:
        for index, (wanted_room, wanted_text, future) in enumerate(self._waiting):
            if wanted_room == room and wanted_text == text:
                del self._waiting[index]
                if not future.done():
                    future.set_result(delivered)
                return


class Presence:
    """Who is in each room, from the JOIN and LEAVE events and the senders seen since we joined."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, None]] = {}

    def see(self, event: chat_pb2.ChatEvent, kind: str) -> None:
        members = self._rooms.setdefault(event.room, {})
        if kind == "left":
            members.pop(event.sender, None)
        else:
            members[event.sender] = None

    def forget(self, room: str) -> None:
        self._rooms.pop(room, None)

    def members(self, room: str) -> list[str]:
        return sorted(self._rooms.get(room, {}))


class Conversation:
    """The part both modes share: events in, lines and slash commands out."""

    def __init__(self, chat: ReconnectingChat, out: Output, view: View, options: ChatOptions) -> None:
        self.chat = chat
        self.out = out
        self.view = view
        self.options = options
        self.current: str | None = options.room
        self.presence = Presence()
        self.echoes = Echoes()
        self.first_event = asyncio.Event()
        self.refused_lines = 0
        self._joined_once: set[str] = set()

    # -- what the server sends ----------------------------------------------------

    async def print_events(self) -> None:
        from securechat._gen.chat_pb2 import ChatEvent

        kinds = {ChatEvent.Kind.MESSAGE: "message", ChatEvent.Kind.JOIN: "joined", ChatEvent.Kind.LEAVE: "left"}
        async for event in self.chat:
            self.first_event.set()
            kind = kinds.get(event.kind)
            if kind is None:
                continue
            if event.room not in self.chat.rooms:
                continue  # a room we just left: its last events are not ours any more
            self.presence.see(event, kind)
            mine = event.sender == self.view.me
            if kind == "joined" and mine:
                if event.room in self._joined_once or self.options.interactive:
                    self._joined_once.add(event.room)
                    continue  # our own rejoin after a reconnect, or said already by /join
                self._joined_once.add(event.room)
            self.out.line(self.view.event(event, kind=kind))
            if kind == "message" and (mine or self.view.me is None):
                self.echoes.settle(event.room, event.text, delivered=True)

    def on_status(self, status: SessionStatus) -> None:
        from securechat.client.reconnect import Refused, Unconfirmed

        self.out.line(self.view.status(status), err=True)
        if isinstance(status, Unconfirmed):
            self.refused_lines += 1  # the exit status says a line may not have gone through
            self.echoes.settle(status.room, status.text, delivered=False)
        if isinstance(status, Refused):
            if status.text is not None:
                self.refused_lines += 1
                self.echoes.settle(status.room, status.text, delivered=False)
            if status.room == self.current and status.room not in self.chat.rooms:
                self.current = self.chat.rooms[-1] if self.chat.rooms else None

    # -- what the user types -----------------------------------------------------

    async def handle(self, line: str) -> asyncio.Future[bool] | bool | None:
        """Act on one line: False to quit, the echo's future when a message was sent, None otherwise."""
        if not line.strip():
            return None
        if line.startswith("//"):
            return await self._send(line[1:])
        if not line.startswith("/"):
            return await self._send(line)
        word, _, rest = line.partition(" ")
        argument = rest.strip()
        if word == "/quit":
            return False
        if word == "/help":
            for usage, meaning in HELP:
                self.out.line(self.view.notice(f"{usage:<15}{meaning}"), err=True)
            return None
        if word == "/join":
            await self._join(argument)
            return None
        if word == "/leave":
            await self._leave(argument or self.current)
            return None
        if word == "/rooms":
            if not self.chat.rooms:
                self.out.line(self.view.notice("you are in no room; /join ROOM"), err=True)
                return None
            shown = ", ".join(
                f"[{inert(room)}]{' (current)' if room == self.current else ''}" for room in self.chat.rooms
            )
            self.out.line(self.view.notice(f"your rooms: {shown}"), err=True)
            return None
        if word == "/who":
            if self.current is None:
                self.out.line(self.view.error("you are in no room; /join ROOM first"), err=True)
                return None
            names = [
                f"{inert(name)}{' (you)' if name == self.view.me else ''}"
                for name in self.presence.members(self.current)
            ]
            self.out.line(
                self.view.notice(
                    f"in [{inert(self.current)}]: {', '.join(names) or 'nobody seen yet'} (members seen since you joined)"
                ),
                err=True,
            )
            return None
        self.out.line(
            self.view.error(
                f"unknown command {word}: it was not sent. /help lists the commands; //text sends a line starting with '/'."
            ),
            err=True,
        )
        return None

    async def _send(self, text: str) -> asyncio.Future[bool] | None:
        """Send TEXT to the current room; the future says whether its echo came (True) or it was refused."""
        if self.current is None:
            self.out.line(self.view.error("you are in no room, so that was not sent. /join ROOM first."), err=True)
            return None
        echo = self.echoes.expect(self.current, text)  # before sending: the echo may beat send()'s return
        await self.chat.send(text, room=self.current)
        return echo

    async def _join(self, room: str) -> None:
        if not room:
            self.out.line(self.view.error("/join needs a room: /join ROOM"), err=True)
            return
        if not valid_room(room):
            self.out.line(
                self.view.error(f"'{room}' is not a room name, so it was not joined: use {ROOM_RULE}."), err=True
            )
            return
        already = room in self.chat.rooms
        self.current = room
        if not already:
            await self.chat.join(room)
            self._joined_once.add(room)
        self.out.line(
            self.view.notice(f"now in [{room}]{'' if already else ' (joined)'}: what you type goes there"), err=True
        )

    async def _leave(self, room: str | None) -> None:
        if room is None or room not in self.chat.rooms:
            shown = inert(room) if room else "any room"
            self.out.line(self.view.error(f"you are not in {shown}; /rooms lists yours"), err=True)
            return
        await self.chat.leave(room)
        self.presence.forget(room)
        self._joined_once.discard(room)
        if self.current == room:
            self.current = self.chat.rooms[-1] if self.chat.rooms else None
        now = f"now in [{self.current}]" if self.current else "you are in no room: /join ROOM"
        self.out.line(self.view.notice(f"left [{room}]; {now}"), err=True)


# -- the two modes ---------------------------------------------------------------


async def run_chat(config: ClientConfig, options: ChatOptions) -> int:
    """Chat until /quit, Ctrl-D or EOF; the exit code (errors are raised as SecureChatError)."""
    from securechat.client.reconnect import reconnecting_chat

    out = Output(interactive=options.interactive)
    conversation: Conversation | None = None

    def on_status(status: SessionStatus) -> None:
        if conversation is not None:
            conversation.on_status(status)

    # fail_fast: a wrong port, an untrusted server or a refused certificate is
    # one explained line at once (as `hello` says it), not a retry loop.
    async with reconnecting_chat(config, on_status=on_status, fail_fast=True) as chat:
        encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
        view = View(me=chat.me, show_ids=options.show_ids, interactive=options.interactive, unicode=encoding == "utf8")
        conversation = Conversation(chat, out, view, options)
        # With tls.renew the session follows its own renewals; otherwise watch the files here.
        renewing = config.tls is not None and config.tls.renew is not None
        watcher = asyncio.create_task(_follow_rotations(config, chat, out, view) if not renewing else asyncio.sleep(0))
        printer = asyncio.create_task(conversation.print_events())
        try:
            await chat.join(options.room)
            if options.interactive:
                return await _interactive(conversation, printer, config)
            return await _piped(conversation, printer)
        finally:
            printer.cancel()
            watcher.cancel()


async def _piped(conversation: Conversation, printer: asyncio.Task[None]) -> int:
    lines = _stdin_lines()
    while (line := await lines.get()) is not None:
        echo = await conversation.handle(line)
        if echo is False:
            break
        if isinstance(echo, asyncio.Future):
            waiting: set[asyncio.Future[Any]] = {echo, printer}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if echo not in done:
                echo.cancel()
                printer.result()  # raises why the session ended, explained
                raise ConnectError("the server ended the chat before acknowledging our message")
    await conversation.chat.done_writing()
    await printer  # everything accepted is printed; raises if the session failed
    return 1 if conversation.refused_lines else 0


async def _interactive(conversation: Conversation, printer: asyncio.Task[None], config: ClientConfig) -> int:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.history import InMemoryHistory
    from prompt_toolkit.patch_stdout import patch_stdout

    waiter = asyncio.ensure_future(conversation.first_event.wait())
    await asyncio.wait({waiter, printer}, timeout=CONNECT_WAIT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if printer.done():
        printer.result()  # the first stream failed: raise the explained error, before any banner
    out, view = conversation.out, conversation.view
    for line in _banner(config, conversation):
        out.line(view.notice(line) if line else [("", "")])

    def prompt() -> FormattedText:
        room = f"[{conversation.current}]" if conversation.current else "(no room)"
        style = "class:c-prompt" if out.colour else ""
        return FormattedText([(style, f"{room} {inert(view.me or 'you')}> ")])

    session: PromptSession[str] = PromptSession(history=InMemoryHistory(), erase_when_done=True)

    def stop_prompt(_: asyncio.Task[None]) -> None:
        if session.app.is_running:
            session.app.exit(exception=EOFError())

    printer.add_done_callback(stop_prompt)
    with patch_stdout(raw=True):
        while not printer.done():
            try:
                line = await session.prompt_async(prompt)
            except (EOFError, KeyboardInterrupt):
                break
            if await conversation.handle(line) is False:
                break
    if printer.done() and not printer.cancelled():
        printer.result()  # the session ended for good: raise why, explained
    return 0


def _banner(config: ClientConfig, conversation: Conversation) -> list[str]:
    from securechat.tls.material import load_client_material

    me = conversation.view.me
    who = f"you are {inert(me)}" if me else "you have no client certificate"
    material = load_client_material(config) if config.tls is not None else None
    certificate = _certificate_line(material)
    mode = "plaintext (insecure: true)" if config.tls is None else ("mTLS" if me else "TLS")
    room = conversation.current or "no room"
    return [
        f"securechat chat \u2014 {who}{certificate}",
        f"server {config.target} ({mode}), room [{room}]",
        "Type a message and press Enter. /help lists the commands; /quit or Ctrl-D leaves.",
    ]


def _certificate_line(material: TlsMaterial | None) -> str:
    from securechat import pki

    if material is None or material.certificate is None:
        return ""
    cert = material.certificate
    left = pki.days_until(cert.not_valid_after_utc)
    serial = f"{cert.serial_number:x}"[:16]  # as `certs list` shows it
    return f" (certificate {serial}, expires {cert.not_valid_after_utc:%Y-%m-%d}, {pki.days_text(left)})"


async def _follow_rotations(config: ClientConfig, chat: ReconnectingChat, out: Output, view: View) -> None:
    """gRPC cannot swap an open channel's credentials: reconnect when our certificate is renewed."""
    from securechat.client import certificate_rotations

    async for material in certificate_rotations(config):
        serial = f"{material.certificate.serial_number:x}" if material.certificate is not None else "?"
        out.line(view.notice(f"client certificate changed (serial {serial}): reconnecting"), err=True)
        await chat.reopen_channel()


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
