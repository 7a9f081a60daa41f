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
(a thread that logs into the pipe it drains could block on itself).

Only `securechat serve` installs it: it owns the process's stderr. A server
started in-process (tests, embedding) leaves core's lines as they are. What
is *not* known: the peer's address (core's line does not carry it).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from securechat.tls.failures import TlsFailure, from_core_log

log = logging.getLogger("securechat.server.tls")
core_log = logging.getLogger("grpc.core")

# Severity, date, time, thread id, source file:line, message (absl / gRPC core format).
_CORE_LINE = re.compile(r"([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ ([\w.-]+:\d+)\] (.*)")
_LEVELS = {"I": logging.DEBUG, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}


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
    """fd 2 through a pipe: gRPC core's lines into our logs, failed handshakes counted."""

    def __init__(self) -> None:
        self.on_handshake_failure: Callable[[str], None] | None = None
        self._original_fd: int | None = None
        self._previous_stderr: TextIO | None = None
        self._thread: threading.Thread | None = None

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
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._original_fd = original
        self._thread = threading.Thread(target=self._drain, args=(read_fd, original), name="grpc-core-log", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        """Put the original stderr back; the reader finishes what is in the pipe and ends."""
        if self._original_fd is None:
            return
        os.dup2(self._original_fd, 2)  # the pipe's last write end closes: the reader sees EOF
        if self._thread is not None:
            self._thread.join(timeout=2)
        stderr, sys.stderr = sys.stderr, self._previous_stderr or sys.__stderr__
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is stderr:
                handler.setStream(sys.stderr)
        stderr.close()
        if self._thread is None or not self._thread.is_alive():  # else it may still pass a line through
            os.close(self._original_fd)
        self._original_fd = None

    def _drain(self, read_fd: int, passthrough_fd: int) -> None:
        pending = b""
        try:
            while chunk := os.read(read_fd, 65536):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._handle(line, passthrough_fd)
            if pending:
                self._handle(pending, passthrough_fd)
        finally:
            os.close(read_fd)

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
