"""The files a config names (securechat.tls.material), and config errors through the real CLI.

Real certificates from the session CA in tmp_path; every failing case names
the config file, the field, the offending file and the fix.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from securechat import pki
from securechat.config import load_client_config, load_server_config
from securechat.errors import ConfigError
from securechat.tls.material import TlsMaterial, load_client_material, load_server_material

DAY = dt.timedelta(days=1)
CERTS = Path("certs")  # as errors show it: relative to the working directory (the deployment root)
CLI_TIMEOUT = 20  # seconds; a serve that got past the checks would run until killed


@pytest.fixture(autouse=True)
def in_deployment_dir(deployment, monkeypatch):
    """Run from the deployment directory, as a user would: errors show paths relative to it."""
    monkeypatch.chdir(deployment.root)


def server_error(path: Path) -> ConfigError:
    """The ConfigError that loading the server config and its files raises."""
    with pytest.raises(ConfigError) as error:
        load_server_material(load_server_config(path))
    return error.value


def client_error(path: Path) -> ConfigError:
    """The ConfigError that loading the client config and its files raises."""
    with pytest.raises(ConfigError) as error:
        load_client_material(load_client_config(path))
    return error.value


def pem(path: Path) -> bytes:
    """The bytes of a PEM file, for comparing with what the loader returns."""
    return path.read_bytes()


# --- happy paths -------------------------------------------------------------


def test_server_material_happy_path(deployment):
    """A quickstart-like server config yields the PEM bytes and the parsed leaf."""
    material = load_server_material(load_server_config(deployment.server_yaml()))
    assert material == TlsMaterial(
        ca_bundle=pem(CERTS / "ca.pem"),
        cert_chain=pem(CERTS / "server.pem"),
        private_key=pem(CERTS / "server-key.pem"),
        certificate=pki.load_certificate(CERTS / "server.pem"),
    )


def test_client_material_happy_path(deployment):
    """A client config with cert and key yields its identity certificate and the CA bundle."""
    material = load_client_material(load_client_config(deployment.client_yaml("alice", 1)))
    assert material is not None and material.certificate is not None
    assert material.ca_bundle == pem(CERTS / "ca.pem")
    assert material.private_key == pem(CERTS / "alice-key.pem")
    assert material.certificate.subject.rfc4514_string() == "CN=alice,O=securechat"


def test_client_material_server_only_tls(deployment):
    """Without cert and key the client carries only the CA bundle."""
    config = load_client_config(deployment.client_yaml("anon", 1, tls={"cert": None, "key": None}))
    assert load_client_material(config) == TlsMaterial(ca_bundle=pem(CERTS / "ca.pem"))


def test_insecure_configs_have_no_material(deployment):
    """insecure: true means no TLS material at all."""
    server = load_server_config(deployment.write_yaml("s.yaml", {"listen": "127.0.0.1:0", "insecure": True}))
    client = load_client_config(deployment.write_yaml("c.yaml", {"target": "localhost:1", "insecure": True}))
    assert load_server_material(server) is None and load_client_material(client) is None


def test_mtls_false_without_client_ca_loads(deployment):
    """Server-only TLS without a client CA loads, with no CA bundle."""
    material = load_server_material(load_server_config(deployment.server_yaml(tls={"mtls": False, "client_ca": None})))
    assert material is not None and material.ca_bundle is None and material.certificate is not None


def test_relative_paths_load_from_another_working_directory(deployment, tmp_path_factory, monkeypatch):
    """The files are found relative to the YAML file even when run from elsewhere."""
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert load_server_material(load_server_config(deployment.server_yaml())) is not None
    assert load_client_material(load_client_config(deployment.client_yaml("bob", 1))) is not None


def test_errors_show_absolute_paths_outside_the_working_directory(deployment, tmp_path_factory, monkeypatch):
    """Run from elsewhere, a missing file is named by its absolute path (relative would mislead)."""
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    key = deployment.root / "certs" / "server-key.pem"
    key.unlink()
    error = server_error(deployment.server_yaml())
    assert error.field == "tls.key"
    assert str(error).startswith(f"server.yaml: tls.key: {key} not found. Run 'securechat certs server server --dir ")


# --- missing files -----------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "file", "fix"),
    [
        ("tls.cert", "server.pem", "Run 'securechat certs server server --dir certs' or fix the path."),
        ("tls.key", "server-key.pem", "Run 'securechat certs server server --dir certs' or fix the path."),
        ("tls.client_ca", "ca.pem", "Run 'securechat certs init' to create a CA, or fix the path."),
    ],
)
def test_server_missing_file_names_field_and_fix(deployment, field, file, fix):
    """A missing server file names the field, the absolute path and the command that makes it."""
    path = CERTS / file
    path.unlink()
    error = server_error(deployment.server_yaml())
    assert error.field == field
    assert str(error) == f"server.yaml: {field}: {path} not found. {fix}"


@pytest.mark.parametrize(
    ("field", "file", "fix"),
    [
        ("tls.ca", "ca.pem", "Run 'securechat certs init' to create a CA, or fix the path."),
        ("tls.cert", "alice.pem", "Run 'securechat certs client alice --dir certs' or fix the path."),
        ("tls.key", "alice-key.pem", "Run 'securechat certs client alice --dir certs' or fix the path."),
    ],
)
def test_client_missing_file_names_field_and_fix(deployment, field, file, fix):
    """A missing client file names the field, the absolute path and the command that makes it."""
    path = CERTS / file
    path.unlink()
    error = client_error(deployment.client_yaml("alice", 1))
    assert error.field == field
    assert str(error) == f"alice.yaml: {field}: {path} not found. {fix}"


def test_file_path_is_a_directory(deployment):
    """A path that points at a directory is named as such."""
    error = server_error(deployment.server_yaml(tls={"cert": "certs"}))
    assert error.field == "tls.cert"
    assert str(error) == f"server.yaml: tls.cert: {CERTS} is a directory, not a file. Point it at the PEM file."


@pytest.mark.parametrize(
    ("field", "target", "wording"),
    [
        ("tls.cert", "server-key.pem", "is a private key, not a certificate. Point it at NAME.pem, not NAME-key.pem."),
        (
            "tls.client_ca",
            "server-key.pem",
            "is a private key, not a certificate. Point it at the CA's certificate (ca.pem, or root.pem for a hierarchy).",
        ),
        ("tls.cert", "notes.txt", "is not a PEM certificate. Point it at a file that starts with -----BEGIN CERTIFICATE-----."),
    ],
)
def test_file_that_is_not_a_certificate(deployment, field, target, wording):
    """A key (or any non-certificate) where a certificate belongs is named, with the fix."""
    path = CERTS / target
    if not path.exists():
        path.write_text("not a certificate\n")
    error = server_error(deployment.server_yaml(tls={field.removeprefix("tls."): f"certs/{target}"}))
    assert error.field == field
    assert str(error) == f"server.yaml: {field}: {path} {wording}"


def test_key_file_that_is_not_a_key(deployment):
    """A certificate where the key belongs is named, with the fix."""
    path = CERTS / "alice.pem"
    path.chmod(0o600)
    error = server_error(deployment.server_yaml(tls={"key": "certs/alice.pem"}))
    assert error.field == "tls.key"
    assert (
        str(error)
        == f"server.yaml: tls.key: {path} is a certificate, not a private key. Point it at NAME-key.pem."
    )


# --- key file modes ----------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o602, 0o666, 0o777])
def test_key_readable_by_others_is_refused(deployment, mode):
    """A key that other users can read or write is an error whose fix is the chmod command."""
    key = CERTS / "server-key.pem"
    key.chmod(mode)
    error = server_error(deployment.server_yaml())
    assert error.field == "tls.key"
    assert (
        str(error)
        == f"server.yaml: tls.key: {key} is readable or writable by other users (mode {mode:04o}). Run 'chmod 600 {key}'."
    )


def test_client_key_readable_by_others_is_refused(deployment):
    """The client's key gets the same mode check."""
    key = CERTS / "alice-key.pem"
    key.chmod(0o644)
    error = client_error(deployment.client_yaml("alice", 1))
    assert error.field == "tls.key"
    assert re.search(re.escape(f"(mode 0644). Run 'chmod 600 {key}'.") + "$", str(error))


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o440])
def test_key_owner_or_group_readable_is_accepted(deployment, mode):
    """Owner-only and group-readable keys load: Kubernetes fsGroup hands Secrets out as 0440/0640."""
    (CERTS / "server-key.pem").chmod(mode)
    assert load_server_material(load_server_config(deployment.server_yaml())) is not None


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root reads any file regardless of its mode, so 'unreadable' cannot be made"
)
def test_unreadable_key_names_the_user(deployment):
    """A key this user cannot read says so, with the uid and the fix."""
    key = CERTS / "server-key.pem"
    key.chmod(0o000)
    error = server_error(deployment.server_yaml())
    assert error.field == "tls.key"
    assert (
        str(error)
        == f"server.yaml: tls.key: {key} cannot be read by this user (uid {os.getuid()}). Fix its owner or permissions."
    )


def test_encrypted_client_key_is_refused(deployment):
    """A passphrase-encrypted key cannot be used by the client; the error says it is encrypted."""
    key = CERTS / "alice-key.pem"
    plain = pki.load_private_key(key)
    key.write_bytes(pki.private_key_pem(plain, password=b"correct horse"))
    error = client_error(deployment.client_yaml("alice", 1))
    assert error.field == "tls.key"
    assert (
        str(error)
        == f"alice.yaml: tls.key: {key} is encrypted with a passphrase. The server and client need an unencrypted key file (mode 0600)."
    )
    assert "correct horse" not in str(error)


# --- key / certificate / CA relationships ------------------------------------


def test_server_key_that_does_not_match_its_certificate(deployment):
    """bob's key as server-key.pem is a mismatch naming both files and how to reissue."""
    (CERTS / "server-key.pem").write_bytes((CERTS / "bob-key.pem").read_bytes())
    error = server_error(deployment.server_yaml())
    assert error.field == "tls.key"
    assert str(error) == (
        f"server.yaml: tls.key: {CERTS / 'server-key.pem'} does not match the certificate {CERTS / 'server.pem'}."
        " Use the key issued with that certificate, or issue both again with 'securechat certs server server --dir certs --force'."
    )


def test_client_key_that_does_not_match_its_certificate(deployment):
    """bob's key with alice's certificate is a mismatch on the client too."""
    error = client_error(deployment.client_yaml("alice", 1, tls={"key": "certs/bob-key.pem"}))
    assert error.field == "tls.key"
    assert re.search(r"bob-key\.pem does not match the certificate .*alice\.pem\.", str(error))


def test_server_cert_from_a_foreign_ca(deployment, pki_foreign_ca):
    """A server cert the client CA did not sign is refused, naming both files and the issuer."""
    deployment.issue_server("server", ca=pki_foreign_ca)
    error = server_error(deployment.server_yaml())
    assert error.field == "tls.cert"
    assert str(error) == (
        f"server.yaml: tls.cert: {CERTS / 'server.pem'} was not signed by the CA in {CERTS / 'ca.pem'}."
        " Issue it from that CA, or point tls.client_ca at the CA that signed it (CN=securechat CA,O=securechat)."
    )


def test_client_cert_from_a_foreign_ca(deployment, pki_foreign_ca):
    """A client cert not signed by tls.ca is refused, pointing at tls.ca."""
    deployment.issue_client("alice", ca=pki_foreign_ca)
    error = client_error(deployment.client_yaml("alice", 1))
    assert error.field == "tls.cert"
    assert str(error).startswith(
        f"alice.yaml: tls.cert: {CERTS / 'alice.pem'} was not signed by the CA in {CERTS / 'ca.pem'}."
    )
    assert "point tls.ca at the CA that signed it" in str(error)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda d: d.server_yaml(tls={"client_ca": "certs/alice.pem"}), "tls.client_ca"),
        (lambda d: d.client_yaml("alice", 1, tls={"ca": "certs/server.pem"}), "tls.ca"),
    ],
)
def test_ca_bundle_holding_a_leaf_is_refused(deployment, make, field):
    """A CA bundle that holds a non-CA certificate names that certificate and the fix."""
    path = make(deployment)
    error = server_error(path) if path.name == "server.yaml" else client_error(path)
    assert error.field == field
    assert re.fullmatch(
        rf"{re.escape(path.name)}: {re.escape(field)}: .*\.pem holds a certificate that is not a CA \(CN=(alice|server),O=securechat\)\."
        r" Point it at the CA certificate \(ca\.pem\), not a server or client certificate\.",
        str(error),
    )


# --- validity ----------------------------------------------------------------


@pytest.mark.parametrize("role", ["server", "client"])
def test_expired_certificate(deployment, role):
    """An expired certificate names its expiry date, the days since, and the reissue command."""
    now = pki.utc_now()
    if role == "server":
        issued = deployment.issue_server("server", not_before=now - 30 * DAY, not_after=now - 3 * DAY)
        error, path, config = server_error(deployment.server_yaml()), "server.pem", "server.yaml"
    else:
        issued = deployment.issue_client("alice", not_before=now - 30 * DAY, not_after=now - 3 * DAY)
        error, path, config = client_error(deployment.client_yaml("alice", 1)), "alice.pem", "alice.yaml"
    name = path.removesuffix(".pem")
    assert error.field == "tls.cert"
    assert str(error) == (
        f"{config}: tls.cert: {CERTS / path} expired on {issued.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC (3 days ago)."
        f" Issue a new one with 'securechat certs {role} {name} --dir certs --force'."
    )


@pytest.mark.parametrize("role", ["server", "client"])
def test_not_yet_valid_certificate(deployment, role):
    """A certificate valid only from the future names the start date and suggests the clock."""
    now = pki.utc_now()
    if role == "server":
        issued = deployment.issue_server("server", not_before=now + 10 * DAY, not_after=now + 40 * DAY)
        error, path = server_error(deployment.server_yaml()), "server.pem"
    else:
        issued = deployment.issue_client("alice", not_before=now + 10 * DAY, not_after=now + 40 * DAY)
        error, path = client_error(deployment.client_yaml("alice", 1)), "alice.pem"
    assert error.field == "tls.cert"
    assert str(error).endswith(
        f"tls.cert: {CERTS / path} is not valid until {issued.cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC."
        " Check this machine's clock, or issue a certificate that is valid now."
    )


# --- extended key usage ------------------------------------------------------


def test_server_cert_without_server_auth(deployment):
    """A client certificate as the server's tls.cert is refused: it lacks serverAuth."""
    error = server_error(deployment.server_yaml(tls={"cert": "certs/alice.pem", "key": "certs/alice-key.pem"}))
    assert error.field == "tls.cert"
    assert str(error) == (
        f"server.yaml: tls.cert: {CERTS / 'alice.pem'} is not a server certificate (its extended key usage lacks serverAuth)."
        " Issue one with 'securechat certs server alice --dir certs'."
    )


def test_client_cert_without_client_auth(deployment):
    """The server certificate in a client config is refused: it lacks clientAuth."""
    error = client_error(
        deployment.client_yaml("alice", 1, tls={"cert": "certs/server.pem", "key": "certs/server-key.pem"})
    )
    assert error.field == "tls.cert"
    assert str(error) == (
        f"alice.yaml: tls.cert: {CERTS / 'server.pem'} is not a client certificate (its extended key usage lacks clientAuth)."
        " Issue one with 'securechat certs client server --dir certs'."
    )


# --- through the real entry point --------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `python -m securechat ARGS` as a user would, with a hard timeout."""
    return subprocess.run(
        [sys.executable, "-m", "securechat", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *, starts: str, contains: str) -> None:
    """Exit 1, and stderr is a single `error: FILE: FIELD: ...` line with no traceback."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {starts}"), lines[0]
    assert contains in lines[0]


@pytest.fixture
def free_port() -> Iterator[int]:
    """A loopback port held open by this test, so any attempt to bind it would fail loudly."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _unknown_key(d):
    return d.server_yaml(tsl={"cert": "x"}), "server.yaml: tsl: unknown key.", "Did you mean 'tls'?"


def _missing_key(d):
    (d.root / "certs" / "server-key.pem").unlink()
    return d.server_yaml(), "server.yaml: tls.key: ", "server-key.pem not found. Run 'securechat certs server server"


def _key_mismatch(d):
    (CERTS / "server-key.pem").write_bytes((CERTS / "bob-key.pem").read_bytes())
    return d.server_yaml(), "server.yaml: tls.key: ", "does not match the certificate"


def _plaintext(d):
    return d.write_yaml("server.yaml", {"listen": "127.0.0.1:0"}), "server.yaml: tls: missing:", "insecure: true"


@pytest.mark.parametrize(
    "case", [_unknown_key, _missing_key, _key_mismatch, _plaintext], ids=lambda f: f.__name__.strip("_")
)
def test_serve_with_bad_config_exits_before_binding(deployment, free_port, case):
    """`serve` prints one error line and exits 1 before it tries to bind its port."""
    path, starts, contains = case(deployment)
    # The port is held by the test: had serve got as far as binding, it would
    # report "cannot listen on" instead of the config error.
    result = run_cli("serve", "--config", str(path), "--listen", f"127.0.0.1:{free_port}", cwd=deployment.root)
    assert_one_line_error(result, starts=starts, contains=contains)
    assert "cannot listen" not in result.stderr and "listening" not in result.stderr


def test_serve_with_good_config_does_try_the_port(deployment, free_port):
    """The twin: a valid config gets as far as binding, and the held port is reported."""
    result = run_cli(
        "serve", "--config", str(deployment.server_yaml()), "--listen", f"127.0.0.1:{free_port}", cwd=deployment.root
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    # `serve` keeps gRPC core's own log (it names failed handshakes), which adds
    # a line of its own for a failed bind; our error is the last line.
    assert result.stderr.splitlines()[-1].startswith(f"error: cannot listen on 127.0.0.1:{free_port}")


def test_serve_bad_listen_flag(deployment):
    """A bad --listen value is one line naming the flag."""
    result = run_cli("serve", "--config", str(deployment.server_yaml()), "--listen", "::1:50051", cwd=deployment.root)
    assert_one_line_error(
        result, starts="--listen: '::1:50051' has an IPv6 host without brackets.", contains="[::1]:50051"
    )


@pytest.mark.parametrize(
    ("overrides", "starts", "contains"),
    [
        ({"tls": {"cerr": "x"}}, "alice.yaml: tls.cerr: unknown key.", "Did you mean 'tls.cert'?"),
        ({"tls": {"key": "certs/bob-key.pem"}}, "alice.yaml: tls.key: ", "does not match the certificate"),
        ({"tls": None}, "alice.yaml: tls: missing:", "insecure: true"),
    ],
    ids=["unknown-key", "key-mismatch", "plaintext"],
)
def test_hello_with_bad_config_is_one_line(deployment, overrides, starts, contains):
    """`hello` with a bad config prints one error line naming the file and field, and exits 1."""
    path = deployment.client_yaml("alice", 1, **overrides)
    assert_one_line_error(
        run_cli("hello", "--config", str(path), cwd=deployment.root), starts=starts, contains=contains
    )


def test_hello_missing_key_file_is_one_line(deployment):
    """`hello` with a missing key file names the field and the command that makes it."""
    (CERTS / "alice-key.pem").unlink()
    result = run_cli("hello", "--config", str(deployment.client_yaml("alice", 1)), cwd=deployment.root)
    assert_one_line_error(
        result,
        starts="alice.yaml: tls.key: ",
        contains="Run 'securechat certs client alice --dir certs' or fix the path.",
    )
