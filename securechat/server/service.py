"""ChatService: SayHello, WhoAmI, Chat and ChatBatched, thin over the interceptor and a Hub (RoomHub or SharedRoomHub).

The caller's name always comes from `current_peer` (its verified client
certificate), never from the payload or metadata. With server-only TLS or
plaintext there is no certificate: SayHello then uses the request's name and
Chat members are "anonymous".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

import grpc

from securechat._gen import chat_pb2
from securechat.config import Limits
from securechat.protocol import (
    DEFAULT_ROOM,
    GLOBAL_ORDER,
    LAST_EVENT_ID,
    MAX_CLIENT_MSG_ID,
    ORDER_KEY,
    ROOM_RULE,
    Reason,
    Refusal,
    valid_room,
)
from securechat.server.admission import Admission
from securechat.server.core_writes import CoreWrites, EventWriter
from securechat.server.handlers import Handler
from securechat.server.interceptors import current_peer
from securechat.server.metrics import ServerMetrics
from securechat.server.rooms import Hub, Member
from securechat.tls.identity import PeerIdentity

log = logging.getLogger(__name__)

SERVICE_NAME = "securechat.v1.ChatService"
ANONYMOUS = "anonymous"
# A ChatEventBatch stays well below gRPC's default receive limit (4 MiB), so
# a client with default options can read any batch, also a long replay.
MAX_BATCH_BYTES = 256 * 1024
# A stream refused as it opens (its resume id is from before this server run)
# is answered once its first message came, or after this long without one.
FIRST_MESSAGE_SECONDS = 1.0
# Chat and ChatBatched read ChatMessages and write pre-serialized bytes.
ChatContext = grpc.aio.ServicerContext[chat_pb2.ChatMessage, bytes]


class ChatService:
    def __init__(self, hub: Hub, limits: Limits, *, metrics: ServerMetrics | None = None) -> None:
        self._hub = hub
        self._remote = hub.remote
        self._limits = limits
        self._members: set[Member] = set()
        self._peers: dict[Member, PeerIdentity] = {}  # whose certificate opened each stream
        self.admission = Admission(limits)
        hub.presence = self.admission.allow_presence
        self._metrics = metrics
        # Chat's write path: public context.write until the server has started
        # and the quarantined held writes passed their self-test (app.start_server).
        self.core_writes = CoreWrites.off("not set up yet (start_server does, after the server has started)")

    @property
    def open_streams(self) -> int:
        return len(self._members)

    @property
    def queued_events(self) -> int:
        return sum(member.backlog for member in self._members)

    def end_all_streams(self, refusal: Refusal) -> None:
        """Let every open stream write what it was already given, then end it with REFUSAL."""
        for member in self._members:
            member.finish(refusal)

    def end_streams_of(self, refusal_of: Callable[[PeerIdentity], Refusal | None]) -> int:
        """End now every open stream whose caller REFUSAL_OF refuses (revoked, no longer allowed); returns how many."""
        ended = 0
        for member, peer in list(self._peers.items()):
            refusal = refusal_of(peer)
            if refusal is not None and not member.ended:
                member.abort(refusal)
                ended += 1
        return ended

    async def say_hello(
        self, request: chat_pb2.HelloRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> chat_pb2.HelloReply:
        peer = current_peer.get()
        name = peer.name if peer is not None else (request.name or "stranger")
        return chat_pb2.HelloReply(message=f"Hello, {name}!")

    async def who_am_i(
        self, request: chat_pb2.WhoAmIRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> chat_pb2.Identity:
        peer = current_peer.get()
        if peer is None:
            await Refusal(
                grpc.StatusCode.UNAUTHENTICATED, Reason.NO_CERTIFICATE, "no client certificate: WhoAmI needs mutual TLS"
            ).abort(context)
        return chat_pb2.Identity(name=peer.name, spiffe_id=peer.spiffe_id, serial=peer.serial, not_after=peer.not_after)

    async def chat(self, requests: AsyncIterator[chat_pb2.ChatMessage], context: ChatContext) -> None:
        """Read messages and write events concurrently until either side ends."""
        await self._stream(requests, context, batched=False)

    async def chat_batched(self, requests: AsyncIterator[chat_pb2.ChatMessage], context: ChatContext) -> None:
        """Chat, with every event ready for this member sent in one ChatEventBatch."""
        await self._stream(requests, context, batched=True)

    async def _stream(
        self, requests: AsyncIterator[chat_pb2.ChatMessage], context: ChatContext, *, batched: bool
    ) -> None:
        peer = current_peer.get()
        name = peer.name if peer is not None else ANONYMOUS
        address = context.peer()
        resume_after = _resume_point(context)
        if isinstance(resume_after, Refusal):
            self._count_end(resume_after)
            await resume_after.abort(context)
        if resume_after is not None and (gone := self._hub.refuse_resume(resume_after)) is not None:
            await self._refuse_resume(requests, context, gone, name, address)
        refusal = self.admission.open_stream(name, address)
        if refusal is not None:
            self._count_end(refusal)
            await refusal.abort(context)
        # One broker, one loop: this stream's events of all rooms come in id
        # order, and the client may use that to resume (securechat-order).
        initial = () if self._remote else ((ORDER_KEY, GLOBAL_ORDER),)
        if batched or initial:
            # Response headers at once: a client learns that this server has
            # ChatBatched before it writes (one without answers UNIMPLEMENTED).
            try:
                await context.send_initial_metadata(initial)
            except BaseException:  # cancelled by the client meanwhile: the stream it was admitted for is gone
                self.admission.close_stream(name, address)
                self._count_end(grpc.StatusCode.CANCELLED)
                raise
        member = Member(name, queue_size=self._limits.queue_size, resume_after=resume_after, batched=batched)
        self._members.add(member)
        if peer is not None:
            self._peers[member] = peer
        log.info(
            "chat stream opened by %s (peer %s%s)",
            name,
            address,
            f", resuming after {resume_after}" if resume_after is not None else "",
            extra={"identity": name, "peer": address},
        )
        reader = asyncio.create_task(self._read(requests, member))
        writes = _write_batches(member, context) if batched else _write(member, self.core_writes.writer(context))
        writer = asyncio.create_task(writes)
        member.on_abort = writer.cancel
        ending: Refusal | None = None
        code = grpc.StatusCode.CANCELLED  # unless the writer ends: the client went away, or the server stopped
        try:
            await asyncio.wait((writer,))
            if not writer.cancelled():
                writer.result()
            ending = member.refusal
            code = ending.code if ending is not None else grpc.StatusCode.OK
            log.info(
                "chat stream of %s ended: %s %s",
                name,
                code.name,
                ending.message if ending is not None else "",
                extra={"identity": name, "peer": address, "code": code.name},
            )
            if ending is not None:
                await ending.abort(context)
        finally:
            # Everything that frees the stream's place runs before the first
            # await: a cancelled call's handler may be closed at an await here
            # (GeneratorExit), and what came after it would never run.
            member.on_abort = None
            self._count_end(ending if ending is not None else code)
            for task in (writer, reader):
                task.cancel()
            self._hub.leave_all(member)
            self._members.discard(member)
            self._peers.pop(member, None)
            self.admission.close_stream(name, address)
            await asyncio.gather(writer, reader, return_exceptions=True)

    async def _refuse_resume(
        self,
        requests: AsyncIterator[chat_pb2.ChatMessage],
        context: ChatContext,
        gone: Refusal,
        name: str,
        address: str,
    ) -> NoReturn:
        """End a stream whose resume id every room refuses (from before this run) before it joins anything.

        The refusal waits for the stream's first message (its first JOIN, as
        clients write one on opening) or FIRST_MESSAGE_SECONDS: a grpc.aio
        client whose write is in flight when the status arrives sees INTERNAL
        instead of it, and a refusal sent after the first message has arrived
        cannot meet that write. The message itself is not acted on.
        """
        self._count_end(gone)  # before the wait: a client that leaves meanwhile ends the stream there
        with contextlib.suppress(Exception):  # whatever the first read does, the answer is the refusal
            await asyncio.wait_for(anext(aiter(requests), None), FIRST_MESSAGE_SECONDS)
        log.info(
            "chat stream of %s refused at open: OUT_OF_RANGE %s",
            name,
            gone.message,
            extra={"identity": name, "peer": address, "code": gone.code.name},
        )
        await gone.abort(context)

    def _count_end(self, ending: Refusal | grpc.StatusCode) -> None:
        """Count a stream's end, once per stream: the refusal that ended it, or the bare status (OK, CANCELLED)."""
        if self._metrics is None:
            return
        if not isinstance(ending, Refusal):
            self._metrics.stream_ended(ending)
            return
        self._metrics.stream_ended(ending.code)
        if ending.reason is Reason.SLOW_CONSUMER:
            self._metrics.slow_consumers.inc()

    async def _read(self, requests: AsyncIterator[chat_pb2.ChatMessage], member: Member) -> None:
        try:
            async for message in requests:
                room = message.room or DEFAULT_ROOM
                refusal = self._check(member, room, message.text, message.client_msg_id)
                if refusal is None and not message.text and room not in member.rooms and self._hub.room_size(room) == 0:
                    # Creating a room costs a message; a message posted there pays for it itself.
                    refusal = self.admission.allow_new_room(member.name)
                if refusal is not None:
                    member.abort(refusal)
                    return
                if message.text:
                    refusal = self.admission.allow_message(member.name)
                    if refusal is not None:
                        member.abort(refusal)
                        return
                    if self._remote:
                        accepted = await self._hub.accept(member, room, message.text, message.client_msg_id)
                    else:  # the in-memory hub: no coroutine per message
                        accepted = self._hub.post(member, room, message.text, message.client_msg_id)
                    if self._metrics is not None and accepted:
                        self._metrics.messages_accepted.inc()
                else:
                    if self._remote:
                        await self._hub.enter(member, room)
                    else:
                        self._hub.join(member, room)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the call was cancelled or broke under us
            log.debug("reading from %s stopped: %r", member.name, exc)
            member.abort(Refusal(grpc.StatusCode.CANCELLED, Reason.STREAM_BROKEN, "the request stream broke"))
            return
        member.finish()

    def _check(self, member: Member, room: str, text: str, client_msg_id: str = "") -> Refusal | None:
        limits = self._limits
        if not valid_room(room):
            return Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                Reason.INVALID_ROOM,
                f"room name {room[:80]!r} is invalid: use {ROOM_RULE}",
            )
        if len(client_msg_id) > MAX_CLIENT_MSG_ID:
            return Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                Reason.BAD_CLIENT_MSG_ID,
                f"client_msg_id is {len(client_msg_id)} characters; at most {MAX_CLIENT_MSG_ID} (a UUID is 36)",
            )
        if len(text) > limits.max_text_length:
            return Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                Reason.TEXT_TOO_LONG,
                f"text is {len(text)} characters; the limit max_text_length is {limits.max_text_length}",
            )
        if room not in member.rooms and len(member.rooms) >= limits.max_rooms_per_stream:
            return Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                Reason.TOO_MANY_ROOMS,
                f"this stream is in {len(member.rooms)} rooms; the limit max_rooms_per_stream is {limits.max_rooms_per_stream}",
            )
        return None


async def _write(member: Member, writer: EventWriter) -> None:
    """Write the member's events until its stream ends: one message per event, a batch at a time.

    Events arrive as bytes serialized once by the hub; the method's response
    serializer is the identity, so they go out as they are. WRITER is
    core_writes' HeldWriter (a batch leaves in one write) or PublicWriter
    (one `context.write` per event).
    """
    while batch := await member.next_events():
        await writer.write(batch)


async def _write_batches(member: Member, context: ChatContext) -> None:
    """Write the member's events as ChatEventBatch messages until its stream ends: one write per batch.

    A batched member's queue holds events already framed as elements of
    ChatEventBatch.events (rooms.frame_event), so a batch is their plain
    concatenation; the method's response serializer is the identity. A batch
    is whatever was queued when the previous write completed: one event in a
    quiet room (written at once, as Chat would), more under load.
    """
    while batch := await member.next_events():
        if sum(map(len, batch)) <= MAX_BATCH_BYTES:
            await context.write(b"".join(batch))
            continue
        for part in _split(batch, MAX_BATCH_BYTES):
            await context.write(b"".join(part))


def _split(batch: list[bytes], limit: int) -> list[list[bytes]]:
    """BATCH in order, in parts of at most LIMIT bytes each (a single larger event is a part of its own)."""
    parts: list[list[bytes]] = [[]]
    size = 0
    for event in batch:
        if parts[-1] and size + len(event) > limit:
            parts.append([])
            size = 0
        parts[-1].append(event)
        size += len(event)
    return parts


def _resume_point(context: grpc.aio.ServicerContext[Any, Any]) -> int | Refusal | None:
    """The `last-event-id` metadata as an int, None when absent, or the refusal."""
    for key, value in context.invocation_metadata() or ():
        if key == LAST_EVENT_ID:
            text = value if isinstance(value, str) else value.decode("ascii", "replace")
            if text.isascii() and text.isdigit() and len(text) <= 19:
                return int(text)
            return Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                Reason.BAD_RESUME_ID,
                f"last-event-id {text[:40]!r} is not an event id: send the decimal id of the last event received",
            )
    return None


def method_handlers(service: ChatService) -> grpc.GenericRpcHandler:
    """The ChatService handlers as one generic handler; see `chat_handlers`."""
    return grpc.method_handlers_generic_handler(SERVICE_NAME, chat_handlers(service))


def chat_handlers(service: ChatService) -> dict[str, Handler]:
    """The ChatService handlers by method name; Chat's events and ChatBatched's batches are pre-serialized bytes."""
    return {
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
        "ChatBatched": grpc.stream_stream_rpc_method_handler(
            service.chat_batched,
            request_deserializer=chat_pb2.ChatMessage.FromString,
            response_serializer=None,
        ),
    }
