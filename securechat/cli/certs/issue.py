"""`securechat certs init | server | peer | client`: make a CA and issue leaves from it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from securechat import pki
from securechat.cli.certs.common import (
    DEFAULT_DIR,
    PASSPHRASE_ENV,
    CaPassphraseOption,
    DirOption,
    ForceOption,
    KeyTypeChoice,
    KeyTypeOption,
    LeafDaysOption,
    date,
    load_ca,
    open_store,
    read_passphrase,
    say,
    secret,
    warn_if_capped,
    warn_if_directory_open,
)
from securechat.cli.output import fail, reports_errors, warn
from securechat.errors import PkiError


@reports_errors
def init(
    directory: DirOption = DEFAULT_DIR,
    key_type: KeyTypeOption = KeyTypeChoice.ecdsa_p256,
    days: Annotated[int, typer.Option("--days", help="CA validity in days.")] = pki.CA_DEFAULT_DAYS,
    name: Annotated[str, typer.Option("--name", help="The CA's common name.")] = pki.DEFAULT_CA_COMMON_NAME,
    passphrase_file: CaPassphraseOption = None,
    no_passphrase: Annotated[
        bool,
        typer.Option("--no-passphrase", help="Write the CA key unencrypted; needs --insecure too (tests, demos)."),
    ] = False,
    insecure: Annotated[bool, typer.Option("--insecure", help="Confirm --no-passphrase.")] = False,
    encrypt: Annotated[
        bool, typer.Option("--encrypt", hidden=True, help="The default now; kept for old scripts.")
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
    """Create a private CA: DIR/ca.pem and DIR/ca-key.pem, the key encrypted with a passphrase.

    With --intermediate, a root (DIR/root.pem, DIR/root-key.pem) and an issuing
    intermediate signed by it. The passphrase comes from --passphrase-file,
    $SECURECHAT_CA_PASSPHRASE, or a prompt; every signing command (server,
    client, revoke, renew, crl) asks for it the same way. An unencrypted key
    takes two flags, --no-passphrase --insecure: anyone who can read it can
    issue certificates.

    \b
    Examples:
      securechat certs init --dir certs
      securechat certs init --dir certs --passphrase-file ca-pass.txt
      securechat certs init --intermediate --dir certs --permit-dns example.org
      securechat certs init --dir test-certs --no-passphrase --insecure
    """
    if no_passphrase and not insecure:
        fail(
            "--no-passphrase writes the CA key unencrypted: anyone who can read it can issue certificates."
            " Add --insecure to confirm, or leave both out to encrypt it.",
            code=2,
        )
    if insecure and not no_passphrase:
        fail("--insecure only confirms --no-passphrase; pass both, or neither to encrypt the CA key.", code=2)
    store = open_store(directory)
    orphaned = store.current_leaves() if force else []
    passphrase = None
    if not no_passphrase:
        passphrase = read_passphrase(passphrase_file, flag="--passphrase-file") or secret(
            "New CA key passphrase", file=None, flag="--passphrase-file", env=PASSPHRASE_ENV, confirm=True
        )
        if passphrase is None:
            raise PkiError(
                "the CA key is encrypted by default and needs a passphrase. Pass --passphrase-file FILE,"
                f" set {PASSPHRASE_ENV}, run in a terminal to be asked, or pass --no-passphrase --insecure for a test CA."
            )
    if intermediate:
        from securechat.cli.certs.online import report_hierarchy

        root, issuing = store.init_hierarchy(
            common_name=name,
            key_type=key_type.value,
            days=days,
            force=force,
            passphrase=passphrase,
            permitted_dns=tuple(permit_dns or ()),
        )
        report_hierarchy(store, root, issuing, encrypted=passphrase is not None)
        warn_if_directory_open(store)
        return
    ca = store.init_ca(
        common_name=name,
        key_type=key_type.value,
        days=days,
        force=force,
        passphrase=passphrase,
        permitted_dns=tuple(permit_dns or ()),
    )
    say(f'Created a new CA "{name}" ({key_type.value}{", key encrypted" if passphrase else ""}).')
    if permit_dns:
        say(f"  name constraints: DNS names under {', '.join(permit_dns)} only")
    say(f"  certificate: {store.ca_cert_path}   (servers and clients trust this)")
    say(f"  key:         {store.ca_key_path}   (keep it secret: it can issue certificates)")
    say(f"It expires on {date(ca.cert.not_valid_after_utc)}.")
    say(f"Next: securechat certs server server --dir {store.directory}")
    warn_if_directory_open(store)
    if passphrase is None:
        warn(
            f"the CA key {store.ca_key_path} is not encrypted (--no-passphrase --insecure):"
            " anyone who can read it can issue certificates."
        )
    if orphaned:
        warn(
            f"{len(orphaned)} certificate(s) issued by the old CA no longer chain to the new one."
            " Reissue them with 'securechat certs server|client NAME --force --dir"
            f" {store.directory}'."
        )


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
    store = open_store(directory)
    pki.validate_name(name)
    store.refuse_overwrite([name], force=force)
    ca = load_ca(store, ca_passphrase_file)
    issued = pki.issue_server_cert(ca, name, sans=san or None, key_type=key_type.value, days=days)
    cert_path, key_path = store.write_leaf(name, issued, kind="server", force=force)
    report_named_leaf(
        f'Created server certificate "{name}" ({key_type.value})',
        issued,
        cert_path,
        key_path,
        f"Server config: tls.cert {cert_path}, tls.key {key_path}, tls.client_ca {store.ca_cert_path}",
    )
    warn_if_capped([issued], ca)
    warn_if_directory_open(store)


def report_named_leaf(title: str, issued: pki.IssuedCert, cert_path: Path, key_path: Path, usage: str) -> None:
    """What a server or peer certificate covers, where it went, when it expires, and how to use it."""
    say(f"{title}, valid for these names:")
    for general_name in pki.subject_alternative_names(issued.cert):
        say(f"  - {pki.san_to_text(general_name)}")
    say(f"  certificate: {cert_path}")
    say(f"  key:         {key_path}")
    say(f"It expires on {date(issued.cert.not_valid_after_utc)}.")
    say(usage)


@reports_errors
def peer(
    name: Annotated[str, typer.Argument(help="Certificate name: the CN and the file name NAME.pem.")],
    san: Annotated[
        list[str],
        typer.Option(
            "--san", help="A DNS name or IP the peer is reached at; repeat for more. At least one.", show_default=False
        ),
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
    store = open_store(directory)
    pki.validate_name(name)
    store.refuse_overwrite([name], force=force)
    ca = load_ca(store, ca_passphrase_file)
    issued = pki.issue_peer_cert(ca, name, sans=san, key_type=key_type.value, days=days)
    cert_path, key_path = store.write_leaf(name, issued, kind="peer", force=force)
    report_named_leaf(
        f'Created peer certificate "{name}" ({key_type.value}, serverAuth + clientAuth)',
        issued,
        cert_path,
        key_path,
        f"NATS cluster: tls and cluster.tls cert_file {cert_path}, key_file {key_path}, ca_file {store.ca_cert_path}",
    )
    warn_if_capped([issued], ca)
    warn_if_directory_open(store)


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
    store = open_store(directory)
    for name in names:
        pki.validate_name(name)
    store.refuse_overwrite(names, force=force)
    ca = load_ca(store, ca_passphrase_file)
    written = store.issue_clients(
        ca, names, key_type=key_type.value, days=days, spiffe_trust_domain=spiffe_trust_domain, force=force
    )
    if len(written) <= 10:
        for leaf in written:
            say(
                f'Created client certificate "{leaf.name}" ({", ".join(leaf.entry.sans)}):'
                f" {leaf.cert_path} and {leaf.key_path}"
            )
    else:
        say(
            f"Created {len(written)} client certificates ({written[0].name} ... {written[-1].name})"
            f" in {store.directory}: NAME.pem and NAME-key.pem each."
        )
    say(f"They expire on {date(min(leaf.entry.not_after for leaf in written))}.")
    say(f"Client config: tls.ca {store.ca_cert_path}, tls.cert {written[0].cert_path}, tls.key {written[0].key_path}")
    warn_if_capped(written, ca)
    warn_if_directory_open(store)
