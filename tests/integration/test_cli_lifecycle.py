"""`securechat certs revoke|crl|renew|needs-renewal|export` and `init --encrypt|--permit-dns`, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from typer.testing import CliRunner

from securechat import pki
from securechat.cli.certs import certs_app

runner = CliRunner()


def _certs(*args: str, directory: Path, env: dict[str, str] | None = None):
    return runner.invoke(certs_app, [*args, "--dir", str(directory)], env=env)


def _one_line(stderr: str, fragment: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert fragment in lines[0], stderr


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    for args in (("init",), ("server", "server"), ("client", "alice", "bob")):
        result = _certs(*args, directory=directory)
        assert result.exit_code == 0, result.output
    return directory


def test_revoke_prints_the_serial_and_crl_and_list_shows_revoked(certs: Path) -> None:
    """revoke names the serial, reason and CRL written; list shows bob revoked, alice valid."""
    serial = f"{pki.load_certificate(certs / 'bob.pem').serial_number:x}"
    result = _certs("revoke", "bob", "--reason", "key-compromise", directory=certs)
    assert result.exit_code == 0, result.output
    assert f'Revoked client certificate "bob" serial {serial} (reason: key-compromise).' in result.stdout
    assert "crl.pem (CRL number 1, 1 revoked, next update" in result.stdout
    rows = {line.split()[0]: line.split() for line in _certs("list", directory=certs).stdout.splitlines()[1:]}
    assert rows["bob"][-1] == "revoked" and rows["alice"][-1] == "valid"
    again = _certs("crl", directory=certs)
    assert "CRL number 2, 1 revoked" in again.stdout


def test_revoke_unknown_reason_is_a_usage_error(certs: Path) -> None:
    """The failing twin: --reason outside the RFC 5280 codes we offer is refused before anything is written."""
    result = _certs("revoke", "bob", "--reason", "because", directory=certs)
    assert result.exit_code == 2
    assert not (certs / "crl.pem").exists()


def test_needs_renewal_exit_codes(certs: Path) -> None:
    """0 when nothing is due; 1 naming the certificate and the renew command; 2 when it cannot check."""
    fine = _certs("needs-renewal", directory=certs)
    assert fine.exit_code == 0, fine.output
    assert fine.stdout.startswith("Nothing to renew (none is past 2/3 of its lifetime): ca (3650 days left), server (365 days left)")
    assert _certs("needs-renewal", "--within", "30d", directory=certs).stdout.startswith("Nothing to renew within 30d: ca")
    due = _certs("needs-renewal", "server", "--within", "400d", directory=certs)
    assert due.exit_code == 1
    assert "server: expires" in due.stdout and f"Run 'securechat certs renew server --dir {certs}'." in due.stdout
    broken = _certs("needs-renewal", "--within", "soon", directory=certs)
    assert broken.exit_code == 2
    _one_line(broken.stderr, "--within 'soon' is not a duration")


def test_renew_cli_then_list_flags_nothing(certs: Path) -> None:
    """A 10-day certificate is flagged by list and needs-renewal --within 30d; after renew it is not."""
    assert _certs("client", "carol", "--days", "10", directory=certs).exit_code == 0
    assert "renew soon" in _certs("list", "--within", "30d", directory=certs).stdout
    assert _certs("needs-renewal", "carol", "--within", "30d", directory=certs).exit_code == 1
    renewed = _certs("renew", "carol", "--keep-key", directory=certs)
    assert renewed.exit_code == 0, renewed.output
    assert 'Renewed client certificate "carol" (DNS:carol)' in renewed.stdout and "same key" in renewed.stdout
    assert _certs("needs-renewal", "carol", "--within", "30d", directory=certs).exit_code == 0
    assert "renew soon" not in _certs("list", "--within", "30d", directory=certs).stdout


@pytest.mark.parametrize("source", ["file", "env"])
def test_init_encrypt_then_every_signing_command_needs_the_passphrase(tmp_path: Path, source: str) -> None:
    """init --encrypt stores an encrypted key; server/client/revoke/renew get the passphrase the same way."""
    directory = tmp_path / "certs"
    secret = tmp_path / "pass.txt"
    secret.write_text("correct horse battery staple\n")
    flags = ["--passphrase-file", str(secret)] if source == "file" else []
    env = {"SECURECHAT_CA_PASSPHRASE": "correct horse battery staple"} if source == "env" else None
    created = _certs("init", "--encrypt", *flags, directory=directory, env=env)
    assert created.exit_code == 0, created.output
    assert "key encrypted" in created.stdout
    assert b"ENCRYPTED PRIVATE KEY" in (directory / "ca-key.pem").read_bytes()
    for args in (("server", "server"), ("client", "alice"), ("renew", "alice"), ("revoke", "alice")):
        result = _certs(*args, *flags, directory=directory, env=env)
        assert result.exit_code == 0, (args, result.output)


def test_wrong_or_missing_passphrase_is_one_line(tmp_path: Path) -> None:
    """The failing twins: a wrong passphrase, and none at all without a terminal."""
    directory = tmp_path / "certs"
    env = {"SECURECHAT_CA_PASSPHRASE": "correct horse battery staple"}
    assert _certs("init", "--encrypt", directory=directory, env=env).exit_code == 0
    wrong = _certs("client", "alice", directory=directory, env={"SECURECHAT_CA_PASSPHRASE": "wrong"})
    assert wrong.exit_code == 1
    _one_line(wrong.stderr, "ca-key.pem could not be decrypted: wrong passphrase")
    missing = _certs("client", "alice", directory=directory, env={"SECURECHAT_CA_PASSPHRASE": ""})
    assert missing.exit_code == 1
    _one_line(missing.stderr, "ca-key.pem is encrypted. Pass --ca-passphrase-file FILE")
    nothing = _certs("init", "--force", directory=directory, env={"SECURECHAT_CA_PASSPHRASE": ""})
    assert nothing.exit_code == 1
    _one_line(nothing.stderr, "the CA key is encrypted by default and needs a passphrase.")
    assert not (directory / "ca-key.pem").read_bytes().startswith(b"-----BEGIN PRIVATE")  # the old, encrypted key stays


def test_an_unencrypted_ca_key_takes_two_flags(tmp_path: Path) -> None:
    """--no-passphrase alone is a usage error; with --insecure the key is plain PEM and a warning says so."""
    directory = tmp_path / "certs"
    alone = _certs("init", "--no-passphrase", directory=directory)
    assert alone.exit_code == 2
    _one_line(alone.stderr, "--no-passphrase writes the CA key unencrypted: anyone who can read it can issue certificates.")
    assert not directory.exists()
    both = _certs("init", "--no-passphrase", "--insecure", directory=directory)
    assert both.exit_code == 0, both.output
    assert (directory / "ca-key.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert "is not encrypted (--no-passphrase --insecure)" in both.stderr
    encrypted = _certs("init", "--force", directory=directory)  # the default: encrypted
    assert encrypted.exit_code == 0, encrypted.output
    assert b"ENCRYPTED" in (directory / "ca-key.pem").read_bytes()[:64]


def test_init_permit_dns_enforces_the_constraint_when_issuing(tmp_path: Path) -> None:
    """A name-constrained CA issues api.example.org; 'localhost' (the default SAN) fails in one line."""
    directory = tmp_path / "certs"
    created = _certs("init", "--permit-dns", "example.org", directory=directory)
    assert created.exit_code == 0, created.output
    assert "name constraints: DNS names under example.org only" in created.stdout
    assert _certs("server", "api", "--san", "api.example.org", directory=directory).exit_code == 0
    refused = _certs("server", "server", directory=directory)
    assert refused.exit_code == 1
    _one_line(refused.stderr, "'localhost' is outside the CA's name constraints")
    assert not (directory / "server.pem").exists()


def test_export_p12_with_a_password(certs: Path, tmp_path: Path) -> None:
    """export writes a 0600 PKCS#12 that opens with the user's password; no password or a second run is refused."""
    bundle = tmp_path / "alice.p12"
    env = {"SECURECHAT_P12_PASSWORD": "a long enough password"}
    result = _certs("export", "alice", "--p12", str(bundle), directory=certs, env=env)
    assert result.exit_code == 0, result.output
    assert bundle.stat().st_mode & 0o777 == 0o600
    _, cert, cas = pkcs12.load_key_and_certificates(bundle.read_bytes(), b"a long enough password")
    assert cert == pki.load_certificate(certs / "alice.pem")
    assert cas == [x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())]
    again = _certs("export", "alice", "--p12", str(bundle), directory=certs, env=env)
    assert again.exit_code == 1
    _one_line(again.stderr, "already exists; refusing to overwrite it")
    nopass = _certs("export", "bob", "--p12", str(tmp_path / "bob.p12"), directory=certs, env={"SECURECHAT_P12_PASSWORD": ""})
    assert nopass.exit_code == 1
    _one_line(nopass.stderr, "the bundle needs a password")
