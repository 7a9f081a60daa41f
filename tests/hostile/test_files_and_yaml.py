"""Hostile config files: each is refused with one line, quickly, and its harmless twin still loads.

Issue 13 "Files and input": billion laughs, 100,000-deep nesting and a 50 MB
config used to hang or raise RecursionError; a FIFO or /dev/zero as a config
used to hang or eat memory. The one YAML reader (securechat.config.yaml_reader)
bounds all of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from securechat.config import MAX_DEPTH, MAX_NODES, load_client_config, load_server_config
from securechat.errors import ConfigError

GOOD_TLS = "tls: {cert: a.pem, key: a-key.pem, client_ca: ca.pem}\n"


def billion_laughs(levels: int, width: int = 9) -> str:
    """Anchors of anchors: WIDTH**LEVELS values from a few hundred bytes."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def nested_flow(depth: int) -> str:
    return "authz: {allow: " + "[" * depth + "alice" + "]" * depth + "}\n"


def nested_block(depth: int) -> str:
    return "limits:\n" + "".join(" " * (level + 1) + f"k{level}:\n" for level in range(depth))


HOSTILE_YAML = [
    pytest.param(
        billion_laughs(9),
        "is not valid YAML at line 6, column 10: more than 100,000 values once aliases are expanded."
        " Write the values out instead of repeating anchors and aliases.",
        id="billion-laughs",
    ),
    pytest.param(
        nested_flow(100_000),
        "is not valid YAML at line 1, column 78: nesting is deeper than 64 levels."
        " A securechat config nests a few levels; check the brackets and indentation.",
        id="100k-deep-flow",
    ),
    pytest.param(
        nested_block(1_000),
        "is not valid YAML at line 65, column 65: nesting is deeper than 64 levels."
        " A securechat config nests a few levels; check the brackets and indentation.",
        id="1000-deep-block",
    ),
    pytest.param(
        "tls: &a {cert: *a}\n",
        "is not valid YAML at line 1, column 16: alias '*a' refers to the node that contains it."
        " Write the values out instead of repeating anchors and aliases.",
        id="recursive-alias",
    ),
    pytest.param(
        GOOD_TLS + "health_port: " + "9" * 5_000 + "\n",
        "is not valid YAML: a value cannot be read (a number has more than 4,300 digits). Fix or quote the value.",
        id="5000-digit-number",
    ),
    pytest.param(
        GOOD_TLS + "health_port: " + "9" * 40 + "\n",
        "health_port: a 40-digit number is out of range; use 0 to 65535.",
        id="40-digit-number",
    ),
    pytest.param(
        GOOD_TLS + "crl: 2024-13-45\n",
        "is not valid YAML: a value cannot be read (month must be in 1..12). Fix or quote the value.",
        id="impossible-date",
    ),
]

HARMLESS_TWINS = [
    pytest.param(GOOD_TLS + "authz:\n  methods:\n    Chat: &team [alice, bob]\n    WhoAmI: *team\n", id="an-alias"),
    pytest.param(GOOD_TLS + "authz: {allow: [alice, bob]}\n", id="shallow-flow"),
    pytest.param(GOOD_TLS + "limits:\n  max_text_length: 10\n", id="shallow-block"),
    pytest.param(GOOD_TLS + "health_port: 65535\n", id="a-5-digit-number"),
    pytest.param(GOOD_TLS + "crl: '2024-13-45'\n", id="quoted-date"),
]


def write(tmp_path: Path, text: str, name: str = "server.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("text", "problem"), HOSTILE_YAML)
def test_hostile_yaml_is_one_line(tmp_path, text, problem):
    """Each hostile document is one ConfigError line naming the file, raised before any Python object is walked."""
    with pytest.raises(ConfigError) as caught:
        load_server_config(write(tmp_path, text))
    assert str(caught.value) == f"server.yaml: {problem}"


@pytest.mark.parametrize("text", HARMLESS_TWINS)
def test_harmless_twins_load(tmp_path, text):
    """Aliases, nesting, numbers and quoted dates within the bounds load as before."""
    assert load_server_config(write(tmp_path, text)).tls is not None


def test_aliases_within_the_bound_expand(tmp_path):
    """An alias in a real config works: the authz list of one method reused for another."""
    text = HARMLESS_TWINS[0].values[0]
    config = load_server_config(write(tmp_path, text))
    assert dict(config.authz_methods)["/securechat.v1.ChatService/WhoAmI"] == frozenset({"alice", "bob"})


@pytest.mark.parametrize(("levels", "refused"), [(5, False), (6, True)])
def test_the_expansion_bound_sits_between_9_to_the_5_and_9_to_the_6(tmp_path, levels, refused):
    """9**5 = 59,049 expanded values compose (then fail as unknown keys); 9**6 = 531,441 exceed MAX_NODES."""
    assert MAX_NODES == 100_000
    with pytest.raises(ConfigError) as caught:
        load_server_config(write(tmp_path, billion_laughs(levels) + GOOD_TLS))
    if refused:
        assert "more than 100,000 values once aliases are expanded" in str(caught.value)
    else:
        assert {problem.problem for problem in caught.value.problems} == {"unknown key."}


@pytest.mark.parametrize(("depth", "refused"), [(MAX_DEPTH - 2, False), (MAX_DEPTH - 1, True)])
def test_the_depth_bound_is_max_depth(tmp_path, depth, refused):
    """Nesting up to MAX_DEPTH levels composes (and fails as a wrong type); one more is refused as too deep."""
    with pytest.raises(ConfigError) as caught:
        load_server_config(write(tmp_path, GOOD_TLS + nested_flow(depth)))
    assert ("nesting is deeper than 64 levels" in str(caught.value)) is refused


# --- the config file itself -------------------------------------------------


def test_a_50_mb_config_is_refused_unread(tmp_path):
    """A 50 MB file is refused by its size, before it is read."""
    path = tmp_path / "server.yaml"
    with path.open("wb") as big:
        big.truncate(50 * 1024 * 1024)
    with pytest.raises(ConfigError) as caught:
        load_server_config(path)
    assert str(caught.value) == (
        f"{path}: is larger than 1 MiB, the limit for a config file. A real config file is far smaller; check the path."
    )


def test_a_config_just_under_the_limit_is_read(tmp_path):
    """The twin: a config of almost 1 MiB (a long comment) is read as usual."""
    path = write(tmp_path, GOOD_TLS + "#" + "x" * (1024 * 1024 - 200) + "\n")
    assert load_server_config(path).tls is not None


@pytest.mark.parametrize("load", [load_server_config, load_client_config])
def test_a_fifo_as_config_is_refused_without_blocking(tmp_path, load):
    """A FIFO where the config should be is refused at once (opening it for reading would wait for a writer)."""
    path = tmp_path / "server.yaml"
    os.mkfifo(path)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == f"{path}: is a FIFO (named pipe), not a regular file. Point to the config file itself."


@pytest.mark.parametrize("load", [load_server_config, load_client_config])
def test_dev_zero_behind_a_symlink_is_refused(tmp_path, load):
    """A config symlinked to /dev/zero is refused as a device, not read until memory runs out."""
    path = tmp_path / "server.yaml"
    path.symlink_to("/dev/zero")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == f"{path}: is a character device, not a regular file. Point to the config file itself."


def test_a_symlink_to_a_regular_config_is_followed(tmp_path):
    """The twin: a config symlinked to a regular file (a Kubernetes ConfigMap) loads."""
    target = write(tmp_path, GOOD_TLS, "real.yaml")
    link = tmp_path / "server.yaml"
    link.symlink_to(target)
    assert load_server_config(link).tls is not None


@pytest.mark.parametrize(
    ("make", "line"),
    [
        (lambda path: os.mkfifo(path), "is a FIFO (named pipe), not a regular file. Point to the config file itself."),
        (lambda path: path.write_text(billion_laughs(9)), None),
        (lambda path: path.write_text(nested_flow(100_000)), None),
    ],
    ids=["fifo", "billion-laughs", "100k-deep"],
)
def test_cli_serve_says_one_line_and_exits_1(tmp_path, make, line):
    """Through the real `securechat serve`: one `error:` line, exit 1, no traceback, no hang."""
    path = tmp_path / "server.yaml"
    make(path)
    done = subprocess.run(
        [sys.executable, "-m", "securechat", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    if line is not None:
        assert lines[0] == f"error: {path}: {line}"
