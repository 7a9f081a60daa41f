"""`securechat certs list | inspect`: what was issued, and what one certificate says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from securechat import pki
from securechat.cli.certs.common import DEFAULT_DIR, DirOption, WithinOption, date, open_store, say
from securechat.cli.output import console, reports_errors
from securechat.errors import PkiError


@reports_errors
def list_(
    directory: DirOption = DEFAULT_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print index.json entries as JSON.")] = False,
    within: WithinOption = None,
) -> None:
    """List what was issued in DIR, with days left and status; 'renew soon' marks those past 2/3 of their lifetime (or within --within)."""
    threshold = pki.parse_renewal_window(within) if within is not None else None
    store = open_store(directory)
    if not store.directory.is_dir():
        raise PkiError(f"{store.directory} not found. Run 'securechat certs init --dir {store.directory}' first.")
    entries = store.entries()
    if as_json:
        say(json.dumps([e.to_json() for e in entries], indent=2))
        return
    if not entries:
        say(f"Nothing issued in {store.directory} yet. Run 'securechat certs init --dir {store.directory}'.")
        return
    now = pki.utc_now()
    from rich.table import Table  # only `list` draws a table: not imported by every certs command
    from rich.text import Text

    table = Table(box=None, pad_edge=False)
    for column in ("name", "kind", "serial", "expires", "days left", "status"):
        table.add_column(column, justify="right" if column == "days left" else "left", no_wrap=True)
    for entry in entries:
        left = pki.days_until(entry.not_after, now=now)
        status = entry.status
        if entry.status == "valid" and entry.not_after < now:
            status = "expired"
        elif entry.status == "valid" and now >= pki.renewal_point(entry.not_before, entry.not_after, threshold):
            status = "renew soon"
        cells = (entry.name, entry.kind, entry.serial[:16], entry.not_after.strftime("%Y-%m-%d"), str(left), status)
        table.add_row(*(Text(cell) for cell in cells))  # Text: never markup or emoji codes
    console().print(table, soft_wrap=True)


@reports_errors
def inspect(
    file: Annotated[Path, typer.Argument(help="A certificate file (PEM or DER).")],
    directory: DirOption = DEFAULT_DIR,
) -> None:
    """Show a certificate: names, EKUs, issuer, validity, fingerprint; did DIR's CA sign it?"""
    cert = pki.load_certificate(file)
    store = pki.CertStore(directory)
    ca_cert = pki.load_certificate(store.ca_cert_path) if store.ca_cert_path.is_file() else None
    summary = pki.summarize(cert, ca_cert=ca_cert)
    if summary.expired:
        ago = (pki.utc_now() - summary.not_after).days  # whole days since expiry
        validity = "EXPIRED today" if ago == 0 else f"EXPIRED {ago} day{'s' if ago != 1 else ''} ago"
    elif summary.not_yet_valid:
        validity = "NOT VALID YET"
    else:
        validity = f"{summary.days_left} days left"
    sans = [f"DNS:{n}" for n in summary.dns_names]
    sans += [f"IP:{n}" for n in summary.ip_addresses] + [f"URI:{n}" for n in summary.uris]
    if summary.signed_by_ca is None:
        signed = f"unknown: {store.ca_cert_path} not found (pass --dir)"
    elif summary.signed_by_ca:
        signed = f"yes, by {store.ca_cert_path}"
    else:
        signed = f"NO: {store.ca_cert_path} did not sign it"
    rows = [
        ("subject", summary.subject),
        ("issuer", summary.issuer),
        ("SANs", ", ".join(sans) or "(none)"),
        ("EKUs", ", ".join(summary.ekus) or "(none)"),
        ("key type", summary.key_type),
        ("is a CA", "yes" if summary.is_ca else "no"),
        ("serial", summary.serial),
        ("valid from", date(summary.not_before)),
        ("valid until", f"{date(summary.not_after)} ({validity})"),
        ("SHA-256", summary.fingerprint_sha256),
        ("signed by CA", signed),
    ]
    say(str(file))
    for label, value in rows:
        say(f"  {label + ':':<14}{value}")
