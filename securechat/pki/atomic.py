"""Writing files so that a crash, a planted symlink or a loose umask never leaves a bad one.

Every file is written atomically: to a fresh temp file beside its target,
created with O_CREAT|O_EXCL|O_NOFOLLOW (a name planted in advance, symlink
or not, is never opened) and its exact final mode (fchmod'ed, whatever the
umask), made durable (fsync, or one syncfs for many files), then linked (or,
replacing, renamed) into place, then the directory fsynced. A rename or link
replaces or refuses the name itself: a symlink at the target is never
followed. Directories are created with an exact mode (0700 for certs)
whatever the umask, each missing level of them.

What is not done here: deciding what goes where (`layout.py`) or what is in
a file (`index.py`, `pem.py`); and locking -- two writers of one directory
at the same moment may lose one index update (never a key or certificate).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securechat.errors import FileExistsRefused, PkiError
from securechat.pki.layout import DIR_MODE, KEY_MODE

BATCH_SYNC_MIN_FILES = 16
"""From this many files on, one syncfs(2) replaces an fsync(2) per file (Linux)."""


@dataclass(frozen=True)
class FileWrite:
    """DATA to be written at PATH with MODE."""

    path: Path
    data: bytes
    mode: int


@dataclass(frozen=True)
class Staged:
    """A file's complete content in a temp file beside PATH, not yet in place.

    Paths are plain strings: staged files of a bulk issue cross a pipe from
    a worker process, and `Path` objects cost more to unpickle than the
    rest of the batch.
    """

    path: str
    temp: str


def refuse_existing(paths: Iterable[Path], *, force: bool) -> None:
    """FileExistsRefused for the first of PATHS that exists (a dangling symlink counts), unless FORCE."""
    if force:
        return
    for path in paths:
        if os.path.lexists(path):
            raise FileExistsRefused(path)


def ensure_private_directory(directory: Path, *, mode: int = DIR_MODE) -> None:
    """Create DIRECTORY (and each missing parent) with MODE (0700) whatever the umask; PkiError if it is a file.

    An existing directory keeps its mode: the CLI warns when it is open to others.
    """
    if directory.is_dir():
        return
    if directory.is_symlink() and not directory.exists():
        raise PkiError(
            f"{directory} is a symbolic link to {os.readlink(directory)}, which does not exist."
            " Create the target directory or pass another --dir."
        )
    if directory.exists():
        raise PkiError(f"{directory} is a file, not a directory. Pass --dir with a directory path.")
    missing: list[Path] = []
    level = directory
    while not level.exists() and not level.is_symlink() and level != level.parent:
        missing.append(level)
        level = level.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            if not path.is_dir():
                raise PkiError(f"{path} is a file, not a directory. Pass --dir with a directory path.") from None
            continue
        except OSError as exc:
            raise PkiError(f"{path} could not be created ({exc.strerror}). Check the parent's permissions.") from exc
        os.chmod(path, mode)  # mkdir's mode was filtered by the umask; set it exactly


def write_all(writes: Sequence[FileWrite], *, directory: Path, force: bool) -> None:
    """Check every target, write them all atomically, make them durable, then fsync DIRECTORY once."""
    refuse_existing((w.path for w in writes), force=force)
    ensure_private_directory(directory)
    write_atomic_many([(w.path, w.data, w.mode) for w in writes], replace_existing=force)
    fsync_directory(directory)


def replace_files(files: Sequence[tuple[Path, bytes, int]]) -> None:
    """Replace each (PATH, DATA, MODE) atomically, in order, then make the directories durable.

    For renewal: every new file is complete and durable in a temp file
    before the first rename, and the renames follow one another at once, so
    a reader sees the old pair or the new one (keys are written first: a
    reader that catches the gap sees a new key with the old certificate,
    which it refuses and reads again). Keys are created 0600 and never
    readable by others, not even for a moment.
    """
    write_atomic_many(list(files), replace_existing=True)
    for directory in {path.parent for path, _, _ in files}:
        fsync_directory(directory)


def write_private_file(path: Path, data: bytes, *, force: bool = False) -> Path:
    """Write DATA to PATH atomically with mode 0600 (an export bundle, say); refuse to overwrite unless FORCE."""
    if not force and os.path.lexists(path):
        raise FileExistsRefused(path)
    write_atomic(path, data, KEY_MODE, replace_existing=force)
    return path


def write_atomic(path: Path, data: bytes, mode: int, *, replace_existing: bool) -> None:
    """Write DATA to PATH with MODE so that PATH is either absent, old, or complete; then fsync its directory."""
    write_atomic_many([(path, data, mode)], replace_existing=replace_existing)
    fsync_directory(path.parent)


def write_atomic_many(files: Sequence[tuple[Path, bytes, int]], *, replace_existing: bool) -> None:
    """Write each (PATH, DATA, MODE) so that every PATH is either absent, old, or complete.

    Only once all temp files are durable are they linked (or, replacing,
    renamed) into place: a crash never leaves a name pointing at a partial
    file. The caller fsyncs the directory afterwards, so the new names are
    durable before it reports success.

    Durability is one fsync per file for a few files; for many (issuing a
    thousand clients writes two thousand) it is a single syncfs(2) of the
    file system holding them, which writes all their data at once -- the
    fsyncs one by one were most of the time `certs client` took.
    """
    batch = sync_as_batch(len(files))
    place_staged(stage(files, fsync_each=not batch), replace_existing=replace_existing, syncfs_first=batch)


def sync_as_batch(files: int) -> bool:
    """Whether FILES files are made durable by one syncfs rather than an fsync each."""
    return files >= BATCH_SYNC_MIN_FILES and _syncfs is not None


def stage(files: Sequence[tuple[str | Path, bytes, int]], *, fsync_each: bool) -> list[Staged]:
    """Write each (PATH, DATA, MODE) to a fresh temp file beside PATH; all removed again on failure."""
    staged: list[Staged] = []
    current = ""
    umask = current_umask()
    try:
        for target, data, mode in files:
            path = current = os.fspath(target)
            directory, name = os.path.split(path)
            temp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
            except OSError as exc:
                raise PkiError(
                    f"{directory or '.'} is not writable ({exc.strerror}). Check its permissions or pass another --dir."
                ) from exc
            staged.append(Staged(path, temp))
            try:
                if umask is None or umask & mode:
                    os.fchmod(fd, mode)  # os.open's mode was filtered by the umask; set it exactly
                os.write(fd, data)
                if fsync_each:
                    os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        discard(staged)
        raise PkiError(f"{current} could not be written ({exc.strerror}). Check free space and permissions.") from exc
    except BaseException:
        discard(staged)
        raise
    return staged


def place_staged(staged: Sequence[Staged], *, replace_existing: bool, syncfs_first: bool) -> None:
    """Move every staged temp file to its PATH (after one syncfs if SYNCFS_FIRST); leftovers removed on failure."""
    placed = 0
    current = staged[0].path if staged else ""
    try:
        if syncfs_first:
            assert _syncfs is not None
            for directory in {os.path.dirname(item.temp) for item in staged}:
                _syncfs(directory or ".")
        for item in staged:
            current = item.path
            try:
                if replace_existing:
                    os.replace(item.temp, item.path)
                else:
                    _move_no_clobber(item.temp, item.path)
            except FileExistsError:
                raise FileExistsRefused(Path(item.path)) from None
            placed += 1
    except OSError as exc:
        if not replace_existing:
            unplace(staged[:placed])
        raise PkiError(f"{current} could not be written ({exc.strerror}). Check free space and permissions.") from exc
    except BaseException:
        if not replace_existing:  # what we placed was new (no clobber): take it away again
            unplace(staged[:placed])
        raise
    finally:
        discard(staged[placed:])


def unplace(staged: Iterable[Staged]) -> None:
    """Remove files a batch created in place (only ever ones it made without replacing anything)."""
    for item in staged:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(item.path)


def discard(staged: Iterable[Staged]) -> None:
    """Remove the temp files of STAGED (those not moved into place)."""
    for item in staged:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(item.temp)


def current_umask() -> int | None:
    """The process's umask, read without changing it (Linux); None where it cannot be read."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


def fsync_directory(directory: Path) -> None:
    """Make the new directory entries durable (POSIX; a no-op where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _libc_function(name: str, *argtypes: Any) -> Any | None:
    """NAME from the C library (Linux), taking ARGTYPES and returning an int; None where it is missing."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    return function


def _load_syncfs() -> Callable[[str], None] | None:
    """syncfs(2): flush one file system's data and wait for it."""
    syncfs = _libc_function("syncfs", ctypes.c_int)
    if syncfs is None:
        return None

    def sync_directory_fs(directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            if syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)

    return sync_directory_fs


_syncfs = _load_syncfs()


def _load_rename_no_replace() -> Callable[[str, str], bool] | None:
    """renameat2(2) with RENAME_NOREPLACE: an atomic rename that never replaces."""
    renameat2 = _libc_function("renameat2", ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    if renameat2 is None:
        return None
    at_fdcwd, rename_noreplace = -100, 1

    def rename_no_replace(source: str, target: str) -> bool:
        """True once moved; False if this file system cannot (the caller falls back); FileExistsError if TARGET exists."""
        if renameat2(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), rename_noreplace) == 0:
            return True
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), str(target))
        if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            return False
        raise OSError(err, os.strerror(err), str(target))

    return rename_no_replace


_rename_no_replace = _load_rename_no_replace()


def _move_no_clobber(temp: str, path: str) -> None:
    """Move TEMP to PATH, failing with FileExistsError if PATH appeared meanwhile; TEMP is gone either way on success."""
    if _rename_no_replace is not None and _rename_no_replace(temp, path):
        return
    try:
        os.link(temp, path)  # unlike rename, link never replaces an existing file
    except FileExistsError:
        raise
    except OSError:
        # File systems without hard links: fall back to check-then-rename.
        if os.path.lexists(path):
            raise FileExistsError(path) from None
        os.replace(temp, path)
        return
    os.unlink(temp)
