"""`securechat certs list | inspect`: what was issued, and what one certificate says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from securechat import pki
from securechat.cli.certs.common import DEFAULT_DIR, DirOption, WithinOption, date, open_store, say
from securechat.cli.output import reports_errors
from securechat.errors import PkiError


@reports_errors
def list_(
    directory: DirOption = DEFAULT_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print index.json entries as JSON.")] = False,
    within: WithinOption = None,
) -> None:
    """List what was issued in DIR, with days left and status.

    'renew soon' marks those past 2/3 of their lifetime (or within --within).
    Into a file or a pipe nothing is cut; a narrow terminal gets one block
    per certificate. --json prints index.json's entries (see certs/README.md).

    Example: securechat certs list --dir certs --within 60d
    """
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
    from securechat.cli.table import Column, print_table

    rows = []
    for entry in entries:
        left = pki.days_until(entry.not_after, now=now)
        status = entry.status
        if entry.status == "valid" and entry.not_after < now:
            status = "expired"
        elif entry.status == "valid" and now >= pki.renewal_point(entry.not_before, entry.not_after, threshold):
            status = "renew soon"
        rows.append(
            (entry.name, entry.kind, entry.serial[:16], entry.not_after.strftime("%Y-%m-%d"), str(left), status)
        )
    columns = (
        Column("name"),
        Column("kind"),
        Column("serial", optional=True),  # the first 16 hex digits; --json has them all
        Column("expires"),
        Column("days left", right=True),
        Column("status"),
    )
    print_table(columns, rows)  # never truncated: narrow terminals get one block per certificate


@reports_errors
def inspect(
    file: Annotated[
        Path,
        typer.Argument(help="A certificate file (PEM or DER); every certificate of a bundle is shown.", metavar="FILE"),
    ],
    directory: DirOption = DEFAULT_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list, one object per certificate.")] = False,
) -> None:
    """Show a certificate: names, key usage, EKUs, issuer, validity, fingerprint; did DIR's CA sign it?

    Every certificate in a bundle (a chain: leaf, then its CAs) is shown, each
    with who signed it: the CA in --dir, or the next certificate in the file.
    Names and fields come from the certificate and are printed inert.

    JSON (stable): [{"subject", "issuer", "common_name", "sans", "key_usages",
    "ekus", "key_type", "is_ca", "serial", "not_before", "not_after",
    "days_left", "sha256", "signed_by"}]; signed_by is "ca" (DIR's CA),
    "next" (the next certificate in the file), "unknown" (no CA in DIR) or "".

    Example: securechat certs inspect certs/server.pem --dir certs
    """
    try:
        certs = pki.load_certificates(file)
    except PkiError:
        certs = [pki.load_certificate(file)]  # DER holds one
    store = pki.CertStore(directory)
    ca_cert = pki.load_certificate(store.ca_cert_path) if store.ca_cert_path.is_file() else None
    shown = []
    for index, cert in enumerate(certs):
        summary = pki.summarize(cert, ca_cert=ca_cert)
        following = certs[index + 1] if index + 1 < len(certs) else None
        if summary.signed_by_ca:
            signed_by = "ca"
        elif following is not None and pki.is_signed_by(cert, following):
            signed_by = "next"
        else:
            signed_by = "unknown" if summary.signed_by_ca is None else ""
        shown.append((summary, signed_by))
    if as_json:
        say(json.dumps([_inspect_json(summary, signed_by) for summary, signed_by in shown], indent=2))
        return
    from securechat.cli.inert import inert

    say(inert(str(file)) + (f" ({len(certs)} certificates)" if len(certs) > 1 else ""))
    for index, (summary, signed_by) in enumerate(shown):
        if len(certs) > 1:
            say(f"certificate {index + 1} of {len(certs)}:")
        validity = (
            "NOT VALID YET" if summary.not_yet_valid else pki.days_text(summary.days_left).replace("expired", "EXPIRED")
        )
        sans = [f"DNS:{n}" for n in summary.dns_names]
        sans += [f"IP:{n}" for n in summary.ip_addresses] + [f"URI:{n}" for n in summary.uris]
        signed = {
            "ca": f"yes, by {store.ca_cert_path}",
            "next": f"by certificate {index + 2} in this file"
            + ("" if ca_cert is None else f", not by {store.ca_cert_path}"),
            "unknown": f"unknown: {store.ca_cert_path} not found (pass --dir)",
            "": f"NO: {store.ca_cert_path} did not sign it",
        }[signed_by]
        rows = [
            ("subject", summary.subject),
            ("issuer", summary.issuer),
            ("SANs", ", ".join(sans) or "(none)"),
            ("key usage", ", ".join(summary.key_usages) or "(none)"),
            ("EKUs", ", ".join(summary.ekus) or "(none)"),
            ("key type", summary.key_type),
            ("is a CA", "yes" if summary.is_ca else "no"),
            ("serial", summary.serial),
            ("valid from", date(summary.not_before)),
            ("valid until", f"{date(summary.not_after)} ({validity})"),
            ("SHA-256", summary.fingerprint_sha256),
            ("signed by CA", signed),
        ]
        for label, value in rows:
            say(f"  {label + ':':<14}{inert(value)}")  # subject, issuer and SANs are the certificate's words


def _inspect_json(summary: pki.CertSummary, signed_by: str) -> dict[str, object]:
    return {
        "subject": summary.subject,
        "issuer": summary.issuer,
        "common_name": summary.common_name,
        "sans": [f"DNS:{n}" for n in summary.dns_names]
        + [f"IP:{n}" for n in summary.ip_addresses]
        + [f"URI:{n}" for n in summary.uris],
        "key_usages": list(summary.key_usages),
        "ekus": list(summary.ekus),
        "key_type": summary.key_type,
        "is_ca": summary.is_ca,
        "serial": summary.serial,
        "not_before": summary.not_before.isoformat(),
        "not_after": summary.not_after.isoformat(),
        "days_left": summary.days_left,
        "sha256": summary.fingerprint_sha256,
        "signed_by": signed_by,
    }
