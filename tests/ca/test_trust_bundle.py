"""Trust anchors follow the CA's TrustBundle (tls.renew.trust_bundle), safely, beside their failing twins.

During a root rollover the CA serves the current root and the next
(certs/root-next.pem); a renewing client writes both into its own tls.ca.
What keeps it safe: the bundle only comes over a connection verified with the
anchors already trusted (an impostor CA is refused, nothing written), it must
be CA certificates (the core's check_anchors), and an anchor that still signs
the chain in use is never dropped.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path

import pytest

from securechat import pki
from securechat.ca.client import CaError
from securechat.ca.renewal import Renewer, trust_to_write
from securechat.config.ca import parse_address_text
from securechat.config.renew import RenewConfig
from securechat.errors import PkiError
from securechat.tls import checks
from tests.ca.conftest import CaEnv, StartCa, make_ca_env
from tests.ca.processes import Proc, start_ca_process, write_yaml


def _next_root(tmp_path: Path) -> Path:
    """A second, unrelated root: the one a rollover moves to."""
    store = pki.CertStore(tmp_path / "next")
    store.init_hierarchy()
    return store.root_cert_path


def _client_dir(env: CaEnv, tmp_path: Path, name: str, *, seconds: int) -> Path:
    """NAME's files in their own directory (as on another machine), with a copy of root.pem as tls.ca."""
    directory = tmp_path / name
    directory.mkdir()
    now = pki.utc_now()
    leaf = pki.issue_client_cert(
        env.ca, name, not_before=now - dt.timedelta(seconds=seconds), not_after=now + dt.timedelta(seconds=seconds)
    )
    env.store.write_leaves([leaf], force=True)  # recorded in index.json, which the CA imports
    for path in (env.store.cert_path(name), env.store.key_path(name), env.store.root_cert_path):
        shutil.copy(path, directory / path.name)
    return directory


def test_a_renewing_client_takes_the_next_root_during_a_rollover(ca_env: CaEnv, tmp_path: Path) -> None:
    """The agent renews alice (10 s certificates): unchanged trust file before the rollover, both roots after."""
    ca_env.ca_yaml(lifetimes={"client": "10s"}, testing_short_lifetimes=True)
    alice = _client_dir(ca_env, tmp_path, "alice", seconds=20)  # half gone: due at once
    ca, port = start_ca_process(ca_env)
    config = write_yaml(
        alice / "alice.yaml",
        {"target": "localhost:1", "tls": {"ca": "root.pem", "cert": "alice.pem", "key": "alice-key.pem", "renew": {"ca": f"localhost:{port}", "retry_max_seconds": 1}}},
    )
    agent = Proc(alice, "agent", "--config", str(config), "--exec", "true")
    try:
        agent.wait_for(r"renewed alice: serial")
        assert (alice / "root.pem").read_bytes() == ca_env.trust_pem  # twin: no rollover, nothing written
        assert agent.count("trust anchors in") == 0
        next_root = _next_root(tmp_path)
        shutil.copy(next_root, ca_env.store.directory / "root-next.pem")
        line = agent.wait_for(r"trust anchors in \S*root\.pem updated from the CA's trust bundle: 2 now; added (.*)$", timeout=30)
        assert line.group(1) == checks.describe(pki.load_certificate(next_root))
        assert pki.load_certificates(alice / "root.pem") == [
            *pki.load_certificates(ca_env.store.root_cert_path),
            *pki.load_certificates(next_root),
        ]
    finally:
        agent.stop()
        ca.stop()


def test_an_anchor_that_still_signs_the_chain_in_use_is_kept(ca_env: CaEnv, tmp_path: Path) -> None:
    """A bundle with only the next root: the current root stays while it signs alice's chain; twin: dropped once not."""
    old_root = pki.load_certificate(ca_env.store.root_cert_path)
    other = make_ca_env(tmp_path / "other")
    new_root = pki.load_certificate(other.store.root_cert_path)
    alice = pki.issue_client_cert(ca_env.ca, "alice")
    chain = [alice.cert, *ca_env.ca.leaf_chain]
    wanted, kept = trust_to_write([new_root], [old_root], chain)
    assert (wanted, kept) == ([new_root, old_root], [old_root])
    moved = pki.issue_client_cert(other.ca, "alice")  # alice renewed under the new root
    wanted, kept = trust_to_write([new_root], [old_root], [moved.cert, *other.ca.leaf_chain])
    assert (wanted, kept) == ([new_root], [])


def _renewer(directory: Path, ca_port: int, trust: Path) -> Renewer:
    settings = RenewConfig(
        ca=parse_address_text("--ca", f"localhost:{ca_port}"), ca_cert=trust, trust_file=directory / "root.pem"
    )
    return Renewer(cert=directory / "alice.pem", key=directory / "alice-key.pem", settings=settings)


async def test_a_bundle_is_taken_only_from_a_trusted_ca(ca_env: CaEnv, start_ca: StartCa, tmp_path: Path) -> None:
    """An impostor CA service (another hierarchy) is refused before anything is read; the real one is asked (twin)."""
    alice = _client_dir(ca_env, tmp_path, "alice", seconds=3600)
    shutil.copy(_next_root(tmp_path), ca_env.store.directory / "root-next.pem")
    real = await start_ca()
    impostor_env = make_ca_env(tmp_path / "impostor")
    from securechat.ca.service import start_ca_server

    impostor = await start_ca_server(impostor_env.config())
    try:
        before = (alice / "root.pem").read_bytes()
        with pytest.raises(CaError, match=r"cannot trust the CA service at localhost:\d+: its certificate does not verify") as refused:
            await _renewer(alice, impostor.port, alice / "root.pem").refresh_trust()
        assert refused.value.reason == "untrusted-ca"
        assert (alice / "root.pem").read_bytes() == before
        assert await _renewer(alice, real.port, alice / "root.pem").refresh_trust() is True
        assert len(pki.load_certificates(alice / "root.pem")) == 2
        assert await _renewer(alice, real.port, alice / "root.pem").refresh_trust() is False  # the same set: no write
    finally:
        await impostor.stop(grace=0)


async def test_a_bundle_that_is_not_ca_certificates_is_refused(ca_env: CaEnv, tmp_path: Path, caplog) -> None:
    """A leaf in the bundle: the core's check_anchors refuses it, the trust file stays as it was."""
    alice = _client_dir(ca_env, tmp_path, "alice", seconds=3600)
    before = (alice / "root.pem").read_bytes()
    renewer = _renewer(alice, 1, alice / "root.pem")
    with pytest.raises(PkiError, match=r"is not a CA.*Keeping \S*root\.pem as it is\.$"):
        await renewer.refresh_trust((alice / "alice.pem").read_bytes())
    assert (alice / "root.pem").read_bytes() == before
    with caplog.at_level(logging.INFO, logger="securechat.ca.renewal"):
        assert await renewer.refresh_trust(before) is False  # twin: the same roots, nothing to do
