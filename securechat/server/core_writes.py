"""QUARANTINED: Chat's queued events written with gRPC core's buffer hint, through grpcio internals.

This is the one module of securechat that calls into grpcio's private Cython
layer on the hot path. Everything it needs from grpcio is named in
`_Internals` and checked when the server starts (`CoreWrites.start`); if
anything is missing or misbehaves, one WARNING is logged and every stream
writes with the public `context.write`, as with `limits.buffered_writes:
false`.

Why: `context.write` sends each message at once, one TLS record and one
`sendmsg` per event per member, which is most of a busy fan-out's CPU.
gRPC core can hold a message until the stream's next plain write (the
`GRPC_WRITE_BUFFER_HINT` write flag, C++'s `WriteOptions().set_buffer_hint()`);
grpc.aio has no parameter for write flags. `HeldWriter` makes the call
`context.write` makes (`cygrpc._send_message`, with the call state found
through `gc.get_referents`, since Cython keeps it private) with that flag on
every event of a batch but the last, and writes the last with
`context.write`, which sends them all in one write. A batch of one is a
plain `context.write`, so a quiet room's latency does not change.

What `context.write` checks first, and so do we, before every private send
(grpcio 1.85, `_cygrpc/aio/server.pyx.pxi`, `RPCState.raise_for_termination`):

- `abort_exception is not None` or `status_sent`: the call has ended.
  `context.done()` is `status_sent`, which `context.abort` sets before it
  awaits, and every end of a call sets it. (abort sets `abort_exception`
  first and `status_sent` only after validating its trailing metadata; our
  handlers abort only after the writer has ended, with valid metadata.)
- `server._status == STOPPED`: the server was destroyed, and a call into
  core then may crash the process (grpc's comment: "otherwise, segfault").
  We ask the server's `AioServer.is_running()`, which is False from the
  moment shutdown begins: during the grace period events go out through
  `context.write` only, so a held send never races the server's teardown.

When a check fails, the event is handed to `context.write`, which raises
grpc's own error (or, while the server drains, writes it): nothing is
dropped or reordered, since core keeps one order per stream for held and
plain writes alike. The writer never outlives its handler (ChatService
cancels and awaits it before the handler returns), and gRPC releases the
call only after the handler returns.

Proof that this holds up: `benchmarks/write_stress.py` races server stop
(with and without grace), client cancel, killed connections and slow
consumers against held writes for thousands of iterations, in subprocesses,
counting crashes (tests/integration/test_core_writes_stress.py runs it
briefly in CI). What is not done: ChatBatched does not use this (it sends a
batch as one public message); neither does the health port.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

log = logging.getLogger(__name__)

# A batch is flushed at least every this many events, so the first event of
# a long backlog does not wait for the whole of it.
MAX_HELD = 64
SELF_TEST_SECONDS = 5.0
_SELF_TEST_METHOD = "/securechat.selftest.v1.CoreWrites/Probe"
_SELF_TEST_EVENTS = [f"core-writes self-test {i}".encode() for i in range(6)]
_GRPC_WRITE_BUFFER_HINT = 0x1  # grpc/impl/grpc_types.h


class EventWriter(Protocol):
    """Writes one stream's pre-serialized events, in order."""

    async def write(self, events: list[bytes]) -> None: ...


class PublicWriter:
    """One `context.write` per event: the public path."""

    __slots__ = ("_context",)

    def __init__(self, context: grpc.aio.ServicerContext[Any, bytes]) -> None:
        self._context = context

    async def write(self, events: list[bytes]) -> None:
        for event in events:
            await self._context.write(event)


@dataclass(frozen=True)
class _Internals:
    """What this module takes from grpcio's private layer, found once."""

    send_message: Any  # cygrpc._send_message(rpc_state, bytes, initial_metadata_op, flags, loop)
    call_state: type  # cygrpc.RPCState
    buffer_hint: int  # cygrpc.WriteFlag.buffer_hint
    server_running: Any  # the started server's AioServer.is_running


def find_internals(server: grpc.aio.Server, cygrpc: Any = None) -> _Internals | str:
    """The internals for SERVER, or what is missing (one line). CYGRPC: the module to look in (grpc's by default)."""
    if cygrpc is None:
        try:
            cygrpc = importlib.import_module("grpc._cython.cygrpc")
        except ImportError as exc:
            return f"grpc._cython.cygrpc cannot be imported: {exc}"
    missing = [name for name in ("_send_message", "RPCState", "WriteFlag", "AioServer") if not hasattr(cygrpc, name)]
    if missing:
        return f"grpc._cython.cygrpc has no {', '.join(missing)}"
    hint = getattr(cygrpc.WriteFlag, "buffer_hint", None)
    if hint is None or int(hint) != _GRPC_WRITE_BUFFER_HINT:
        return f"cygrpc.WriteFlag.buffer_hint is {hint!r}, not GRPC_WRITE_BUFFER_HINT ({_GRPC_WRITE_BUFFER_HINT})"
    core_server = getattr(server, "_server", None)
    if not isinstance(core_server, cygrpc.AioServer):
        return f"the grpc.aio server holds {type(core_server).__name__}, not cygrpc.AioServer"
    running = getattr(core_server, "is_running", None)
    if not callable(running) or running() is not True:
        return "AioServer.is_running() is not True for the started server"
    if not callable(cygrpc._send_message) or not isinstance(cygrpc.RPCState, type):
        return "cygrpc._send_message is not callable or cygrpc.RPCState is not a type"
    return _Internals(cygrpc._send_message, cygrpc.RPCState, int(hint), running)


class Tally:
    """Events sent with the buffer hint, over all of a server's streams (tests and the stress run read it)."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = 0


class HeldWriter:
    """Writes a batch with every event but the last held in core: the batch leaves in one write."""

    __slots__ = ("_context", "_state", "_internals", "_loop", "_started", "_tally")

    def __init__(
        self, context: grpc.aio.ServicerContext[Any, bytes], state: object, internals: _Internals, tally: Tally
    ) -> None:
        self._context = context
        self._state = state
        self._internals = internals
        self._loop = asyncio.get_running_loop()
        self._started = False  # the first event goes through context.write: it sends the response headers
        self._tally = tally

    def _may_send(self) -> bool:
        """RPCState.raise_for_termination's conditions, from Python (see the module docstring); stricter on stop."""
        return not self._context.done() and self._internals.server_running() is True

    async def write(self, events: list[bytes]) -> None:
        context = self._context
        first = 0
        if not self._started:
            await context.write(events[0])
            self._started = True
            first = 1
        last = len(events) - 1
        held = 0
        send = self._internals.send_message
        for index in range(first, last + 1):
            # No await between the check and the send: nothing else runs on
            # the loop in between, and the server stops only on this loop.
            if index == last or held == MAX_HELD or not self._may_send():
                await context.write(events[index])
                held = 0
            else:
                await send(self._state, events[index], None, self._internals.buffer_hint, self._loop)
                held += 1
                self._tally.held += 1


class CoreWrites:
    """The quarantined write path of one server: checked at start, then a writer per Chat stream."""

    __slots__ = ("_internals", "problem", "tally")

    def __init__(self, internals: _Internals | None, problem: str | None) -> None:
        self._internals = internals
        self.problem = problem  # why held writes are off (None: they are on)
        self.tally = Tally()

    @property
    def enabled(self) -> bool:
        return self._internals is not None

    @classmethod
    def off(cls, problem: str) -> CoreWrites:
        """Public writes only, because of PROBLEM."""
        return cls(None, problem)

    @classmethod
    async def start(cls, server: grpc.aio.Server) -> CoreWrites:
        """Check the internals against the started SERVER and a loopback call; WARNING and public writes if either fails."""
        found: _Internals | str | None
        try:
            found = find_internals(server)
            problem = found if isinstance(found, str) else await _self_test()
        except Exception as exc:  # whatever another grpcio does here, the server starts, with public writes
            found, problem = None, f"{type(exc).__name__}: {exc}"
        if problem is not None:
            log.warning(
                "limits.buffered_writes: grpcio %s fails the self-test (%s); Chat writes each event with context.write",
                grpc.__version__,
                problem,
            )
            return cls(None, problem)
        assert isinstance(found, _Internals)
        log.debug("limits.buffered_writes: held writes on (grpcio %s passed the self-test)", grpc.__version__)
        return cls(found, None)

    def writer(self, context: grpc.aio.ServicerContext[Any, bytes]) -> EventWriter:
        """A HeldWriter for this call, or a PublicWriter if held writes are off or its call state is not found."""
        if self._internals is None:
            return PublicWriter(context)
        state = _call_state(context, self._internals.call_state)
        if state is None:
            log.debug("no call state on %s: this stream writes each event with context.write", type(context).__name__)
            return PublicWriter(context)
        return HeldWriter(context, state, self._internals, self.tally)


def _call_state(context: object, call_state: type) -> object | None:
    for referent in gc.get_referents(context):
        if type(referent) is call_state:
            return referent
    return None


async def _self_test() -> str | None:
    """Serve one loopback call through a HeldWriter: every event must arrive, in order, with all but two held."""
    seen: dict[str, object] = {}
    server = grpc.aio.server()
    found: list[_Internals] = []

    async def probe(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        state = _call_state(context, found[0].call_state)
        if state is None:
            seen["problem"] = "no cygrpc.RPCState among the servicer context's referents"
            return
        tally = Tally()
        writer = HeldWriter(context, state, found[0], tally)
        await writer.write(_SELF_TEST_EVENTS[:1])  # the headers and a first event, as a stream's first batch
        await writer.write(_SELF_TEST_EVENTS[1:])
        seen["held"] = tally.held

    handler = grpc.method_handlers_generic_handler(
        "securechat.selftest.v1.CoreWrites", {"Probe": grpc.unary_stream_rpc_method_handler(probe)}
    )
    server.add_generic_rpc_handlers((handler,))
    try:
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        internals = find_internals(server)  # the probe server's own: the same grpcio, the same lookups
        if isinstance(internals, str):
            return internals
        found.append(internals)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            probe_call: Any = channel.unary_stream(_SELF_TEST_METHOD)
            call = probe_call(b"")
            received = await asyncio.wait_for(_read_all(call), SELF_TEST_SECONDS)
    except Exception as exc:  # any failure of the probe means: do not use the internals
        return f"the loopback call failed: {type(exc).__name__}: {exc}"
    finally:
        await server.stop(None)
    if "problem" in seen:
        return str(seen["problem"])
    if received != _SELF_TEST_EVENTS:
        return f"the loopback call got {len(received)} of {len(_SELF_TEST_EVENTS)} events or out of order"
    if seen.get("held") != len(_SELF_TEST_EVENTS) - 2:
        return f"the loopback call held {seen.get('held')} events, expected {len(_SELF_TEST_EVENTS) - 2}"
    return None


async def _read_all(call: Any) -> list[bytes]:
    return [message async for message in call]
