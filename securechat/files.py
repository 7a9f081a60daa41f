"""Reading the files a user points us at: regular files only, never more than a limit.

`read_regular_file(path, limit=..., what=...)` is the one way securechat reads
an input file -- certificates, keys, CRLs, index.json, passphrase and password
files, YAML configs. It opens without blocking (a FIFO at the path would
otherwise hang the open), refuses anything that is not a regular file (a FIFO,
`/dev/zero`, a socket, a directory) and anything larger than LIMIT, and reads
at most LIMIT bytes even if the file grows meanwhile. `require_regular_file`
checks the same before a path is handed to a library that opens it itself
(OpenSSL's `load_cert_chain`). Symlinks are followed:
a Kubernetes Secret volume is `..data` symlinks all the way down.

What it does not do: decide what a missing or unreadable file means.
FileNotFoundError and PermissionError (any OSError) reach the caller, which
knows the fix ("run 'securechat certs init'", "fix tls.key").
"""

from __future__ import annotations

import errno
import os
import stat

from securechat.errors import InputFileError

KIB = 1024
MIB = 1024 * KIB

# Limits per kind of file: each far above what a real one holds, and far below
# what would hurt a process that reads it into memory.
CONFIG_LIMIT = 1 * MIB
"""A YAML config: a few kilobytes; a long authz list still fits many times over."""
CERTIFICATE_LIMIT = 4 * MIB
"""A certificate or CA bundle: the whole Mozilla root store is about 250 KiB."""
KEY_LIMIT = 1 * MIB
"""A private key: an RSA-4096 PEM key is about 3 KiB."""
CRL_LIMIT = 64 * MIB
"""A CRL: 100,000 revoked serials are about 4 MiB of PEM."""
INDEX_LIMIT = 256 * MIB
"""index.json: one line of about 250 bytes per certificate ever issued."""
SECRET_LIMIT = 64 * KIB
"""A passphrase or password file: the first line is used."""

_CHUNK = 1 * MIB


def read_regular_file(path: str | os.PathLike[str], *, limit: int, what: str) -> bytes:
    """The bytes of the regular file at PATH (at most LIMIT of them); WHAT names it in errors ("certificate").

    Raises InputFileError for a non-regular file (a FIFO, a device, a socket)
    or one larger than LIMIT; IsADirectoryError for a directory; and lets every
    other OSError (FileNotFoundError, PermissionError, ...) through.
    """
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    # It changes nothing for a regular file. O_NOCTTY: a terminal device never
    # becomes our controlling terminal.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP):  # a socket (or a device without a driver)
            mode = os.stat(path).st_mode
            raise InputFileError(
                os.fspath(path), f"is {_kind(mode)}, not a regular file.", f"Point to the {what} file itself."
            ) from exc
        raise
    try:
        _check_regular(path, os.fstat(fd), limit=limit, what=what)
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:  # it grew after fstat
                raise _too_large(path, limit, what)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _check_regular(path: str | os.PathLike[str], info: os.stat_result, *, limit: int, what: str) -> None:
    """Refuse what INFO says is not a regular file of at most LIMIT bytes."""
    if stat.S_ISDIR(info.st_mode):
        # What reading a directory raises anyway; callers already word it ("point to the file inside it").
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
    if not stat.S_ISREG(info.st_mode):
        raise InputFileError(
            os.fspath(path), f"is {_kind(info.st_mode)}, not a regular file.", f"Point to the {what} file itself."
        )
    if info.st_size > limit:
        raise _too_large(path, limit, what)


def _too_large(path: str | os.PathLike[str], limit: int, what: str) -> InputFileError:
    return InputFileError(
        os.fspath(path),
        f"is larger than {_size(limit)}, the limit for a {what} file.",
        f"A real {what} file is far smaller; check the path.",
    )


def _size(limit: int) -> str:
    if limit >= MIB and limit % MIB == 0:
        return f"{limit // MIB} MiB"
    if limit >= KIB and limit % KIB == 0:
        return f"{limit // KIB} KiB"
    return f"{limit} bytes"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def require_regular_file(path: str | os.PathLike[str], *, limit: int, what: str) -> None:
    """Raise as `read_regular_file` would, without reading: for paths another library opens itself.

    A check before use, so not proof against a swap in between; it keeps a
    FIFO or /dev/zero from being handed to code that would block or read forever.
    """
    _check_regular(path, os.stat(path), limit=limit, what=what)  # stat follows symlinks, like the open after it
