"""Notice that files changed on disk, by content, without inotify.

Content, not mtime: an atomic rename, a Kubernetes `..data` symlink swap,
a copy that keeps the mtime and an edit within the same second all change
what reading them returns. The files watched here are a few kilobytes,
so reading them once a second costs nothing. Used by the server (its
certificate, key, client CA, CRL and config) and by `securechat chat` (its
client certificate). Not thread-safe: one poller owns a watch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from securechat.errors import InputFileError
from securechat.files import CRL_LIMIT, read_regular_file

WATCH_LIMIT = CRL_LIMIT
"""The largest file watched (a CRL is the largest of them); a larger one counts as absent."""

_Snapshot = tuple[bytes | str | None, ...]
"""Per path: its content, None if absent, or why it was refused (a FIFO, a device, too large)."""


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


def _content(path: Path) -> bytes | str | None:
    try:
        # Bounded and non-blocking: a FIFO or /dev/zero swapped in at a watched
        # path must not freeze the poller (and every reload behind it).
        return read_regular_file(path, limit=WATCH_LIMIT, what="watched")
    except InputFileError as exc:
        return exc.problem  # a change too: the reload that follows says what is wrong
    except OSError:  # missing, or replaced mid-read: "absent" is a state too
        return None
