"""Notice that files changed on disk, by content, without inotify.

Content, not mtime: an atomic rename, a Kubernetes `..data` symlink swap,
a copy that keeps the mtime and an edit within the same second all change
what reading them returns. The files watched here are a few kilobytes,
so reading them once a second costs nothing. Only regular files are read,
through `securechat.files` (non-blocking, fstat first, bounded): a FIFO or a
device planted at a watched path is a state of its own ("not a regular file"),
never a read that blocks the poller forever. Used by the server (its
certificate, key, client CA, CRL and config) and by `securechat chat` (its
client certificate). Not thread-safe: one poller owns a watch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from securechat.errors import InputFileError
from securechat.files import read_regular_file

MAX_WATCHED_BYTES = 64 * 1024 * 1024
"""Beyond this a file's size and mtime stand for its content (no watched file is that large)."""

_Snapshot = tuple[bytes | tuple[int, int, int] | None, ...]


class FileWatch:
    """Says whether any of its files changed (or appeared, or vanished) since the last look."""

    def __init__(self, paths: Sequence[Path | None]) -> None:
        self._paths = tuple(p for p in paths if p is not None)
        self._last: _Snapshot | None = self._read()

    @property
    def paths(self) -> tuple[Path, ...]:
        return self._paths

    def changed(self) -> bool:
        """True once per change: the first look after the files' content differs."""
        now = self._read()
        if now == self._last:
            return False
        self._last = now
        return True

    def retarget(self, paths: Sequence[Path | None]) -> None:
        """Watch other files; the next `changed()` is True if they differ from the old ones."""
        wanted = tuple(p for p in paths if p is not None)
        if wanted != self._paths:
            self._paths = wanted
            self._last = None

    def _read(self) -> _Snapshot:
        return tuple(_content(path) for path in self._paths)


def _content(path: Path) -> bytes | tuple[int, int, int] | None:
    try:
        return read_regular_file(path, limit=MAX_WATCHED_BYTES, what="watched")
    except (InputFileError, IsADirectoryError):
        # Not read: a FIFO, a device, a directory or a file too large; its kind,
        # size and mtime stand for it, so a swap is still seen as a change.
        try:
            info = os.stat(path)
        except OSError:
            return None
        return (info.st_mode, info.st_size, info.st_mtime_ns)
    except OSError:  # missing, or replaced mid-read: "absent" is a state too
        return None
