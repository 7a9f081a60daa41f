"""Loader, doctor and the server agree on every row of the chain table: one decision core, by construction.

For each row the leaf (with its intermediates) and trust anchors are written
as files and judged three ways: the config loader (`load_client_material` /
`load_server_material`, raising ConfigError with a code), `doctor`'s local
checks (findings with codes), and -- for rows about revocation, which the
loader does not decide -- the server's own per-call decision
(`ServerLifecycle.identify` + `refusal`) against doctor's revocation check.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from chain_table import BROKEN, GOOD, Chain, World
from chains import crl_pem, write_pair

from securechat.config import load_client_config, load_server_config
from securechat.doctor import run_checks
from securechat.errors import ConfigError
from securechat.server.lifecycle import ServerLifecycle
from securechat.tls.checks import Purpose
from securechat.tls.identity import PeerRejected
from securechat.tls.material import load_client_material, load_server_material

LOCAL_CHECKS = ("key matches certificate", "chain", "extended key usage", "validity")


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.fixture(scope="module")
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write(row: Chain, directory: Path, closed_port: int) -> Path:
    directory.mkdir()
    (directory / "ca.pem").write_bytes(b"".join(a.pem for a in row.anchors))
    write_pair(directory, "leaf", row.leaf, *row.intermediates)
    if row.purpose is Purpose.CLIENT:
        (directory / "leaf.yaml").write_text(
            f"target: localhost:{closed_port}\ntls:\n  ca: ca.pem\n  cert: leaf.pem\n  key: leaf-key.pem\n"
        )
    else:
        (directory / "leaf.yaml").write_text(
            "listen: 127.0.0.1:0\ntls:\n  cert: leaf.pem\n  key: leaf-key.pem\n  client_ca: ca.pem\n"
        )
    return directory / "leaf.yaml"


def _loader_code(path: Path, purpose: Purpose) -> str | None:
    try:
        if purpose is Purpose.CLIENT:
            load_client_material(load_client_config(path))
        else:
            load_server_material(load_server_config(path))
    except ConfigError as exc:
        assert exc.code is not None, str(exc)
        return exc.code
    return None


def _doctor_codes(path: Path) -> set[str]:
    return {f.code for f in run_checks(path, timeout=1.0) if not f.ok and f.check in LOCAL_CHECKS}


ROWS = {
    **{name: (make, None) for name, make in GOOD.items()},
    **{name: (make, code) for name, (make, code, _, _) in BROKEN.items()},
}
CHAIN_ROWS = {
    name: row
    for name, row in ROWS.items()
    if "revoked" not in name and "CRL" not in name and "name dialled" not in name and "IP dialled" not in name
}


@pytest.mark.parametrize("name", list(CHAIN_ROWS))
def test_loader_and_doctor_agree(world, tmp_path, closed_port, name):
    """The loader's verdict (its code, or none) is doctor's verdict, for chains of length 1, 2 and 3 and every broken one."""
    make, expected = CHAIN_ROWS[name]
    row = make(world)
    path = _write(row, tmp_path / "row", closed_port)
    loader = _loader_code(path, row.purpose)
    doctor = _doctor_codes(path)
    assert loader == (expected.value if expected is not None else None)
    if loader is None:
        assert doctor == set(), doctor
    else:
        assert loader in doctor, (loader, doctor)


REVOCATION_ROWS = {
    name: row for name, row in ROWS.items() if row[0] is not None and ("revoked" in name or "CRL" in name)
}


@pytest.mark.parametrize("name", list(REVOCATION_ROWS))
def test_server_and_doctor_agree_on_revocation(world, tmp_path, closed_port, name):
    """Revocation rows: the server refuses a caller exactly when doctor says its chain is revoked."""
    make, expected = REVOCATION_ROWS[name]
    row = make(world)
    path = _write(row, tmp_path / "row", closed_port)
    (path.parent / "crl.pem").write_bytes(crl_pem(*row.crls))
    doctor_revoked = any(
        f.check == "revocation" and not f.ok and f.code == "revoked" for f in run_checks(path, timeout=1.0)
    )
    # The server side: a server trusting the same anchors, with the same CRL file, asked about this peer.
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    (server_dir / "ca.pem").write_bytes((path.parent / "ca.pem").read_bytes())
    (server_dir / "crl.pem").write_bytes((path.parent / "crl.pem").read_bytes())
    srv = GOOD["server certificate"](world)
    write_pair(server_dir, "server", srv.leaf, *srv.intermediates)
    (server_dir / "server.yaml").write_text(
        "listen: 127.0.0.1:0\ntls:\n  cert: server.pem\n  key: server-key.pem\n  client_ca: ca.pem\n"
    )
    config = load_server_config(server_dir / "server.yaml")
    lifecycle = ServerLifecycle(config, load_server_material(config))
    try:
        peer = lifecycle.identify(row.leaf.pem, b"".join(c.pem for c in row.intermediates) or None)
        server_refuses = lifecycle.refusal(peer, "/securechat.v1.ChatService/SayHello") is not None
    except PeerRejected:
        server_refuses = True
    assert server_refuses == doctor_revoked == (expected is not None)
