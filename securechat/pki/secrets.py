"""Passphrase and password files: the first line of a small regular file, never echoed anywhere.

Error texts name the file and the flag it came from, never its content.
"""

from __future__ import annotations

from pathlib import Path

from securechat.errors import InputFileError, PkiError
from securechat.files import KEY_LIMIT, SECRET_LIMIT, read_regular_file


def read_secret_file(path: Path, *, flag: str, what: str = "passphrase") -> bytes:
    """The first line of PATH (a regular file of at most 64 KiB); PkiError naming PATH and FLAG otherwise."""
    try:
        data = read_regular_file(path, limit=SECRET_LIMIT, what=what)
    except InputFileError as exc:
        raise PkiError(str(exc)) from exc
    except FileNotFoundError:
        raise PkiError(f"{path} not found. Check {flag}.") from None
    except OSError as exc:
        raise PkiError(f"{path} could not be read ({exc.strerror}). Check {flag}.") from exc
    lines = data.splitlines()
    if not lines or not lines[0]:
        raise PkiError(f"{path} is empty. Put the {what} on its first line.")
    return lines[0]


def is_encrypted_key_file(path: Path) -> bool:
    """Whether the PEM key at PATH is passphrase-encrypted; False if it cannot be read (loading it says why)."""
    try:
        return b"ENCRYPTED" in read_regular_file(path, limit=KEY_LIMIT, what="key")[:64]
    except (OSError, InputFileError):
        return False
