"""examples/{go,node,python}: other languages' clients against a real `securechat serve`, from a quickstart set."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest
from examples_support import EXAMPLES, ROOT, Served, run_quickstart

from securechat import pki

LANGUAGES = ["go", "node", "python"]
STEPS = ["hello", "whoami", "chat", "chat", "chat", "resume", "retry", "refusal", "no-client-cert", "done"]
RUN_TIMEOUT = 60


def _server_dedupes_client_msg_ids() -> bool:
    """Whether this checkout's server reads ChatMessage.client_msg_id at all.

    Server-side idempotency (issue 16) was not on main when these tests were
    written; until it lands, the retry line is checked for shape only.
    """
    return any("client_msg_id" in p.read_text(encoding="utf-8") for p in (ROOT / "securechat" / "server").rglob("*.py"))


def example(request: pytest.FixtureRequest, language: str) -> list[str]:
    return request.getfixturevalue(f"{language}_example")


def run_example(argv: list[str], directory: Path, target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*argv, "--dir", str(directory), "--target", target],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def transcript(stdout: str) -> list[tuple[str, dict[str, str]]]:
    """Each line `step: k=v k=v ... message=free text` as (step, fields)."""
    steps = []
    for line in stdout.splitlines():
        step, _, rest = line.partition(": ")
        fields: dict[str, str] = {}
        if step == "hello":
            fields["message"] = rest
        else:
            head, _, message = rest.partition(" message=")
            if message:
                fields["message"] = message
            for match in re.finditer(r"(\S+?)=(\S+)", head):
                fields[match.group(1)] = match.group(2)
            # text=... runs to the end of the line (it has spaces).
            if " text=" in f" {head}":
                fields["text"] = head.split("text=", 1)[1]
        steps.append((step.strip(), fields))
    return steps


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("language", LANGUAGES)
def test_example_speaks_the_whole_api(request: pytest.FixtureRequest, language: str, served: Served) -> None:
    """Hello and WhoAmI by certificate, echo with client_msg_id, another member, resume, retry, refusal, no cert."""
    argv = example(request, language)

    result = run_example(argv, served.directory, served.target)

    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stderr == ""
    steps = transcript(result.stdout)
    assert [step for step, _ in steps] == STEPS, result.stdout
    (hello, whoami, joined, echo, other, resume, retry, refusal, no_cert, _) = (fields for _, fields in steps)

    assert hello["message"] == "Hello, alice!"  # asked as "mallory": the certificate wins
    alice = pki.load_certificate(served.directory / "certs" / "alice.pem")
    assert whoami["name"] == "alice"
    assert int(whoami["serial"], 16) == alice.serial_number
    assert joined["room"].startswith(f"examples-{language}-")
    assert echo["sender"] == "alice" and echo["text"] == f"hello from {language}"
    assert re.fullmatch(r"[0-9a-f]{32}", echo["client_msg_id"])
    assert other["sender"] == "bob" and int(other["id"]) > int(echo["id"])
    assert resume["last-event-id"] == other["id"]
    assert resume["sender"] == "bob" and int(resume["id"]) > int(other["id"])
    assert resume["text"] == f"while you were away ({language})"
    assert retry["client_msg_id"] == echo["client_msg_id"] and retry["first_id"] == echo["id"]
    if _server_dedupes_client_msg_ids():
        assert retry["same_event"] == "true" and retry["id"] == echo["id"], "a resent client_msg_id was accepted twice"
    assert refusal["code"] == "INVALID_ARGUMENT"
    assert refusal["message"].startswith("room name 'bad room!' is invalid")
    assert (refusal["reason"], refusal["action"]) == ("invalid-room", "fix-the-request")
    assert no_cert["code"] == "UNAVAILABLE"

    log = "\n".join(served.server.lines)
    assert f"alice joined room {joined['room']}" in log and f"bob joined room {joined['room']}" in log


@pytest.mark.slow
@pytest.mark.parametrize("language", LANGUAGES)
def test_example_refuses_a_server_from_another_ca(
    request: pytest.FixtureRequest, language: str, served: Served, tmp_path: Path
) -> None:
    """The failing twin: certificates from another quickstart set fail the handshake, one line, exit 1."""
    argv = example(request, language)
    other = tmp_path / "other"
    run_quickstart(other)

    result = run_example(argv, other, served.target)

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""
    assert re.fullmatch(r"securechat-example: (SayHello failed: )?UNAVAILABLE .*\n", result.stderr), result.stderr


@pytest.mark.parametrize("language", LANGUAGES)
def test_example_without_a_quickstart_directory_says_how_to_make_one(
    request: pytest.FixtureRequest, language: str, tmp_path: Path
) -> None:
    """A missing certs directory is one line naming the file and `securechat quickstart`, exit 1."""
    argv = example(request, language)

    result = run_example(argv, tmp_path / "nowhere", "localhost:1")

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert str(tmp_path / "nowhere" / "certs") in result.stderr
    assert "Run 'securechat quickstart --dir DIR'" in result.stderr


def test_python_example_uses_plain_grpcio_only() -> None:
    """examples/python imports grpc and the standard library, never securechat."""
    tree = ast.parse((EXAMPLES / "python" / "client.py").read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "grpc" in imported
    assert "securechat" not in imported


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_example_has_a_readme_with_its_command(language: str) -> None:
    """Each example's README names its one build/run command and the quickstart it needs."""
    readme = (EXAMPLES / language / "README.md").read_text(encoding="utf-8")
    assert "securechat quickstart --dir" in readme
    assert "--target" in readme
