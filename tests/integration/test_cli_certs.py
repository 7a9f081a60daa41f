"""`securechat certs ...` end to end: the real entry point in a subprocess, CliRunner elsewhere."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from securechat import pki
from securechat.cli.certs import certs_app

runner = CliRunner()


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `python -m securechat certs ARGS` the way a user would."""
    return subprocess.run(  # noqa: S603 - fixed argv, no shell
        [sys.executable, "-m", "securechat", "certs", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )


def _certs(*args: str, directory: Path) -> object:
    """Invoke a certs command in-process with --dir DIRECTORY."""
    return runner.invoke(certs_app, [*args, "--dir", str(directory)])


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _assert_one_line_error(stderr: str, fragment: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert "Traceback" not in stderr


# -- the real entry point ----------------------------------------------------


def test_entry_point_init_then_refuse_second_init(tmp_path: Path) -> None:
    """`python -m securechat certs init` exits 0 naming its files; a second exits 1, one line."""
    first = _run("init", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "certs/ca.pem" in first.stdout and "certs/ca-key.pem" in first.stdout
    assert "It expires on" in first.stdout
    second = _run("init", cwd=tmp_path)
    assert second.returncode == 1
    _assert_one_line_error(second.stderr, "certs/ca.pem already exists; refusing to overwrite it. Pass --force")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("server", "server", "--days", "400"), "--days 400 is too long: at most 397 days"),
        (("client", "../evil"), "certificate name '../evil' looks like a path"),
        (("client", "ca"), "certificate name 'ca' is reserved"),
        (
            ("server", "server", "--san", "https://x"),
            "SAN 'https://x' is neither an IP address nor a DNS name",
        ),
    ],
)
def test_entry_point_user_mistakes_are_one_line(tmp_path: Path, args: tuple[str, ...], fragment: str) -> None:
    """Bad days, names and SANs exit 1 with one line and no traceback."""
    assert _run("init", cwd=tmp_path).returncode == 0
    result = _run(*args, cwd=tmp_path)
    assert result.returncode == 1
    _assert_one_line_error(result.stderr, fragment)
    assert not (tmp_path / "certs" / "server.pem").exists()


def test_entry_point_missing_ca_says_how_to_fix(tmp_path: Path) -> None:
    """Issuing without a CA names the missing file and the init command."""
    result = _run("client", "alice", "--dir", "nowhere", cwd=tmp_path)
    assert result.returncode == 1
    _assert_one_line_error(result.stderr, "nowhere/ca.pem not found. Run 'securechat certs init --dir nowhere' first.")


def test_entry_point_bad_key_type_is_a_usage_error(tmp_path: Path) -> None:
    """An unknown --key-type is a usage error (exit 2), not a traceback."""
    result = _run("init", "--key-type", "dsa-1024", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "dsa-1024" in result.stderr


# -- init ---------------------------------------------------------------------


def test_init_writes_ca_with_safe_modes(tmp_path: Path) -> None:
    """init creates DIR 0700 with ca.pem 0644 and ca-key.pem 0400, as --key-type asked."""
    directory = tmp_path / "certs"
    result = _certs("init", "--key-type", "ecdsa-p384", "--name", "Acme CA", "--days", "30", directory=directory)
    assert result.exit_code == 0, result.output
    assert 'Created a new CA "Acme CA" (ecdsa-p384, key encrypted).' in result.stdout
    assert (_mode(directory), _mode(directory / "ca-key.pem"), _mode(directory / "ca.pem")) == (
        0o700,
        0o400,
        0o644,
    )
    summary = pki.summarize(pki.load_certificate(directory / "ca.pem"))
    assert (summary.common_name, summary.key_type, summary.days_left) == (
        "Acme CA",
        "ecdsa-p384",
        30,
    )


def test_init_force_replaces_ca_and_warns_about_old_leaves(tmp_path: Path) -> None:
    """init --force makes a new CA and warns that earlier leaves no longer chain to it."""
    directory = tmp_path / "certs"
    _certs("init", directory=directory)
    _certs("client", "alice", directory=directory)
    old = (directory / "ca.pem").read_bytes()
    result = _certs("init", "--force", directory=directory)
    assert result.exit_code == 0, result.output
    assert (directory / "ca.pem").read_bytes() != old
    assert "1 certificate(s) issued by the old CA no longer chain to the new one" in result.stderr


def test_init_warns_about_a_readable_directory(tmp_path: Path) -> None:
    """An existing group/world-readable certs dir gets a warning ending with the fix."""
    directory = tmp_path / "certs"
    directory.mkdir()
    os.chmod(directory, 0o755)  # noqa: S103 - the loose mode is the point
    result = _certs("init", directory=directory)
    assert result.exit_code == 0
    assert f"can be read by other users. Run 'chmod 700 {directory}'." in result.stderr


def test_encrypted_ca_key_needs_the_passphrase_file(tmp_path: Path) -> None:
    """init --ca-passphrase-file encrypts the CA key; issuing needs the same file."""
    directory = tmp_path / "certs"
    secret = tmp_path / "passphrase.txt"
    secret.write_text("correct horse battery staple\n")
    assert _certs("init", "--ca-passphrase-file", str(secret), directory=directory).exit_code == 0
    refused = runner.invoke(certs_app, ["client", "alice", "--dir", str(directory)], env={"SECURECHAT_CA_PASSPHRASE": ""})
    assert refused.exit_code == 1
    assert "ca-key.pem is encrypted. Pass --ca-passphrase-file FILE" in refused.stderr
    allowed = _certs("client", "alice", "--ca-passphrase-file", str(secret), directory=directory)
    assert allowed.exit_code == 0, allowed.output


# -- server ---------------------------------------------------------------------


def test_server_default_output_names_files_sans_and_expiry(tmp_path: Path) -> None:
    """server prints the SANs covered, both files, the expiry and the config lines."""
    directory = tmp_path / "certs"
    _certs("init", directory=directory)
    result = _certs("server", "server", directory=directory)
    assert result.exit_code == 0, result.output
    for expected in ("DNS:localhost", "IP:127.0.0.1", "IP:::1", "It expires on"):
        assert expected in result.stdout
    assert f"certificate: {directory / 'server.pem'}" in result.stdout
    assert f"key:         {directory / 'server-key.pem'}" in result.stdout
    assert _mode(directory / "server-key.pem") == 0o600
    assert _mode(directory / "server.pem") == 0o644
    cert = pki.load_certificate(directory / "server.pem")
    assert pki.extended_key_usages(cert) == {ExtendedKeyUsageOID.SERVER_AUTH}


def test_server_custom_sans(tmp_path: Path) -> None:
    """Repeated --san values (DNS, IPv4, IPv6) all land in the certificate."""
    directory = tmp_path / "certs"
    _certs("init", directory=directory)
    args = [
        "server",
        "api",
        "--san",
        "api.example.com",
        "--san",
        "10.0.0.5",
        "--san",
        "2001:db8::1",
    ]
    result = _certs(*args, directory=directory)
    assert result.exit_code == 0, result.output
    summary = pki.summarize(pki.load_certificate(directory / "api.pem"))
    assert summary.dns_names == ("api.example.com",)
    assert summary.ip_addresses == ("10.0.0.5", "2001:db8::1")


def test_server_capped_at_ca_expiry_says_so(tmp_path: Path) -> None:
    """A leaf asking to outlive a 30-day CA is cut at the CA's expiry, with a warning."""
    directory = tmp_path / "certs"
    _certs("init", "--days", "30", directory=directory)
    result = _certs("server", "server", directory=directory)
    assert result.exit_code == 0, result.output
    assert "the CA expires on" in result.stderr and "sooner than --days asked" in result.stderr
    ca = pki.load_certificate(directory / "ca.pem")
    assert pki.load_certificate(directory / "server.pem").not_valid_after_utc == ca.not_valid_after_utc


def test_server_not_capped_has_no_warning(tmp_path: Path) -> None:
    """Failing twin: a leaf inside the CA's lifetime prints no capping warning."""
    directory = tmp_path / "certs"
    _certs("init", directory=directory)
    result = _certs("server", "server", directory=directory)
    assert "the CA expires on" not in result.stderr


# -- client ---------------------------------------------------------------------


def test_client_names_and_spiffe(tmp_path: Path) -> None:
    """client alice bob writes both with clientAuth, DNS and SPIFFE SANs, and names the files."""
    directory = tmp_path / "certs"
    _certs("init", directory=directory)
    result = _certs("client", "alice", "bob", "--spiffe-trust-domain", "example.org", directory=directory)
    assert result.exit_code == 0, result.output
    assert f'"alice" (DNS:alice, URI:spiffe://example.org/alice): {directory / "alice.pem"}' in result.stdout
    assert f"{directory / 'bob-key.pem'}" in result.stdout
    bob = pki.load_certificate(directory / "bob.pem")
    assert pki.extended_key_usages(bob) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert pki.summarize(bob).uris == ("spiffe://example.org/bob",)


def test_client_many_names_in_one_call(tmp_path: Path) -> None:
    """300 names in one call: every pair written, one summary line, one index."""
    directory = tmp_path / "certs"
    _certs("init", directory=directory)
    names = [f"user{i}" for i in range(300)]
    result = _certs("client", *names, directory=directory)
    assert result.exit_code == 0, result.output
    assert "Created 300 client certificates (user0 ... user299)" in result.stdout
    assert all((directory / f"{n}.pem").exists() and (directory / f"{n}-key.pem").exists() for n in names)
    index = json.loads((directory / "index.json").read_text())
    assert [e["name"] for e in index["certificates"]][1:] == names


def test_client_bulk_through_the_real_entry_point(tmp_path: Path) -> None:
    """200 names from a fresh process (forked workers where there are 2+ CPUs): all written, in order, no temp files."""
    directory = tmp_path / "certs"
    assert _run("init", "--dir", str(directory), cwd=tmp_path).returncode == 0
    names = [f"user{i}" for i in range(200)]
    result = _run("client", *names, "--dir", str(directory), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Created 200 client certificates (user0 ... user199)" in result.stdout
    ca = pki.load_certificate(directory / "ca.pem")
    assert all(pki.is_signed_by(pki.load_certificate(directory / f"{n}.pem"), ca) for n in names)
    assert all(_mode(directory / f"{n}-key.pem") == 0o600 for n in names)
    index = json.loads((directory / "index.json").read_text())
    assert [e["name"] for e in index["certificates"]][1:] == names
    assert not [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_client_refuses_overwrite_and_writes_nothing(tmp_path: Path) -> None:
    """If one name exists, the error names its file and no other name is written."""
    directory = tmp_path / "certs"
    _certs("init", directory=directory)
    _certs("client", "alice", directory=directory)
    before = (directory / "alice.pem").read_bytes()
    result = _certs("client", "bob", "alice", directory=directory)
    assert result.exit_code == 1
    assert f"error: {directory / 'alice.pem'} already exists; refusing to overwrite it." in result.stderr
    assert not (directory / "bob.pem").exists()
    assert (directory / "alice.pem").read_bytes() == before


def test_client_force_replaces(tmp_path: Path) -> None:
    """--force replaces the pair; list shows the old serial as superseded."""
    directory = tmp_path / "certs"
    _certs("init", directory=directory)
    _certs("client", "alice", directory=directory)
    before = (directory / "alice.pem").read_bytes()
    result = _certs("client", "alice", "--force", directory=directory)
    assert result.exit_code == 0, result.output
    assert (directory / "alice.pem").read_bytes() != before
    listing = _certs("list", directory=directory).stdout
    assert "superseded" in listing


def test_client_days_over_limit(tmp_path: Path) -> None:
    """--days 398 is refused before any key is made."""
    directory = tmp_path / "certs"
    _certs("init", directory=directory)
    result = _certs("client", "alice", "--days", "398", directory=directory)
    assert result.exit_code == 1
    assert "--days 398 is too long" in result.stderr
    assert not (directory / "alice.pem").exists()


# -- list and inspect ---------------------------------------------------------------


def test_list_shows_a_table(tmp_path: Path) -> None:
    """list prints name, kind, short serial, expiry, days left and status per certificate."""
    directory = tmp_path / "certs"
    _certs("init", directory=directory)
    _certs("server", "server", directory=directory)
    _certs("client", "alice", "--days", "30", directory=directory)
    result = _certs("list", directory=directory)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["name", "kind", "serial", "expires", "days", "left", "status"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["ca"][1] == "ca" and rows["ca"][4] == "3650"
    assert rows["server"][1:2] == ["server"] and rows["server"][4:] == ["365", "valid"]
    assert rows["alice"][4:] == ["30", "valid"]  # a fresh 30-day certificate is not past 2/3 of its lifetime
    serial = f"{pki.load_certificate(directory / 'alice.pem').serial_number:x}"
    assert rows["alice"][2] == serial[:16]
    within = {line.split()[0]: line.split() for line in _certs("list", "--within", "30d", directory=directory).stdout.splitlines()[1:]}
    assert within["alice"][4:] == ["30", "renew", "soon"] and within["server"][4:] == ["365", "valid"]


def test_list_json(tmp_path: Path) -> None:
    """list --json prints the index entries."""
    directory = tmp_path / "certs"
    _certs("init", directory=directory)
    result = _certs("list", "--json", directory=directory)
    assert [e["kind"] for e in json.loads(result.stdout)] == ["ca"]


def test_list_missing_directory(tmp_path: Path) -> None:
    """list on a missing dir is a one-line error with the init command."""
    result = _certs("list", directory=tmp_path / "none")
    assert result.exit_code == 1
    assert "none not found. Run 'securechat certs init --dir" in result.stderr


def test_inspect_shows_the_summary(tmp_path: Path) -> None:
    """inspect prints subject, SANs, EKUs, issuer, validity, fingerprint, key type and CA check."""
    directory = tmp_path / "certs"
    _certs("init", directory=directory)
    _certs("client", "alice", "--spiffe-trust-domain", "example.org", directory=directory)
    result = _certs("inspect", str(directory / "alice.pem"), directory=directory)
    assert result.exit_code == 0, result.output
    cert = pki.load_certificate(directory / "alice.pem")
    for expected in (
        "subject:      CN=alice,O=securechat",
        "issuer:       CN=securechat CA,O=securechat",
        "SANs:         DNS:alice, URI:spiffe://example.org/alice",
        "EKUs:         clientAuth",
        "key type:     ecdsa-p256",
        "(365 days left)",
        f"SHA-256:      {pki.fingerprint_sha256(cert)}",
        f"signed by CA: yes, by {directory / 'ca.pem'}",
    ):
        assert expected in result.stdout


def test_inspect_foreign_cert_says_not_signed(tmp_path: Path) -> None:
    """Failing twin: a cert from another CA is reported as NOT signed by DIR's CA."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    _certs("init", directory=ours)
    _certs("init", directory=theirs)
    _certs("client", "mallory", directory=theirs)
    result = _certs("inspect", str(theirs / "mallory.pem"), directory=ours)
    assert result.exit_code == 0
    assert f"signed by CA: NO: {ours / 'ca.pem'} did not sign it" in result.stdout


def test_inspect_expired_cert(tmp_path: Path, pki_ca: pki.CertificateAuthority) -> None:
    """An expired cert says EXPIRED and how long ago."""
    now = pki.utc_now()
    store = pki.CertStore(tmp_path / "certs")
    store.write_ca(pki_ca)
    issued = pki.issue_client_cert(
        pki_ca,
        "old",
        not_before=now - pki.CLOCK_SKEW_BACKDATE * 1000,
        not_after=now - pki.CLOCK_SKEW_BACKDATE * 300,
    )
    store.write_leaf("old", issued)
    result = _certs("inspect", str(store.cert_path("old")), directory=store.directory)
    assert "(EXPIRED 1 day ago)" in result.stdout


@pytest.mark.parametrize(
    ("filename", "fragment"),
    [("alice-key.pem", "is a private key, not a certificate"), ("nope.pem", "nope.pem not found")],
)
def test_inspect_bad_file_is_one_line(tmp_path: Path, filename: str, fragment: str) -> None:
    """Inspecting a key or a missing file is a one-line error naming the file."""
    directory = tmp_path / "certs"
    _certs("init", directory=directory)
    _certs("client", "alice", directory=directory)
    result = _certs("inspect", str(directory / filename), directory=directory)
    assert result.exit_code == 1
    _assert_one_line_error(result.stderr, fragment)


def test_inspect_prints_fingerprint_verbatim(tmp_path: Path, pki_ca: pki.CertificateAuthority) -> None:
    """A fingerprint holding ':AB:' or ':CD:' is printed as is, not as a Rich emoji code."""
    issued = next(
        item
        for item in (pki.issue_client_cert(pki_ca, "alice") for _ in range(500))
        if ":AB:" in pki.fingerprint_sha256(item.cert)[2:-2] or ":CD:" in pki.fingerprint_sha256(item.cert)[2:-2]
    )
    store = pki.CertStore(tmp_path / "certs")
    store.write_ca(pki_ca)
    store.write_leaf("alice", issued)
    result = _certs("inspect", str(store.cert_path("alice")), directory=store.directory)
    assert f"SHA-256:      {pki.fingerprint_sha256(issued.cert)}\n" in result.stdout


def test_certs_peer_issues_both_ekus_and_says_where_it_goes(tmp_path: Path) -> None:
    """`certs peer NAME --san ...` writes NAME.pem with serverAuth + clientAuth and names the files; without --san it is a usage error."""
    assert _certs("init", directory=tmp_path).exit_code == 0
    result = _certs("peer", "nats-0", "--san", "nats-0.nats", "--san", "127.0.0.1", directory=tmp_path)
    assert result.exit_code == 0, result.output
    assert "serverAuth + clientAuth" in result.output and "DNS:nats-0.nats" in result.output and "IP:127.0.0.1" in result.output
    cert = x509.load_pem_x509_certificate((tmp_path / "nats-0.pem").read_bytes())
    assert set(pki.extended_key_usages(cert)) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert _mode(tmp_path / "nats-0-key.pem") == 0o600
    missing = _certs("peer", "nats-1", directory=tmp_path)
    assert missing.exit_code == 2 and "--san" in missing.output
