"""Raw HTTP/2 clients for connection floods (rapid reset, idle streams), shared by tests/hostile and benchmarks/floods.py.

Built on the `h2` library over a blocking socket (TLS with ALPN h2, or
plaintext): they send what gRPC clients never would, and ignore what the
server asks (MAX_CONCURRENT_STREAMS), so the server's own limits are what
is tested. Run them in a thread: they block.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

UNLIMITED = 2**31 - 1


def tls_context(certs: Path, identity: str | None = "alice") -> ssl.SSLContext:
    """A client TLS context trusting certs/ca.pem, with IDENTITY's certificate, offering only h2."""
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if identity is not None:
        context.load_cert_chain(str(certs / f"{identity}.pem"), str(certs / f"{identity}-key.pem"))
    context.set_alpn_protocols(["h2"])
    return context


def grpc_headers(path: str, *, tls: bool = True) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "https" if tls else "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]


@dataclass
class Outcome:
    streams: int = 0
    refused: int = 0  # RST_STREAM(REFUSED_STREAM) from the server
    closed_by_server: bool = False
    goaway: int | None = None
    seconds: float = 0.0


class RawH2:
    """One HTTP/2 connection that obeys none of the server's limits."""

    def __init__(self, port: int, *, context: ssl.SSLContext | None, host: str = "127.0.0.1") -> None:
        raw = socket.create_connection((host, port), timeout=10)
        self.tls = context is not None
        self.sock: socket.socket = context.wrap_socket(raw, server_hostname="localhost") if context is not None else raw
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config)
        self.h2.initiate_connection()
        self.outcome = Outcome()
        self._flush()
        self._read(wait=1.0)  # the server's SETTINGS
        self._ignore_stream_limit()

    def _ignore_stream_limit(self) -> None:
        settings = self.h2.remote_settings
        settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = UNLIMITED
        settings.acknowledge()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.settimeout(10)
            self.sock.sendall(data)

    def _read(self, *, wait: float = 0.0) -> None:
        """Handle whatever the server sent (waiting up to WAIT seconds for the first bytes)."""
        self.sock.settimeout(wait if wait > 0 else 0.0)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    self.outcome.closed_by_server = True
                    return
                self._handle(self.h2.receive_data(data))
                self._flush()
                self.sock.settimeout(0.0)
        except (BlockingIOError, ssl.SSLWantReadError, TimeoutError, socket.timeout):
            return
        except (ConnectionError, ssl.SSLError, OSError):
            self.outcome.closed_by_server = True
        except h2.exceptions.ProtocolError:
            self.outcome.closed_by_server = True

    def _handle(self, events: list[h2.events.Event]) -> None:
        for event in events:
            if isinstance(event, h2.events.StreamReset) and event.remote_reset and event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM:
                self.outcome.refused += 1
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.outcome.goaway = int(event.error_code) if event.error_code is not None else 0
                self.outcome.closed_by_server = True

    def rapid_reset(self, count: int, *, path: str = "/securechat.v1.ChatService/SayHello", per_second: float | None = None, batch: int = 50) -> Outcome:
        """HEADERS then RST_STREAM(CANCEL), COUNT times (at PER_SECOND if given), until the server closes the connection."""
        started = time.monotonic()
        try:
            while self.outcome.streams < count and not self.outcome.closed_by_server:
                for _ in range(min(batch, count - self.outcome.streams)):
                    stream_id = self.h2.get_next_available_stream_id()
                    self.h2.send_headers(stream_id, grpc_headers(path, tls=self.tls))
                    self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                    self.outcome.streams += 1
                self._flush()
                self._read()
                if per_second is not None:
                    ahead = started + self.outcome.streams / per_second - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
        except (ConnectionError, ssl.SSLError, OSError, h2.exceptions.ProtocolError):
            self.outcome.closed_by_server = True
        self._read(wait=0.5)
        self.outcome.seconds = time.monotonic() - started
        return self.outcome

    def idle_streams(self, count: int, *, path: str = "/grpc.health.v1.Health/Watch") -> Outcome:
        """Open COUNT streams with HEADERS and nothing more, then see how many the server refused."""
        started = time.monotonic()
        try:
            for _ in range(count):
                self.h2.send_headers(self.h2.get_next_available_stream_id(), grpc_headers(path, tls=self.tls))
                self.outcome.streams += 1
                if self.outcome.streams % 100 == 0:
                    self._flush()
                    self._read()
            self._flush()
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and self.outcome.refused < count and not self.outcome.closed_by_server:
                self._read(wait=0.2)
        except (ConnectionError, ssl.SSLError, OSError, h2.exceptions.ProtocolError):
            self.outcome.closed_by_server = True
        self.outcome.seconds = time.monotonic() - started
        return self.outcome

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def silent_connections(port: int, count: int, *, host: str = "127.0.0.1") -> list[socket.socket]:
    """COUNT TCP connections that never send a byte (no TLS ClientHello)."""
    sockets = []
    for _ in range(count):
        sockets.append(socket.create_connection((host, port), timeout=10))
    return sockets


def closed_by_server(sockets: list[socket.socket]) -> int:
    """How many of SOCKETS the server has closed (EOF or reset), without waiting."""
    closed = 0
    for sock in sockets:
        sock.settimeout(0.0)
        try:
            while data := sock.recv(4096):  # what the server said before closing (an HTTP 408, an alert)
                del data
            closed += 1
        except (BlockingIOError, socket.timeout):
            pass
        except OSError:
            closed += 1
    return closed
