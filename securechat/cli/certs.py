"""`securechat certs ...`: issue and inspect certificates.

A thin conversation over `securechat.pki`: parse flags, call the library,
say which files were written, what names they cover and when they expire.
Every command exits 0 on success, 1 on an error (one line on stderr), and 2
on a usage error.
"""

from __future__ import annotations

import datetime as dt
import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from securechat import pki
from securechat.cli.output import reports_errors, stdout, warn
from securechat.errors import PkiError

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
        help="File whose first line is the CA key's passphrase.",
        show_default=False,
    ),
]

DEFAULT_DIR = Path("certs")


def _say(text: str = "") -> None:
    # Printed as they are: never as Rich markup, and no emoji codes — a
    # fingerprint like "...:CD:..." would otherwise turn into a CD emoji.
    stdout.print(text, soft_wrap=True, markup=False, emoji=False, highlight=False)


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


def _warn_if_directory_open(store: pki.CertStore) -> None:
    if not store.directory_is_private():
        warn(f"{store.directory} can be read by other users. Run 'chmod 700 {store.directory}'.")


def _valid_leaves(store: pki.CertStore) -> list[pki.IndexEntry]:
    try:
        return [e for e in store.entries() if e.kind != "ca" and e.status == "valid"]
    except PkiError:
        return []  # a damaged index must not block replacing the CA with --force


def _warn_if_capped(issued: list[pki.IssuedCert], ca: pki.CertificateAuthority) -> None:
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
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing CA; certificates it issued stop being trusted."),
    ] = False,
) -> None:
    """Create a private CA: DIR/ca.pem and DIR/ca-key.pem.

    Example: securechat certs init --dir certs
    """
    store = pki.CertStore(directory)
    orphaned = _valid_leaves(store) if force else []
    ca = store.init_ca(
        common_name=name,
        key_type=key_type.value,
        days=days,
        force=force,
        passphrase=_read_passphrase(passphrase_file),
    )
    _say(f'Created a new CA "{name}" ({key_type.value}).')
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
    ca = store.load_ca(passphrase=_read_passphrase(ca_passphrase_file))
    issued = pki.issue_server_cert(ca, name, sans=san or None, key_type=key_type.value, days=days)
    cert_path, key_path = store.write_leaf(name, issued, kind="server", force=force)
    _say(f'Created server certificate "{name}" ({key_type.value}), valid for these names:')
    for general_name in pki.subject_alternative_names(issued.cert):
        _say(f"  - {pki.san_to_text(general_name)}")
    _say(f"  certificate: {cert_path}")
    _say(f"  key:         {key_path}")
    _say(f"It expires on {_date(issued.cert.not_valid_after_utc)}.")
    _say(f"Server config: tls.cert {cert_path}, tls.key {key_path}, tls.client_ca {store.ca_cert_path}")
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
    ca = store.load_ca(passphrase=_read_passphrase(ca_passphrase_file))
    issued = [
        pki.issue_client_cert(ca, name, key_type=key_type.value, days=days, spiffe_trust_domain=spiffe_trust_domain)
        for name in names
    ]
    paths = store.write_leaves(issued, force=force)
    if len(issued) <= 10:
        for item, (cert_path, key_path) in zip(issued, paths, strict=True):
            sans = ", ".join(pki.san_to_text(n) for n in pki.subject_alternative_names(item.cert))
            _say(f'Created client certificate "{item.name}" ({sans}): {cert_path} and {key_path}')
    else:
        _say(
            f"Created {len(issued)} client certificates ({issued[0].name} ... {issued[-1].name})"
            f" in {store.directory}: NAME.pem and NAME-key.pem each."
        )
    _say(f"They expire on {_date(min(i.cert.not_valid_after_utc for i in issued))}.")
    _say(f"Client config: tls.ca {store.ca_cert_path}, tls.cert {paths[0][0]}, tls.key {paths[0][1]}")
    _warn_if_capped(issued, ca)
    _warn_if_directory_open(store)


@certs_app.command("list")
@reports_errors
def list_(
    directory: DirOption = DEFAULT_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print index.json entries as JSON.")] = False,
) -> None:
    """List what was issued in DIR, with expiry and status."""
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
    table = Table(box=None, pad_edge=False)
    for column in ("name", "kind", "serial", "expires", "days left", "status"):
        table.add_column(column, justify="right" if column == "days left" else "left", no_wrap=True)
    for entry in entries:
        left = pki.days_until(entry.not_after, now=now)
        status = "expired" if entry.status == "valid" and entry.not_after < now else entry.status
        cells = (entry.name, entry.kind, entry.serial[:16], entry.not_after.strftime("%Y-%m-%d"), str(left), status)
        table.add_row(*(Text(cell) for cell in cells))  # Text: never markup or emoji codes
    stdout.print(table, soft_wrap=True)


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
