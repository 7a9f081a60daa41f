"""One plain Chat stream: `send()` messages, iterate for events.

    async with open_chat(config) as chat:
        await chat.send("hello", room="general")
        async for event in chat: ...

`securechat.client.reconnect` builds the session that survives broken streams.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import grpc

from securechat._gen import chat_pb2
from securechat.client.channel import Channel, open_channel
from securechat.client.stream import ChatStream
from securechat.config import ClientConfig
from securechat.errors import ConnectError


class ChatSession:
    """One open Chat stream: `send()` messages, iterate for events."""

    def __init__(self, channel: Channel, call: ChatStream) -> None:
        self._channel = channel
        self._call = call

    @property
    def batched(self) -> bool:
        """True while the stream is ChatBatched; False once it fell back to Chat (a server without ChatBatched)."""
        return self._call.batched

    async def send(self, text: str, *, room: str = "") -> None:
        """Post `text` to `room` (joining it); empty text only joins."""
        try:
            await self._call.write(chat_pb2.ChatMessage(room=room, text=text))
        except grpc.aio.AioRpcError as exc:
            raise self._channel.explain(exc) from exc
        except grpc.aio.UsageError:
            # The call already ended; reading it will say why.
            await self._raise_final_status()

    async def join(self, room: str) -> None:
        await self.send("", room=room)

    async def done_writing(self) -> None:
        with contextlib.suppress(grpc.aio.UsageError):
            await self._call.done_writing()

    def cancel(self) -> None:
        self._call.cancel()

    async def __aiter__(self) -> AsyncIterator[chat_pb2.ChatEvent]:
        try:
            async for event in self._call:
                yield event
        except grpc.aio.AioRpcError as exc:
            raise self._channel.explain(exc) from exc

    async def _raise_final_status(self) -> None:
        code = await self._call.code()
        details = await self._call.details()
        raise ConnectError(f"the chat stream ended: {code.name}: {details}")


@contextlib.asynccontextmanager
async def open_chat(config: ClientConfig, *, metadata: Sequence[tuple[str, str]] = ()) -> AsyncIterator[ChatSession]:
    """Open a Chat stream; it is cancelled when the block exits. With `tls.renew`, renewed meanwhile."""
    from securechat.client.rotation import renewing

    async with renewing(config), open_channel(config, renew=False) as channel:
        call = ChatStream(channel.stub, metadata=metadata)
        session = ChatSession(channel, call)
        try:
            yield session
        finally:
            call.cancel()
