"""`securechat certs export | k8s-secret`: hand a certificate and its key to other software."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from securechat import pki
from securechat.cli.certs.common import DEFAULT_DIR, P12_PASSWORD_ENV, DirOption, open_store, say, secret
from securechat.cli.output import reports_errors
from securechat.errors import FileExistsRefused, PkiError


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
    store = open_store(directory)
    pki.validate_name(name)
    if not force and p12.exists():
        raise FileExistsRefused(p12)
    cert = pki.load_certificate(store.cert_path(name))
    key = pki.load_private_key(store.key_path(name))
    ca_cert = pki.load_certificate(store.ca_cert_path) if store.ca_cert_path.is_file() else None
    password = secret("Export password", file=password_file, flag="--password-file", env=P12_PASSWORD_ENV, confirm=True)
    if password is None:
        raise PkiError(
            f"the bundle needs a password. Pass --password-file FILE, set {P12_PASSWORD_ENV}, or run in a terminal."
        )
    pki.write_private_file(p12, pki.pkcs12_bundle(name, key, cert, ca_cert=ca_cert, password=password), force=force)
    say(f'Wrote {p12} (mode 0600): "{name}" key, certificate and CA certificate, AES-256 under your password.')
    say(f"Import it with e.g. 'keytool -importkeystore -srckeystore {p12} -srcstoretype PKCS12'.")


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
    manifest = pki.kubernetes_tls_secret(
        secret_name=secret_name or f"securechat-{name}-tls",
        namespace=namespace,
        cert_pem=pki.certificate_pem(pki.load_certificate(store.cert_path(name))),
        key_pem=pki.private_key_pem(pki.load_private_key(store.key_path(name))),
        ca_pem=pki.certificate_pem(pki.load_certificate(store.ca_cert_path)),
    )
    import yaml  # only this command writes YAML

    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
