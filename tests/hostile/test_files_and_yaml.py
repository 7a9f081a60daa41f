"""Hostile config files: each is refused with one line, quickly, and its harmless twin still loads.

Issue 13 "Files and input": billion laughs, 100,000-deep nesting and a 50 MB
config used to hang or raise RecursionError; a FIFO or /dev/zero as a config
used to hang or eat memory. The one YAML reader (securechat.config.yaml_reader)
bounds all of them.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from securechat.config import MAX_DEPTH, MAX_NODES, load_client_config, load_server_config, yaml_reader
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


@pytest.mark.skipif(yaml_reader._CParser is None, reason="PyYAML built without libyaml")
@pytest.mark.parametrize(
    "text",
    [
        HARMLESS_TWINS[0].values[0],
        GOOD_TLS + "limits: {max_text_length: 10}\nlog: {level: debug}\n",
        "a: &x [1, {b: 2}]\nc: *x\nd: &s hi\ne: *s\n",
        billion_laughs(9),
        nested_flow(100_000),
        "tls: &a {cert: *a}\n",
    ],
    ids=["alias", "plain", "scalar-and-list-aliases", "laughs", "deep", "recursive"],
)
def test_libyaml_and_pure_python_parsers_agree(text):
    """With libyaml (the fast path) or without it, a document gives the same data or the same error."""

    def outcome(parse):
        try:
            return ("data", parse(text))
        except Exception as exc:  # noqa: BLE001 - compared, not swallowed
            mark = getattr(exc, "problem_mark", None)
            return (type(exc).__name__, getattr(exc, "problem", None), mark and (mark.line, mark.column))

    assert outcome(yaml_reader._parse) == outcome(
        lambda document: yaml_reader._load(yaml_reader._PythonLoader, document)
    )


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


# --- the certs CLI meets hostile files and flags ----------------------------------

SECURECHAT = [sys.executable, "-m", "securechat"]
TEN_TO_THE_30 = str(10**30)


def run(*args: str, cwd: Path, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    """The real `securechat` entry point (optionally under UMASK), as a user runs it."""
    command = [*SECURECHAT, *args]
    if umask is not None:
        command = ["sh", "-c", f'umask {umask:03o} && exec "$@"', "securechat", *command]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with alice and bob issued by the CLI; tests copy it before changing anything."""
    root = tmp_path_factory.mktemp("cli")
    assert run("certs", "init", cwd=root).returncode == 0
    assert run("certs", "client", "alice", "bob", cwd=root).returncode == 0
    return root


@pytest.fixture
def workdir(tmp_path: Path, certs_dir: Path) -> Path:
    import shutil

    shutil.copytree(certs_dir / "certs", tmp_path / "certs", symlinks=True)
    (tmp_path / "password.txt").write_text("a long export password\n")
    return tmp_path


def plant(relative: str, how: str):
    """A setup step: replace RELATIVE (inside the work dir) with a FIFO, a /dev/zero link, or a hostile index."""

    def apply(root: Path) -> None:
        path = root / relative
        if path.exists() or path.is_symlink():
            path.unlink()
        if how == "fifo":
            os.mkfifo(path)
        elif how == "zero":
            path.symlink_to("/dev/zero")
        elif how == "deep":
            path.write_bytes(b"[" * 100_000 + b"]" * 100_000)
        elif how == "garbage":
            path.write_bytes(b"\x00\x01 not json")

    return apply


def nothing(root: Path) -> None:
    """No setup: the passing twin."""


DAMAGED_INDEX = (
    "error: certs/index.json is damaged ({kind}). Restore it from a backup, or move it aside to start a new index"
    " (certificates on disk stay valid)."
)
IPV4 = "Write four numbers 0-255 without leading zeros, e.g. '10.0.0.5'."

HOSTILE_CLI = [
    pytest.param(
        plant("fifo.pem", "fifo"),
        ("certs", "inspect", "fifo.pem"),
        1,
        "error: fifo.pem is a FIFO (named pipe), not a regular file. Point to the certificate file itself.",
        id="inspect-fifo",
    ),
    pytest.param(
        nothing,
        ("certs", "inspect", "/dev/zero"),
        1,
        "error: /dev/zero is a character device, not a regular file. Point to the certificate file itself.",
        id="inspect-dev-zero",
    ),
    pytest.param(
        nothing,
        ("certs", "export", "alice", "--p12", "a.p12", "--password-file", "/dev/zero"),
        1,
        "error: /dev/zero is a character device, not a regular file. Point to the export password file itself.",
        id="password-file-dev-zero",
    ),
    pytest.param(
        plant("certs/crl.pem", "zero"),
        ("certs", "revoke", "bob"),
        1,
        "error: certs/crl.pem is a character device, not a regular file. Point to the CRL file itself.",
        id="crl-dev-zero",
    ),
    pytest.param(
        plant("certs/crl.pem", "fifo"),
        ("certs", "crl"),
        1,
        "error: certs/crl.pem is a FIFO (named pipe), not a regular file. Point to the CRL file itself.",
        id="crl-fifo",
    ),
    pytest.param(
        plant("certs/index.json", "deep"),
        ("certs", "list"),
        1,
        DAMAGED_INDEX.format(kind="RecursionError"),
        id="index-100k-deep",
    ),
    pytest.param(
        plant("certs/index.json", "garbage"),
        ("certs", "list"),
        1,
        DAMAGED_INDEX.format(kind="UnicodeDecodeError"),
        id="index-garbage",
    ),
    pytest.param(
        plant("certs/index.json", "fifo"),
        ("certs", "list"),
        1,
        "error: certs/index.json is a FIFO (named pipe), not a regular file. Point to the index file itself.",
        id="index-fifo",
    ),
    pytest.param(
        nothing,
        ("certs", "server", "api", "--days", TEN_TO_THE_30),
        1,
        f"error: --days {TEN_TO_THE_30} is too long: at most 397 days are allowed here. Use --days 397 or less.",
        id="days-10e30",
    ),
    pytest.param(
        nothing,
        ("certs", "init", "--force", "--days", TEN_TO_THE_30),
        1,
        f"error: --days {TEN_TO_THE_30} is too long: at most 36500 days are allowed here. Use --days 36500 or less.",
        id="ca-days-10e30",
    ),
    pytest.param(
        nothing,
        ("certs", "revoke", "bob", "--crl-days", TEN_TO_THE_30),
        1,
        "error: --crl-days 100000000000... is out of range; use 1 to 3650.",
        id="crl-days-10e30",
    ),
    pytest.param(
        nothing,
        ("certs", "crl", "--days", TEN_TO_THE_30),
        1,
        "error: --days 100000000000... is out of range; use 1 to 3650.",
        id="crl-command-days-10e30",
    ),
    pytest.param(
        nothing,
        ("certs", "list", "--within", TEN_TO_THE_30),
        1,
        "error: --within 100000000000...d is longer than 36600 days. Write e.g. 30d.",
        id="within-10e30",
    ),
    pytest.param(
        nothing,
        ("certs", "needs-renewal", "--within", TEN_TO_THE_30),
        2,
        "error: --within 100000000000...d is longer than 36600 days. Write e.g. 30d.",
        id="needs-renewal-within-10e30",
    ),
    pytest.param(
        nothing,
        ("certs", "server", "api", "--san", "999.1.1.1"),
        1,
        f"error: SAN '999.1.1.1' is not a valid IPv4 address. {IPV4}",
        id="san-999.1.1.1",
    ),
    pytest.param(
        nothing,
        ("certs", "server", "api", "--san", "1.2.3"),
        1,
        f"error: SAN '1.2.3' is not a valid IPv4 address. {IPV4}",
        id="san-1.2.3",
    ),
    pytest.param(
        nothing,
        ("certs", "server", "api", "--san", "010.0.0.1"),
        1,
        f"error: SAN '010.0.0.1' is not a valid IPv4 address. {IPV4}",
        id="san-010.0.0.1",
    ),
    pytest.param(
        nothing,
        ("certs", "init", "--dir", "other", "--name", "evil\nCA"),
        1,
        "error: common name 'evil\\nCA' holds a control character or surrounding space. Pass a --name of printable text.",
        id="ca-name-newline",
    ),
]

PASSING_TWINS = [
    pytest.param(("certs", "inspect", "certs/alice.pem"), id="inspect-a-certificate"),
    pytest.param(("certs", "export", "alice", "--p12", "a.p12", "--password-file", "password.txt"), id="password-file"),
    pytest.param(("certs", "revoke", "bob", "--crl-days", "3650"), id="revoke"),
    pytest.param(("certs", "crl", "--days", "1"), id="crl"),
    pytest.param(("certs", "list", "--within", "36600d"), id="list"),
    pytest.param(
        ("certs", "server", "api", "--days", "397", "--san", "10.0.0.5", "--san", "api.example.com"), id="server"
    ),
    pytest.param(("certs", "init", "--dir", "other", "--name", "Example Corp CA", "--days", "36500"), id="init"),
]


@pytest.mark.parametrize(("setup", "args", "code", "line"), HOSTILE_CLI)
def test_hostile_cli_input_is_one_line(workdir, setup, args, code, line):
    """Each hostile file or flag: exactly one `error:` line on stderr, the documented exit code, no traceback."""
    setup(workdir)
    done = run(*args, cwd=workdir)
    assert (done.returncode, done.stderr.strip().splitlines()) == (code, [line]), done.stderr


@pytest.mark.parametrize("args", PASSING_TWINS)
def test_cli_passing_twins(workdir, args):
    """The same commands with ordinary files and values succeed."""
    done = run(*args, cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert "error:" not in done.stderr


# --- symlinks and the umask ---------------------------------------------------------


def test_a_planted_temp_symlink_does_not_redirect_quickstart(tmp_path):
    """A `.alice.yaml.tmp -> victim` planted in DIR is never written through: the victim is untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / ".alice.yaml.tmp").symlink_to(victim)
    done = run("quickstart", "--dir", "demo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "precious\n"
    assert not (demo / "alice.yaml").is_symlink() and "target: localhost:50051" in (demo / "alice.yaml").read_text()


def test_a_planted_config_symlink_is_refused_by_quickstart(tmp_path):
    """An `alice.yaml -> victim` symlink (even a dangling one) counts as an existing file: refused without --force."""
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "alice.yaml").symlink_to(tmp_path / "not-there")
    done = run("quickstart", "--dir", "demo", cwd=tmp_path)
    assert (done.returncode, done.stderr.strip().splitlines()) == (
        1,
        ["error: demo/alice.yaml already exists; refusing to overwrite it. Pass --force to replace it."],
    )
    assert not (tmp_path / "not-there").exists()


def test_a_symlinked_dir_is_used_with_a_warning(tmp_path):
    """`certs init --dir LINK` says where LINK points, then writes there."""
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to("real")
    done = run("certs", "init", "--dir", "link", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines() == [
        "warning: link is a symbolic link to real; certificates and keys are written there."
    ]
    assert (tmp_path / "real" / "ca.pem").is_file()


def test_a_plain_dir_has_no_warning(tmp_path):
    """The twin: a real directory gives no warning."""
    done = run("certs", "init", "--dir", "real", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_directory_modes_are_exact_whatever_the_umask(tmp_path, umask):
    """Under umask 000 (and the usual ones): certs/ 0700, the config directory and its new parents 0755 (never writable
    by others), keys 0600/0400, certificates and configs 0644."""
    done = run("quickstart", "--dir", "a/b/demo", cwd=tmp_path, umask=umask)
    assert done.returncode == 0, done.stderr
    demo = tmp_path / "a" / "b" / "demo"

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert [mode(d) for d in (tmp_path / "a", tmp_path / "a" / "b", demo, demo / "certs")] == [
        0o755,
        0o755,
        0o755,
        0o700,
    ]
    assert (mode(demo / "certs" / "ca-key.pem"), mode(demo / "certs" / "alice-key.pem")) == (0o400, 0o600)
    assert (mode(demo / "certs" / "ca.pem"), mode(demo / "alice.yaml")) == (0o644, 0o644)


# --- a running server meets hostile edits ----------------------------------------------

STEP = 5.0


async def wait_for_log(caplog, text: str, timeout: float = STEP) -> str:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while True:
        for record in caplog.records:
            if text in record.getMessage():
                return record.getMessage()
        assert time.monotonic() < deadline, f"no log containing {text!r}"
        await asyncio.sleep(0.05)


async def hello(deployment, identity: str, port: int):
    import grpc

    from securechat._gen import chat_pb2
    from securechat.client import open_channel

    async with open_channel(deployment.client(identity, port)) as channel:
        try:
            reply = await channel.stub.SayHello(chat_pb2.HelloRequest(), timeout=STEP)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return reply.message


def hostile_edit(kind: str):
    def apply(path: Path) -> None:
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "laughs":
            path.write_text(billion_laughs(9))
        elif kind == "deep":
            path.write_text(nested_flow(100_000))
        elif kind == "50MB":
            with path.open("wb") as big:
                big.truncate(50 * 1024 * 1024)

    return apply


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("laughs", "more than 100,000 values once aliases are expanded"),
        ("deep", "nesting is deeper than 64 levels"),
        ("50MB", "is larger than 1 MiB, the limit for a config file"),
        ("fifo", "is a FIFO (named pipe), not a regular file"),
    ],
)
async def test_a_hostile_config_edit_is_refused_and_the_next_good_edit_applies(deployment, start, caplog, kind, reason):
    """A billion-laughs, 100k-deep, 50 MB or FIFO server.yaml is refused in one log line; a good edit after it still applies."""
    import asyncio
    import logging

    import grpc

    caplog.set_level(logging.INFO, logger="securechat")
    server = await start(authz={"allow": ["alice"]})
    assert await hello(deployment, "bob", server.port) is grpc.StatusCode.PERMISSION_DENIED
    hostile_edit(kind)(deployment.root / "server.yaml")
    line = await wait_for_log(caplog, "config reload refused, the running config stays")
    assert reason in line and "\n" not in line
    assert await hello(deployment, "alice", server.port) == "Hello, alice!"
    (deployment.root / "server.yaml").unlink()
    deployment.server_yaml(authz={"allow": ["alice", "bob"]})  # the good twin, after the hostile one
    for _ in range(50):
        if await hello(deployment, "bob", server.port) == "Hello, bob!":
            break
        await asyncio.sleep(0.1)
    assert await hello(deployment, "bob", server.port) == "Hello, bob!"


async def test_a_fifo_at_the_crl_path_is_refused_and_reloads_continue(deployment, start, caplog):
    """crl.pem swapped for a FIFO: logged as rejected (the poller never blocks), and a later authz edit applies."""
    import asyncio
    import logging

    caplog.set_level(logging.INFO, logger="securechat")
    deployment.store.write_crl(deployment.ca)
    server = await start(authz={"allow": ["alice"]})
    crl = deployment.store.crl_path
    crl.unlink()
    os.mkfifo(crl)
    line = await wait_for_log(caplog, "CRL rejected")
    assert "is a FIFO (named pipe), not a regular file. Point to the CRL file itself." in line
    deployment.server_yaml(authz={"allow": ["alice", "bob"]})
    for _ in range(50):
        if await hello(deployment, "bob", server.port) == "Hello, bob!":
            break
        await asyncio.sleep(0.1)
    assert await hello(deployment, "bob", server.port) == "Hello, bob!"


def test_a_fifo_at_the_crl_path_at_start_is_a_config_error(deployment):
    """At start, a FIFO where the CRL should be fails closed with one line naming the field."""
    from securechat.tls.material import load_server_material
    from securechat.server.lifecycle import load_revocations

    os.mkfifo(deployment.store.crl_path)
    config = deployment.server()
    with pytest.raises(ConfigError) as caught:
        load_revocations(config, load_server_material(config))
    assert str(caught.value) == (
        f"server.yaml: tls.client_ca: {deployment.store.crl_path} is a FIFO (named pipe), not a regular file."
        " Point to the CRL file itself."
    )


def test_a_regular_crl_at_start_loads(deployment, pki_ca):
    """The twin: a real crl.pem at the same path is loaded and enforced."""
    from securechat.tls.material import load_server_material
    from securechat.server.lifecycle import load_revocations

    deployment.store.write_crl(pki_ca)
    config = deployment.server()
    revoked = load_revocations(config, load_server_material(config))
    assert revoked is not None and [crl.number for crl in revoked.lists] == [1]
