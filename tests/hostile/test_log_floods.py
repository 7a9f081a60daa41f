"""A client repeating a refused call cannot flood the server's log: each kind of line is capped a second.

`log.repeats_per_second` (default 20): beyond it, a kind of line (a logger
and its format string) is counted, and one line per second sums up how many
were left out. The filter alone with a real logger, then `securechat serve`
with a client opening hundreds of refused streams; each beside its twin.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections.abc import Iterator

import grpc
import pytest
from serve_process import ServeProcess

from securechat._gen import chat_pb2
from securechat.client import open_channel
from securechat.logs import TEXT_FORMAT, RepeatLimit

REFUSED = 300
LINE = re.compile(
    r"securechat\.server\.admission: refused a chat stream of alice: RESOURCE_EXHAUSTED \(max_streams_per_identity 1\)$"
)
SUMMARY = re.compile(
    r"(\d+) more lines like this in the last 1 s were not logged \(log.repeats_per_second 20\); "
    r"the last: refused a chat stream of alice: RESOURCE_EXHAUSTED \(max_streams_per_identity 1\)$"
)


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A real logger whose one handler writes to a buffer through a RepeatLimit of 5 lines per 0.3 s."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RepeatLimit(5, seconds=0.3))
    logger = logging.getLogger("securechat.test.floods")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def wait_for_lines(out: io.StringIO, count: int) -> list[str]:
    deadline = time.monotonic() + 5
    while len(lines := out.getvalue().splitlines()) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return lines


def test_beyond_the_cap_a_kind_of_line_is_summed_up_once_its_second_is_over(logger):
    """50 lines of one kind in a window of 0.3 s: the first 5, then one line naming the other 45 and the last."""
    log, out = logger
    for n in range(50):
        log.warning("refused stream %d of %s", n, "alice")
    lines = wait_for_lines(out, 6)
    assert [line.split(": ", 1)[1] for line in lines[:5]] == [f"refused stream {n} of alice" for n in range(5)]
    assert lines[5].endswith(
        "WARNING securechat.test.floods: 45 more lines like this in the last 0.3 s were not logged"
        " (log.repeats_per_second 5); the last: refused stream 49 of alice"
    )
    time.sleep(0.4)
    assert len(out.getvalue().splitlines()) == 6


def test_within_the_cap_every_line_is_logged_and_nothing_is_summed_up(logger):
    """The twin: 5 lines of a kind, and 5 of another, and errors beyond any cap: all written, no summary."""
    log, out = logger
    for n in range(5):
        log.info("stream %d opened", n)
        log.info("stream %d ended", n)
    for n in range(8):
        log.error("broken %d", n)
    time.sleep(0.5)
    lines = out.getvalue().splitlines()
    assert len(lines) == 18 and not any("more lines like this" in line for line in lines)


async def refuse_streams(port: int, deployment) -> list[grpc.StatusCode]:
    """Hold alice's one allowed stream open, then open REFUSED more; return the status each ended with."""
    async with open_channel(deployment.client("alice", port)) as channel:
        held = channel.stub.Chat()
        await held.write(chat_pb2.ChatMessage(room="r"))
        await asyncio.wait_for(held.read(), 10)
        codes = []
        for _ in range(REFUSED):
            call = channel.stub.Chat()
            codes.append(await asyncio.wait_for(call.code(), 10))
        held.cancel()
    return codes


@pytest.mark.parametrize(("repeats", "capped"), [(None, True), (0, False)], ids=["default cap", "repeats 0"])
async def test_a_client_repeating_a_refused_call_writes_a_bounded_log(deployment, repeats, capped):
    """300 refused streams in a few seconds: at most 20 lines a second plus one summary a second (the last
    at exit), which add up to all 300; with `log: {repeats_per_second: 0}` (the twin) all 300 lines."""
    log = {} if repeats is None else {"log": {"repeats_per_second": repeats}}
    deployment.server_yaml(limits={"max_streams_per_identity": 1}, **log)
    server = ServeProcess(deployment.root)
    try:
        started = time.monotonic()
        codes = await refuse_streams(server.port, deployment)
        seconds = time.monotonic() - started
        assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    finally:  # at once: the last second's summary is written at exit, before its timer would fire
        server.stop()
    logged = [line for line in server.lines if LINE.search(line)]
    left_out = [int(m.group(1)) for line in server.lines if (m := SUMMARY.search(line))]
    if capped:
        assert len(logged) <= 20 * (int(seconds) + 2), (len(logged), seconds)
        assert left_out and len(logged) + sum(left_out) == REFUSED, (len(logged), left_out)
    else:
        assert (len(logged), left_out) == (REFUSED, [])
