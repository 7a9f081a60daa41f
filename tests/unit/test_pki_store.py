"""The certs directory: modes, atomic no-overwrite writes, the index, loading the CA."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from securechat import pki
from securechat.errors import FileExistsRefused, PkiError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _files(directory: str | Path) -> set[str]:
    return {p.name for p in Path(directory).iterdir()}


def test_init_ca_writes_files_with_safe_modes(tmp_path: Path) -> None:
    """init_ca creates DIR 0700, ca-key.pem 0400, ca.pem and index.json 0644."""
    store = pki.CertStore(tmp_path / "new" / "certs")
    store.init_ca()
    assert _mode(store.directory) == 0o700
    assert _mode(store.ca_key_path) == 0o400
    assert _mode(store.ca_cert_path) == 0o644
    assert _mode(store.index_path) == 0o644
    assert _files(store.directory) == {"ca.pem", "ca-key.pem", "index.json"}


def test_modes_do_not_depend_on_umask(tmp_path: Path) -> None:
    """A permissive or strict umask does not change the modes written."""
    old = os.umask(0o000)
    try:
        store = pki.CertStore(tmp_path / "loose")
        ca = store.init_ca()
        store.write_leaf("alice", pki.issue_client_cert(ca, "alice"))
    finally:
        os.umask(0o077)
    try:
        strict = pki.CertStore(tmp_path / "strict")
        strict.init_ca()
    finally:
        os.umask(old)
    assert (
        _mode(store.directory),
        _mode(store.key_path("alice")),
        _mode(store.cert_path("alice")),
    ) == (
        0o700,
        0o600,
        0o644,
    )
    assert _mode(strict.ca_cert_path) == 0o644


def test_leaf_files_have_safe_modes(pki_store: pki.CertStore, pki_ca: pki.CertificateAuthority) -> None:
    """write_leaf writes NAME-key.pem 0600 and NAME.pem 0644, and returns their paths."""
    cert_path, key_path = pki_store.write_leaf("server", pki.issue_server_cert(pki_ca, "server"), kind="server")
    assert (cert_path, key_path) == (
        pki_store.directory / "server.pem",
        pki_store.directory / "server-key.pem",
    )
    assert _mode(key_path) == 0o600
    assert _mode(cert_path) == 0o644


def test_written_files_load_back(pki_store: pki.CertStore, pki_ca: pki.CertificateAuthority) -> None:
    """What was written loads back as the same cert and a matching key."""
    issued = pki.issue_client_cert(pki_ca, "alice")
    cert_path, key_path = pki_store.write_leaf("alice", issued)
    assert pki.load_certificate(cert_path) == issued.cert
    assert pki.key_matches_certificate(pki.load_private_key(key_path), issued.cert)
    loaded = pki_store.load_ca()
    assert loaded.cert == pki_ca.cert
    assert pki.key_matches_certificate(loaded.key, pki_ca.cert)


def test_init_refuses_to_overwrite_the_ca(pki_store: pki.CertStore) -> None:
    """A second init names the file it refuses to replace, and leaves the CA alone."""
    before = pki_store.ca_cert_path.read_bytes()
    with pytest.raises(FileExistsRefused, match=r"ca\.pem already exists; refusing to overwrite it\. Pass --force"):
        pki_store.init_ca()
    assert pki_store.ca_cert_path.read_bytes() == before


def test_init_refuses_when_only_the_key_exists(tmp_path: Path) -> None:
    """A leftover ca-key.pem alone also blocks init: every target is checked."""
    store = pki.CertStore(tmp_path)
    store.ca_key_path.write_text("precious")
    with pytest.raises(FileExistsRefused, match="ca-key.pem"):
        store.init_ca()
    assert store.ca_key_path.read_text() == "precious"
    assert not store.ca_cert_path.exists()


def test_init_force_replaces_the_ca_and_restarts_the_index(pki_issued_store: pki.CertStore) -> None:
    """init --force makes a new CA and an index holding only it."""
    old = pki_issued_store.load_ca()
    new = pki_issued_store.init_ca(force=True)
    assert new.cert != old.cert
    assert pki_issued_store.load_ca().cert == new.cert
    assert [e.kind for e in pki_issued_store.entries()] == ["ca"]


def test_write_leaf_refuses_to_overwrite_and_writes_nothing(
    pki_store: pki.CertStore, pki_ca: pki.CertificateAuthority
) -> None:
    """If any target exists, the error names it and no file is written or changed."""
    pki_store.cert_path("bob").write_text("existing bob")
    before = _files(pki_store.directory)
    index_before = pki_store.index_path.read_bytes()
    issued = [pki.issue_client_cert(pki_ca, n) for n in ("alice", "bob", "carol")]
    with pytest.raises(FileExistsRefused, match=r"bob\.pem already exists"):
        pki_store.write_leaves(issued)
    assert _files(pki_store.directory) == before
    assert pki_store.cert_path("bob").read_text() == "existing bob"
    assert pki_store.index_path.read_bytes() == index_before


def test_refuse_overwrite_checks_before_issuing(pki_issued_store: pki.CertStore) -> None:
    """refuse_overwrite raises for an existing name, and passes with force or new names."""
    with pytest.raises(FileExistsRefused, match="alice"):
        pki_issued_store.refuse_overwrite(["zed", "alice"])
    pki_issued_store.refuse_overwrite(["alice"], force=True)
    pki_issued_store.refuse_overwrite(["zed"])


def test_force_replaces_a_leaf_and_supersedes_its_index_entry(
    pki_issued_store: pki.CertStore, pki_ca: pki.CertificateAuthority
) -> None:
    """--force writes the new cert; the old serial stays in the index as 'superseded'."""
    old_serial = f"{pki.load_certificate(pki_issued_store.cert_path('alice')).serial_number:x}"
    issued = pki.issue_client_cert(pki_ca, "alice")
    pki_issued_store.write_leaf("alice", issued, force=True)
    assert pki.load_certificate(pki_issued_store.cert_path("alice")) == issued.cert
    alice = [(e.serial, e.status) for e in pki_issued_store.entries() if e.name == "alice"]
    assert alice == [(old_serial, "superseded"), (f"{issued.cert.serial_number:x}", "valid")]


def test_no_temporary_files_are_left_behind(pki_issued_store: pki.CertStore, pki_ca: pki.CertificateAuthority) -> None:
    """Atomic writes leave only final files, also after a refused write."""
    with pytest.raises(FileExistsRefused):
        pki_issued_store.write_leaf("alice", pki.issue_client_cert(pki_ca, "alice"))
    assert not [n for n in _files(pki_issued_store.directory) if n.endswith(".tmp")]


def test_index_records_what_was_issued(pki_issued_store: pki.CertStore) -> None:
    """index.json is versioned and lists name, kind, serial, times, SANs and status."""
    document = json.loads(pki_issued_store.index_path.read_text())
    assert document["version"] == pki.INDEX_VERSION == 1
    by_name = {e["name"]: e for e in document["certificates"]}
    assert [e["kind"] for e in document["certificates"]] == ["ca", "server", "client", "client"]
    server = by_name["server"]
    assert server["sans"] == ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    assert server["status"] == "valid"
    assert server["not_after"].endswith("Z")
    assert int(server["serial"], 16) == pki.load_certificate(pki_issued_store.cert_path("server")).serial_number
    assert by_name["alice"]["sans"] == ["DNS:alice"]
    entries = pki_issued_store.entries()
    assert [e.name for e in entries] == ["ca", "server", "alice", "bob"]
    assert entries[1].not_after.tzinfo is not None


def test_many_client_names_in_one_call(pki_store: pki.CertStore, pki_ca: pki.CertificateAuthority) -> None:
    """write_leaves writes 200 leaves and records all of them in one index."""
    names = [f"user{i}" for i in range(200)]
    paths = pki_store.write_leaves([pki.issue_client_cert(pki_ca, n) for n in names])
    assert len(paths) == 200
    assert all(c.exists() and k.exists() for c, k in paths)
    assert [e.name for e in pki_store.entries()][1:] == names


def test_a_large_batch_is_synced_once_with_safe_modes_and_no_temp_files(
    pki_store: pki.CertStore, pki_ca: pki.CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past BATCH_SYNC_MIN_FILES the data is made durable by one syncfs before any link; modes stay exact."""
    from securechat.pki import atomic as store_module

    if store_module._syncfs is None:
        pytest.skip("syncfs(2) is Linux-only")
    synced: list[set[str]] = []
    real_syncfs = store_module._syncfs

    def recording_syncfs(directory: str) -> None:
        synced.append(_files(directory))  # what exists when the data is flushed
        real_syncfs(directory)

    monkeypatch.setattr(store_module, "_syncfs", recording_syncfs)
    names = [f"user{i}" for i in range(store_module.BATCH_SYNC_MIN_FILES)]
    paths = pki_store.write_leaves([pki.issue_client_cert(pki_ca, n) for n in names])
    assert len(synced) == 1
    assert not {f"{n}.pem" for n in names} & synced[0], "a final name existed before its data was durable"
    assert all(_mode(c) == 0o644 and _mode(k) == 0o600 for c, k in paths)
    assert not [n for n in _files(pki_store.directory) if n.endswith(".tmp")]


@pytest.mark.parametrize("how", ["write_leaves", "issue_clients"])
def test_a_large_batch_refuses_a_name_that_appears_meanwhile(
    pki_store: pki.CertStore, pki_ca: pki.CertificateAuthority, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A target created after the up-front check (just before the moves) is never replaced; no temp files are left.

    `issue_clients` runs in two processes when the platform can fork.
    """
    from securechat.pki import atomic as store_module

    if store_module._syncfs is None:
        pytest.skip("syncfs(2) is Linux-only")
    names = [f"user{i}" for i in range(128)]
    real_syncfs = store_module._syncfs

    def intruding_syncfs(directory: str) -> None:
        real_syncfs(directory)
        pki_store.cert_path("user100").write_text("someone else's")

    monkeypatch.setattr(store_module, "_syncfs", intruding_syncfs)
    with pytest.raises(FileExistsRefused, match="user100.pem"):
        if how == "write_leaves":
            pki_store.write_leaves(pki.issue_client_certs(pki_ca, names))
        else:
            pki_store.issue_clients(pki_ca, names, workers=2 if hasattr(os, "fork") else 1)
    assert pki_store.cert_path("user100").read_text() == "someone else's"
    assert not [n for n in _files(pki_store.directory) if n.endswith(".tmp")]


def test_duplicate_names_in_one_call_are_refused(pki_store: pki.CertStore, pki_ca: pki.CertificateAuthority) -> None:
    """The same name twice in one batch is an error, before anything is written."""
    with pytest.raises(PkiError, match="alice given more than once"):
        pki_store.write_leaves([pki.issue_client_cert(pki_ca, "alice"), pki.issue_client_cert(pki_ca, "alice")])
    assert not pki_store.cert_path("alice").exists()


def test_write_leaf_kind_must_match(pki_store: pki.CertStore, pki_ca: pki.CertificateAuthority) -> None:
    """Recording a server certificate as a client is refused."""
    with pytest.raises(PkiError, match="a server certificate cannot be recorded as client"):
        pki_store.write_leaf("server", pki.issue_server_cert(pki_ca, "server"), kind="client")


def test_load_ca_missing_says_how_to_create_it(tmp_path: Path) -> None:
    """A missing CA names the file and the init command for that directory."""
    store = pki.CertStore(tmp_path / "certs")
    with pytest.raises(
        PkiError,
        match=r"certs/ca\.pem not found\. Run 'securechat certs init --dir .*certs' first\.",
    ):
        store.load_ca()


def test_load_ca_refuses_a_key_from_another_ca(
    pki_store: pki.CertStore, pki_foreign_ca: pki.CertificateAuthority
) -> None:
    """A ca-key.pem that does not match ca.pem is an error, not a silent mis-signing."""
    foreign = pki.CertStore(pki_store.directory.parent / "foreign")
    foreign.write_ca(pki_foreign_ca)
    os.replace(foreign.ca_key_path, pki_store.ca_key_path)
    with pytest.raises(PkiError, match="the CA key does not match the CA certificate"):
        pki_store.load_ca()


def test_load_ca_refuses_a_leaf_as_ca(pki_issued_store: pki.CertStore) -> None:
    """A leaf copied over ca.pem is reported as not a CA."""
    os.replace(pki_issued_store.cert_path("server"), pki_issued_store.ca_cert_path)
    with pytest.raises(PkiError, match="is not a CA certificate"):
        pki_issued_store.load_ca()


def test_encrypted_ca_key_round_trip(tmp_path: Path) -> None:
    """A passphrase encrypts ca-key.pem; loading needs it and names the flag without it."""
    store = pki.CertStore(tmp_path)
    ca = store.init_ca(passphrase=b"correct horse")
    assert b"ENCRYPTED" in store.ca_key_path.read_bytes()
    assert store.load_ca(passphrase=b"correct horse").cert == ca.cert
    with pytest.raises(PkiError, match="is encrypted with a passphrase. Pass --ca-passphrase-file"):
        store.load_ca()
    with pytest.raises(PkiError, match="wrong passphrase"):
        store.load_ca(passphrase=b"wrong")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is damaged"),
        ('{"certificates": []}', "is damaged"),
        ('{"version": 99, "certificates": []}', "format version 99, newer"),
    ],
)
def test_bad_index_is_reported_by_file(pki_store: pki.CertStore, content: str, message: str) -> None:
    """A damaged or newer index.json is an error naming the file."""
    pki_store.index_path.write_text(content)
    with pytest.raises(PkiError, match=rf"index\.json .*{message}"):
        pki_store.entries()


def test_store_refuses_a_file_as_directory(tmp_path: Path) -> None:
    """--dir pointing at a file is a one-line error."""
    (tmp_path / "certs").write_text("")
    with pytest.raises(PkiError, match="is a file, not a directory"):
        pki.CertStore(tmp_path / "certs").init_ca()


def test_directory_is_private_reports_loose_modes(tmp_path: Path) -> None:
    """directory_is_private is False for a group/world-readable directory."""
    store = pki.CertStore(tmp_path / "open")
    store.directory.mkdir(mode=0o755)
    os.chmod(store.directory, 0o755)  # noqa: S103 - the loose mode is the point
    assert not store.directory_is_private()
    os.chmod(store.directory, 0o700)
    assert store.directory_is_private()
