"""Every problem of a config file is reported together, one line each -- by the loader and by the CLI."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from securechat.config import load_broker_config, load_client_config, load_server_config
from securechat.errors import ConfigError, ConfigProblem

THREE_MISTAKES = """\
listen: 127.0.0.1:0
tls: {cert: a.pem, key: a-key.pem, client_ca: ca.pem, mtsl: true}
health_port: 70000
log: {level: verbose}
"""
THREE_LINES = [
    "server.yaml: tls.mtsl: unknown key. Did you mean 'tls.mtls'?",
    "server.yaml: health_port: 70000 is out of range; use 0 to 65535.",
    "server.yaml: log.level: 'verbose' is not one of debug, info, warning, error.",
]


def write(tmp_path: Path, text: str, name: str = "server.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_server_config_reports_every_problem(tmp_path):
    """Three mistakes in three sections: one ConfigError, three problems, one line each."""
    with pytest.raises(ConfigError) as caught:
        load_server_config(write(tmp_path, THREE_MISTAKES))
    assert str(caught.value).splitlines() == THREE_LINES
    assert [p.field for p in caught.value.problems] == ["tls.mtsl", "health_port", "log.level"]
    assert (caught.value.source, caught.value.field) == ("server.yaml", "tls.mtsl")  # the first problem's


def test_server_config_with_the_mistakes_fixed_loads(tmp_path):
    """The passing twin: the same file with the three mistakes fixed loads."""
    fixed = THREE_MISTAKES.replace("mtsl", "mtls").replace("70000", "8081").replace("verbose", "debug")
    config = load_server_config(write(tmp_path, fixed))
    assert (config.health_port, config.log_level) == (8081, "debug")


def test_client_config_reports_every_problem(tmp_path):
    """A client file with a bad target, an unknown key and a half tls pair says all three."""
    text = "target: localhost\ncolour: blue\ntls: {ca: ca.pem, cert: a.pem}\n"
    with pytest.raises(ConfigError) as caught:
        load_client_config(write(tmp_path, text, "alice.yaml"))
    assert str(caught.value).splitlines() == [  # a section's unknown keys first, then its values
        "alice.yaml: colour: unknown key. Valid keys: target, tls, insecure.",
        "alice.yaml: target: 'localhost' is not HOST:PORT. Write it as HOST:PORT, e.g. 127.0.0.1:50051 or [::1]:50051.",
        "alice.yaml: tls.key: missing while tls.cert is set. Give both tls.cert and tls.key, or neither for server-only TLS.",
    ]


def test_broker_section_reports_every_problem(tmp_path):
    """Several broker mistakes are listed together, each naming its broker.* field."""
    text = "broker: {type: nats, servers: ['http://x:1', 'nats://y:2'], tls: {ca: ca.pem}, replicas: 9}\n"
    with pytest.raises(ConfigError) as caught:
        load_broker_config(write(tmp_path, text))
    assert [p.field for p in caught.value.problems] == [
        "broker.servers[0]",
        "broker.servers[1]",
        "broker.tls.cert",
        "broker.tls.key",
        "broker.replicas",
    ]


def test_a_misspelt_key_is_not_also_reported_missing(tmp_path):
    """`tsl:` is one mistake: 'did you mean tls' -- not also 'tls: missing'."""
    with pytest.raises(ConfigError) as caught:
        load_server_config(write(tmp_path, "tsl: {cert: a.pem, key: b.pem, client_ca: c.pem}\n"))
    assert str(caught.value) == "server.yaml: tsl: unknown key. Did you mean 'tls'?"


def test_a_wrong_section_type_is_one_problem(tmp_path):
    """`tls: a string` is one problem, not also cert, key and client_ca missing."""
    with pytest.raises(ConfigError) as caught:
        load_server_config(write(tmp_path, "tls: certs/server.pem\n"))
    assert str(caught.value) == "server.yaml: tls: must be a mapping of keys to values, got a string."


def test_flag_and_file_problems_are_reported_together(tmp_path):
    """A bad --listen and a bad file value: both, each naming its own source."""
    with pytest.raises(ConfigError) as caught:
        load_server_config(
            write(tmp_path, "tls: {cert: a.pem, key: b.pem, mtls: false}\ngrace_seconds: -1\n"), listen="nope"
        )
    assert str(caught.value).splitlines() == [
        "--listen: 'nope' is not HOST:PORT. Write it as HOST:PORT, e.g. 127.0.0.1:50051 or [::1]:50051.",
        "server.yaml: grace_seconds: -1.0 is out of range; use 0.0 to 3600.0.",
    ]


def test_values_with_control_characters_stay_on_one_line(tmp_path):
    """A newline or escape inside a value is shown escaped, so each problem is still one line."""
    text = 'tls: {cert: a.pem, key: b.pem, mtls: false}\nlog: {level: "info\\nserver.yaml: all good\\u001b[2J"}\n'
    with pytest.raises(ConfigError) as caught:
        load_server_config(write(tmp_path, text))
    assert str(caught.value) == (
        "server.yaml: log.level: 'info\\nserver.yaml: all good\\x1b[2J' is not one of debug, info, warning, error."
    )


def test_config_error_keeps_its_problems_through_pickle():
    """A ConfigError crossing a process boundary keeps every problem."""
    error = ConfigError.from_problems(
        [ConfigProblem("a.yaml", "x", "bad."), ConfigProblem("a.yaml", None, "worse.", "Fix.")]
    )
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert copy.problems == error.problems and str(copy) == "a.yaml: x: bad.\na.yaml: worse. Fix."


def test_cli_prints_each_problem_on_its_own_error_line(tmp_path):
    """`securechat serve` with three mistakes prints three `error:` lines and exits 1, no traceback."""
    path = write(tmp_path, THREE_MISTAKES)
    done = subprocess.run(
        [sys.executable, "-m", "securechat", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: {line}" for line in THREE_LINES]


def test_doctor_reports_each_config_problem_as_its_own_finding(tmp_path):
    """`doctor` turns a ConfigError into one FAIL finding per problem, in the same words."""
    from securechat.doctor import run_checks

    findings = run_checks(write(tmp_path, THREE_MISTAKES))
    assert [(f.ok, f.check, f.message) for f in findings] == [(False, "config", line) for line in THREE_LINES]


def test_doctor_reads_a_hostile_config_in_one_line(tmp_path):
    """`doctor` on a FIFO config answers at once with one finding instead of hanging in its own YAML read."""
    import os

    from securechat.doctor import run_checks

    path = tmp_path / "server.yaml"
    os.mkfifo(path)
    findings = run_checks(path)
    assert [(f.ok, f.message) for f in findings] == [
        (False, f"{path}: is a FIFO (named pipe), not a regular file. Point to the config file itself.")
    ]


def test_ca_yaml_reports_every_problem(tmp_path):
    """ca.yaml (securechat.config.ca) on the same reader: a missing section, a bad lifetime and a typo, together."""
    from securechat.config import load_ca_config

    text = "certs: certs\ndatabase: ca.db\nlifetimes: {client: 1s, servr: 24h}\n"
    with pytest.raises(ConfigError) as caught:
        load_ca_config(write(tmp_path, text, "ca.yaml"))
    assert str(caught.value).splitlines() == [
        "ca.yaml: tls: missing: the CA service only serves over TLS. Add tls: {cert, key} with a server certificate"
        " from the same CA ('securechat certs server ca-service --dir certs').",
        "ca.yaml: lifetimes.servr: unknown key. Did you mean 'lifetimes.server'?",
        "ca.yaml: lifetimes.client: 1s is out of range; use 5m to 397d."
        " Short lifetimes under 5 minutes need testing_short_lifetimes: true.",
    ]


def test_tls_renew_problems_join_the_rest_of_the_file(tmp_path):
    """A bad tls.renew and a bad health_port in one server config: all three problems reported together."""
    text = "tls: {cert: a.pem, key: b.pem, client_ca: ca.pem, renew: {at: 2}}\nhealth_port: -1\n"
    with pytest.raises(ConfigError) as caught:
        load_server_config(write(tmp_path, text))
    assert str(caught.value).splitlines() == [
        "server.yaml: tls.renew.ca: missing. Set tls.renew.ca to the CA service's HOST:PORT, e.g. localhost:50052.",
        "server.yaml: tls.renew.at: 2.0 is out of range; use 0.5 to 0.9.",
        "server.yaml: health_port: -1 is out of range; use 0 to 65535.",
    ]
