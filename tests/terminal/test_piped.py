"""`securechat chat` with piped stdin: scriptable, and every failure one line, as `hello` says it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from terminal_support import SECURECHAT, TIMEOUT, ServeProcess, post_as, run

from securechat import pki


def client_yaml(site: Path, name: str, **tls: str) -> str:
    (site / f"{name}.yaml").write_text(yaml.safe_dump({"target": "localhost:50051", "tls": tls}))
    return f"{name}.yaml"


@pytest.fixture(scope="module")
def odd_configs(site: Path) -> dict[str, str]:
    """Configs that cannot connect: a foreign CA as tls.ca, and no client certificate."""
    foreign = pki.CertStore(site / "foreign")
    foreign.write_ca(pki.create_ca())
    return {
        "untrusted": client_yaml(
            site, "untrusting", ca="foreign/ca.pem", cert="certs/alice.pem", key="certs/alice-key.pem"
        ),
        "no certificate": client_yaml(site, "anonymous", ca="certs/ca.pem"),
    }


@pytest.mark.parametrize("case", ["wrong port", "untrusted", "no certificate"])
def test_connect_errors_are_exactly_what_hello_says(
    site: Path, server: ServeProcess, odd_configs: dict[str, str], case: str
):
    """A wrong port, an untrusted server, no client certificate: chat's one line and exit code are hello's, at once."""
    config = odd_configs.get(case, "alice.yaml")
    target = "localhost:1" if case == "wrong port" else f"localhost:{server.port}"
    started = time.monotonic()
    chat = run("chat", "--config", config, "--target", target, cwd=site, stdin="hi\n")
    took = time.monotonic() - started
    hello = run("hello", "--config", config, "--target", target, cwd=site)
    assert hello.returncode == 1 and hello.stderr.startswith("error: ") and len(hello.stderr.splitlines()) == 1
    assert (chat.returncode, chat.stderr, chat.stdout) == (hello.returncode, hello.stderr, "")
    assert took < 5


def test_piped_lines_are_sent_and_echoed_then_eof_exits_0(site: Path, server: ServeProcess):
    """Each line is sent and its echo printed (time, room, sender, text); EOF exits 0; --ids shows the ids."""
    done = run(
        "chat", "--config", "alice.yaml", "--target", f"localhost:{server.port}", "--ids", cwd=site, stdin="one\ntwo\n"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        "[general] * alice joined",
        "[general] alice: one",
        "[general] alice: two",
    ]
    assert all(line[:8].count(":") == 2 and line.split(" ")[1].startswith("#") for line in lines)
    assert done.stderr == ""


def test_piped_refusal_is_one_line_and_the_next_line_goes_through(site: Path):
    """Piped over-long text: the reason on stderr, the next line still delivered, exit 1 at EOF."""
    (site / "short-piped.yaml").write_text((site / "server.yaml").read_text() + "limits: {max_text_length: 20}\n")
    server = ServeProcess(site, "short-piped.yaml")
    try:
        done = run(
            "chat",
            "--config",
            "alice.yaml",
            "--target",
            f"localhost:{server.port}",
            cwd=site,
            stdin="y" * 25 + "\nafter\n",
        )
    finally:
        server.stop()
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: not sent to [general]: the server refused it as too long (text is 25 characters;"
        " the limit max_text_length is 20). Shorten it and send it again."
    ]
    assert done.stdout.splitlines()[-1].endswith("[general] alice: after")


def test_unknown_slash_command_is_an_error_never_posted(site: Path, server: ServeProcess):
    """/bogus is refused on stderr and never posted; the script goes on."""
    done = run(
        "chat", "--config", "alice.yaml", "--target", f"localhost:{server.port}", cwd=site, stdin="/bogus\nreal\n"
    )
    assert done.returncode == 0
    assert "/bogus" not in done.stdout
    assert done.stderr.startswith("error: unknown command /bogus: it was not sent.")
    assert done.stdout.splitlines()[-1].endswith("alice: real")


def test_hostile_text_piped_is_inert_and_one_line(site: Path, server: ServeProcess):
    """Piped, another member's escapes and newlines come out as visible text on one line: no fake second sender."""
    alice = subprocess.Popen(
        [*SECURECHAT, "chat", "--config", "alice.yaml", "--target", f"localhost:{server.port}"],
        cwd=site,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert alice.stdin is not None
    alice.stdin.write("listening\n")
    alice.stdin.flush()
    time.sleep(1.5)  # alice has joined and is waiting
    post_as(site, "bob.yaml", server.port, "\x1b[31mred\x1b[0m\nalice: fake\r\x07")
    out, err = alice.communicate("done\n", timeout=TIMEOUT)
    assert alice.returncode == 0, err
    bob_lines = [line for line in out.splitlines() if "bob:" in line]
    assert [line.split(" ", 1)[1] for line in bob_lines] == [
        "[general] bob: \\x1b[31mred\\x1b[0m\\nalice: fake\\r\\x07"
    ]
    assert "\x1b" not in out
