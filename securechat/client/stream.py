"""One chat stream: ChatBatched where the server offers it, Chat where it does not.

`ChatStream` writes `ChatMessage`s and yields `ChatEvent`s whichever RPC
carries them. It opens `ChatBatched` (every event ready for this member in
one `ChatEventBatch`) and, before the first message goes out, waits for the
server's response headers: securechat sends them as soon as it has accepted
the stream, and a server without the method (an older securechat, another
implementation of the proto) answers `UNIMPLEMENTED` at once. Then the stream
opens `Chat` instead, with the same metadata, before anything was written.

Why wait rather than write and see: a message written while the
`UNIMPLEMENTED` answer is on its way fails, and grpc.aio then reports the call
as `INTERNAL` ("Internal error from Core"), so the real status is lost. A
server that implements ChatBatched but sends its headers only with its first
response costs PROBE_SECONDS once per stream, after which the stream goes on
as ChatBatched.

It does not explain errors or reconnect: `ChatSession` and
`ReconnectingChat` do that around it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import grpc

from securechat._gen import chat_pb2, chat_pb2_grpc

PROBE_SECONDS = 1.0


class ChatStream:
    """A Chat or ChatBatched call behind one interface: `write`, iterate for events, `cancel`."""

    def __init__(
        self, stub: chat_pb2_grpc.ChatServiceStub, *, metadata: Sequence[tuple[str, str]] = (), batched: bool = True
    ) -> None:
        self._stub = stub
        self._metadata = tuple(metadata) or None
        self.batched = batched
        self._call = (stub.ChatBatched if batched else stub.Chat)(metadata=self._metadata)
        self._probe: asyncio.Task[None] | None = None

    async def write(self, message: chat_pb2.ChatMessage) -> None:
        await self._settled()
        if self._call.done():
            await self._raise_status()  # refused while we waited: say why, as a read would
        await self._call.write(message)

    async def done_writing(self) -> None:
        await self._settled()
        await self._call.done_writing()

    def cancel(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        self._call.cancel()

    def done(self) -> bool:
        return bool(self._call.done())

    async def code(self) -> grpc.StatusCode:
        code: grpc.StatusCode = await self._call.code()
        return code

    async def details(self) -> str:
        return str(await self._call.details())

    async def __aiter__(self) -> AsyncIterator[chat_pb2.ChatEvent]:
        await self._settled()
        if self.batched:
            async for batch in self._call:
                for event in batch.events:
                    yield event
        else:
            async for event in self._call:
                yield event

    async def _raise_status(self) -> None:
        call = self._call
        code = await call.code()
        if code is not grpc.StatusCode.OK:
            raise grpc.aio.AioRpcError(
                code, await call.initial_metadata(), await call.trailing_metadata(), await call.details()
            )

    async def _settled(self) -> None:
        """Once per stream, for the writer and the reader alike: ChatBatched, or Chat if the server lacks it."""
        if self.batched:
            if self._probe is None:
                self._probe = asyncio.ensure_future(self._ask())
            await asyncio.shield(self._probe)

    async def _ask(self) -> None:
        call = self._call
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(call.initial_metadata()), PROBE_SECONDS)
        if call.done() and await call.code() is grpc.StatusCode.UNIMPLEMENTED:
            self.batched = False
            self._call = self._stub.Chat(metadata=self._metadata)
