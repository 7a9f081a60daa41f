"""ChatService: SayHello, WhoAmI and Chat, thin over the interceptor and RoomHub.

The caller's name always comes from `current_peer` (its verified client
certificate), never from the payload or metadata. With server-only TLS or
plaintext there is no certificate: SayHello then uses the request's name and
Chat members are "anonymous".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable

import grpc

from securechat._gen import chat_pb2
from securechat.config import Limits
from securechat.identity import PeerIdentity
from securechat.server.interceptors import current_peer
from securechat.server.rooms import Member, RoomHub

log = logging.getLogger(__name__)

SERVICE_NAME = "securechat.v1.ChatService"
DEFAULT_ROOM = "general"
ANONYMOUS = "anonymous"
ROOM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ROOM_RULE = "1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"


class ChatService:
    def __init__(self, hub: RoomHub, limits: Limits) -> None:
        self._hub = hub
        self._limits = limits
        self._members: set[Member] = set()
        self._peers: dict[Member, PeerIdentity] = {}  # whose certificate opened each stream

    @property
    def open_streams(self) -> int:
        return len(self._members)

    def end_all_streams(self, code: grpc.StatusCode, message: str) -> None:
        """Let every open stream write what it was already given, then end it with `code`."""
        for member in self._members:
            member.finish(code, message)

    def end_streams_of(self, refusal: Callable[[PeerIdentity], tuple[grpc.StatusCode, str] | None]) -> int:
        """End now every open stream whose caller REFUSAL refuses (revoked, no longer allowed); returns how many."""
        ended = 0
        for member, peer in list(self._peers.items()):
            reason = refusal(peer)
            if reason is not None and member.ended is None:
                member.abort(*reason)
                ended += 1
        return ended

    async def say_hello(self, request: chat_pb2.HelloRequest, context: grpc.aio.ServicerContext) -> chat_pb2.HelloReply:
        peer = current_peer.get()
        name = peer.name if peer is not None else (request.name or "stranger")
        return chat_pb2.HelloReply(message=f"Hello, {name}!")

    async def who_am_i(self, request: chat_pb2.WhoAmIRequest, context: grpc.aio.ServicerContext) -> chat_pb2.Identity:
        peer = current_peer.get()
        if peer is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no client certificate: WhoAmI needs mutual TLS")
        return chat_pb2.Identity(name=peer.name, spiffe_id=peer.spiffe_id, serial=peer.serial, not_after=peer.not_after)

    async def chat(self, requests: AsyncIterator[chat_pb2.ChatMessage], context: grpc.aio.ServicerContext) -> None:
        """Read messages and write events concurrently until either side ends."""
        peer = current_peer.get()
        member = Member(peer.name if peer is not None else ANONYMOUS, queue_size=self._limits.queue_size)
        self._members.add(member)
        if peer is not None:
            self._peers[member] = peer
        log.info("chat stream opened by %s (peer %s)", member.name, context.peer())
        reader = asyncio.create_task(self._read(requests, member))
        try:
            # Events arrive as bytes serialized once by the hub; the method's
            # response serializer is the identity, so they go out as they are.
            while batch := await member.next_events():
                for event in batch:
                    await context.write(event)
            code, message = member.ended or (grpc.StatusCode.OK, "")
            log.info("chat stream of %s ended: %s %s", member.name, code.name, message)
            if code is not grpc.StatusCode.OK:
                await context.abort(code, message)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._hub.leave_all(member)
            self._members.discard(member)
            self._peers.pop(member, None)

    async def _read(self, requests: AsyncIterator[chat_pb2.ChatMessage], member: Member) -> None:
        try:
            async for message in requests:
                room = message.room or DEFAULT_ROOM
                refusal = self._check(member, room, message.text)
                if refusal is not None:
                    member.abort(*refusal)
                    return
                if message.text:
                    self._hub.post(member, room, message.text)
                else:
                    self._hub.join(member, room)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the call was cancelled or broke under us
            log.debug("reading from %s stopped: %r", member.name, exc)
            member.abort(grpc.StatusCode.CANCELLED, "the request stream broke")
            return
        member.finish()

    def _check(self, member: Member, room: str, text: str) -> tuple[grpc.StatusCode, str] | None:
        limits = self._limits
        if not ROOM_NAME.fullmatch(room):
            return grpc.StatusCode.INVALID_ARGUMENT, f"room name {room[:80]!r} is invalid: use {ROOM_RULE}"
        if len(text) > limits.max_text_length:
            return (
                grpc.StatusCode.INVALID_ARGUMENT,
                f"text is {len(text)} characters; the limit max_text_length is {limits.max_text_length}",
            )
        if room not in member.rooms and len(member.rooms) >= limits.max_rooms_per_stream:
            return (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this stream is in {len(member.rooms)} rooms; the limit max_rooms_per_stream is {limits.max_rooms_per_stream}",
            )
        return None


def method_handlers(service: ChatService) -> grpc.GenericRpcHandler:
    """The ChatService handlers; Chat's events are pre-serialized bytes."""
    handlers = {
        "SayHello": grpc.unary_unary_rpc_method_handler(
            service.say_hello,
            request_deserializer=chat_pb2.HelloRequest.FromString,
            response_serializer=chat_pb2.HelloReply.SerializeToString,
        ),
        "WhoAmI": grpc.unary_unary_rpc_method_handler(
            service.who_am_i,
            request_deserializer=chat_pb2.WhoAmIRequest.FromString,
            response_serializer=chat_pb2.Identity.SerializeToString,
        ),
        "Chat": grpc.stream_stream_rpc_method_handler(
            service.chat,
            request_deserializer=chat_pb2.ChatMessage.FromString,
            response_serializer=None,
        ),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
