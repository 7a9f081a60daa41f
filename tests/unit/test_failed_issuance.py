"""An issuance that fails leaves nothing on disk, whatever step failed; its twin writes everything."""

from __future__ import annotations

from pathlib import Path

import pytest

from securechat import pki
from securechat.errors import PkiError


def files(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


@pytest.mark.parametrize("how", ["write_leaves", "issue_clients", "issue_clients in forks"])
def test_a_damaged_index_leaves_no_key_or_certificate_behind(pki_store: pki.CertStore, pki_ca: pki.CertificateAuthority, how: str):
    """index.json is damaged: the issuance fails in one line and writes no NAME.pem / NAME-key.pem, nor temp files."""
    pki_store.index_path.write_text('{"broken')
    before = files(pki_store.directory)
    with pytest.raises(PkiError, match=r"index\.json is damaged"):
        if how == "write_leaves":
            pki_store.write_leaves([pki.issue_client_cert(pki_ca, "alice"), pki.issue_server_cert(pki_ca, "server")])
        else:
            names = [f"c{i}" for i in range(130)]
            pki_store.issue_clients(pki_ca, names, workers=2 if how.endswith("forks") else 1)
    assert files(pki_store.directory) == before


def test_with_a_sound_index_everything_is_written(pki_store: pki.CertStore, pki_ca: pki.CertificateAuthority):
    """The passing twin: the same issuance writes both files of each name and records them."""
    pki_store.write_leaves([pki.issue_client_cert(pki_ca, "alice")])
    assert {"alice.pem", "alice-key.pem"} <= files(pki_store.directory)
    assert [e.name for e in pki_store.entries()][-1] == "alice"


def test_an_existing_file_midway_takes_back_what_was_placed(pki_store: pki.CertStore, pki_ca: pki.CertificateAuthority):
    """A name that appears meanwhile (no --force): the leaves already moved into place are removed again, the other file kept."""
    issued = [pki.issue_client_cert(pki_ca, name) for name in ("a", "b", "c")]
    staged = pki_store._stage_leaves(issued, fsync_each=True)
    (pki_store.directory / "b.pem").write_text("someone else's file")
    with pytest.raises(PkiError, match=r"b\.pem already exists"):
        pki_store._commit_leaves(staged, force=False, syncfs_first=False)
    assert files(pki_store.directory) - {"ca.pem", "ca-key.pem", "index.json"} == {"b.pem"}
    assert (pki_store.directory / "b.pem").read_text() == "someone else's file"
