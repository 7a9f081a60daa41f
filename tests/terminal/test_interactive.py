"""The interactive client on a real pseudo-terminal: typing while events arrive, slash commands, refusals, restarts, hostile text."""

from __future__ import annotations

import re
from pathlib import Path

import pexpect
from terminal_support import ServeProcess, post_as, screen, spawn_chat


def quit_cleanly(child: pexpect.spawn) -> None:
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_banner_names_us_the_server_and_the_room(site: Path, server: ServeProcess):
    """The banner says who we are (from our certificate), which server, which room; the prompt shows the room."""
    child = spawn_chat(site, "alice.yaml", server.port)
    banner = child.before
    assert "you are alice (certificate " in banner and "365 days left" in banner
    assert f"server localhost:{server.port} (mTLS), room [general]" in banner
    child.expect_exact("[general] alice>")
    quit_cleanly(child)


def test_typing_while_events_arrive_keeps_the_half_typed_line(site: Path, server: ServeProcess):
    """Bob's message prints above the prompt while alice is mid-line; her line is intact and shown once, delivered."""
    child = spawn_chat(site, "alice.yaml", server.port)
    child.send("half of a")
    post_as(site, "bob.yaml", server.port, "bob speaks meanwhile")
    child.expect(r"\d\d:\d\d:\d\d \[general\] bob: bob speaks meanwhile")
    child.send(" line\r")
    child.expect(r"\d\d:\d\d:\d\d \[general\] alice: half of a line \u2713")
    child.sendline("second")
    child.expect(r"alice: second \u2713")
    quit_cleanly(child)
    assert screen(child).count("alice: half of a line") == 1  # the typed line is erased; only the echo stays


def test_every_slash_command(site: Path, server: ServeProcess):
    """/help, /join (bare, invalid, valid), /rooms, /who, an unknown command, /leave (unknown, current), /quit."""
    child = spawn_chat(site, "alice.yaml", server.port)
    child.sendline("/help")
    child.expect(r"/quit +leave the chat")
    child.sendline("/join")
    child.expect_exact("error: /join needs a room: /join ROOM")
    child.sendline("/join bad room!")
    child.expect_exact("error: 'bad room!' is not a room name, so it was not joined")
    child.sendline("/join side")
    child.expect_exact("now in [side] (joined): what you type goes there")
    child.expect_exact("[side] alice>")
    bob = spawn_chat(site, "bob.yaml", server.port, "--room", "side")  # a second terminal, staying in the room
    child.expect_exact("[side] * bob joined")
    bob.sendline("bob in side")
    child.expect("bob: bob in side")
    child.sendline("/who")
    child.expect_exact("in [side]: alice (you), bob (members seen since you joined)")
    quit_cleanly(bob)
    child.expect_exact("[side] * bob left")
    child.sendline("/who")
    child.expect_exact("in [side]: alice (you) (members seen since you joined)")
    child.sendline("/rooms")
    child.expect_exact("your rooms: [general], [side] (current)")
    child.sendline("/frobnicate now")
    child.expect_exact("error: unknown command /frobnicate: it was not sent.")
    child.sendline("//slash text")
    child.expect(r"alice: /slash text")
    child.sendline("/leave nowhere")
    child.expect_exact("error: you are not in nowhere; /rooms lists yours")
    child.sendline("/leave")
    child.expect_exact("left [side]; now in [general]")
    child.expect_exact("[general] alice>")
    quit_cleanly(child)
    assert "alice: /frobnicate" not in screen(child)


def test_ctrl_d_leaves(site: Path, server: ServeProcess):
    """Ctrl-D on an empty line ends the session with exit 0."""
    child = spawn_chat(site, "alice.yaml", server.port)
    child.expect_exact("[general] alice>")
    child.send("\x04")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_a_refusal_mid_session_is_one_line_and_the_session_goes_on(site: Path):
    """Too long for the server: the reason and the fix in one line; the next line is delivered."""
    (site / "short.yaml").write_text((site / "server.yaml").read_text() + "limits: {max_text_length: 20}\n")
    server = ServeProcess(site, "short.yaml")
    try:
        child = spawn_chat(site, "alice.yaml", server.port)
        child.sendline("x" * 30)
        child.expect_exact(
            "error: not sent to [general]: the server refused it as too long "
            "(text is 30 characters; the limit max_text_length is 20). Shorten it and send it again."
        )
        child.sendline("still here")
        child.expect("alice: still here")
        quit_cleanly(child)
    finally:
        server.stop()


def test_a_server_restart_mid_session(site: Path):
    """The server stops: 'connection lost — reconnecting'; it comes back: history loss said plainly, nothing after it missed."""
    server = ServeProcess(site)
    port = server.port
    try:
        child = spawn_chat(site, "alice.yaml", port)
        child.sendline("before")
        child.expect("alice: before")
    finally:
        server.stop()
    child.expect(r"connection lost \u2014 reconnecting \(attempt 1, next in \d+\.\ds\)")
    restarted = ServeProcess(site, listen=f"127.0.0.1:{port}")
    try:
        post_as(site, "bob.yaml", port, "posted after the restart")
        child.expect(
            "the server restarted or dropped old history: what was sent after \\d\\d:\\d\\d:\\d\\d until then is gone;"
            " everything it holds since is shown, so nothing after that is missed"
        )
        child.expect("bob: posted after the restart")
        child.sendline("after")
        child.expect("alice: after")
        quit_cleanly(child)
    finally:
        restarted.stop()


def test_hostile_text_from_another_member_is_inert(site: Path, server: ServeProcess):
    """Escapes, a window title, a hyperlink, a bidi override and a fake second line reach alice's terminal as visible text."""
    child = spawn_chat(site, "alice.yaml", server.port)
    hostile = "\x1b]0;pwned\x07\x1b[2J\x1b]8;;http://evil.example\x07click\x1b]8;;\x07 \u202egnp.exe\nalice: the server moved, use --target evil.example:443"
    post_as(site, "bob.yaml", server.port, hostile, "[bold red]markup[/] [/bold]")
    child.expect_exact(
        "bob: \\x1b]0;pwned\\x07\\x1b[2J\\x1b]8;;http://evil.example\\x07click\\x1b]8;;\\x07 \\u202egnp.exe"
        "\\nalice: the server moved, use --target evil.example:443"
    )
    child.expect_exact("bob: [bold red]markup[/] [/bold]")
    quit_cleanly(child)
    received = screen(child)
    for raw in ("\x1b]0;pwned", "\x1b[2J", "\x1b]8;;", "\u202e"):
        assert raw not in received
    assert not re.search(r"(^|\n)\s*alice: the server moved", received)
