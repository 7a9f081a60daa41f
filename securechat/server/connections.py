"""Who is connected to a gRPC port, and closing the connections that abuse it.

gRPC Python has no connection hook: core accepts, handshakes and serves
connections without telling the application. `ConnectionGuard` looks from
outside, every POLL_SECONDS, on Linux:

- the kernel's table of TCP connections (netlink's sock_diag, else
  /proc/self/net/tcp and tcp6) has every connection to the port, those
  still in their TLS handshake included;
- gRPC core's channelz has those that completed it (one socket per HTTP/2
  transport), with counters of the streams each one started and failed.

What it does with them:

- Connections that have not completed the handshake are allowed
  `limits.max_handshakes` at once; beyond that the oldest are closed (never
  one younger than HANDSHAKE_GRACE_SECONDS: a client's handshake takes a few
  ms). gRPC core closes any handshake still unfinished after
  `limits.handshake_timeout_seconds`, and its cap on accepted connections is
  `max_connections + max_handshakes`: silent or stalled connections do not
  take the places meant for clients that completed TLS.
- A connection whose client reset (cancelled) more than
  `limits.max_resets_per_second` x RESET_WINDOW_SECONDS streams within the
  last RESET_WINDOW_SECONDS is closed: the HTTP/2 "rapid reset" attack
  (CVE-2023-44487). gRPC core already bounds the streams such a client holds
  (`max_concurrent_streams`, counted until the server has released them);
  closing it makes the client pay a new TLS handshake with its certificate,
  and logs who it was. Each connection's counters are read only while the
  server-wide count of failed calls is high, and that count, which core
  sums over every connection, is read at most at 1% of a core's time
  (`GATE_CPU_SHARE`; at least every `GATE_MAX_SECONDS`).
- Every closing is logged at WARNING with the peer and the numbers, and
  counted in `securechat_connections_closed_total{reason}`.

Closing is shutdown(2) on a duplicate of core's file descriptor for that
connection (found through /proc/self/fd and checked by inode): core sees
the peer go away and releases the connection as usual; the descriptor stays
core's to close.

What is *not* done: on platforms other than Linux only core's deadline, cap
and stream limit apply (the guard logs once that it is off). There are no
per-source-address limits: behind NAT they punish innocent neighbours, and a
firewall does them better.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from google.protobuf import json_format
from grpc_channelz.v1 import channelz, channelz_pb2  # type: ignore[import-untyped]  # ships no type stubs

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
RESET_WINDOW_SECONDS = 10.0
GATE_CPU_SHARE = 0.01
"""The reset gate's own CPU, as a share of one core, at most: channelz's GetServer costs 42 ms with 1,000 connections."""
GATE_MAX_SECONDS = RESET_WINDOW_SECONDS / 2
"""... but the gate is read at least this often, whatever it costs."""
HANDSHAKE_GRACE_SECONDS = 1.0
SCAN_MAX_SOCKETS = 2000
"""Sockets whose stream counters are read per poll while resets are high (each read is ~0.2 ms)."""
WARN_EVERY_SECONDS = 10.0

Remote = tuple[str, int]
"""A peer as (IP address text, port); IPv4-mapped IPv6 addresses are written as IPv4."""
OnClose = Callable[[str], None]
RefusedCalls = Callable[[], int]
"""How many calls the server has ended itself with an error status so far (refusals: not client resets)."""


class _Answer:
    """Where grpcio-channelz's servicer puts a NOT_FOUND when it is called in-process, not over the wire."""

    def __init__(self) -> None:
        self.code: object = None

    def set_code(self, code: object) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        pass


def _query(method: str, request: object) -> dict[str, Any]:
    """Ask gRPC core's channelz through grpcio-channelz's public servicer, in-process; {} if not found.

    The answer is the channelz message as a dict in its JSON field names
    (`socketRef`, `streamsFailed`, ...), as core itself writes it.
    """
    answer = _Answer()
    response = getattr(channelz.ChannelzServicer, method)(request, answer)
    if answer.code is not None or response is None:
        return {}
    return json_format.MessageToDict(response)


def channelz_server_ids() -> set[int]:
    """The channelz ids of every gRPC server in this process."""
    ids: set[int] = set()
    start = 0
    while True:
        page = _query("GetServers", channelz_pb2.GetServersRequest(start_server_id=start))
        for server in page.get("server", []):
            ids.add(int(server["ref"]["serverId"]))
        if page.get("end", True) or not page.get("server"):
            return ids
        start = max(ids) + 1


def tcp_connections(port: int) -> dict[Remote, int] | None:
    """Established TCP connections to local PORT: remote -> socket inode; None where the kernel cannot say.

    An inode of 0 is a connection still in the kernel's accept queue: gRPC
    has not accepted it yet, so it holds none of gRPC's places. Asked through
    netlink's sock_diag (established sockets only), else read from
    /proc/self/net/tcp and tcp6.
    """
    found = _sock_diag_connections(port)
    return found if found is not None else _proc_connections(port)


# sock_diag(7): one SOCK_DIAG_BY_FAMILY dump per address family, established TCP sockets only.
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLMSG_HEADER = struct.Struct("=IHHII")
_INET_DIAG_REQ_V2 = struct.Struct("=BBBBI48x")  # family, protocol, ext, pad, states, inet_diag_sockid (zero)
_TCP_ESTABLISHED_MASK = 1 << 1  # TCP_ESTABLISHED is 1 in the kernel's state numbering
_DIAG_MSG_BYTES = 72  # struct inet_diag_msg


def _sock_diag_connections(port: int) -> dict[Remote, int] | None:
    """Established TCP connections to local PORT from the kernel's sock_diag; None if netlink is not available.

    Unlike /proc/self/net/tcp, whose text the kernel writes for every socket
    of the namespace (TIME_WAIT ones included: tens of thousands after a
    burst of short connections, ~20 ms a read), the kernel only hands back
    established sockets here, in binary.
    """
    found: dict[Remote, int] = {}
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as sock:
            sock.settimeout(2.0)
            for family in (socket.AF_INET, socket.AF_INET6):
                request = _INET_DIAG_REQ_V2.pack(family, socket.IPPROTO_TCP, 0, 0, _TCP_ESTABLISHED_MASK)
                sock.send(
                    _NLMSG_HEADER.pack(
                        _NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, family, 0
                    )
                    + request
                )
                if not _read_dump(sock, family, port, found):
                    return None
    except (OSError, AttributeError, ValueError, struct.error):  # no AF_NETLINK (not Linux), refused, or truncated
        return None
    return found


def _read_dump(sock: socket.socket, family: int, port: int, found: dict[Remote, int]) -> bool:
    """Read one dump's messages into FOUND; False on a netlink error."""
    address_bytes = 4 if family == socket.AF_INET else 16
    while True:
        data = sock.recv(1 << 16)
        offset = 0
        while offset + _NLMSG_HEADER.size <= len(data):
            length, kind, _, _, _ = _NLMSG_HEADER.unpack_from(data, offset)
            if length < _NLMSG_HEADER.size:
                return False
            if kind == _NLMSG_DONE:
                return True
            if kind == _NLMSG_ERROR:
                return False
            body = offset + _NLMSG_HEADER.size
            if kind == _SOCK_DIAG_BY_FAMILY and length - _NLMSG_HEADER.size >= _DIAG_MSG_BYTES:
                local_port, remote_port = struct.unpack_from(">HH", data, body + 4)
                if local_port == port:
                    remote = data[body + 24 : body + 24 + address_bytes]
                    (inode,) = struct.unpack_from("=I", data, body + 68)
                    found[(_ip_text(remote), remote_port)] = inode
            offset += (length + 3) & ~3  # NLMSG_ALIGN


def _proc_connections(port: int) -> dict[Remote, int] | None:
    """tcp_connections from /proc/self/net/tcp and tcp6; None where /proc is missing."""
    found: dict[Remote, int] = {}
    suffix = f":{port:04X}"
    seen_table = False
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/self/net/{table}", encoding="ascii") as lines:
                seen_table = True
                next(lines, None)
                for line in lines:
                    fields = line.split()
                    # sl local remote state ... inode (/proc/net/tcp, see proc(5))
                    if len(fields) < 10 or fields[3] != "01" or not fields[1].endswith(suffix):
                        continue
                    address, _, port_hex = fields[2].partition(":")
                    found[(_proc_ip(address), int(port_hex, 16))] = int(fields[9])
        except OSError:
            continue
    return found if seen_table else None


def _proc_ip(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # /proc writes each 32-bit word in host order (little-endian on every Linux we run on).
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)) if sys.byteorder == "little" else raw
    return _ip_text(words)


def _ip_text(packed: bytes) -> str:
    address = ipaddress.ip_address(packed)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def parse_peer(peer: str) -> Remote | None:
    """('127.0.0.1', 5000) from gRPC's 'ipv4:127.0.0.1:5000' or 'ipv6:%5B::1%5D:5000'; None for others."""
    peer = unquote(peer.removeprefix("chttp2 "))
    kind, _, rest = peer.partition(":")
    host, _, port = rest.rpartition(":")
    if kind not in ("ipv4", "ipv6") or not port.isdigit():
        return None
    try:
        return _ip_text(ipaddress.ip_address(host.strip("[]")).packed), int(port)
    except ValueError:
        return None


def socket_fds(inodes: set[int]) -> dict[int, int]:
    """This process's file descriptors for the sockets with these INODES: inode -> fd."""
    found: dict[int, int] = {}
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for name in names:
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:[") and (inode := int(target[8:-1])) in inodes:
            found[inode] = int(name)
    return found


def shut_down(fd: int, inode: int) -> bool:
    """shutdown(2) the socket at FD if it still is socket INODE; the descriptor itself stays open."""
    try:
        duplicate = os.dup(fd)
    except OSError:
        return False
    try:
        if os.fstat(duplicate).st_ino != inode:  # the number was reused meanwhile
            return False
        with socket.socket(fileno=duplicate) as sock:  # closes only the duplicate
            duplicate = -1
            sock.shutdown(socket.SHUT_RDWR)
        return True
    except OSError:
        return False
    finally:
        if duplicate >= 0:
            os.close(duplicate)


@dataclass
class _Socket:
    """What the guard remembers about one connection that completed its handshake."""

    remote: Remote
    failed: deque[tuple[float, int]] = field(default_factory=deque)  # (when, streams failed so far)


@dataclass(frozen=True)
class GuardLimits:
    max_handshakes: int
    handshake_timeout_seconds: float
    max_resets_per_second: int
    cap: int
    """gRPC core's cap on accepted connections (grpc.max_allowed_incoming_connections)."""


class ConnectionGuard:
    """Polls one gRPC server's port; closes connections stuck in the handshake or resetting streams."""

    def __init__(
        self,
        *,
        name: str,
        port: int,
        server_id: int | None,
        limits: GuardLimits,
        on_close: OnClose | None = None,
        refused_calls: RefusedCalls | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self._server_id = server_id
        self._limits = limits
        self._on_close = on_close
        self._refused_calls = refused_calls
        self._first_seen: dict[Remote, float] = {}  # connections not through TLS yet
        self._sockets: dict[int, _Socket] = {}  # channelz socket id -> what we know
        self._server_failed: deque[tuple[float, int]] = deque()
        self._gate_high = False
        self._gate_next = float("-inf")
        self.gate_reads = 0
        """Times the reset gate asked channelz for the server-wide count of failed calls."""
        self._scan_from = 0
        self._previous_ids: set[int] = set()
        self._warned: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.handshaking = 0
        self.established = 0
        self.closed: dict[str, int] = {"handshake": 0, "resets": 0}
        self.scans = 0
        """Polls that read every connection's stream counters (the server-wide count of failed calls was high)."""

    @property
    def reset_limit(self) -> int:
        return int(self._limits.max_resets_per_second * RESET_WINDOW_SECONDS)

    def start(self) -> None:
        """Self-test, then poll. What it needs (the kernel's table, our server in channelz) must be there, or it stays off."""
        if tcp_connections(self.port) is None:
            log.info(
                "%s: no /proc/self/net/tcp here; only gRPC's handshake deadline and connection cap apply", self.name
            )
            return
        if self._server_id is None or self._server_id not in channelz_server_ids():
            log.warning(
                "%s: connection guard off: gRPC's channelz does not list this server (channelz disabled?);"
                " only gRPC's handshake deadline and connection cap apply",
                self.name,
            )
            return
        self._task = asyncio.create_task(self._run(), name=f"securechat-connections-{self.port}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                await asyncio.to_thread(self.poll)
            except Exception:  # a poll must never stop polling
                log.exception("%s: checking connections failed; will retry", self.name)

    # -- one poll (in a worker thread: /proc and channelz are plain reads) ----

    def poll(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        kernel = tcp_connections(self.port) or {}
        listed = self._listed_sockets()
        through_tls = {remote for remote in listed.values()}
        accepted = {remote: inode for remote, inode in kernel.items() if inode}
        pending = {remote: inode for remote, inode in accepted.items() if remote not in through_tls}
        self._first_seen = {remote: self._first_seen.get(remote, now) for remote in pending}
        self.handshaking, self.established = len(pending), len(accepted) - len(pending)
        self._close_stalled_handshakes(pending, now)
        self._close_resetting(listed, accepted, now)
        if len(accepted) >= self._limits.cap:
            self._warn(
                "cap",
                now,
                "%s: connection cap reached: %d connections (limits.max_connections + max_handshakes = %d), %d of them"
                " still in the TLS handshake; new connections are refused until some close",
                self.name,
                len(accepted),
                self._limits.cap,
                len(pending),
            )

    def _listed_sockets(self) -> dict[int, Remote]:
        """channelz: socket id -> remote of each connection past its handshake."""
        if self._server_id is None:
            return {}
        listed: dict[int, Remote] = {}
        start = 0
        while True:
            page = _query(
                "GetServerSockets",
                channelz_pb2.GetServerSocketsRequest(
                    server_id=self._server_id, start_socket_id=start, max_results=100_000
                ),
            )
            refs = page.get("socketRef", [])
            for ref in refs:
                remote = parse_peer(ref.get("name", ""))
                if remote is not None:
                    listed[int(ref["socketId"])] = remote
            if page.get("end", True) or not refs:
                break
            start = max(int(ref["socketId"]) for ref in refs) + 1
        for gone in self._sockets.keys() - listed.keys():
            del self._sockets[gone]
        return listed

    def _close_stalled_handshakes(self, pending: dict[Remote, int], now: float) -> None:
        excess = len(pending) - self._limits.max_handshakes
        if excess <= 0:
            return
        old = sorted(
            (seen, remote) for remote, seen in self._first_seen.items() if now - seen >= HANDSHAKE_GRACE_SECONDS
        )
        victims = {remote: pending[remote] for _, remote in old[:excess]}
        closed = self._close(victims, "handshake")
        self._warn(
            "handshake",
            now,
            "%s: %d connections have not completed the TLS handshake (limits.max_handshakes %d): closed the %d"
            " oldest; gRPC closes any handshake unfinished after %.1f s (limits.handshake_timeout_seconds). A client"
            " opening connections without speaking TLS is probably flooding the port; %d connections completed TLS.",
            self.name,
            len(pending),
            self._limits.max_handshakes,
            closed,
            self._limits.handshake_timeout_seconds,
            self.established,
        )

    def _close_resetting(self, listed: dict[int, Remote], accepted: dict[Remote, int], now: float) -> None:
        previous, self._previous_ids = self._previous_ids, set(listed)
        if self._server_id is None or not self._resets_high(now):
            self._sockets.clear()  # quiet again: start counting afresh next time
            return
        self.scans += 1
        ids = sorted(listed)
        if len(ids) > SCAN_MAX_SOCKETS:  # round-robin: every socket is read within a few polls
            start = next((i for i, sid in enumerate(ids) if sid >= self._scan_from), 0)
            ids = (ids[start:] + ids[:start])[:SCAN_MAX_SOCKETS]
            self._scan_from = ids[-1] + 1
        abusive: dict[Remote, tuple[int, int]] = {}
        for socket_id in ids:
            try:
                data = _query("GetSocket", channelz_pb2.GetSocketRequest(socket_id=socket_id))["socket"]["data"]
            except (ValueError, KeyError):
                continue  # closed meanwhile
            failed = int(data.get("streamsFailed", 0))
            known = self._sockets.get(socket_id)
            if known is None:
                known = self._sockets[socket_id] = _Socket(listed[socket_id])
                # Unknown until now: a connection new since the last poll is counted from its start.
                known.failed.append((now, failed if socket_id in previous else 0))
            known.failed.append((now, failed))
            while len(known.failed) > 2 and now - known.failed[1][0] >= RESET_WINDOW_SECONDS:
                known.failed.popleft()
            resets = failed - known.failed[0][1]
            if resets > self.reset_limit and known.remote in accepted:
                abusive[known.remote] = (resets, int(data.get("streamsStarted", 0)))
        for remote, (resets, started) in abusive.items():
            log.warning(
                "%s: closed the connection of %s:%d: its client reset %d streams within %.0f s (limits.max_resets_per_second"
                " %d allows %d; %d streams started on it): an HTTP/2 rapid-reset flood",
                self.name,
                *remote,
                resets,
                RESET_WINDOW_SECONDS,
                self._limits.max_resets_per_second,
                self.reset_limit,
                started,
            )
        self._close({remote: accepted[remote] for remote in abusive}, "resets")

    def _resets_high(self, now: float) -> bool:
        """Whether the whole server failed more calls in the window than one connection may reset (one read).

        Calls the server refused itself (`refused_calls`: a reconnect storm's
        10,000 OUT_OF_RANGE resumes, say) are failed calls to channelz too,
        but no client reset them: they are taken off, so that a storm of
        refusals does not set off a read of every socket every second.

        The read is not cheap with many connections (core sums every
        connection's counters: 0.8 ms with 10, 42 ms with 1,000, measured), so
        it is paced to GATE_CPU_SHARE of a core: after a read that took C
        seconds of CPU the next is due C / GATE_CPU_SHARE later (at least
        POLL_SECONDS, at most GATE_MAX_SECONDS), and polls in between keep its
        last answer. A flood then starts a scan within GATE_MAX_SECONDS.
        """
        if now < self._gate_next:
            return self._gate_high
        started = time.thread_time()
        self._gate_high = self._read_gate(now)
        cost = time.thread_time() - started
        wait = min(GATE_MAX_SECONDS, max(POLL_SECONDS, cost / GATE_CPU_SHARE))
        self._gate_next = now + wait - POLL_SECONDS / 2  # the first poll after WAIT (polls are POLL_SECONDS apart)
        self.gate_reads += 1
        return self._gate_high

    def _read_gate(self, now: float) -> bool:
        assert self._server_id is not None
        try:
            data = _query("GetServer", channelz_pb2.GetServerRequest(server_id=self._server_id))["server"]["data"]
        except (ValueError, KeyError):
            return False
        failed = int(data.get("callsFailed", 0))
        if self._refused_calls is not None:
            failed -= self._refused_calls()
        history = self._server_failed
        history.append((now, failed))
        while len(history) > 2 and now - history[1][0] >= RESET_WINDOW_SECONDS:
            history.popleft()
        return failed - history[0][1] > self.reset_limit

    def _close(self, victims: dict[Remote, int], reason: str) -> int:
        if not victims:
            return 0
        fds = socket_fds(set(victims.values()))
        closed = sum(shut_down(fds[inode], inode) for inode in victims.values() if inode in fds)
        self.closed[reason] += closed
        if self._on_close is not None:
            for _ in range(closed):
                self._on_close(reason)
        return closed

    def _warn(self, key: str, now: float, message: str, *args: object) -> None:
        if now - self._warned.get(key, -WARN_EVERY_SECONDS) >= WARN_EVERY_SECONDS:
            self._warned[key] = now
            log.warning(message, *args)
