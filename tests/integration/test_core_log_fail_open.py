"""The core-log bridge fails open: a dead or stalled reader never blocks fd 2, and stderr comes back."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# A child process owns its fd 2: it installs the bridge, breaks the reader the
# way the case says, floods fd 2 from a thread as gRPC core's threads would
# (a write that finds the pipe full fails with EAGAIN instead of waiting), then
# writes a marker line that must reach the real stderr.
CHILD = textwrap.dedent(
    """
    import os, sys, threading, time
    from securechat.server.core_log import CoreLogBridge

    case = sys.argv[1]
    bridge = CoreLogBridge(stall_seconds=0.5, check_seconds=0.05)
    assert bridge.start()

    def kill_reader(reason):
        raise SystemExit  # not an Exception: the reader thread dies

    stalled = threading.Event()

    def stall_reader(reason):
        stalled.set()
        time.sleep(3600)

    if case == "killed":
        bridge.on_handshake_failure = kill_reader
    elif case == "stalled":
        bridge.on_handshake_failure = stall_reader
    handshake = b"I1125 07:18:00.517476   22954 ssl_transport_security.cc:2563] Handshake failed with error PEER_DID_NOT_RETURN_A_CERTIFICATE\\n"
    os.write(2, handshake)
    if case == "stalled":
        assert stalled.wait(10)  # the reader holds the handshake line; what follows stays in the pipe
    os.write(2, b"early line before the flood\\n")

    written = dropped = 0
    def flood():
        global written, dropped
        line = b"x" * 1023 + b"\\n"
        for _ in range(8192):  # 8 MiB: far more than the pipe holds
            try:
                written += os.write(2, line)
            except BlockingIOError:
                dropped += 1
    started = time.monotonic()
    writer = threading.Thread(target=flood)
    writer.start()
    writer.join(timeout=20)
    assert not writer.is_alive(), "a write to fd 2 blocked"
    deadline = time.monotonic() + 5
    while case != "healthy" and bridge.failed_open is None and time.monotonic() < deadline:
        time.sleep(0.05)
    for _ in range(200):  # a live reader may still be catching up with the flood
        try:
            os.write(2, b"MARKER after the flood\\n")
            break
        except BlockingIOError:
            time.sleep(0.05)
    print(f"failed_open={bridge.failed_open!r} dropped={dropped} flood_seconds={time.monotonic() - started:.1f}", flush=True)
    if case == "healthy":
        bridge.stop()
    os._exit(0)
    """
)


def run_child(case: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-c", CHILD, case], capture_output=True, timeout=60)


@pytest.mark.parametrize(
    ("case", "why"),
    [("killed", "its reader thread stopped"), ("stalled", "its reader drained nothing for 0.5 s")],
)
def test_a_broken_reader_never_blocks_fd2_and_stderr_comes_back(case: str, why: str) -> None:
    """Reader dead or stalled: the flood finishes, fd 2 is the real stderr again, the error is logged there."""
    done = run_child(case)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert f"failed_open={why!r}" in done.stdout.decode()
    err = done.stderr.decode(errors="replace")
    assert "MARKER after the flood" in err
    assert f"gRPC core's log bridge failed open ({why})" in err
    if case == "stalled":  # what the stalled reader left in the pipe was copied out, not lost
        assert "early line before the flood" in err


def test_a_healthy_reader_passes_a_flood_through(tmp_path) -> None:
    """The passing twin: a live reader drains the flood; nothing fails open and the marker passes through."""
    done = run_child("healthy")
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert "failed_open=None" in done.stdout.decode()
    err = done.stderr.decode(errors="replace")
    assert "early line before the flood" in err
    assert "MARKER after the flood" in err
    assert "failed open" not in err
