"""The async Python client: the same YAML as the CLI, one line for every failure.

    async with open_channel(config) as channel:
        print(await say_hello(channel))

    async with open_chat(config) as chat:          # one plain stream
        await chat.send("hello", room="general")
        async for event in chat: ...

    async with reconnecting_chat(config) as chat:  # resumes by itself
        ...

Modules: `channel` (the channel and unary calls), `chat` (one Chat stream),
`reconnect` (the session that reconnects and resumes with last-event-id),
`explain` (a gRPC failure turned into one line a person can act on),
`rotation` (a channel that follows renewed certificates, and the renewer).
"""

from __future__ import annotations

from securechat._gen import chat_pb2
from securechat.client.channel import (
    DEFAULT_TIMEOUT,
    Channel,
    certificate_rotations,
    check_health,
    open_channel,
    own_identity,
    say_hello,
    who_am_i,
)
from securechat.client.chat import ChatSession, open_chat
from securechat.client.explain import explain_error
from securechat.client.reconnect import Backoff, ReconnectingChat, ResumeGap, reconnecting_chat
from securechat.client.rotation import rotating_channel

Kind = chat_pb2.ChatEvent.Kind
"""ChatEvent kinds: `Kind.MESSAGE`, `Kind.JOIN`, `Kind.LEAVE` (compare with `event.kind`)."""

__all__ = [
    "DEFAULT_TIMEOUT",
    "Backoff",
    "Channel",
    "ChatSession",
    "Kind",
    "ReconnectingChat",
    "ResumeGap",
    "certificate_rotations",
    "check_health",
    "explain_error",
    "open_channel",
    "open_chat",
    "own_identity",
    "reconnecting_chat",
    "rotating_channel",
    "say_hello",
    "who_am_i",
]
