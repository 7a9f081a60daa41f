"""`securechat certs` commands for a hierarchy and the online CA: init --intermediate, intermediate, enroll, renew --ca.

grpc and the CA client are imported only by the commands that talk to the CA,
so `securechat certs ...` keeps its fast start.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from securechat import pki
from securechat.cli.output import reports_errors, warn
from securechat.errors import InputFileError, PkiError
from securechat.files import CERTIFICATE_LIMIT, read_regular_file


def _say(text: str = "") -> None:
    typer.echo(text)


def _date(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def report_hierarchy(
    store: pki.CertStore, root: pki.CertificateAuthority, intermediate: pki.CertificateAuthority, *, encrypted: bool
) -> None:
    """What `certs init --intermediate` made, and where the root key should go."""
    _say(
        f'Created a root CA "{_cn(root.cert)}" and its issuing intermediate "{_cn(intermediate.cert)}"{" (keys encrypted)" if encrypted else ""}.'
    )
    _say(f"  root:         {store.root_cert_path}   (servers and clients trust this)")
    _say(f"  root key:     {store.root_key_path}   (signs only intermediates: move it offline)")
    _say(f"  intermediate: {store.ca_cert_path}, {store.ca_key_path}   (signs leaves; pathLen 0)")
    _say(
        f"The root expires on {_date(root.cert.not_valid_after_utc)}, the intermediate on {_date(intermediate.cert.not_valid_after_utc)}."
    )
    _say(f"Next: securechat certs server server --dir {store.directory}")


def _cn(cert: object) -> str:
    from cryptography.x509.oid import NameOID

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)  # type: ignore[attr-defined]
    return str(names[0].value) if names else "?"


@reports_errors
def intermediate(
    root_dir: Annotated[
        Path, typer.Option("--root-dir", help="Where the root's root.pem and root-key.pem are (offline).")
    ],
    directory: Annotated[
        Path, typer.Option("--dir", help="The certs directory to install the new intermediate in.")
    ] = Path("certs"),
    days: Annotated[
        int, typer.Option("--days", help="Intermediate validity in days (capped at the root's).")
    ] = pki.INTERMEDIATE_DEFAULT_DAYS,
    permit_dns: Annotated[
        list[str] | None,
        typer.Option(
            "--permit-dns",
            help="Name constraint: only DNS names under this domain; repeat for more.",
            show_default=False,
        ),
    ] = None,
    root_passphrase_file: Annotated[
        Path | None,
        typer.Option(
            "--root-passphrase-file", help="File whose first line is the root key's passphrase.", show_default=False
        ),
    ] = None,
    passphrase_file: Annotated[
        Path | None,
        typer.Option(
            "--passphrase-file",
            help="File whose first line is the new intermediate key's passphrase (else $SECURECHAT_CA_PASSPHRASE, a prompt, or the root's).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Sign a new issuing intermediate with the root in --root-dir and install it in --dir.

    The root key is needed only here: keep --root-dir on a machine or medium that is
    otherwise offline. Leaves of the previous intermediate stay valid (their chain files
    carry it).

    Example: securechat certs intermediate --root-dir /media/offline-root --dir certs
    """
    from securechat.cli.certs.common import PASSPHRASE_ENV, secret

    root_store = pki.CertStore(root_dir)
    root_passphrase = _first_line(root_passphrase_file)
    if root_passphrase is None and pki.is_encrypted_key_file(root_store.root_key_path):
        # The same sources as every signing command: $SECURECHAT_CA_PASSPHRASE, else a prompt.
        root_passphrase = secret(
            "Root key passphrase", file=None, flag="--root-passphrase-file", env=PASSPHRASE_ENV, confirm=False
        )
    root = root_store.load_root(passphrase=root_passphrase)
    store = pki.CertStore(directory)
    new = pki.issue_intermediate(root, days=days, permitted_dns=tuple(permit_dns or ()))
    # Like `certs init`, the new CA key is encrypted: the same passphrase sources, or the root's.
    passphrase = _first_line(passphrase_file, "--passphrase-file") or root_passphrase
    if passphrase is None:
        passphrase = secret(
            "New intermediate key passphrase", file=None, flag="--passphrase-file", env=PASSPHRASE_ENV, confirm=True
        )
    store.write_intermediate(new, root.cert, passphrase=passphrase)
    _say(f'Installed a new intermediate "{_cn(new.cert)}" signed by "{_cn(root.cert)}".')
    _say(f"  intermediate: {store.ca_cert_path}, {store.ca_key_path}")
    _say(f"  trust anchor: {store.root_cert_path} (unchanged)")
    _say(
        f"It expires on {_date(new.cert.not_valid_after_utc)}. New leaves are issued by it; restart 'securechat ca serve' to use it."
    )


def _first_line(path: Path | None, flag: str = "--root-passphrase-file") -> bytes | None:
    return None if path is None else pki.read_secret_file(path, flag=flag)


@reports_errors
def enroll(
    name: Annotated[str, typer.Argument(help="The identity the token was made for (NAME.pem in --dir).")],
    ca: Annotated[str, typer.Option("--ca", help="The CA service's HOST:PORT (its listen address).")],
    ca_cert: Annotated[
        Path, typer.Option("--ca-cert", help="The trust anchor (root.pem) to verify the CA service with.")
    ],
    token: Annotated[str, typer.Option("--token", help="The single-use token from 'securechat ca token NAME'.")],
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to write NAME.pem, NAME-key.pem and root.pem.")
    ] = Path("certs"),
    key_type: Annotated[
        str, typer.Option("--key-type", help=f"Key algorithm: {', '.join(pki.KEY_TYPES)}.")
    ] = pki.DEFAULT_KEY_TYPE,
    force: Annotated[
        bool, typer.Option("--force", help="Replace existing files of NAME (and a different root.pem).")
    ] = False,
) -> None:
    """Make a key here, send a CSR with the token, and write the certificate chain, the key (0600) and the trust anchor.

    The private key never leaves this machine.

    Example: securechat certs enroll alice --ca ca.internal:50052 --ca-cert root.pem --token sct1.... --dir certs
    """
    from securechat.ca.client import CaClient, CaTarget, CredentialFiles, write_credentials

    files = CredentialFiles.in_directory(directory, name)
    if not force:
        pki.CertStore(directory).refuse_overwrite([name])
    trust = _read_trust(ca_cert)
    key = pki.generate_private_key(key_type)

    async def run() -> object:
        async with CaClient(CaTarget(ca, trust)) as client:
            return await client.enroll(token, name=name, key=key)

    import asyncio  # here, not at module level: every `certs` command would load it

    issued = asyncio.run(run())
    write_credentials(files, key, issued, force=force)  # type: ignore[arg-type]
    leaf = issued.leaf  # type: ignore[attr-defined]
    sans = ", ".join(pki.san_to_text(n) for n in pki.subject_alternative_names(leaf))
    _say(f'Enrolled "{name}" ({sans}): serial {issued.serial}.')  # type: ignore[attr-defined]
    _say(f"  certificate: {files.cert}   (the leaf, then the intermediate)")
    _say(f"  key:         {files.key}   (made here, mode 0600)")
    _say(f"  trust:       {files.anchors}")
    _say(
        f"It expires on {_date(leaf.not_valid_after_utc)}; renew with 'securechat certs renew {name} --ca {ca} --dir {directory}', or set tls.renew."
    )
    if not pki.CertStore(directory).directory_is_private():
        warn(f"{directory} can be read by other users. Run 'chmod 700 {directory}'.")


def _read_trust(path: Path) -> bytes:
    try:
        data = read_regular_file(path, limit=CERTIFICATE_LIMIT, what="certificate")
    except InputFileError as exc:
        raise PkiError(f"--ca-cert {exc}") from exc
    except OSError as exc:
        raise PkiError(f"--ca-cert {path} could not be read ({exc.strerror}). Point it at the CA's root.pem.") from exc
    pki.load_certificates(path)  # a readable PEM bundle, or a one-line error naming the file
    return data


def renew_online(name: str, *, ca: str, ca_cert: Path | None, directory: Path) -> None:
    """`certs renew NAME --ca HOST:PORT`: renew NAME.pem from the CA service with the current certificate."""
    from securechat.ca.renewal import Renewer
    from securechat.config.ca import RenewConfig, parse_address_text

    store = pki.CertStore(directory)
    pki.validate_name(name)
    trust_path = ca_cert or store.trust_anchor_path
    if not trust_path.is_file():
        raise PkiError(f"{trust_path} not found. Pass --ca-cert with the CA's root.pem.")
    settings = RenewConfig(ca=parse_address_text("--ca", ca), ca_cert=trust_path)
    renewer = Renewer(cert=store.cert_path(name), key=store.key_path(name), settings=settings)
    import asyncio  # here, not at module level: every `certs` command would load it

    renewal = asyncio.run(renewer.renew_now())
    assert renewal is not None
    _say(f'Renewed "{name}" from the CA at {ca}: serial {renewal.serial} (was {renewal.previous_serial}), new key.')
    _say(f"  certificate: {store.cert_path(name)}")
    _say(f"  key:         {store.key_path(name)}")
    _say(f"It expires on {_date(renewal.not_after)}.")
