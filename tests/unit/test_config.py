"""YAML -> frozen dataclasses (securechat.config): every mistake names the file, the field and the fix.

These tests only parse YAML; the files a config names are checked by
securechat.tls.material (tests/integration/test_config_files.py).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from securechat.config import (
    Address,
    ClientConfig,
    ClientTls,
    Limits,
    ServerConfig,
    ServerTls,
    load_client_config,
    load_server_config,
    parse_address,
)
from securechat.errors import ConfigError
from securechat.tls.identity import AuthzPolicy

SERVER_TLS = {"cert": "certs/server.pem", "key": "certs/server-key.pem", "client_ca": "certs/ca.pem"}
CLIENT_TLS = {"ca": "certs/ca.pem", "cert": "certs/alice.pem", "key": "certs/alice-key.pem"}
SERVER_KEYS = "listen, tls, insecure, insecure_allow_non_loopback, authz, crl, health_port, limits, log, grace_seconds, keepalive, metrics_port, broker"


def write(directory: Path, text: str, name: str = "server.yaml") -> Path:
    """Write raw YAML text (for cases a dict cannot express) and return its path."""
    path = directory / name
    path.write_text(text)
    return path


def expect(error: pytest.ExceptionInfo[ConfigError], field: str | None, text: str) -> None:
    """The error names exactly FIELD and its whole text is TEXT."""
    assert error.value.field == field
    assert str(error.value) == text


# --- happy paths -------------------------------------------------------------


def test_server_config_happy_path_returns_frozen_dataclass_with_defaults(deployment):
    """A minimal server config loads with absolute paths and every documented default."""
    config = load_server_config(deployment.server_yaml())
    certs = deployment.root / "certs"
    assert config == ServerConfig(
        source=deployment.root / "server.yaml",
        listen=Address("127.0.0.1", 0),
        tls=ServerTls(cert=certs / "server.pem", key=certs / "server-key.pem", client_ca=certs / "ca.pem", mtls=True),
    )
    assert config.insecure is False and config.insecure_allow_non_loopback is False
    assert config.allow is None and config.crl is None and config.health_port is None
    assert config.limits == Limits(
        max_text_length=4096,
        max_rooms_per_stream=32,
        max_message_bytes=65536,
        announce_max_members=100,
        queue_size=1024,
    )
    assert (config.log_level, config.log_format, config.grace_seconds) == ("info", "text", 5.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.listen = Address("0.0.0.0", 1)  # type: ignore[misc]


def test_server_config_every_key_set_is_read(deployment):
    """Every server key is read into its field, with lists as frozensets and paths resolved."""
    path = deployment.server_yaml(
        listen="[::1]:7000",
        tls={"mtls": False},
        authz={"allow": ["alice", "bob"]},
        crl="certs/crl.pem",
        health_port=8081,
        limits={
            "max_text_length": 10,
            "max_rooms_per_stream": 2,
            "max_message_bytes": 2048,
            "announce_max_members": 0,
            "queue_size": 5,
        },
        log={"level": "debug", "format": "json"},
        grace_seconds=1.5,
    )
    config = load_server_config(path)
    assert config.listen == Address("::1", 7000) and str(config.listen) == "[::1]:7000"
    assert config.tls is not None and config.tls.mtls is False
    assert config.allow == frozenset({"alice", "bob"})
    assert config.crl == deployment.root / "certs" / "crl.pem"
    assert config.health_port == 8081
    assert config.limits == Limits(10, 2, 2048, 0, 5)
    assert (config.log_level, config.log_format, config.grace_seconds) == ("debug", "json", 1.5)


def test_server_listen_defaults_to_loopback_50051(deployment):
    """Without listen (or with an empty one) the server listens on 127.0.0.1:50051."""
    for text in ("", "listen:\n"):
        path = write(deployment.root, text + "tls: {cert: a.pem, key: a-key.pem, client_ca: ca.pem}\n")
        assert load_server_config(path).listen == Address("127.0.0.1", 50051)


def test_client_config_happy_path_returns_frozen_dataclass(deployment):
    """A client config loads with absolute paths and no server-name override."""
    config = load_client_config(deployment.client_yaml("alice", 50051))
    certs = deployment.root / "certs"
    assert config == ClientConfig(
        source=deployment.root / "alice.yaml",
        target=Address("localhost", 50051),
        tls=ClientTls(ca=certs / "ca.pem", cert=certs / "alice.pem", key=certs / "alice-key.pem", server_name=None),
        insecure=False,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.insecure = True  # type: ignore[misc]


def test_client_config_server_only_tls_and_server_name(deployment):
    """A client may omit cert and key together (server-only TLS) and override the server name."""
    path = deployment.write_yaml(
        "anon.yaml", {"target": "10.0.0.5:443", "tls": {"ca": "certs/ca.pem", "server_name": "chat.internal"}}
    )
    config = load_client_config(path)
    assert config.target == Address("10.0.0.5", 443)
    assert config.tls == ClientTls(ca=deployment.root / "certs" / "ca.pem", server_name="chat.internal")


def test_relative_paths_resolve_against_the_config_directory(deployment, tmp_path_factory, monkeypatch):
    """Relative paths are relative to the YAML file, not the working directory."""
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    server = load_server_config(deployment.server_yaml())
    client = load_client_config(deployment.client_yaml("alice", 1))
    certs = deployment.root / "certs"
    assert server.tls is not None and client.tls is not None
    assert (server.tls.cert, server.tls.key, server.tls.client_ca) == (
        certs / "server.pem",
        certs / "server-key.pem",
        certs / "ca.pem",
    )
    assert (client.tls.ca, client.tls.cert, client.tls.key) == (
        certs / "ca.pem",
        certs / "alice.pem",
        certs / "alice-key.pem",
    )


def test_absolute_paths_are_kept(deployment, tmp_path_factory):
    """An absolute path in the config is used as written."""
    elsewhere = tmp_path_factory.mktemp("pki") / "server.pem"
    config = load_server_config(deployment.server_yaml(tls={"cert": str(elsewhere)}))
    assert config.tls is not None and config.tls.cert == elsewhere


def test_insecure_on_loopback_is_allowed(deployment):
    """insecure: true without tls on a loopback address loads, with tls None."""
    for listen in ("127.0.0.1:0", "localhost:50051", "[::1]:50051"):
        config = load_server_config(deployment.write_yaml("server.yaml", {"listen": listen, "insecure": True}))
        assert config.insecure is True and config.tls is None
    client = load_client_config(deployment.write_yaml("c.yaml", {"target": "localhost:1", "insecure": True}))
    assert client.insecure is True and client.tls is None


def test_insecure_non_loopback_allowed_with_second_flag(deployment):
    """insecure_allow_non_loopback: true is the explicit second switch for a remote plaintext listener."""
    path = deployment.write_yaml(
        "server.yaml", {"listen": "0.0.0.0:50051", "insecure": True, "insecure_allow_non_loopback": True}
    )
    config = load_server_config(path)
    assert config.listen == Address("0.0.0.0", 50051) and config.insecure_allow_non_loopback is True


def test_mtls_false_without_client_ca_is_fine(deployment):
    """Server-only TLS needs no client CA."""
    config = load_server_config(deployment.server_yaml(tls={"mtls": False, "client_ca": None}))
    assert config.tls is not None and config.tls.client_ca is None and config.tls.mtls is False


def test_listen_and_target_overrides_replace_the_file_value(deployment):
    """--listen and --target win over the file's address."""
    assert load_server_config(deployment.server_yaml(), listen="[::1]:0").listen == Address("::1", 0)
    assert load_client_config(deployment.client_yaml("alice", 1), target="example.org:443").target == Address(
        "example.org", 443
    )


# --- unknown keys ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field", "hint"),
    [
        ({"tsl": SERVER_TLS}, "tsl", "Did you mean 'tls'?"),
        ({"tls": SERVER_TLS, "lisen": "127.0.0.1:0"}, "lisen", "Did you mean 'listen'?"),
        ({"tls": {**SERVER_TLS, "clientca": "certs/ca.pem"}}, "tls.clientca", "Did you mean 'tls.client_ca'?"),
        ({"tls": {**SERVER_TLS, "mtsl": True}}, "tls.mtsl", "Did you mean 'tls.mtls'?"),
        (
            {"tls": SERVER_TLS, "limits": {"max_text_len": 5}},
            "limits.max_text_len",
            "Did you mean 'limits.max_text_length'?",
        ),
        (
            {"tls": SERVER_TLS, "limits": {"bufered_writes": False}},
            "limits.bufered_writes",
            "Did you mean 'limits.buffered_writes'?",
        ),
        ({"tls": SERVER_TLS, "log": {"levle": "debug"}}, "log.levle", "Did you mean 'log.level'?"),
        ({"tls": SERVER_TLS, "authz": {"allowed": ["a"]}}, "authz.allowed", "Did you mean 'authz.allow'?"),
        ({"tls": SERVER_TLS, "colour": "blue"}, "colour", f"Valid keys: {SERVER_KEYS}."),
        ({"tls": {**SERVER_TLS, "password": "x"}}, "tls.password", "Valid keys: cert, key, client_ca, mtls, renew."),
    ],
)
def test_server_unknown_key_names_it_and_suggests(deployment, data, field, hint):
    """An unknown server key is an error naming its dotted path, with the nearest key or the valid ones."""
    path = deployment.write_yaml("server.yaml", data)
    with pytest.raises(ConfigError) as error:
        load_server_config(path)
    expect(error, field, f"server.yaml: {field}: unknown key. {hint}")


@pytest.mark.parametrize(
    ("data", "field", "hint"),
    [
        ({"targte": "localhost:1", "tls": CLIENT_TLS}, "targte", "Did you mean 'target'?"),
        (
            {"target": "localhost:1", "tls": {**CLIENT_TLS, "servername": "x"}},
            "tls.servername",
            "Did you mean 'tls.server_name'?",
        ),
        (
            {"target": "localhost:1", "tls": {**CLIENT_TLS, "client_ca": "x"}},
            "tls.client_ca",
            "Valid keys: ca, cert, key, server_name, renew, server_id.",
        ),
        ({"target": "localhost:1", "tls": CLIENT_TLS, "listen": "x"}, "listen", "Valid keys: target, tls, insecure."),
    ],
)
def test_client_unknown_key_names_it_and_suggests(deployment, data, field, hint):
    """An unknown client key is an error naming its dotted path, with the nearest key or the valid ones."""
    path = deployment.write_yaml("alice.yaml", data)
    with pytest.raises(ConfigError) as error:
        load_client_config(path)
    expect(error, field, f"alice.yaml: {field}: unknown key. {hint}")


# --- wrong types and ranges --------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field", "problem"),
    [
        ({"listen": 50051}, "listen", "expected HOST:PORT as a string, got a number (50051)."),
        ({"listen": ["127.0.0.1", 1]}, "listen", "expected HOST:PORT as a string, got a list (['127.0.0.1', 1])."),
        ({"tls": {"mtls": "true"}}, "tls.mtls", "expected true or false, got a string ('true')."),
        ({"tls": {"cert": 5}}, "tls.cert", "expected a string, got a number (5)."),
        ({"tls": {"key": ""}}, "tls.key", "must not be empty."),
        ({"tls": "certs/server.pem"}, "tls", "must be a mapping of keys to values, got a string."),
        ({"insecure": "no"}, "insecure", "expected true or false, got a string ('no')."),
        ({"health_port": True}, "health_port", "expected a whole number, got a boolean (True)."),
        ({"health_port": "8081"}, "health_port", "expected a whole number, got a string ('8081')."),
        ({"health_port": 70000}, "health_port", "70000 is out of range; use 0 to 65535."),
        ({"health_port": 1.5}, "health_port", "expected a whole number, got a number (1.5)."),
        (
            {"authz": {"allow": "alice"}},
            "authz.allow",
            "expected a list of identity names, got a string. Write e.g. allow: [alice, bob].",
        ),
        (
            {"authz": {"allow": ["alice", 3]}},
            "authz.allow",
            "expected a list of identity names, got a list. Write e.g. allow: [alice, bob].",
        ),
        ({"authz": ["alice"]}, "authz", "must be a mapping of keys to values, got a list."),
        ({"limits": 5}, "limits", "must be a mapping of keys to values, got a number."),
        ({"limits": {"buffered_writes": "off"}}, "limits.buffered_writes", "expected true or false, got a string ('off')."),
        ({"limits": {"max_text_length": 0}}, "limits.max_text_length", "0 is out of range; use 1 to 1048576."),
        (
            {"limits": {"max_rooms_per_stream": 10001}},
            "limits.max_rooms_per_stream",
            "10001 is out of range; use 1 to 10000.",
        ),
        (
            {"limits": {"max_message_bytes": 100}},
            "limits.max_message_bytes",
            "100 is out of range; use 1024 to 67108864.",
        ),
        (
            {"limits": {"announce_max_members": -1}},
            "limits.announce_max_members",
            "-1 is out of range; use 0 to 1000000.",
        ),
        ({"limits": {"queue_size": "big"}}, "limits.queue_size", "expected a whole number, got a string ('big')."),
        ({"limits": {"queue_size": False}}, "limits.queue_size", "expected a whole number, got a boolean (False)."),
        ({"log": {"level": "verbose"}}, "log.level", "'verbose' is not one of debug, info, warning, error."),
        ({"log": {"level": "INFO"}}, "log.level", "'INFO' is not one of debug, info, warning, error."),
        ({"log": {"format": "xml"}}, "log.format", "'xml' is not one of text, json."),
        ({"log": {"level": 10}}, "log.level", "expected a string, got a number (10)."),
        ({"grace_seconds": -1}, "grace_seconds", "-1.0 is out of range; use 0.0 to 3600.0."),
        ({"grace_seconds": "5s"}, "grace_seconds", "expected a number, got a string ('5s')."),
        ({"crl": ["a"]}, "crl", "expected a string, got a list (['a'])."),
    ],
)
def test_server_wrong_type_or_range(deployment, overrides, field, problem):
    """A value of the wrong type or out of range names its field and what was expected."""
    with pytest.raises(ConfigError) as error:
        load_server_config(deployment.server_yaml(**overrides))
    expect(error, field, f"server.yaml: {field}: {problem}")


@pytest.mark.parametrize(
    ("overrides", "field", "problem"),
    [
        ({"target": 50051}, "target", "expected HOST:PORT as a string, got a number (50051)."),
        ({"insecure": 1}, "insecure", "expected true or false, got a number (1)."),
        ({"tls": {"ca": ["a", "b"]}}, "tls.ca", "expected a string, got a list (['a', 'b'])."),
        ({"tls": {"server_name": 7}}, "tls.server_name", "expected a string, got a number (7)."),
        ({"tls": {"server_name": " "}}, "tls.server_name", "must not be empty."),
    ],
)
def test_client_wrong_type(deployment, overrides, field, problem):
    """A client value of the wrong type names its field and what was expected."""
    with pytest.raises(ConfigError) as error:
        load_client_config(deployment.client_yaml("alice", 1, **overrides))
    expect(error, field, f"alice.yaml: {field}: {problem}")


# --- HOST:PORT ---------------------------------------------------------------

HINT = "Write it as HOST:PORT, e.g. 127.0.0.1:50051 or [::1]:50051."
BAD_ADDRESSES = [
    ("localhost", f"'localhost' is not HOST:PORT. {HINT}"),
    ("127.0.0.1:", f"'127.0.0.1:' is not HOST:PORT. {HINT}"),
    (":50051", f"':50051' is not HOST:PORT. {HINT}"),
    ("host:http", f"'host:http' is not HOST:PORT. {HINT}"),
    ("host:-1", f"'host:-1' is not HOST:PORT. {HINT}"),
    ("::1:50051", f"'::1:50051' has an IPv6 host without brackets. {HINT}"),
    ("fe80::1:443", f"'fe80::1:443' has an IPv6 host without brackets. {HINT}"),
    ("127.0.0.1:65536", "port 65536 in '127.0.0.1:65536' is out of range; use 0 to 65535."),
    ("[::1]:99999", "port 99999 in '[::1]:99999' is out of range; use 0 to 65535."),
    ("[]:5", f"'[]:5' has an empty host. {HINT}"),
]


@pytest.mark.parametrize(("text", "problem"), BAD_ADDRESSES)
def test_bad_listen_in_file(deployment, text, problem):
    """A bad listen address in the file names the listen field and shows the right form."""
    with pytest.raises(ConfigError) as error:
        load_server_config(deployment.server_yaml(listen=text))
    expect(error, "listen", f"server.yaml: listen: {problem}")


@pytest.mark.parametrize(("text", "problem"), BAD_ADDRESSES)
def test_bad_target_in_file(deployment, text, problem):
    """A bad client target names the target field and shows the right form."""
    with pytest.raises(ConfigError) as error:
        load_client_config(deployment.client_yaml("alice", 1, target=text))
    expect(error, "target", f"alice.yaml: target: {problem}")


@pytest.mark.parametrize(("text", "problem"), BAD_ADDRESSES[:1] + BAD_ADDRESSES[5:6] + BAD_ADDRESSES[7:8])
def test_bad_listen_and_target_flags_name_the_flag(deployment, text, problem):
    """--listen / --target errors name the flag (not the file), with the same wording."""
    with pytest.raises(ConfigError, match=re.escape(f"--listen: {problem}")) as error:
        load_server_config(deployment.server_yaml(), listen=text)
    assert (error.value.source, error.value.field) == ("--listen", None)
    with pytest.raises(ConfigError, match=re.escape(f"--target: {problem}")) as error:
        load_client_config(deployment.client_yaml("alice", 1), target=text)
    assert (error.value.source, error.value.field) == ("--target", None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:0", Address("127.0.0.1", 0)),
        ("localhost:65535", Address("localhost", 65535)),
        ("[::1]:50051", Address("::1", 50051)),
        ("[fe80::1]:443", Address("fe80::1", 443)),
        (" chat.example.org:443 ", Address("chat.example.org", 443)),
    ],
)
def test_parse_address_accepts_good_forms(text, expected):
    """HOST:PORT, bracketed IPv6 and surrounding spaces parse; str() writes them back."""
    assert parse_address(text) == expected
    assert str(expected) == text.strip()


# --- the file itself ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where", "key"),
    [
        ("listen: 127.0.0.1:0\ninsecure: true\ninsecure: false\n", "line 3, column 1", "insecure"),
        ("tls:\n  cert: a.pem\n  cert: b.pem\n", "line 3, column 3", "cert"),
    ],
)
def test_duplicate_keys_are_refused(tmp_path, text, where, key):
    """A key given twice is an error naming it, never a silent override."""
    with pytest.raises(ConfigError) as error:
        load_server_config(write(tmp_path, text))
    expect(
        error,
        None,
        f"server.yaml: is not valid YAML at {where}: duplicate key '{key}' "
        "(the second would silently replace the first). Remove one of them.",
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "listen: 127.0.0.1:0\ntls:\n  cert: a.pem\n key: b.pem\n",
            "is not valid YAML at line 4, column 2: expected <block end>, but found '<block mapping start>'.",
        ),
        ("listen: [127.0.0.1\n", "is not valid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'."),
        (
            "listen:\t'x'\n\tfoo: 1\n",
            "is not valid YAML at line 1, column 8: found character '\\t' that cannot start any token.",
        ),
        ("tls: {cert: a}\n---\ntls: {}\n", "is not valid YAML at line 2, column 1: but found another document."),
    ],
)
def test_bad_yaml_syntax_names_line_and_column(tmp_path, text, problem):
    """A YAML syntax error names the file, the line and the column."""
    with pytest.raises(ConfigError) as error:
        load_server_config(write(tmp_path, text))
    expect(error, None, f"server.yaml: {problem} Fix the syntax (indentation, colons, quotes).")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
@pytest.mark.parametrize("load", [load_server_config, load_client_config])
def test_empty_file_is_an_error(tmp_path, text, load):
    """An empty or comment-only file says it is empty (not that some field is missing)."""
    with pytest.raises(ConfigError) as error:
        load(write(tmp_path, text))
    expect(
        error,
        None,
        "server.yaml: is empty. Run 'securechat quickstart --dir DIR' for a working example, or fix the path.",
    )


@pytest.mark.parametrize("load", [load_server_config, load_client_config])
def test_config_file_not_found(tmp_path, load):
    """A missing config file is named by its full path, with how to make one."""
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as error:
        load(path)
    expect(
        error,
        None,
        f"{path}: config file not found. Run 'securechat quickstart --dir DIR' to make one, or fix the path.",
    )


def test_config_path_is_a_directory(tmp_path):
    """A directory given as the config is a one-line error, not a traceback."""
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"{tmp_path}: is a directory, not a config file. Pass the YAML file in it, e.g. --config {tmp_path / 'alice.yaml'}."
        ),
    ):
        load_server_config(tmp_path)


def test_config_not_utf8(tmp_path):
    """A config that is not UTF-8 text is a one-line error."""
    path = tmp_path / "server.yaml"
    path.write_bytes(b"listen: \xff\xfe\n")
    with pytest.raises(
        ConfigError,
        match=re.escape("cannot read the config file (UnicodeDecodeError). Check its permissions and encoding."),
    ):
        load_server_config(path)


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- listen: 127.0.0.1:0\n- tls: {}\n", "a list"), ("just a string\n", "a string"), ("42\n", "a number")],
)
@pytest.mark.parametrize("load", [load_server_config, load_client_config])
def test_top_level_must_be_a_mapping(tmp_path, text, kind, load):
    """A document that is a list or scalar at top level is rejected, naming what it got."""
    with pytest.raises(ConfigError) as error:
        load(write(tmp_path, text))
    expect(error, None, f"server.yaml: must be a mapping of keys to values, got {kind}.")


# --- TLS required unless plaintext is asked for by name ----------------------


@pytest.mark.parametrize("tls", [None, "absent"])
def test_server_without_tls_refuses_plaintext(deployment, tls):
    """No tls section (absent or empty) and no insecure: true is an error, not plaintext."""
    data = {"listen": "127.0.0.1:0"} if tls == "absent" else {"listen": "127.0.0.1:0", "tls": None}
    with pytest.raises(ConfigError) as error:
        load_server_config(deployment.write_yaml("server.yaml", data))
    expect(
        error,
        "tls",
        "server.yaml: tls: missing: securechat will not serve plaintext unless asked."
        " Add tls: {cert, key, client_ca} (see 'securechat quickstart'), or set insecure: true for a loopback-only test.",
    )


def test_server_insecure_false_still_needs_tls(deployment):
    """insecure: false is not a request for plaintext."""
    with pytest.raises(
        ConfigError, match=re.escape("server.yaml: tls: missing: securechat will not serve plaintext unless asked.")
    ):
        load_server_config(deployment.write_yaml("server.yaml", {"insecure": False}))


def test_client_without_tls_refuses_plaintext(deployment):
    """A client with no tls section and no insecure: true is an error, not plaintext."""
    with pytest.raises(ConfigError) as error:
        load_client_config(deployment.write_yaml("alice.yaml", {"target": "localhost:50051"}))
    expect(
        error,
        "tls",
        "alice.yaml: tls: missing: securechat will not connect in plaintext unless asked."
        " Add tls: {ca, cert, key}, or set insecure: true for a loopback-only test.",
    )


def test_server_insecure_with_tls_is_an_error(deployment):
    """insecure: true next to a tls section is ambiguous and refused."""
    with pytest.raises(ConfigError) as error:
        load_server_config(deployment.server_yaml(insecure=True))
    expect(
        error,
        "insecure",
        "server.yaml: insecure: is true but a tls section is configured too."
        " Remove one: securechat serves either TLS or, when asked by name, plaintext.",
    )


def test_client_insecure_with_tls_is_an_error(deployment):
    """A client with insecure: true and a tls section is refused."""
    with pytest.raises(ConfigError) as error:
        load_client_config(deployment.client_yaml("alice", 1, insecure=True))
    expect(
        error,
        "insecure",
        "alice.yaml: insecure: is true but a tls section is configured too."
        " Remove one: the client speaks either TLS or, when asked by name, plaintext.",
    )


@pytest.mark.parametrize(
    ("listen", "shown"),
    [("0.0.0.0:50051", "0.0.0.0:50051"), ("[::]:50051", "[::]:50051"), ("chat.example.org:80", "chat.example.org:80")],
)
def test_insecure_non_loopback_is_refused(deployment, listen, shown):
    """Plaintext on a non-loopback address needs insecure_allow_non_loopback: true."""
    with pytest.raises(ConfigError) as error:
        load_server_config(deployment.write_yaml("server.yaml", {"listen": listen, "insecure": True}))
    expect(
        error,
        "listen",
        f"server.yaml: listen: insecure: true would serve plaintext on non-loopback address {shown}."
        " Listen on 127.0.0.1, configure tls, or set insecure_allow_non_loopback: true if you really mean it.",
    )


def test_insecure_non_loopback_via_listen_flag_is_refused(deployment):
    """--listen 0.0.0.0:PORT cannot sneak plaintext past the loopback rule."""
    path = deployment.write_yaml("server.yaml", {"listen": "127.0.0.1:0", "insecure": True})
    with pytest.raises(ConfigError, match=re.escape("non-loopback address 0.0.0.0:1")) as error:
        load_server_config(path, listen="0.0.0.0:1")
    assert error.value.field == "listen"


# --- required TLS fields -----------------------------------------------------


@pytest.mark.parametrize(
    ("tls", "field", "text"),
    [
        (
            {"key": "k.pem", "client_ca": "ca.pem"},
            "tls.cert",
            "missing. Set tls.cert to the server's certificate file.",
        ),
        ({"cert": "c.pem", "client_ca": "ca.pem"}, "tls.key", "missing. Set tls.key to the server's private key file."),
        (
            {"cert": "c.pem", "key": "k.pem"},
            "tls.client_ca",
            "missing while mtls is true: the server cannot verify client certificates without it."
            " Set tls.client_ca to the CA that signs client certificates (e.g. certs/ca.pem), or set tls.mtls: false.",
        ),
        (
            {"cert": "c.pem", "key": "k.pem", "mtls": True, "client_ca": None},
            "tls.client_ca",
            "missing while mtls is true: the server cannot verify client certificates without it.",
        ),
    ],
)
def test_server_tls_required_fields(deployment, tls, field, text):
    """cert, key, and client_ca under mtls (the default) are required, each named with its fix."""
    with pytest.raises(ConfigError, match=re.escape(f"server.yaml: {field}: {text}")) as error:
        load_server_config(deployment.write_yaml("server.yaml", {"tls": tls}))
    assert error.value.field == field


@pytest.mark.parametrize(
    ("tls", "field", "text"),
    [
        (
            {"cert": "a.pem", "key": "a-key.pem"},
            "tls.ca",
            "missing: the client cannot verify the server without it. Set tls.ca to the CA that signed the server certificate (e.g. certs/ca.pem).",
        ),
        (
            {"ca": "ca.pem", "cert": "a.pem"},
            "tls.key",
            "missing while tls.cert is set. Give both tls.cert and tls.key, or neither for server-only TLS.",
        ),
        (
            {"ca": "ca.pem", "key": "a-key.pem"},
            "tls.cert",
            "missing while tls.key is set. Give both tls.cert and tls.key, or neither for server-only TLS.",
        ),
    ],
)
def test_client_tls_required_fields(deployment, tls, field, text):
    """A client needs tls.ca, and tls.cert and tls.key come as a pair."""
    with pytest.raises(ConfigError) as error:
        load_client_config(deployment.write_yaml("alice.yaml", {"target": "localhost:1", "tls": tls}))
    expect(error, field, f"alice.yaml: {field}: {text}")


def test_client_target_missing(deployment):
    """A client without target (and no --target) says how to write one."""
    with pytest.raises(ConfigError) as error:
        load_client_config(deployment.write_yaml("alice.yaml", {"tls": CLIENT_TLS}))
    expect(error, "target", "alice.yaml: target: missing. Set target to the server's HOST:PORT, e.g. localhost:50051.")
    assert load_client_config(deployment.root / "alice.yaml", target="localhost:1").target == Address("localhost", 1)


# --- authz.methods ------------------------------------------------------------

METHOD_FIX = (
    "Use one of SayHello, Chat, ChatBatched, WhoAmI, or a full name such as /grpc.health.v1.Health/Check or /grpc.health.v1.Health/*."
)


@pytest.mark.parametrize(
    ("methods", "field", "text"),
    [
        ("Chat", "authz.methods", "expected a mapping of method to identities, got a string. Write e.g. methods: {Chat: [alice]}."),
        ({"Shout": ["alice"]}, "authz.methods.Shout", f"is not a method. {METHOD_FIX}"),
        ({"/nope": ["alice"]}, "authz.methods./nope", f"is not a method. {METHOD_FIX}"),
        (
            {"Chat": "alice"},
            "authz.methods.Chat",
            "expected a list of identities, got a string. Write e.g. Chat: [alice, 'spiffe://example.org/bob'].",
        ),
        (
            {"Chat": ["alice", ""]},
            "authz.methods.Chat",
            "holds an empty or non-text identity. Write e.g. Chat: [alice, 'spiffe://example.org/bob'].",
        ),
    ],
)
def test_bad_authz_methods_name_the_field(deployment, methods, field, text):
    """A wrong authz.methods entry names the method's field and shows the right form."""
    with pytest.raises(ConfigError) as error:
        load_server_config(deployment.server_yaml(authz={"methods": methods}))
    expect(error, field, f"server.yaml: {field}: {text}")


def test_authz_methods_resolve_to_full_method_names(deployment):
    """Short ChatService names, full names and service wildcards become full method names."""
    config = load_server_config(
        deployment.server_yaml(
            authz={"methods": {"Chat": ["alice"], "grpc.health.v1.Health/*": ["probe"], "/securechat.v1.ChatService/WhoAmI": ["*"]}}
        )
    )
    assert dict(config.authz_methods) == {
        "/securechat.v1.ChatService/Chat": frozenset({"alice"}),
        "/grpc.health.v1.Health/*": frozenset({"probe"}),
        "/securechat.v1.ChatService/WhoAmI": frozenset({"*"}),
    }


def test_chat_rule_covers_chatbatched_unless_it_has_its_own(deployment):
    """ChatBatched is decided by Chat's rule; given a rule of its own, by that one (and the denial names which)."""
    inherited = load_server_config(deployment.server_yaml(authz={"methods": {"Chat": ["alice"]}}))
    own = load_server_config(deployment.server_yaml(authz={"methods": {"Chat": ["alice"], "ChatBatched": ["bob"]}}))
    batched = "/securechat.v1.ChatService/ChatBatched"
    assert AuthzPolicy(inherited.allow, dict(inherited.authz_methods)).rule_for(batched) == (
        "authz.methods['/securechat.v1.ChatService/Chat']"
    )
    assert AuthzPolicy(own.allow, dict(own.authz_methods)).rule_for(batched) == f"authz.methods['{batched}']"


def test_a_tls_key_at_the_top_level_is_named_where_it_goes(deployment):
    """README once showed server_name at the top level: the error says it belongs in tls:."""
    path = deployment.client_yaml("alice", 50051, server_name="chat.internal")
    with pytest.raises(ConfigError, match=r"server_name: unknown key\. Did you mean 'tls\.server_name'\? It goes in the tls: section\."):
        load_client_config(path)


def test_server_name_under_tls_is_read(deployment):
    """The passing twin: tls.server_name is the key."""
    config = load_client_config(deployment.client_yaml("alice", 50051, tls={"server_name": "chat.internal"}))
    assert config.tls is not None and config.tls.server_name == "chat.internal"
