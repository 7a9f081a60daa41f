"""`securechat certs ...`: issue and inspect certificates.

A thin conversation over `securechat.pki`: parse flags, call the library,
say which files were written, what names they cover and when they expire.
Every command exits 0 on success, 1 on an error (one line on stderr), and 2
on a usage error.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from securechat import pki
from securechat.cli.output import console, fail, reports_errors, warn
from securechat.errors import FileExistsRefused, PkiError

certs_app = typer.Typer(
    help="Issue and inspect certificates: a private CA, server and client certificates.",
    no_args_is_help=True,
)


class KeyTypeChoice(str, Enum):
    """--key-type values (the same strings as `pki.KEY_TYPES`)."""

    ecdsa_p256 = "ecdsa-p256"
    ecdsa_p384 = "ecdsa-p384"
    rsa_2048 = "rsa-2048"
    rsa_3072 = "rsa-3072"
    rsa_4096 = "rsa-4096"
    ed25519 = "ed25519"


PASSPHRASE_ENV = "SECURECHAT_CA_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret
"""Where a signing command finds the CA passphrase when no file is given (cron, systemd)."""
P12_PASSWORD_ENV = "SECURECHAT_P12_PASSWORD"  # noqa: S105 - the variable's name, not a secret

DirOption = Annotated[
    Path,
    typer.Option("--dir", help="The certs directory (created 0700 if missing).", show_default=True),
]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing key and certificate of the same name.")]
KeyTypeOption = Annotated[KeyTypeChoice, typer.Option("--key-type", help="Key algorithm of the new key.")]
LeafDaysOption = Annotated[
    int,
    typer.Option("--days", help=f"Validity in days, at most {pki.LEAF_MAX_DAYS} (capped at the CA's expiry)."),
]
CaPassphraseOption = Annotated[
    Path | None,
    typer.Option(
        "--ca-passphrase-file",
        "--passphrase-file",
        help=f"File whose first line is the CA key's passphrase (else ${PASSPHRASE_ENV}, else a prompt).",
        show_default=False,
    ),
]
WithinOption = Annotated[
    str | None,
    typer.Option(
        "--within",
        help="Also due when it expires within this long (e.g. 30d, 12h). Always due past 2/3 of its lifetime.",
        show_default=False,
    ),
]

DEFAULT_DIR = Path("certs")


def _say(text: str = "") -> None:
    # Printed as they are, not through Rich: never markup, no emoji codes (a
    # fingerprint like "...:CD:..." would otherwise turn into a CD emoji).
    typer.echo(text)


def _date(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _read_passphrase(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise PkiError(f"{path} could not be read ({exc.strerror}). Check --ca-passphrase-file.") from exc
    if not lines or not lines[0]:
        raise PkiError(f"{path} is empty. Put the CA passphrase on its first line.")
    return lines[0]


def _secret(what: str, *, file: Path | None, env: str, confirm: bool) -> bytes | None:
    """A passphrase or password: from FILE, else $ENV, else asked on the terminal; None if none of them."""
    if file is not None:
        return _read_passphrase(file)
    if os.environ.get(env):
        return os.environ[env].encode()
    if not sys.stdin.isatty():
        return None
    value = typer.prompt(what, hide_input=True, confirmation_prompt=confirm, err=True)
    if not value:
        raise PkiError(f"the {what.lower()} is empty. Give a non-empty one.")
    return str(value).encode()


def _load_ca(store: pki.CertStore, passphrase_file: Path | None) -> pki.CertificateAuthority:
    """The CA in DIR; an encrypted key's passphrase comes from the file, $SECURECHAT_CA_PASSPHRASE, or a prompt."""
    passphrase = _read_passphrase(passphrase_file)
    if passphrase is None and _is_encrypted(store.ca_key_path):
        passphrase = _secret("CA key passphrase", file=None, env=PASSPHRASE_ENV, confirm=False)
        if passphrase is None:
            raise PkiError(
                f"{store.ca_key_path} is encrypted. Pass --ca-passphrase-file FILE with its passphrase,"
                f" set {PASSPHRASE_ENV}, or run in a terminal to be asked."
            )
    return store.load_ca(passphrase=passphrase)


def _is_encrypted(key_path: Path) -> bool:
    try:
        return b"ENCRYPTED" in key_path.read_bytes()[:64]
    except OSError:
        return False  # load_ca names the problem


def _warn_if_directory_open(store: pki.CertStore) -> None:
    if not store.directory_is_private():
        warn(f"{store.directory} can be read by other users. Run 'chmod 700 {store.directory}'.")


def _valid_leaves(store: pki.CertStore) -> list[pki.IndexEntry]:
    try:
        return [e for e in store.entries() if e.kind != "ca" and e.status == "valid"]
    except PkiError:
        return []  # a damaged index must not block replacing the CA with --force


def _warn_if_capped(issued: Sequence[pki.IssuedCert | pki.WrittenLeaf], ca: pki.CertificateAuthority) -> None:
    capped = [item.name for item in issued if item.capped_at_ca_expiry]
    if capped:
        warn(
            f"the CA expires on {_date(ca.cert.not_valid_after_utc)}, so {', '.join(capped[:5])}"
            f"{' and others' if len(capped) > 5 else ''} expire then too, sooner than --days asked."
            f" Create a longer-lived CA with 'securechat certs init --force --days N' and reissue."
        )


@certs_app.command()
@reports_errors
def init(
    directory: DirOption = DEFAULT_DIR,
    key_type: KeyTypeOption = KeyTypeChoice.ecdsa_p256,
    days: Annotated[int, typer.Option("--days", help="CA validity in days.")] = pki.CA_DEFAULT_DAYS,
    name: Annotated[str, typer.Option("--name", help="The CA's common name.")] = pki.DEFAULT_CA_COMMON_NAME,
    passphrase_file: CaPassphraseOption = None,
    encrypt: Annotated[
        bool,
        typer.Option(
            "--encrypt",
            help=f"Encrypt the CA key with a passphrase (from --passphrase-file, ${PASSPHRASE_ENV}, or a prompt).",
        ),
    ] = False,
    permit_dns: Annotated[
        list[str] | None,
        typer.Option(
            "--permit-dns",
            help="Name constraint: the CA may only issue DNS names under this domain; repeat for more.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing CA; certificates it issued stop being trusted."),
    ] = False,
    intermediate: Annotated[
        bool,
        typer.Option(
            "--intermediate",
            help="Make a root (root.pem, root-key.pem: move the key offline) and an issuing intermediate"
            " (ca.pem, ca-key.pem, pathLen 0, --permit-dns applies to it). Leaves are written as chains.",
        ),
    ] = False,
) -> None:
    """Create a private CA: DIR/ca.pem and DIR/ca-key.pem (with --intermediate, also DIR/root.pem and DIR/root-key.pem).

    Example: securechat certs init --dir certs --encrypt --permit-dns example.org
    Example: securechat certs init --intermediate --dir certs
    """
    store = pki.CertStore(directory)
    orphaned = _valid_leaves(store) if force else []
    passphrase = _read_passphrase(passphrase_file)
    if encrypt and passphrase is None:
        passphrase = _secret("New CA key passphrase", file=None, env=PASSPHRASE_ENV, confirm=True)
        if passphrase is None:
            raise PkiError(
                f"--encrypt needs a passphrase. Pass --passphrase-file FILE, set {PASSPHRASE_ENV},"
                " or run in a terminal to be asked."
            )
    if intermediate:
        from securechat.cli.certs_online import report_hierarchy

        root, issuing = store.init_hierarchy(
            common_name=name, key_type=key_type.value, days=days, force=force, passphrase=passphrase,
            permitted_dns=tuple(permit_dns or ()),
        )
        report_hierarchy(store, root, issuing, encrypted=passphrase is not None)
        _warn_if_directory_open(store)
        return
    ca = store.init_ca(
        common_name=name,
        key_type=key_type.value,
        days=days,
        force=force,
        passphrase=passphrase,
        permitted_dns=tuple(permit_dns or ()),
    )
    _say(f'Created a new CA "{name}" ({key_type.value}{", key encrypted" if passphrase else ""}).')
    if permit_dns:
        _say(f"  name constraints: DNS names under {', '.join(permit_dns)} only")
    _say(f"  certificate: {store.ca_cert_path}   (servers and clients trust this)")
    _say(f"  key:         {store.ca_key_path}   (keep it secret: it can issue certificates)")
    _say(f"It expires on {_date(ca.cert.not_valid_after_utc)}.")
    _say(f"Next: securechat certs server server --dir {store.directory}")
    _warn_if_directory_open(store)
    if orphaned:
        warn(
            f"{len(orphaned)} certificate(s) issued by the old CA no longer chain to the new one."
            " Reissue them with 'securechat certs server|client NAME --force --dir"
            f" {store.directory}'."
        )


@certs_app.command()
@reports_errors
def server(
    name: Annotated[str, typer.Argument(help="Certificate name: the CN and the file name NAME.pem.")],
    san: Annotated[
        list[str] | None,
        typer.Option(
            "--san",
            help="A DNS name or IP the server is reached at; repeat for more."
            f" Default: {', '.join(pki.DEFAULT_SERVER_SANS)}.",
            show_default=False,
        ),
    ] = None,
    directory: DirOption = DEFAULT_DIR,
    key_type: KeyTypeOption = KeyTypeChoice.ecdsa_p256,
    days: LeafDaysOption = pki.LEAF_DEFAULT_DAYS,
    ca_passphrase_file: CaPassphraseOption = None,
    force: ForceOption = False,
) -> None:
    """Issue a server certificate (serverAuth only) signed by the CA in DIR.

    Example: securechat certs server api --san api.example.com --san 10.0.0.5
    """
    store = pki.CertStore(directory)
    pki.validate_name(name)
    store.refuse_overwrite([name], force=force)
    ca = _load_ca(store, ca_passphrase_file)
    issued = pki.issue_server_cert(ca, name, sans=san or None, key_type=key_type.value, days=days)
    cert_path, key_path = store.write_leaf(name, issued, kind="server", force=force)
    _report_named_leaf(
        f'Created server certificate "{name}" ({key_type.value})',
        issued,
        cert_path,
        key_path,
        f"Server config: tls.cert {cert_path}, tls.key {key_path}, tls.client_ca {store.ca_cert_path}",
    )
    _warn_if_capped([issued], ca)
    _warn_if_directory_open(store)


def _report_named_leaf(title: str, issued: pki.IssuedCert, cert_path: Path, key_path: Path, usage: str) -> None:
    """What a server or peer certificate covers, where it went, when it expires, and how to use it."""
    _say(f"{title}, valid for these names:")
    for general_name in pki.subject_alternative_names(issued.cert):
        _say(f"  - {pki.san_to_text(general_name)}")
    _say(f"  certificate: {cert_path}")
    _say(f"  key:         {key_path}")
    _say(f"It expires on {_date(issued.cert.not_valid_after_utc)}.")
    _say(usage)


@certs_app.command()
@reports_errors
def peer(
    name: Annotated[str, typer.Argument(help="Certificate name: the CN and the file name NAME.pem.")],
    san: Annotated[
        list[str],
        typer.Option("--san", help="A DNS name or IP the peer is reached at; repeat for more. At least one.", show_default=False),
    ],
    directory: DirOption = DEFAULT_DIR,
    key_type: KeyTypeOption = KeyTypeChoice.ecdsa_p256,
    days: LeafDaysOption = pki.LEAF_DEFAULT_DAYS,
    ca_passphrase_file: CaPassphraseOption = None,
    force: ForceOption = False,
) -> None:
    """Issue a cluster peer certificate (serverAuth AND clientAuth) signed by the CA in DIR.

    For members of a cluster that dial each other with the certificate they
    serve with, such as the routes of a 3-node NATS cluster (deploy/nats).
    Use 'certs server' and 'certs client' for chat servers and clients.

    Example: securechat certs peer nats-0 --san nats-0.nats --san nats-0.nats.securechat.svc
    """
    store = pki.CertStore(directory)
    pki.validate_name(name)
    store.refuse_overwrite([name], force=force)
    ca = _load_ca(store, ca_passphrase_file)
    issued = pki.issue_peer_cert(ca, name, sans=san, key_type=key_type.value, days=days)
    cert_path, key_path = store.write_leaf(name, issued, kind="peer", force=force)
    _report_named_leaf(
        f'Created peer certificate "{name}" ({key_type.value}, serverAuth + clientAuth)',
        issued,
        cert_path,
        key_path,
        f"NATS cluster: tls and cluster.tls cert_file {cert_path}, key_file {key_path}, ca_file {store.ca_cert_path}",
    )
    _warn_if_capped([issued], ca)
    _warn_if_directory_open(store)


@certs_app.command()
@reports_errors
def client(
    names: Annotated[
        list[str],
        typer.Argument(help="One or more client identities; each gets NAME.pem and NAME-key.pem."),
    ],
    spiffe_trust_domain: Annotated[
        str | None,
        typer.Option(
            "--spiffe-trust-domain",
            help="Also add the URI SAN spiffe://TD/NAME.",
            show_default=False,
        ),
    ] = None,
    directory: DirOption = DEFAULT_DIR,
    key_type: KeyTypeOption = KeyTypeChoice.ecdsa_p256,
    days: LeafDaysOption = pki.LEAF_DEFAULT_DAYS,
    ca_passphrase_file: CaPassphraseOption = None,
    force: ForceOption = False,
) -> None:
    """Issue client certificates (clientAuth only); the identity NAME is the CN and a DNS SAN.

    Example: securechat certs client alice bob --spiffe-trust-domain example.org
    """
    store = pki.CertStore(directory)
    for name in names:
        pki.validate_name(name)
    store.refuse_overwrite(names, force=force)
    ca = _load_ca(store, ca_passphrase_file)
    written = store.issue_clients(
        ca, names, key_type=key_type.value, days=days, spiffe_trust_domain=spiffe_trust_domain, force=force
    )
    if len(written) <= 10:
        for leaf in written:
            _say(
                f'Created client certificate "{leaf.name}" ({", ".join(leaf.entry.sans)}):'
                f" {leaf.cert_path} and {leaf.key_path}"
            )
    else:
        _say(
            f"Created {len(written)} client certificates ({written[0].name} ... {written[-1].name})"
            f" in {store.directory}: NAME.pem and NAME-key.pem each."
        )
    _say(f"They expire on {_date(min(leaf.entry.not_after for leaf in written))}.")
    _say(f"Client config: tls.ca {store.ca_cert_path}, tls.cert {written[0].cert_path}, tls.key {written[0].key_path}")
    _warn_if_capped(written, ca)
    _warn_if_directory_open(store)


@certs_app.command("list")
@reports_errors
def list_(
    directory: DirOption = DEFAULT_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print index.json entries as JSON.")] = False,
    within: WithinOption = None,
) -> None:
    """List what was issued in DIR, with days left and status; 'renew soon' marks those past 2/3 of their lifetime (or within --within)."""
    threshold = parse_within(within) if within is not None else None
    store = pki.CertStore(directory)
    if not store.directory.is_dir():
        raise PkiError(f"{store.directory} not found. Run 'securechat certs init --dir {store.directory}' first.")
    entries = store.entries()
    if as_json:
        _say(json.dumps([e.to_json() for e in entries], indent=2))
        return
    if not entries:
        _say(f"Nothing issued in {store.directory} yet. Run 'securechat certs init --dir {store.directory}'.")
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
        elif entry.status == "valid" and now >= _renew_by(entry.not_before, entry.not_after, threshold):
            status = "renew soon"
        cells = (entry.name, entry.kind, entry.serial[:16], entry.not_after.strftime("%Y-%m-%d"), str(left), status)
        table.add_row(*(Text(cell) for cell in cells))  # Text: never markup or emoji codes
    console().print(table, soft_wrap=True)


@certs_app.command()
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
        ("valid from", _date(summary.not_before)),
        ("valid until", f"{_date(summary.not_after)} ({validity})"),
        ("SHA-256", summary.fingerprint_sha256),
        ("signed by CA", signed),
    ]
    _say(str(file))
    for label, value in rows:
        _say(f"  {label + ':':<14}{value}")


def _renew_by(not_before: dt.datetime, not_after: dt.datetime, within: dt.timedelta | None) -> dt.datetime:
    # pki.renew_by's rule, from an index entry's times (no certificate to parse).
    from securechat.pki.expiry import RENEW_AT

    point = not_before + (not_after - not_before) * RENEW_AT
    return point if within is None else min(point, not_after - within)


def parse_within(text: str) -> dt.timedelta:
    """'30d', '12h', '2w' or a bare number of days, as a timedelta; PkiError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*([dhw]?)\s*", text)
    if not match:
        raise PkiError(f"--within {text!r} is not a duration. Write e.g. 30d, 12h or 2w.")
    count, unit = int(match.group(1)), match.group(2) or "d"
    return {"h": dt.timedelta(hours=count), "d": dt.timedelta(days=count), "w": dt.timedelta(weeks=count)}[unit]


class ReasonChoice(str, Enum):
    """--reason values (the keys of `pki.REASONS`)."""

    unspecified = "unspecified"
    key_compromise = "key-compromise"
    affiliation_changed = "affiliation-changed"
    superseded = "superseded"
    cessation_of_operation = "cessation-of-operation"
    privilege_withdrawn = "privilege-withdrawn"


@certs_app.command()
@reports_errors
def revoke(
    name: Annotated[str, typer.Argument(help="The certificate name to revoke.")],
    reason: Annotated[
        ReasonChoice, typer.Option("--reason", help="Why; written as the CRL entry's reason code.")
    ] = ReasonChoice.unspecified,
    serial: Annotated[
        str | None,
        typer.Option("--serial", help="Revoke only this serial (from 'certs list'), e.g. an old superseded one."),
    ] = None,
    directory: DirOption = DEFAULT_DIR,
    crl_days: Annotated[int, typer.Option("--crl-days", help="Days until the CRL's nextUpdate.")] = pki.CRL_DEFAULT_DAYS,
    ca_passphrase_file: CaPassphraseOption = None,
) -> None:
    """Revoke NAME's certificates and write a new signed DIR/crl.pem.

    Every unexpired certificate of NAME is revoked (with --serial, only that one).
    A server whose config names the CRL (by default crl.pem next to its client CA)
    picks it up within a second and ends the streams of revoked certificates.

    Example: securechat certs revoke bob --reason key-compromise
    """
    store = pki.CertStore(directory)
    pki.validate_name(name)
    ca = _load_ca(store, ca_passphrase_file)
    revoked = store.revoke(ca, name, reason=reason.value, serial=serial, crl_days=crl_days)
    for entry in revoked:
        _say(f"Revoked {entry.kind} certificate \"{name}\" serial {entry.serial} (reason: {reason.value}).")
    crl = pki.parse_crl(store.crl_path.read_bytes(), where=str(store.crl_path))
    _say(
        f"Wrote {store.crl_path} (CRL number {pki.crl_number(crl)}, {len(crl)} revoked,"
        f" next update {_date(crl.next_update_utc)})."  # type: ignore[arg-type]
    )
    _say(f"Servers: set crl: {store.crl_path} (the default when it sits next to tls.client_ca).")


@certs_app.command("crl")
@reports_errors
def crl_(
    directory: DirOption = DEFAULT_DIR,
    days: Annotated[int, typer.Option("--days", help="Days until the CRL's nextUpdate.")] = pki.CRL_DEFAULT_DAYS,
    ca_passphrase_file: CaPassphraseOption = None,
) -> None:
    """Sign DIR/crl.pem again (new CRL number and nextUpdate) before it goes stale.

    Example: securechat certs crl --dir certs --days 30
    """
    store = pki.CertStore(directory)
    crl = store.write_crl(_load_ca(store, ca_passphrase_file), days=days)
    _say(
        f"Wrote {store.crl_path} (CRL number {pki.crl_number(crl)}, {len(crl)} revoked,"
        f" next update {_date(crl.next_update_utc)})."  # type: ignore[arg-type]
    )


@certs_app.command()
@reports_errors
def renew(
    name: Annotated[str, typer.Argument(help="The certificate to renew (NAME.pem in DIR).")],
    keep_key: Annotated[bool, typer.Option("--keep-key", help="Keep the existing key instead of making a new one.")] = False,
    directory: DirOption = DEFAULT_DIR,
    days: LeafDaysOption = pki.LEAF_DEFAULT_DAYS,
    ca_passphrase_file: CaPassphraseOption = None,
    ca_address: Annotated[
        str | None,
        typer.Option("--ca", help="Renew online from the CA service at HOST:PORT with the current certificate.", show_default=False),
    ] = None,
    ca_cert: Annotated[
        Path | None,
        typer.Option("--ca-cert", help="With --ca: the trust anchor for the CA service (default: DIR's root.pem or ca.pem).", show_default=False),
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
        from securechat.cli.certs_online import renew_online

        if keep_key:
            raise PkiError("--keep-key cannot be used with --ca: an online renewal always makes a new key.")
        renew_online(name, ca=ca_address, ca_cert=ca_cert, directory=directory)
        return
    store = pki.CertStore(directory)
    pki.validate_name(name)
    ca = _load_ca(store, ca_passphrase_file)
    issued = store.renew(ca, name, keep_key=keep_key, days=days)
    sans = ", ".join(pki.san_to_text(n) for n in pki.subject_alternative_names(issued.cert))
    _say(
        f'Renewed {issued.kind} certificate "{name}" ({sans}): serial {issued.cert.serial_number:x},'
        f" {'same' if keep_key else 'new'} key."
    )
    _say(f"  certificate: {store.cert_path(name)}")
    _say(f"  key:         {store.key_path(name)}")
    _say(f"It expires on {_date(issued.cert.not_valid_after_utc)}.")
    _warn_if_capped([issued], ca)


@certs_app.command("needs-renewal")
def needs_renewal(
    name: Annotated[str | None, typer.Argument(help="Check only this certificate; default: every valid one.")] = None,
    directory: DirOption = DEFAULT_DIR,
    within: WithinOption = None,
) -> None:
    """Say what is due: past 2/3 of its lifetime, or expiring within --within; for cron jobs and systemd timers.

    Exit codes: 0 nothing is due; 1 something must be renewed (printed, one line each,
    with the command that renews it); 2 the check itself failed (one line on stderr).

    Example: securechat certs needs-renewal server --within 30d || securechat certs renew server
    """
    try:
        due, fine = _renewal_due(pki.CertStore(directory), name, parse_within(within) if within is not None else None)
    except PkiError as exc:
        fail(str(exc), code=2)
    for line in due:
        _say(line)
    if due:
        raise typer.Exit(code=1)
    rule = f"within {within}" if within is not None else "(none is past 2/3 of its lifetime)"
    _say(f"Nothing to renew {rule}: {', '.join(fine) or 'no certificates'}.")


def _renewal_due(store: pki.CertStore, name: str | None, threshold: dt.timedelta | None) -> tuple[list[str], list[str]]:
    """(one line per certificate due, 'NAME (N days left)' per one that is not)."""
    if not store.directory.is_dir():
        raise PkiError(f"{store.directory} not found. Run 'securechat certs init --dir {store.directory}' first.")
    if name is not None:
        pki.validate_name(name)
        checks = [(name, store.cert_path(name))]
    else:
        checks = [("root", store.root_cert_path)] if store.has_hierarchy else []
        checks += [("ca", store.ca_cert_path)]
        checks += [(e.name, store.cert_path(e.name)) for e in store.entries() if e.kind != "ca" and e.status == "valid"]
    now = pki.utc_now()
    due, fine = [], []
    for label, path in checks:
        cert = pki.load_certificate(path)
        left = pki.days_left(cert, now=now)
        if now < pki.renew_by(cert, within=threshold):
            fine.append(f"{label} ({left} days left)")
            continue
        when = "expired" if left <= 0 else "expires"
        if label == "root":
            fix = f"Make a new hierarchy with 'securechat certs init --intermediate --force --dir {store.directory}' and reissue."
        elif label == "ca" and store.has_hierarchy:
            fix = f"Sign a new intermediate with 'securechat certs intermediate --root-dir ROOT_DIR --dir {store.directory}'."
        elif label == "ca":
            fix = f"Create a new CA with 'securechat certs init --force --dir {store.directory}' and reissue."
        else:
            fix = f"Run 'securechat certs renew {label} --dir {store.directory}'."
        due.append(f"{label}: {when} {_date(cert.not_valid_after_utc)} ({left} days left). {fix}")
    return due, fine


@certs_app.command()
@reports_errors
def export(
    name: Annotated[str, typer.Argument(help="The certificate to export (NAME.pem and NAME-key.pem in DIR).")],
    p12: Annotated[Path, typer.Option("--p12", help="The PKCS#12 file to write (mode 0600).")],
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file",
            help=f"File whose first line is the bundle's password (else ${P12_PASSWORD_ENV}, else a prompt).",
            show_default=False,
        ),
    ] = None,
    directory: DirOption = DEFAULT_DIR,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle file.")] = False,
) -> None:
    """Export NAME's key, certificate and the CA certificate as a password-protected PKCS#12 bundle.

    Example: securechat certs export alice --p12 alice.p12
    """
    store = pki.CertStore(directory)
    pki.validate_name(name)
    if not force and p12.exists():
        raise FileExistsRefused(p12)
    cert = pki.load_certificate(store.cert_path(name))
    key = pki.load_private_key(store.key_path(name))
    ca_cert = pki.load_certificate(store.ca_cert_path) if store.ca_cert_path.is_file() else None
    password = _secret("Export password", file=password_file, env=P12_PASSWORD_ENV, confirm=True)
    if password is None:
        raise PkiError(
            f"the bundle needs a password. Pass --password-file FILE, set {P12_PASSWORD_ENV}, or run in a terminal."
        )
    pki.write_private_file(p12, pki.pkcs12_bundle(name, key, cert, ca_cert=ca_cert, password=password), force=force)
    _say(f'Wrote {p12} (mode 0600): "{name}" key, certificate and CA certificate, AES-256 under your password.')
    _say(f"Import it with e.g. 'keytool -importkeystore -srckeystore {p12} -srcstoretype PKCS12'.")


@certs_app.command("k8s-secret")
@reports_errors
def k8s_secret(
    name: Annotated[str, typer.Argument(help="The identity whose certificate and key go into the Secret.")],
    directory: DirOption = DEFAULT_DIR,
    secret_name: Annotated[
        str | None, typer.Option("--name", help="The Secret's name (default: securechat-NAME-tls).", show_default=False)
    ] = None,
    namespace: Annotated[str | None, typer.Option(help="The Secret's namespace.", show_default=False)] = None,
) -> None:
    """Print a kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt) for NAME, for 'kubectl apply -f -'.

    The output holds NAME's private key: pipe it straight to kubectl, never into a file in git.
    The file names are the ones cert-manager writes, so the same server config works with either.

    Example: securechat certs k8s-secret server --dir certs --namespace securechat | kubectl apply -f -
    """
    store = pki.CertStore(directory)
    pki.validate_name(name)
    cert_pem = pki.certificate_pem(pki.load_certificate(store.cert_path(name)))
    key_pem = pki.private_key_pem(pki.load_private_key(store.key_path(name)))
    ca_pem = pki.certificate_pem(pki.load_certificate(store.ca_cert_path))
    metadata: dict[str, str] = {"name": secret_name or f"securechat-{name}-tls"}
    if namespace:
        metadata["namespace"] = namespace
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(cert_pem).decode(),
            "tls.key": base64.b64encode(key_pem).decode(),
            "ca.crt": base64.b64encode(ca_pem).decode(),
        },
    }
    import yaml  # only this command writes YAML

    sys.stdout.write(yaml.safe_dump(secret, sort_keys=False))


def _register_online_commands() -> None:
    # TODO(merge): these live in cli/certs_online.py until the cli/certs/ package (branch configpkg) lands.
    from securechat.cli.certs_online import enroll, intermediate

    certs_app.command("intermediate")(intermediate)
    certs_app.command("enroll")(enroll)


_register_online_commands()
