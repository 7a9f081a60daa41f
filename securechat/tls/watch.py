"""Notice that files changed on disk, by content, without inotify.

Content, not mtime: an atomic rename, a Kubernetes `..data` symlink swap,
a copy that keeps the mtime and an edit within the same second all change
what `read_bytes()` returns. The files watched here are a few kilobytes,
so reading them once a second costs nothing. Only regular files are read,
opened non-blocking and checked with fstat first: a FIFO or a device
planted at a watched path is a state of its own ("not a regular file"),
never a read that blocks the poller forever. Used by the server (its
certificate, key, client CA, CRL and config) and by `securechat chat` (its
client certificate). Not thread-safe: one poller owns a watch.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

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
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:  # missing, or replaced mid-read: "absent" is a state too
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_WATCHED_BYTES:
            return (info.st_mode, info.st_size, info.st_mtime_ns)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)
