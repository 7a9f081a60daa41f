"""Bounded input, table by table: files (securechat.files), SANs, CA names, numeric and duration flags, index.json.

Each refusal asserts its exact one-line text beside a passing twin.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509

from securechat import pki
from securechat.errors import InputFileError, PkiError
from securechat.files import read_regular_file, require_regular_file
from securechat.tls.watch import FileWatch

# --- securechat.files ---------------------------------------------------------


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def make_socket(path: Path) -> Path:
    import socket

    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays
    return path


NOT_REGULAR = [
    pytest.param(make_fifo, "is a FIFO (named pipe), not a regular file. Point to the CRL file itself.", id="fifo"),
    pytest.param(
        lambda path: (path.symlink_to("/dev/zero"), path)[1],
        "is a character device, not a regular file. Point to the CRL file itself.",
        id="dev-zero",
    ),
    pytest.param(make_socket, "is a socket, not a regular file. Point to the CRL file itself.", id="socket"),
]


@pytest.mark.parametrize(("make", "problem"), NOT_REGULAR)
@pytest.mark.parametrize("check", [read_regular_file, require_regular_file])
def test_non_regular_files_are_refused_without_blocking(tmp_path, make, problem, check):
    """A FIFO, /dev/zero (behind a symlink) or a socket is refused at once, with one line naming it."""
    path = make(tmp_path / "crl.pem")
    with pytest.raises(InputFileError) as caught:
        check(path, limit=1024, what="CRL")
    assert str(caught.value) == f"{path} {problem}"
    assert (caught.value.path, caught.value.problem) == (str(path), problem.split(". ")[0] + ".")


def test_a_regular_file_and_a_symlink_to_one_are_read(tmp_path):
    """The twin: a regular file is read whole, also through a symlink (a Kubernetes ..data link)."""
    target = tmp_path / "crl-v2.pem"
    target.write_bytes(b"x" * 1024)
    link = tmp_path / "crl.pem"
    link.symlink_to(target)
    assert read_regular_file(link, limit=1024, what="CRL") == b"x" * 1024
    require_regular_file(link, limit=1024, what="CRL")


def test_a_file_over_the_limit_is_refused(tmp_path):
    """One byte over the limit is refused with the limit named; at the limit it is read."""
    path = tmp_path / "ca.pem"
    path.write_bytes(b"x" * 2049)
    with pytest.raises(InputFileError) as caught:
        read_regular_file(path, limit=2048, what="certificate")
    assert str(caught.value) == (
        f"{path} is larger than 2 KiB, the limit for a certificate file. A real certificate file is far smaller; check the path."
    )
    path.write_bytes(b"x" * 2048)
    assert len(read_regular_file(path, limit=2048, what="certificate")) == 2048


def test_a_directory_is_an_is_a_directory_error(tmp_path):
    """A directory raises IsADirectoryError, which every caller already words; a missing file FileNotFoundError."""
    with pytest.raises(IsADirectoryError):
        read_regular_file(tmp_path, limit=10, what="CRL")
    with pytest.raises(FileNotFoundError):
        read_regular_file(tmp_path / "nope", limit=10, what="CRL")


def test_file_watch_treats_a_fifo_as_absent_and_never_blocks(tmp_path):
    """A FIFO swapped in at a watched path is a change (refused, not read), not a poller stuck in open()."""
    path = tmp_path / "crl.pem"
    path.write_bytes(b"v1")
    watch = FileWatch([path])
    path.unlink()
    make_fifo(path)
    assert watch.changed() is True
    assert watch.changed() is False
    path.unlink()
    path.write_bytes(b"v2")
    assert watch.changed() is True


# --- certificates, keys and secrets read through pki ----------------------------


@pytest.mark.parametrize(
    ("load", "what"),
    [
        (pki.load_certificate, "certificate"),
        (pki.load_certificates, "certificate"),
        (pki.load_private_key, "key"),
    ],
)
def test_pem_loaders_refuse_a_fifo_with_one_line(tmp_path, load, what):
    """A FIFO given as a certificate or key is a PkiError naming it, not a hang."""
    path = make_fifo(tmp_path / "x.pem")
    with pytest.raises(PkiError) as caught:
        load(path)
    assert str(caught.value) == f"{path} is a FIFO (named pipe), not a regular file. Point to the {what} file itself."


def test_pem_loader_reads_a_real_certificate(pki_issued_store):
    """The twin: the same loader reads a real certificate."""
    assert pki.load_certificate(pki_issued_store.cert_path("alice")).subject


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (make_fifo, "{path} is a FIFO (named pipe), not a regular file. Point to the passphrase file itself."),
        (
            lambda path: (path.symlink_to("/dev/zero"), path)[1],
            "{path} is a character device, not a regular file. Point to the passphrase file itself.",
        ),
        (
            lambda path: (path.write_bytes(b"x" * 70_000), path)[1],
            "{path} is larger than 64 KiB, the limit for a passphrase file. A real passphrase file is far smaller; check the path.",
        ),
        (lambda path: (path.write_bytes(b"\n"), path)[1], "{path} is empty. Put the passphrase on its first line."),
    ],
    ids=["fifo", "dev-zero", "70-kB", "empty"],
)
def test_secret_files_are_bounded(tmp_path, make, text):
    """A passphrase file that is a FIFO, /dev/zero, huge or empty is one line naming it."""
    path = make(tmp_path / "pass.txt")
    with pytest.raises(PkiError) as caught:
        pki.read_secret_file(path, flag="--passphrase-file")
    assert str(caught.value) == text.format(path=path)


def test_a_secret_file_gives_its_first_line(tmp_path):
    """The twin: the first line of a small file is the secret."""
    path = tmp_path / "pass.txt"
    path.write_bytes(b"correct horse\nignored\n")
    assert pki.read_secret_file(path, flag="--passphrase-file") == b"correct horse"


# --- index.json ------------------------------------------------------------------

DAMAGED = " is damaged ({kind}). Restore it from a backup, or move it aside to start a new index (certificates on disk stay valid)."


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"\x00\xff garbage", "JSONDecodeError"),
        (b"[" * 100_000 + b"]" * 100_000, "RecursionError"),
        (b'{"version": 1, "certificates": [' + b"[" * 50_000 + b"]" * 50_000 + b"]}", "RecursionError"),
        (b'{"version": 1, "certificates": {"a": 1}}', "TypeError"),
        (b'{"version": 1, "certificates": [5]}', "TypeError"),
        (b'{"version": 1, "certificates": [{"name": 5}]}', "TypeError"),
        (
            b'{"version": 1, "certificates": [{"name": "a", "kind": "client", "serial": "1", "not_before": 7, "not_after": "x"}]}',
            "TypeError",
        ),
        (
            b'{"version": 1, "certificates": [{"name": "a", "kind": "client", "serial": "1", "not_before": "2025-01-01T00:00:00", "not_after": "2025-01-02T00:00:00Z"}]}',
            "ValueError",
        ),
        (b'{"version": ' + b"9" * 5000 + b', "certificates": []}', "ValueError"),
        (b'{"version": true, "certificates": []}', None),
        (b"[]", "TypeError"),
    ],
    ids=[
        "binary",
        "100k-deep-list",
        "deep-entry",
        "map-not-list",
        "number-entry",
        "name-number",
        "time-number",
        "naive-time",
        "5000-digits",
        "bool-version",
        "list-doc",
    ],
)
def test_damaged_index_is_one_line(content, kind):
    """Garbage, 100,000-deep nesting and wrong types in index.json are one PkiError line, never a traceback."""
    with pytest.raises(PkiError) as caught:
        pki.parse_index(content, where="certs/index.json")
    if kind is None:
        assert (
            str(caught.value)
            == "certs/index.json has format version True, newer than this securechat understands (1). Upgrade securechat."
        )
    else:
        assert str(caught.value) == "certs/index.json" + DAMAGED.format(kind=kind)


def test_a_good_index_parses(pki_issued_store):
    """The twin: an index written by the store reads back entry for entry."""
    raw = pki_issued_store.index_path.read_bytes()
    assert [e.name for e in pki.parse_index(raw, where="index.json")] == ["ca", "server", "alice", "bob"]


# --- SANs and CA names ------------------------------------------------------------

IPV4_FIX = "Write four numbers 0-255 without leading zeros, e.g. '10.0.0.5'."


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("999.1.1.1", f"SAN '999.1.1.1' is not a valid IPv4 address. {IPV4_FIX}"),
        ("1.2.3", f"SAN '1.2.3' is not a valid IPv4 address. {IPV4_FIX}"),
        ("010.0.0.1", f"SAN '010.0.0.1' is not a valid IPv4 address. {IPV4_FIX}"),
        ("256.0.0.1", f"SAN '256.0.0.1' is not a valid IPv4 address. {IPV4_FIX}"),
        ("1.2.3.4.5", f"SAN '1.2.3.4.5' is not a valid IPv4 address. {IPV4_FIX}"),
        ("12345", f"SAN '12345' is not a valid IPv4 address. {IPV4_FIX}"),
        ("1::2::3", "SAN '1::2::3' is not a valid IPv6 address. Write it like '::1' or 'fd00::5'."),
        (
            "host.123",
            "SAN 'host.123' is not a DNS name: its last label is all digits, which reads as an address."
            " Use a host name such as 'api.example.com', or an IP such as '10.0.0.5'.",
        ),
    ],
)
def test_malformed_ips_are_refused_not_made_dns_names(text, message):
    """An address that is not one is refused as a malformed IP, never issued as a DNS name."""
    with pytest.raises(PkiError) as caught:
        pki.parse_san(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.5", x509.IPAddress(ipaddress.ip_address("10.0.0.5"))),
        ("0.0.0.0", x509.IPAddress(ipaddress.ip_address("0.0.0.0"))),  # noqa: S104 - a SAN, not a bind
        ("::1", x509.IPAddress(ipaddress.ip_address("::1"))),
        ("fd00::5", x509.IPAddress(ipaddress.ip_address("fd00::5"))),
        ("api1.example.com", x509.DNSName("api1.example.com")),
        ("123.example.com", x509.DNSName("123.example.com")),
        ("localhost", x509.DNSName("localhost")),
    ],
)
def test_good_ips_and_names_still_parse(text, expected):
    """The twins: real addresses become IP SANs; names with digits (not last) stay DNS names."""
    assert pki.parse_san(text) == expected


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("evil\nCA", "'evil\\nCA'"),
        ("evil\x1b[2JCA", "'evil\\x1b[2JCA'"),
        ("evil\u202eAC", "'evil\\u202eAC'"),
        (" padded", "' padded'"),
        ("tab\tCA", "'tab\\tCA'"),
    ],
)
def test_ca_common_name_with_control_characters_is_refused(name, shown):
    """A CA name with a newline, escape, bidi override or surrounding space never becomes an issuer name."""
    with pytest.raises(PkiError) as caught:
        pki.create_ca(common_name=name)
    assert (
        str(caught.value)
        == f"common name {shown} holds a control character or surrounding space. Pass a --name of printable text."
    )


def test_a_printable_ca_name_with_spaces_is_fine():
    """The twin: an ordinary name with inner spaces and punctuation is the CA's CN."""
    ca = pki.create_ca(common_name="Example Corp. CA (test)")
    assert ca.cert.subject.rfc4514_string() == "CN=Example Corp. CA (test),O=securechat"


# --- numeric and duration bounds ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1000000000000000000000000000000", "--within 100000000000...d is longer than 36600 days. Write e.g. 30d."),
        ("36601d", "--within 36601d is longer than 36600 days. Write e.g. 30d."),
        ("9" * 5000 + "w", "--within 999999999999...w is longer than 36600 days. Write e.g. 30d."),
        ("\u0663d", "--within '\u0663d' is not a duration. Write e.g. 30d, 12h or 2w."),
        ("-1d", "--within '-1d' is not a duration. Write e.g. 30d, 12h or 2w."),
    ],
)
def test_renewal_window_is_bounded(text, message):
    """--within of 10^30, 5,000 digits or a non-ASCII digit is one line, never OverflowError."""
    with pytest.raises(PkiError) as caught:
        pki.parse_renewal_window(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(("text", "hours"), [("30d", 720), ("12h", 12), ("2w", 336), ("36600", 36600 * 24)])
def test_renewal_window_good_values(text, hours):
    """The twins: the usual forms, up to a century."""
    assert pki.parse_renewal_window(text) == dt.timedelta(hours=hours)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda ca: pki.create_ca(days=10**30),
            "--days 1000000000000000000000000000000 is too long: at most 36500 days are allowed here. Use --days 36500 or less.",
        ),
        (
            lambda ca: pki.issue_client_cert(ca, "alice", days=10**30),
            "--days 1000000000000000000000000000000 is too long: at most 397 days are allowed here. Use --days 397 or less.",
        ),
        (
            lambda ca: pki.build_crl(ca, [], number=1, days=10**30),
            "--days 1000000000000000000000000000000 is too long for a CRL: at most 3650. Use --days 3650 or less.",
        ),
    ],
    ids=["ca", "leaf", "crl"],
)
def test_day_counts_of_10_to_the_30_are_one_line(pki_ca, make, message):
    """10^30 days is a PkiError naming the bound, checked before any timedelta overflows."""
    with pytest.raises(PkiError) as caught:
        make(pki_ca)
    assert str(caught.value) == message


def test_a_crl_of_the_maximum_length_is_signed(pki_ca):
    """The twin: a CRL for CRL_MAX_DAYS is built (its nextUpdate capped at the CA's expiry)."""
    crl = pki.build_crl(pki_ca, [], number=1, days=pki.CRL_MAX_DAYS)
    assert crl.next_update_utc is not None and crl.next_update_utc <= pki_ca.cert.not_valid_after_utc


# --- directories and atomic writes ------------------------------------------------


def test_directories_are_0700_at_every_level_under_umask_000(tmp_path):
    """Each missing level of a new certs directory is made 0700 even with umask 000."""
    old = os.umask(0)
    try:
        store = pki.CertStore(tmp_path / "a" / "b" / "certs")
        store.init_ca()
        probe = tmp_path / "probe"
        probe.mkdir()  # what a plain mkdir gives under this umask
    finally:
        os.umask(old)
    assert stat.S_IMODE(probe.stat().st_mode) == 0o777  # the umask really was 000
    for level in (tmp_path / "a", tmp_path / "a" / "b", store.directory):
        assert stat.S_IMODE(level.stat().st_mode) == 0o700, level
    assert stat.S_IMODE(store.ca_key_path.stat().st_mode) == 0o400
    assert stat.S_IMODE(store.ca_cert_path.stat().st_mode) == 0o644


def test_an_existing_directory_keeps_its_mode(tmp_path):
    """The twin: a directory that exists already is not chmod'ed (the CLI warns instead)."""
    directory = tmp_path / "certs"
    directory.mkdir(mode=0o750)
    os.chmod(directory, 0o750)  # noqa: S103 - a group-readable directory on purpose
    pki.CertStore(directory).init_ca()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o750
    assert pki.CertStore(directory).directory_is_private() is False


def test_a_symlink_at_a_target_is_replaced_never_followed(tmp_path, pki_ca):
    """With --force, a planted NAME.pem -> elsewhere symlink is replaced by the file; the file it pointed to is untouched."""
    store = pki.CertStore(tmp_path / "certs")
    store.write_ca(pki_ca)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    store.cert_path("alice").symlink_to(victim)
    with pytest.raises(PkiError, match="alice.pem already exists"):
        store.write_leaf("alice", pki.issue_client_cert(pki_ca, "alice"))
    store.write_leaf("alice", pki.issue_client_cert(pki_ca, "alice"), force=True)
    assert victim.read_text() == "precious"
    assert not store.cert_path("alice").is_symlink()
    assert pki.load_certificate(store.cert_path("alice")).subject
