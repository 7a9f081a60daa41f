"""CLI conventions: --version, completion, help within 80 columns with examples and real metavars, tables, --json, quickstart --port."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pexpect
import pytest
from terminal_support import SECURECHAT, ServeProcess, run

from securechat import __version__
from securechat.cli.table import Column, render

COMMANDS = [
    ("quickstart",),
    ("serve",),
    ("hello",),
    ("whoami",),
    ("chat",),
    ("health",),
    ("doctor",),
    ("completion",),
    *[
        ("certs", name)
        for name in (
            "init",
            "server",
            "peer",
            "client",
            "list",
            "inspect",
            "revoke",
            "crl",
            "renew",
            "needs-renewal",
            "export",
            "k8s-secret",
        )
    ],
]


def test_version(tmp_path: Path):
    """`securechat --version` (and -V) print the package version and exit 0."""
    for flag in ("--version", "-V"):
        done = run(flag, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (0, f"securechat {__version__}\n")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_fits_80_columns_with_examples_and_real_metavars(tmp_path: Path, command: tuple[str, ...]):
    """Every command's help fits 80 columns, shows an example, and names its values (FILE, DIR, NAME), not <path> or {name}."""
    done = run(*command, "--help", cwd=tmp_path, env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if len(line) > 80] == []
    assert "securechat " + " ".join(command) in done.stdout.split("Options:")[0].split("Usage:", 1)[1]
    assert re.search(r"Examples?:", done.stdout)
    assert not re.search(r"<(path|str|int|text)>|\{[A-Za-z_.]+\}", done.stdout)
    assert not re.search(r"--(dir|out|root-dir) FILE", done.stdout)
    assert not re.search(r"--[a-z-]+ [A-Z]+_[A-Z_]+\b", done.stdout), "a metavar spelt from the parameter name"


def test_usage_lines_name_arguments_plainly(tmp_path: Path):
    """A required argument reads NAME (NAME... for several), an optional one [NAME]: the usual convention, not Typer's {NAME}."""
    usage = {
        command: run(*command, "--help", cwd=tmp_path).stdout.splitlines()[0]
        for command in (("certs", "client"), ("certs", "server"), ("certs", "needs-renewal"), ("completion",))
    }
    assert usage == {
        ("certs", "client"): "Usage: securechat certs client [OPTIONS] NAME...",
        ("certs", "server"): "Usage: securechat certs server [OPTIONS] NAME",
        ("certs", "needs-renewal"): "Usage: securechat certs needs-renewal [OPTIONS] [NAME]",
        ("completion",): "Usage: securechat completion [OPTIONS] SHELL",
    }
    missing = run("certs", "client", cwd=tmp_path)
    assert (missing.returncode, missing.stderr.splitlines()[-1]) == (2, "Error: Missing argument 'NAME...'.")


@pytest.mark.parametrize(
    ("shell", "env", "expected"),
    [
        (
            "bash",
            {"_SECURECHAT_COMPLETE": "complete_bash", "COMP_WORDS": "securechat certs li", "COMP_CWORD": "2"},
            "list",
        ),
        (
            "zsh",
            {"_SECURECHAT_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "securechat ch"},
            '"chat":"Chat in a room',
        ),
        (
            "fish",
            {
                "_SECURECHAT_COMPLETE": "complete_fish",
                "_TYPER_COMPLETE_ARGS": "securechat qu",
                "_TYPER_COMPLETE_FISH_ACTION": "get-args",
            },
            "quickstart\t",
        ),
    ],
)
def test_shell_completion(tmp_path: Path, shell: str, env: dict[str, str], expected: str):
    """`securechat completion SHELL` prints a script, and the completions it asks for come back."""
    script = run("completion", shell, cwd=tmp_path)
    assert script.returncode == 0 and "_SECURECHAT_COMPLETE" in script.stdout
    # As a shell runs it: the console script, whose name the completion variable is derived from.
    script_path = Path(SECURECHAT[0]).parent / "securechat"
    done = subprocess.run(
        [str(script_path)],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0 and expected in done.stdout


def test_completion_for_an_unknown_shell_is_a_usage_error(tmp_path: Path):
    """The failing twin: tcsh is refused in one line, exit 2."""
    done = run("completion", "tcsh", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (2, "error: no completion for shell 'tcsh': use one of bash, zsh, fish.\n")


LONG = "a-client-name-of-sixty-one-characters-that-goes-on-and-on-and-o"


def test_table_never_truncates_and_adapts_to_narrow_terminals():
    """Into a pipe every value is whole; a narrow terminal drops optional columns, then shows blocks."""
    columns = (Column("name"), Column("serial", optional=True), Column("days left", right=True))
    rows = [("ca", "0123456789abcdef", "3650"), (LONG, "fedcba9876543210", "1")]
    piped = render(columns, rows, width=None)
    assert piped[2] == f"{LONG}  fedcba9876543210          1"
    assert render(columns, [rows[0]], width=20) == ["name  days left", "ca         3650"]
    assert render(columns, rows, width=60)[:4] == [
        "name:      ca",
        "serial:    0123456789abcdef",
        "days left: 3650",
        "",
    ]


def test_certs_list_in_a_pipe_and_on_a_narrow_terminal(site: Path):
    """certs list with a 61-character name: whole into a pipe; one block per certificate at 60 columns."""
    assert run("certs", "client", LONG, "--dir", "certs", cwd=site).returncode == 0
    piped = run("certs", "list", "--dir", "certs", cwd=site)
    assert any(line.startswith(f"{LONG}  client  ") and line.endswith("  valid") for line in piped.stdout.splitlines())
    child = pexpect.spawn(
        SECURECHAT[0],
        [*SECURECHAT[1:], "certs", "list", "--dir", "certs"],
        cwd=str(site),
        dimensions=(50, 60),
        encoding="utf-8",
        env={**os.environ, "COLUMNS": "60"},
    )
    child.expect(pexpect.EOF)
    lines = child.before.replace("\r", "").splitlines()
    assert f"name:      {LONG}" in lines and all(len(line) <= 60 or line.endswith(LONG) for line in lines)
    assert "…" not in child.before


def test_whoami_json(site: Path, server: ServeProcess):
    """whoami --json is one stable JSON object."""
    done = run("whoami", "--config", "alice.yaml", "--target", f"localhost:{server.port}", "--json", cwd=site)
    assert done.returncode == 0, done.stderr
    identity = json.loads(done.stdout)
    assert sorted(identity) == ["name", "not_after", "serial", "spiffe_id"] and identity["name"] == "alice"


def test_quickstart_default_port_is_the_configs():
    """quickstart's --port default (a literal, to start fast) is config.DEFAULT_PORT."""
    from securechat.cli.quickstart import DEFAULT_PORT
    from securechat.config import DEFAULT_PORT as CONFIG_DEFAULT

    assert DEFAULT_PORT == CONFIG_DEFAULT


def test_quickstart_port(tmp_path: Path):
    """quickstart --port writes the port into all three configs; an impossible port is one line."""
    done = run("quickstart", "--dir", "d", "--port", "50123", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "listen: 127.0.0.1:50123" in (tmp_path / "d/server.yaml").read_text()
    assert all("target: localhost:50123" in (tmp_path / f"d/{n}.yaml").read_text() for n in ("alice", "bob"))
    assert "  securechat serve --config d/server.yaml" in done.stdout.splitlines()
    bad = run("quickstart", "--dir", "e", "--port", "70000", cwd=tmp_path)
    assert (bad.returncode, bad.stderr) == (
        1,
        "error: --port: 70000 is not a TCP port. Use 1-65535 (50051 is the default).\n",
    )
