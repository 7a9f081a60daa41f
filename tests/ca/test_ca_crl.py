"""The CA's crl.pem never goes back: its cRLNumber high-water mark lives in the CA's database.

Servers refuse a CRL whose number is lower than one they saw (`CrlHighWater`);
the CA side keeps the same promise for what it publishes: a crl.pem restored
from an old copy, or deleted, never makes the CA publish a lower number, and
the running service notices such a file and publishes a new one at once.
Real `securechat ca serve` / `ca revoke` / `certs renew --ca` processes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from securechat import pki
from tests.ca.conftest import CaEnv
from tests.ca.processes import Proc, start_ca_process
from tests.ca.test_ca_cli import _run


def _crl(env: CaEnv) -> tuple[int, set[int]]:
    crl = pki.parse_crl(env.store.crl_path.read_bytes(), where="crl.pem")
    return pki.crl_number(crl), {entry.serial_number for entry in crl}


def _serial(env: CaEnv, name: str) -> int:
    return pki.load_certificate(env.store.cert_path(name)).serial_number


def _offline_clients(env: CaEnv, *names: str) -> None:
    env.store.write_leaves([pki.issue_client_cert(env.ca, name) for name in names])


def test_ca_revoke_after_a_rolled_back_crl_publishes_above_every_earlier_number(ca_env: CaEnv, tmp_path: Path) -> None:
    """crl.pem restored to number 1 after the CA published 2: the next 'ca revoke' writes 3, with every revocation."""
    _offline_clients(ca_env, "bob", "carol", "dave")
    config = str(ca_env.ca_yaml())
    assert "(CRL number 1, 1 revoked" in _run("ca", "revoke", "bob", "--config", config).stdout
    old = tmp_path / "crl-1.pem"
    shutil.copy(ca_env.store.crl_path, old)
    assert "(CRL number 2, 2 revoked" in _run("ca", "revoke", "carol", "--config", config).stdout
    shutil.copy(old, ca_env.store.crl_path)  # a restored backup: number 1, carol not in it
    revoked = _run("ca", "revoke", "dave", "--config", config)
    assert revoked.exit_code == 0, revoked.output
    assert "(CRL number 3, 3 revoked" in revoked.stdout
    assert _crl(ca_env) == (3, {_serial(ca_env, n) for n in ("bob", "carol", "dave")})


def test_the_file_alone_would_go_back(ca_env: CaEnv, tmp_path: Path) -> None:
    """Failing twin: publishing from the rolled-back file alone (what 'certs crl' does) repeats number 2."""
    _offline_clients(ca_env, "bob", "carol")
    config = str(ca_env.ca_yaml())
    _run("ca", "revoke", "bob", "--config", config)
    old = tmp_path / "crl-1.pem"
    shutil.copy(ca_env.store.crl_path, old)
    _run("ca", "revoke", "carol", "--config", config)
    shutil.copy(old, ca_env.store.crl_path)
    crl = ca_env.store.publish_crl(ca_env.ca, [])
    assert (pki.crl_number(crl), {e.serial_number for e in crl}) == (2, {_serial(ca_env, "bob")})


def test_the_running_ca_republishes_a_rolled_back_crl(ca_env: CaEnv, tmp_path: Path) -> None:
    """The service sees crl.pem go back to number 1 at the next renewal, says so, and publishes number 3 at once."""
    _offline_clients(ca_env, "bob", "carol", "erin")
    ca_env.ca_yaml()
    ca, port = start_ca_process(ca_env)
    try:
        config = str(ca_env.root / "ca.yaml")
        _run("ca", "revoke", "bob", "--config", config)
        old = tmp_path / "crl-1.pem"
        shutil.copy(ca_env.store.crl_path, old)
        _run("ca", "revoke", "carol", "--config", config)
        renewed = _run("certs", "renew", "erin", "--ca", f"localhost:{port}", "--dir", str(ca_env.store.directory))
        assert renewed.exit_code == 0, renewed.output  # twin: nothing went back, nothing republished
        assert ca.count("older than number") == 0 and _crl(ca_env)[0] == 2
        shutil.copy(old, ca_env.store.crl_path)
        renewed = _run("certs", "renew", "erin", "--ca", f"localhost:{port}", "--dir", str(ca_env.store.directory))
        assert renewed.exit_code == 0, renewed.output
        ca.wait_for(
            r"crl\.pem holds CRL number 1, older than number 2 this CA published: an older CRL would un-revoke"
            r" certificates, so the CA published CRL number 3 from its database \(2 revoked\)"
        )
        assert _crl(ca_env) == (3, {_serial(ca_env, "bob"), _serial(ca_env, "carol")})
        refused = _run("certs", "renew", "carol", "--ca", f"localhost:{port}", "--dir", str(ca_env.store.directory))
        assert refused.exit_code == 1
        assert f"the certificate of carol (serial {_serial(ca_env, 'carol'):x}) is revoked in" in refused.stderr
    finally:
        ca.stop()


def test_a_deleted_crl_is_published_again_when_the_ca_starts(ca_env: CaEnv) -> None:
    """crl.pem gone while the CA was down: at start it says so and publishes number 2 (twin: no CRL ever, none made)."""
    _offline_clients(ca_env, "bob")
    ca_env.ca_yaml()
    ca, _ = start_ca_process(ca_env)
    assert ca.stop() == 0
    assert not ca_env.store.crl_path.exists()  # twin: nothing was ever revoked, so no crl.pem is made
    _run("ca", "revoke", "bob", "--config", str(ca_env.root / "ca.yaml"))
    ca_env.store.crl_path.unlink()
    again: Proc
    again, _ = start_ca_process(ca_env)
    try:
        again.wait_for(
            r"crl\.pem is missing, but this CA published CRL number 1 there: an older CRL would un-revoke"
            r" certificates, so the CA published CRL number 2 from its database \(1 revoked\)"
        )
        assert _crl(ca_env) == (2, {_serial(ca_env, "bob")})
    finally:
        again.stop()
