"""--json on every command that prints data, with the keys each documents; and the fixes they name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from terminal_support import ServeProcess, run

from securechat import pki


@pytest.fixture(scope="module")
def certs(site: Path) -> Path:
    return site / "certs"


def test_certs_list_json(site: Path):
    """certs list --json: index.json's entries."""
    done = run("certs", "list", "--dir", "certs", "--json", cwd=site)
    entries = json.loads(done.stdout)
    assert {e["name"] for e in entries} >= {"ca", "server", "alice", "bob"}
    assert set(entries[0]) >= {"name", "kind", "serial", "not_before", "not_after", "sans", "status"}


def test_certs_inspect_shows_every_certificate_of_a_bundle_with_key_usage(site: Path):
    """A chain file: both certificates, each with key usage and who signed it; --json likewise."""
    (site / "chain.pem").write_bytes((site / "certs/alice.pem").read_bytes() + (site / "certs/ca.pem").read_bytes())
    text = run("certs", "inspect", "chain.pem", "--dir", "certs", cwd=site)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == "chain.pem (2 certificates)"
    assert "  key usage:    digitalSignature" in lines and "  key usage:    keyCertSign, cRLSign" in lines
    assert lines.count("certificate 1 of 2:") == 1 and lines.count("certificate 2 of 2:") == 1
    done = run("certs", "inspect", "chain.pem", "--dir", "certs", "--json", cwd=site)
    shown = json.loads(done.stdout)
    assert [(c["common_name"], c["is_ca"], c["key_usages"], c["signed_by"]) for c in shown] == [
        ("alice", False, ["digitalSignature"], "ca"),
        ("securechat CA", True, ["keyCertSign", "cRLSign"], "ca"),
    ]
    assert sorted(shown[0]) == sorted(
        ["subject", "issuer", "common_name", "sans", "key_usages", "ekus", "key_type", "is_ca", "serial",
         "not_before", "not_after", "days_left", "sha256", "signed_by"]  # fmt: skip
    )


def test_doctor_json(site: Path, server: ServeProcess):
    """doctor --json: one object per check, ok/check/message/fix, exit code as without it."""
    done = run("doctor", "--config", "alice.yaml", "--json", cwd=site, env={})
    findings = json.loads(done.stdout)
    assert all(sorted(f) == ["check", "fix", "message", "ok", "warning"] for f in findings)
    assert findings[0] == {
        "ok": True, "warning": False, "check": "config", "message": "alice.yaml is a valid client config", "fix": ""
    }


def test_needs_renewal_json_and_a_revoked_certificate_is_not_sent_to_renew(site: Path):
    """needs-renewal names the command that works: a revoked certificate gets a new one, never 'renew' (which refuses)."""
    assert run("certs", "client", "carol", "--dir", "certs", cwd=site).returncode == 0
    assert run("certs", "revoke", "carol", "--dir", "certs", cwd=site).returncode == 0
    done = run("certs", "needs-renewal", "carol", "--dir", "certs", cwd=site)
    assert done.returncode == 1
    serial = f"{pki.load_certificate(site / 'certs/carol.pem').serial_number:x}"
    assert done.stdout == (
        f"carol: revoked (serial {serial}); it cannot be renewed."
        " Issue a new one with 'securechat certs client carol --force --dir certs'.\n"
    )
    renew = run("certs", "renew", "carol", "--dir", "certs", cwd=site)
    assert renew.returncode == 1  # what needs-renewal does not suggest, refused
    as_json = json.loads(run("certs", "needs-renewal", "carol", "--dir", "certs", "--json", cwd=site).stdout)
    assert as_json == [
        {"name": "carol", "kind": "client", "serial": serial, "not_after": as_json[0]["not_after"], "days_left": 365,
         "status": "revoked", "due": True, "fix": "Issue a new one with 'securechat certs client carol --force --dir certs'."}
    ]  # fmt: skip
    fixed = run("certs", "client", "carol", "--force", "--dir", "certs", cwd=site)
    assert fixed.returncode == 0
    assert run("certs", "needs-renewal", "carol", "--dir", "certs", cwd=site).returncode == 0  # the twin: fixed
