"""What every `securechat certs` command shares: options, the way it speaks, and asking for secrets.

Only the conversation lives here (flags, prompts, printed lines and
warnings); reading files, checking names and deciding things is
`securechat.pki`'s.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from securechat import pki
from securechat.cli.output import warn
from securechat.errors import PkiError

PASSPHRASE_ENV = "SECURECHAT_CA_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret
"""Where a signing command finds the CA passphrase when no file is given (cron, systemd)."""
P12_PASSWORD_ENV = "SECURECHAT_P12_PASSWORD"  # noqa: S105 - the variable's name, not a secret
DEFAULT_DIR = Path("certs")


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
CrlDaysHelp = f"Days until the CRL's nextUpdate, at most {pki.CRL_MAX_DAYS}."
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


def say(text: str = "") -> None:
    """One line on stdout, printed as it is."""
    # Not through Rich: never markup, no emoji codes (a fingerprint like
    # "...:CD:..." would otherwise turn into a CD emoji).
    typer.echo(text)


def date(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def check_range(flag: str, value: int, low: int, high: int) -> int:
    """VALUE if LOW <= VALUE <= HIGH; else PkiError naming FLAG, the same wording for every numeric flag."""
    if not low <= value <= high:
        text = str(value) if len(str(value)) <= 12 else f"{str(value)[:12]}..."
        raise PkiError(f"{flag} {text} is out of range; use {low} to {high}.")
    return value


def open_store(directory: Path) -> pki.CertStore:
    """The certs directory at DIRECTORY; a warning if it is a symbolic link (files go where it points)."""
    if directory.is_symlink():
        warn(f"{directory} is a symbolic link to {os.readlink(directory)}; certificates and keys are written there.")
    return pki.CertStore(directory)


def read_passphrase(path: Path | None, *, flag: str = "--ca-passphrase-file") -> bytes | None:
    return None if path is None else pki.read_secret_file(path, flag=flag)


def secret(what: str, *, file: Path | None, flag: str, env: str, confirm: bool) -> bytes | None:
    """A passphrase or password: from FILE, else $ENV, else asked on the terminal; None if none of them."""
    if file is not None:
        return pki.read_secret_file(file, flag=flag, what=what.lower())
    if os.environ.get(env):
        return os.environ[env].encode()
    if not sys.stdin.isatty():
        return None
    value = typer.prompt(what, hide_input=True, confirmation_prompt=confirm, err=True)
    if not value:
        raise PkiError(f"the {what.lower()} is empty. Give a non-empty one.")
    return str(value).encode()


def load_ca(store: pki.CertStore, passphrase_file: Path | None) -> pki.CertificateAuthority:
    """The CA in DIR; an encrypted key's passphrase comes from the file, $SECURECHAT_CA_PASSPHRASE, or a prompt."""
    passphrase = read_passphrase(passphrase_file)
    if passphrase is None and pki.is_encrypted_key_file(store.ca_key_path):
        passphrase = secret(
            "CA key passphrase", file=None, flag="--ca-passphrase-file", env=PASSPHRASE_ENV, confirm=False
        )
        if passphrase is None:
            raise PkiError(
                f"{store.ca_key_path} is encrypted. Pass --ca-passphrase-file FILE with its passphrase,"
                f" set {PASSPHRASE_ENV}, or run in a terminal to be asked."
            )
    return store.load_ca(passphrase=passphrase)


def warn_if_directory_open(store: pki.CertStore) -> None:
    if not store.directory_is_private():
        warn(f"{store.directory} can be read by other users. Run 'chmod 700 {store.directory}'.")


def warn_if_capped(issued: Sequence[pki.IssuedCert | pki.WrittenLeaf], ca: pki.CertificateAuthority) -> None:
    capped = [item.name for item in issued if item.capped_at_ca_expiry]
    if capped:
        warn(
            f"the CA expires on {date(ca.cert.not_valid_after_utc)}, so {', '.join(capped[:5])}"
            f"{' and others' if len(capped) > 5 else ''} expire then too, sooner than --days asked."
            f" Create a longer-lived CA with 'securechat certs init --force --days N' and reissue."
        )
