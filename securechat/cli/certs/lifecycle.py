"""`securechat certs revoke | crl | renew | needs-renewal`: keep issued certificates current, or shut them out."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509

from securechat import pki
from securechat.cli.certs.common import (
    DEFAULT_DIR,
    CaPassphraseOption,
    CrlDaysHelp,
    DirOption,
    LeafDaysOption,
    WithinOption,
    check_range,
    date,
    load_ca,
    open_store,
    say,
    warn_if_capped,
)
from securechat.cli.output import fail, reports_errors
from securechat.errors import PkiError


class ReasonChoice(str, Enum):
    """--reason values (the keys of `pki.REASONS`)."""

    unspecified = "unspecified"
    key_compromise = "key-compromise"
    affiliation_changed = "affiliation-changed"
    superseded = "superseded"
    cessation_of_operation = "cessation-of-operation"
    privilege_withdrawn = "privilege-withdrawn"


def _report_crl(store: pki.CertStore, crl: x509.CertificateRevocationList) -> None:
    next_update = crl.next_update_utc
    say(
        f"Wrote {store.crl_path} (CRL number {pki.crl_number(crl)}, {len(crl)} revoked,"
        f" next update {date(next_update) if next_update is not None else 'not set'})."
    )


@reports_errors
def revoke(
    name: Annotated[str, typer.Argument(help="The certificate name to revoke.")],
    reason: Annotated[
        ReasonChoice,
        typer.Option(
            "--reason",
            metavar="REASON",
            help="Why, as the CRL entry's reason code: " + ", ".join(r.value for r in ReasonChoice) + ".",
        ),
    ] = ReasonChoice.unspecified,
    serial: Annotated[
        str | None,
        typer.Option("--serial", help="Revoke only this serial (from 'certs list'), e.g. an old superseded one."),
    ] = None,
    directory: DirOption = DEFAULT_DIR,
    crl_days: Annotated[int, typer.Option("--crl-days", help=CrlDaysHelp)] = pki.CRL_DEFAULT_DAYS,
    ca_passphrase_file: CaPassphraseOption = None,
) -> None:
    """Revoke NAME's certificates and write a new signed DIR/crl.pem.

    Every unexpired certificate of NAME is revoked (with --serial, only that one).
    A server whose config names the CRL (by default crl.pem next to its client CA)
    picks it up within a second and ends the streams of revoked certificates.

    Example: securechat certs revoke bob --reason key-compromise
    """
    check_range("--crl-days", crl_days, 1, pki.CRL_MAX_DAYS)
    store = open_store(directory)
    pki.validate_name(name)
    ca = load_ca(store, ca_passphrase_file)
    revoked = store.revoke(ca, name, reason=reason.value, serial=serial, crl_days=crl_days)
    for entry in revoked:
        say(f'Revoked {entry.kind} certificate "{name}" serial {entry.serial} (reason: {reason.value}).')
    _report_crl(store, store.read_crl())
    say(f"Servers: set crl: {store.crl_path} (the default when it sits next to tls.client_ca).")


@reports_errors
def crl(
    directory: DirOption = DEFAULT_DIR,
    days: Annotated[int, typer.Option("--days", help=CrlDaysHelp)] = pki.CRL_DEFAULT_DAYS,
    ca_passphrase_file: CaPassphraseOption = None,
) -> None:
    """Sign DIR/crl.pem again (new CRL number and nextUpdate) before it goes stale.

    Example: securechat certs crl --dir certs --days 30
    """
    check_range("--days", days, 1, pki.CRL_MAX_DAYS)
    store = open_store(directory)
    _report_crl(store, store.write_crl(load_ca(store, ca_passphrase_file), days=days))


@reports_errors
def renew(
    name: Annotated[str, typer.Argument(help="The certificate to renew (NAME.pem in DIR).")],
    keep_key: Annotated[
        bool, typer.Option("--keep-key", help="Keep the existing key instead of making a new one.")
    ] = False,
    directory: DirOption = DEFAULT_DIR,
    days: LeafDaysOption = pki.LEAF_DEFAULT_DAYS,
    ca_passphrase_file: CaPassphraseOption = None,
    ca_address: Annotated[
        str | None,
        typer.Option(
            "--ca",
            help="Renew online from the CA service at HOST:PORT with the current certificate.",
            show_default=False,
        ),
    ] = None,
    ca_cert: Annotated[
        Path | None,
        typer.Option(
            "--ca-cert",
            help="With --ca: the trust anchor for the CA service (default: DIR's root.pem or ca.pem).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Re-issue NAME with the same identity, SANs and EKU: a new serial and, by default, a new key.

    The old certificate is marked superseded. Running servers and `securechat chat`
    pick the new files up without a restart. With --ca the CA service renews it
    (no CA key needed here; the index is not updated: the CA's database records it).

    Example: securechat certs renew server --dir certs
    Example: securechat certs renew alice --ca ca.internal:50052 --dir certs
    """
    if ca_address is not None:
        from securechat.cli.certs.online import renew_online

        if keep_key:
            raise PkiError("--keep-key cannot be used with --ca: an online renewal always makes a new key.")
        renew_online(name, ca=ca_address, ca_cert=ca_cert, directory=directory)
        return
    store = open_store(directory)
    pki.validate_name(name)
    ca = load_ca(store, ca_passphrase_file)
    issued = store.renew(ca, name, keep_key=keep_key, days=days)
    sans = ", ".join(pki.san_to_text(n) for n in pki.subject_alternative_names(issued.cert))
    say(
        f'Renewed {issued.kind} certificate "{name}" ({sans}): serial {issued.cert.serial_number:x},'
        f" {'same' if keep_key else 'new'} key."
    )
    say(f"  certificate: {store.cert_path(name)}")
    say(f"  key:         {store.key_path(name)}")
    say(f"It expires on {date(issued.cert.not_valid_after_utc)}.")
    warn_if_capped([issued], ca)


def needs_renewal(
    name: Annotated[str | None, typer.Argument(help="Check only this certificate; default: every valid one.")] = None,
    directory: DirOption = DEFAULT_DIR,
    within: WithinOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per certificate checked, in a list.")
    ] = False,
) -> None:
    """Say what is due: past 2/3 of its lifetime, or expiring within --within; for cron jobs and systemd timers.

    Exit codes: 0 nothing is due; 1 something must be renewed or replaced (printed,
    one line each, with the command that does it); 2 the check itself failed (one
    line on stderr). A revoked certificate cannot be renewed: it is due, with the
    command that issues a new one.

    JSON (stable): [{"name", "kind", "serial", "not_after", "days_left", "status",
    "due", "fix"}], status one of valid, expired, revoked; fix is "" when not due.

    Example: securechat certs needs-renewal server --within 30d || securechat certs renew server
    """
    store = pki.CertStore(directory)
    try:
        threshold = pki.parse_renewal_window(within) if within is not None else None
        checks = store.renewal_checks(name, within=threshold)
        by_serial = {entry.serial: entry for entry in store.entries()}
    except PkiError as exc:
        fail(str(exc), code=2)
    records: list[dict[str, object]] = []
    lines: list[str] = []
    for check in checks:
        path = {"root": store.root_cert_path, "ca": store.ca_cert_path}.get(check.label) or store.cert_path(check.label)
        serial = f"{pki.load_certificate(path).serial_number:x}"
        entry = by_serial.get(serial)
        kind = check.label if check.label in ("root", "ca") else entry.kind if entry is not None else "client"
        record: dict[str, object] = {
            "name": check.label,
            "kind": kind,
            "serial": serial,
            "not_after": check.not_after.isoformat(),
            "days_left": check.days_left,
            "status": "expired" if check.expired else "valid",
            "due": check.due,
            "fix": "",
        }
        if entry is not None and entry.status == "revoked":
            # `renew` refuses a revoked certificate: the fix is a new one, with the same names.
            sans = "".join(f" --san {san.split(':', 1)[1]}" for san in entry.sans) if kind in ("server", "peer") else ""
            fix = f"Issue a new one with 'securechat certs {kind} {check.label}{sans} --force --dir {store.directory}'."
            record.update(status="revoked", due=True, fix=fix)
            lines.append(f"{check.label}: revoked (serial {serial}); it cannot be renewed. {fix}")
        elif check.due:
            when = "expired" if check.expired else "expires"
            fix = _renewal_fix(store, check.label)
            record["fix"] = fix
            lines.append(f"{check.label}: {when} {date(check.not_after)} ({pki.days_text(check.days_left)}). {fix}")
        records.append(record)
    if as_json:
        say(json.dumps(records, indent=2))
    else:
        for line in lines:
            say(line)
        if not lines:
            fine = ", ".join(f"{check.label} ({pki.days_text(check.days_left)})" for check in checks)
            rule = f"within {within}" if within is not None else "(none is past 2/3 of its lifetime)"
            say(f"Nothing to renew {rule}: {fine or 'no certificates'}.")
    if lines:
        raise typer.Exit(code=1)


def _renewal_fix(store: pki.CertStore, label: str) -> str:
    """The command that renews what LABEL names: a leaf, the issuing CA, or a hierarchy's root."""
    if label == "root":
        return f"Make a new hierarchy with 'securechat certs init --intermediate --force --dir {store.directory}' and reissue."
    if label == "ca" and store.has_hierarchy:
        return (
            f"Sign a new intermediate with 'securechat certs intermediate --root-dir ROOT_DIR --dir {store.directory}'."
        )
    if label == "ca":
        return f"Create a new CA with 'securechat certs init --force --dir {store.directory}' and reissue."
    return f"Run 'securechat certs renew {label} --dir {store.directory}'."
