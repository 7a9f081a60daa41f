"""gRPC core's log lines, read back from this process's stderr.

gRPC core (C++) writes its own lines straight to file descriptor 2, in its
own format, e.g.

    I1125 07:18:00.517476   22954 ssl_transport_security.cc:2563] Handshake
    failed with error SSL_ERROR_SSL: error:100000c0:SSL routines:
    OPENSSL_internal:PEER_DID_NOT_RETURN_A_CERTIFICATE: ...

(one line). That breaks a JSON log stream, and a refused TLS handshake is
never reported to Python at all: the server's code does not run for it.
`CoreLogBridge` puts a pipe on fd 2 and reads it in a thread. Core lines
become records of the `grpc.core` logger, in the server's log format; a
failed handshake is logged as one line saying why and what to do, and
counted by reason (`handshake_reason`, by `tls.failures`' taxonomy); anything else written to fd 2
passes through unchanged. Python's own `sys.stderr` is moved to a copy of
the original fd first, so the server's log lines never go through the pipe
(a thread that logs into the pipe it drains could block on itself). It fails
open (see `CoreLogBridge`): core's threads never block on the pipe.

Only `securechat serve` installs it: it owns the process's stderr. A server
started in-process (tests, embedding) leaves core's lines as they are. What
is *not* known: the peer's address (core's line does not carry it).
"""

from __future__ import annotations

import array
import contextlib
import faulthandler
import fcntl
import logging
import os
import re
import sys
import termios
import threading
import time
from collections.abc import Callable
from typing import TextIO

from securechat.tls.failures import TlsFailure, from_core_log

log = logging.getLogger("securechat.server.tls")
core_log = logging.getLogger("grpc.core")

# Severity, date, time, thread id, source file:line, message (absl / gRPC core format).
_CORE_LINE = re.compile(r"([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ ([\w.-]+:\d+)\] (.*)")
_LEVELS = {"I": logging.DEBUG, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
PIPE_BYTES = 1 << 20


def handshake_reason(message: str) -> tuple[str, str] | None:
    """(reason label, explanation) if MESSAGE is core's report of a failed handshake, else None.

    The reasons are `securechat.tls.failures.TlsFailure`, the one taxonomy the
    client and `doctor` use too; the label is its code, the explanation its
    server's view.
    """
    failure = from_core_log(message)
    if failure is None:
        return None
    if failure is TlsFailure.OTHER:
        return failure.code, f"gRPC said: {message}"
    return failure.code, failure.server_view


class CoreLogBridge:
    """fd 2 through a pipe: gRPC core's lines into our logs, failed handshakes counted.

    It fails open. gRPC core's threads write to fd 2 and must never block on
    a pipe nobody drains, so the pipe's write end is non-blocking (a line
    that does not fit is dropped, never waited for), and a watchdog thread
    puts the original stderr back on fd 2 if the reader dies or stops
    draining for `stall_seconds`: from then on core's lines go to stderr
    unchanged, and what was still in the pipe is copied there as it was.
    Python's faulthandler writes to the real stderr directly, so a crash
    report never depends on the reader.
    """

    def __init__(self, *, stall_seconds: float = 1.0, check_seconds: float = 0.2) -> None:
        self.on_handshake_failure: Callable[[str], None] | None = None
        self.failed_open: str | None = None
        """Why fd 2 went back to the original stderr while serving, or None."""
        self._stall_seconds = stall_seconds
        self._check_seconds = check_seconds
        self._original_fd: int | None = None
        self._read_fd: int | None = None
        self._previous_stderr: TextIO | None = None
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._stopping = threading.Event()
        self._swap = threading.Lock()  # fd 2 is changed by stop() or the watchdog, never both
        self._progress = 0  # bumped by the reader for every chunk and line it handles

    def start(self) -> bool:
        """Install the pipe on fd 2; False (and nothing changed) if fd 2 cannot be duplicated."""
        try:
            original = os.dup(2)
        except OSError:
            return False
        sys.stderr.flush()
        self._previous_stderr = sys.stderr
        sys.stderr = open(  # noqa: SIM115 - lives as long as the bridge; closed in stop()
            original, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False
        )
        faulthandler.enable(file=sys.stderr)  # a crash report goes to the real stderr, never into the pipe
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError, AttributeError):  # a bigger pipe rides out bursts (Linux only)
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        os.set_blocking(write_fd, False)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._original_fd = original
        self._read_fd = read_fd
        self._thread = threading.Thread(target=self._drain, args=(read_fd, original), name="grpc-core-log", daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(target=self._watch, name="grpc-core-log-watchdog", daemon=True)
        self._watchdog.start()
        return True

    def stop(self) -> None:
        """Put the original stderr back; the reader finishes what is in the pipe and ends."""
        if self._original_fd is None:
            return
        self._stopping.set()
        with self._swap:
            os.dup2(self._original_fd, 2)  # the pipe's last write end closes: the reader sees EOF
        if self._watchdog is not None:
            self._watchdog.join(timeout=2)
        if self._thread is not None:
            self._thread.join(timeout=2)
        stderr, sys.stderr = sys.stderr, self._previous_stderr or sys.__stderr__
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is stderr:
                handler.setStream(sys.stderr)
        if faulthandler.is_enabled() and sys.stderr is not None:
            faulthandler.enable(file=sys.stderr)
        stderr.close()
        if self._thread is None or not self._thread.is_alive():  # else it may still pass a line through
            os.close(self._original_fd)
        self._original_fd = None

    def _watch(self) -> None:
        seen, since = self._progress, time.monotonic()
        while not self._stopping.wait(self._check_seconds):
            reader = self._thread
            if reader is None or not reader.is_alive():
                self._fail_open("its reader thread stopped")
                return
            if self._progress != seen or not self._pending_bytes():
                seen, since = self._progress, time.monotonic()
            elif time.monotonic() - since >= self._stall_seconds:
                self._fail_open(f"its reader drained nothing for {self._stall_seconds:g} s")
                return

    def _pending_bytes(self) -> int:
        if self._read_fd is None:
            return 0
        try:
            buffer = array.array("i", [0])
            fcntl.ioctl(self._read_fd, termios.FIONREAD, buffer)
        except OSError:
            return 0
        return buffer[0]

    def _fail_open(self, why: str) -> None:
        with self._swap:
            if self._stopping.is_set() or self._original_fd is None:
                return
            os.dup2(self._original_fd, 2)
            self._copy_pending(self._original_fd)
        reader = self._thread
        if reader is None or not reader.is_alive():
            self._close_read_end()
        log.error("gRPC core's log bridge failed open (%s): core's lines now go to stderr unchanged", why)
        self.failed_open = why

    def _copy_pending(self, to_fd: int) -> None:
        """Move what a stalled reader left in the pipe to TO_FD unchanged (core's last lines may say why)."""
        read_fd = self._read_fd
        if read_fd is None:
            return
        with contextlib.suppress(OSError):
            os.set_blocking(read_fd, False)
            while chunk := os.read(read_fd, 65536):
                os.write(to_fd, chunk)

    def _drain(self, read_fd: int, passthrough_fd: int) -> None:
        # No try/finally: if this thread dies, the pipe stays open (writers
        # are not handed EPIPE) until the watchdog has copied out what is left.
        pending = b""
        while chunk := _read(read_fd):
            self._progress += 1
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self._handle(line, passthrough_fd)
                self._progress += 1
        if pending:
            self._handle(pending, passthrough_fd)
        self._close_read_end()

    def _close_read_end(self) -> None:
        with self._swap:
            if self._read_fd is not None:
                os.close(self._read_fd)
                self._read_fd = None

    def _handle(self, raw: bytes, passthrough_fd: int) -> None:
        try:
            text = raw.decode("utf-8", errors="backslashreplace")
            match = _CORE_LINE.fullmatch(text.rstrip("\r"))
            if match is None:
                os.write(passthrough_fd, raw + b"\n")  # not gRPC core's: pass it through as it was
                return
            severity, source, message = match.groups()
            failed = handshake_reason(message)
            if failed is None:
                core_log.log(_LEVELS[severity], "%s (%s)", message, source)
                return
            reason, explanation = failed
            log.info("TLS handshake refused: %s", explanation, extra={"code": reason})
            if self.on_handshake_failure is not None:
                self.on_handshake_failure(reason)
        except Exception:  # noqa: BLE001 - the reader must outlive any one bad line, or fd 2 blocks
            log.exception("could not handle a line of gRPC core's log")


def _read(fd: int) -> bytes:
    """One chunk from the pipe; b"" at its end, or once the watchdog has taken it over (non-blocking)."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""
