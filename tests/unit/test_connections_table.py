"""The kernel's table of connections to a port: sock_diag and /proc/self/net/tcp agree (server/connections.py)."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from securechat.server.connections import _proc_connections, _sock_diag_connections, tcp_connections

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="both sources are Linux's")


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_sock_diag_lists_the_same_connections_as_proc(family: int, host: str) -> None:
    """Accepted connections (with their inode) and queued ones (inode 0), the same from both sources."""
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((host, 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        clients = [socket.create_connection((host, port)) for _ in range(3)]
        accepted = [listener.accept()[0] for _ in range(2)]  # the third stays in the accept queue
        try:
            from_diag = _sock_diag_connections(port)
            assert from_diag is not None
            assert from_diag == _proc_connections(port)
            by_port = {remote[1]: inode for remote, inode in from_diag.items()}
            ours = [client.getsockname()[1] for client in clients]
            assert sorted(by_port) == sorted(ours)
            inodes = {conn.getpeername()[1]: os.fstat(conn.fileno()).st_ino for conn in accepted}
            for client_port in ours:
                assert by_port[client_port] == inodes.get(client_port, 0)
            assert {remote[0] for remote in from_diag} == {host}
        finally:
            for sock in clients + accepted:
                sock.close()


def test_a_port_without_connections_has_none() -> None:
    """A listening port nobody connected to: an empty table, not None."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        assert tcp_connections(listener.getsockname()[1]) == {}
