"""The checker's clients: securechat's own reconnecting client, each writing down what it did and saw.

A `Client` is one identity with one `reconnecting_chat` session (the
product's client: resume with last-event-id, resend of unechoed messages
with the same client_msg_id). Its `log` is what the checker reads:

    ("sent", t, room, text)                       a send() returned
    ("recv", t, room, id, kind, sender, text)     an event the session handed us (after its own de-duplication)
    ("gap", t, detail)                            the session reported OUT_OF_RANGE: events between are lost, told
    ("ended", t, detail)                          the session gave up (not expected in a run)

and `unacknowledged`, the sends whose echo never came, as the session
reports them when it closes. Every text is unique in the run
("<client>#<n>"), so the checker can follow a message everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from pathlib import Path
from typing import Any

import grpc
import yaml
from fault_procs import Certificates

from securechat.client import Channel
from securechat.client.reconnect import Backoff, ReconnectingChat, ResumeGap
from securechat.config import load_client_config
from securechat.errors import ConnectError
from securechat.tls.credentials import channel_credentials
from securechat.tls.material import load_client_material

# gRPC's BDP probing grows a client's HTTP/2 receive window to megabytes on
# loopback, so a stalled reader would hold thousands of events in flight
# before the server noticed; without it the window stays at 64 KiB and a
# stall turns into a slow consumer within about a thousand events.
CHANNEL_OPTIONS = [("grpc.http2.bdp_probe", 0)]

# Generous: a fault must never make a checker client give up (10 consecutive
# failures is the product default; two NATS nodes down can take longer).
HARNESS_BACKOFF = Backoff(initial=0.1, maximum=1.0, max_attempts=100_000)

Entry = tuple[Any, ...]


class Client:
    """One identity in some rooms, sending at a seeded pace and logging everything."""

    def __init__(self, name: str, rooms: list[str], *, port: int, certs: Certificates, root: Path, rng: random.Random, pace: tuple[float, float]) -> None:
        self.name = name
        self.rooms = rooms
        self.port = port
        self.rng = rng
        self.pace = pace
        self.log: list[Entry] = []
        self.unacknowledged: list[tuple[str, str]] = []
        self.acked: dict[str, float] = {}  # text -> when its echo came
        self.sent_at: dict[str, float] = {}
        self.joined = asyncio.Event()
        self.reconnects = 0
        self._count = 0
        self.in_flight = 0  # sends waiting for a stream to write to
        self._chat: ReconnectingChat | None = None
        self._sending = True
        self._burst: list[tuple[str, int]] = []
        self._wake = asyncio.Event()
        cert, key = certs.pair(name)
        config = {"target": f"localhost:{port}", "tls": {"ca": str(certs.ca), "cert": str(cert), "key": str(key)}}
        self.config_file = root / f"{name}.yaml"
        self.config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        self._task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def stop_sending(self) -> None:
        """Stop the paced sends; then post one last message per room (`final_text`), which the drain waits for."""
        self._sending = False
        self._wake.set()

    @staticmethod
    def final_text(name: str, room: str) -> str:
        return f"{name}#final-{room}"

    def received_texts(self) -> set[str]:
        return {entry[6] for entry in self.log if entry[0] == "recv" and entry[4] == 1}

    def burst(self, room: str, count: int) -> None:
        """Send `count` messages to `room` as fast as the session takes them (the slow-consumer fault's flood)."""
        self._burst.append((room, count))
        self._wake.set()

    @property
    def pending(self) -> int:
        """Sends not yet echoed, including those still waiting for a stream."""
        return self.in_flight + (len(self._chat.unacknowledged) if self._chat is not None else 0)

    def last_ids(self) -> dict[str, int]:
        """Per room, the newest event id received."""
        last: dict[str, int] = {}
        for entry in self.log:
            if entry[0] == "recv":
                last[entry[2]] = max(last.get(entry[2], 0), entry[3])
        return last

    async def close(self) -> None:
        self._closed.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_gap(self, gap: ResumeGap) -> None:
        self.log.append(("gap", time.monotonic(), str(gap)))

    async def _run(self) -> None:
        config = load_client_config(self.config_file)
        material = load_client_material(config)
        assert material is not None
        raw = grpc.aio.secure_channel(str(config.target), channel_credentials(material), options=CHANNEL_OPTIONS)
        chat = ReconnectingChat(Channel(config, material, raw), backoff=HARNESS_BACKOFF, on_gap=self._on_gap)
        self._chat = chat
        try:
            reader = asyncio.ensure_future(self._read(chat))
            for room in self.rooms:
                await chat.join(room)
            sender = asyncio.ensure_future(self._send(chat))
            await self._closed.wait()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectError):
                await sender
            self.unacknowledged = list(chat.unacknowledged) + chat.unconfirmed  # both reported by the session
            self.reconnects = chat.reconnects
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectError):
                await reader
        except ConnectError as exc:
            self.log.append(("ended", time.monotonic(), str(exc)))
        finally:
            await chat.close()
            await raw.close()

    async def _read(self, chat: ReconnectingChat) -> None:
        try:
            async for event in chat:
                now = time.monotonic()
                self.log.append(("recv", now, event.room, int(event.id), int(event.kind), event.sender, event.text))
                if event.kind == 2 and event.sender == self.name and not self.joined.is_set():
                    if {e[2] for e in self.log if e[0] == "recv" and e[4] == 2 and e[5] == self.name} >= set(self.rooms):
                        self.joined.set()
                if event.sender == self.name and event.kind == 1 and event.text not in self.acked:
                    self.acked[event.text] = now
        except ConnectError as exc:
            self.log.append(("ended", time.monotonic(), str(exc)))
            raise

    async def _send(self, chat: ReconnectingChat) -> None:
        while True:
            while self._burst:
                room, count = self._burst.pop(0)
                for _ in range(count):
                    await self._post(chat, room)
            if not self._sending:
                for room in self.rooms:
                    await self._post(chat, room, self.final_text(self.name, room))
                await self._closed.wait()
                return
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.rng.uniform(*self.pace))
            if self._sending and not self._burst:
                await self._post(chat, self.rng.choice(self.rooms))

    async def _post(self, chat: ReconnectingChat, room: str, text: str = "") -> None:
        if not text:
            self._count += 1
            text = f"{self.name}#{self._count}"
        now = time.monotonic()
        self.sent_at[text] = now
        self.in_flight += 1
        try:
            await chat.send(text, room=room)
        finally:
            self.in_flight -= 1
        self.log.append(("sent", now, room, text))
