"""Writing a Chat stream's queued events with one flush per batch.

`context.write` sends each message at once: one TLS record and one `sendmsg`
per message per member, which is most of a busy fan-out's CPU. gRPC core
can hold a message back until the stream's next plain write (the
`GRPC_WRITE_BUFFER_HINT` write flag; `WriteOptions().set_buffer_hint()` in
C++), so that a batch goes out in one write; grpc.aio has no parameter for
write flags. `BatchWriter` makes the same core call that `context.write`
makes (grpc's `cygrpc._send_message`) with that flag on every event of a
batch but the last, and writes the last with `context.write`, which flushes
them all. A batch of one is a plain `context.write`, so a quiet room's
latency does not change.

This reaches into grpcio internals: the servicer context's call state (found
with `gc.get_referents`, since Cython keeps it private) and a function grpc
does not document. grpcio is pinned; if either is missing, `BatchWriter`
uses `context.write` for every event (correct, just slower) and
`batching_supported()` says so. A test asserts it is supported with the
pinned grpcio, so an upgrade that breaks it fails CI instead of quietly
costing throughput.
"""

from __future__ import annotations

import asyncio
import gc
import logging

import grpc

log = logging.getLogger(__name__)

try:
    from grpc._cython import cygrpc

    _send_message = cygrpc._send_message
    _CALL_STATE = cygrpc.RPCState
    _BUFFER_HINT = int(cygrpc.WriteFlag.buffer_hint)
except (ImportError, AttributeError):  # a grpcio without these internals
    _send_message = None
    _CALL_STATE = None
    _BUFFER_HINT = 0

# A batch flushes at least every this many events, so the first event of a
# long backlog does not wait for the whole of it.
MAX_BUFFERED = 64


def batching_supported() -> bool:
    """Whether the installed grpcio has what buffered writes need."""
    return _send_message is not None and _CALL_STATE is not None


def _call_state(context: grpc.aio.ServicerContext) -> object | None:
    if _CALL_STATE is None:
        return None
    for referent in gc.get_referents(context):
        if type(referent) is _CALL_STATE:
            return referent
    return None


class BatchWriter:
    """Writes pre-serialized events to one stream; a batch leaves in one flush."""

    __slots__ = ("_context", "_state", "_loop", "_started")

    def __init__(self, context: grpc.aio.ServicerContext, *, buffered: bool = True) -> None:
        self._context = context
        self._state = _call_state(context) if buffered else None
        self._loop = asyncio.get_running_loop()
        self._started = False  # the first write goes through context.write: it sends the headers
        if buffered and self._state is None and batching_supported():
            log.debug("no call state found on %r: writing each event on its own", type(context).__name__)

    @property
    def batching(self) -> bool:
        return self._state is not None

    async def write(self, events: list[bytes]) -> None:
        """Write `events` in order; all but the last are held back until the last is written."""
        if self._state is None:
            for event in events:
                await self._context.write(event)
            return
        first = 0
        if not self._started:
            await self._context.write(events[0])
            self._started = True
            first = 1
        last = len(events) - 1
        held = 0
        for index in range(first, last + 1):
            if index == last or held == MAX_BUFFERED:
                await self._context.write(events[index])
                held = 0
            else:
                await _send_message(self._state, events[index], None, _BUFFER_HINT, self._loop)
                held += 1
