"""Log setup for the server: text for people, JSON lines for collectors, and a cap on repeated lines."""

from __future__ import annotations

import atexit
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Fields a log call may pass with extra={...}; JSON lines carry them as keys.
# Never message text, keys or passphrases.
FIELDS = ("identity", "room", "code", "peer", "left_out")

REPEATS_PER_SECOND = 20
"""The default of `log.repeats_per_second`: lines of one kind a second before the rest are summed up."""

MAX_KINDS = 1024
"""Kinds of line tracked at once; beyond it, kinds whose second is over are forgotten."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


@dataclass
class _Second:
    ends: float
    passed: int = 0
    left_out: int = 0
    last: logging.LogRecord | None = field(default=None, repr=False)
    timer: threading.Timer | None = field(default=None, repr=False)


class RepeatLimit(logging.Filter):
    """At most PER_SECOND lines of one kind a second; the rest are counted and summed up in one line.

    A kind is a logger and its format string ("chat stream opened by %s"),
    whatever the arguments. A reconnect storm of 10,000 clients would
    otherwise write 20,000 lines in 15 seconds, and a client repeating a
    refused call one line per call. When a second in which lines were left
    out is over, one line of the same level says how many, with the last of
    them as an example (and at exit, for a second not yet over). ERROR and
    above always pass; metrics count every event whether its line was
    written or not.
    """

    def __init__(self, per_second: int = REPEATS_PER_SECOND, *, seconds: float = 1.0) -> None:
        super().__init__()
        self.per_second, self.seconds = per_second, seconds
        self._lock = threading.Lock()
        self._kinds: dict[tuple[str, str], _Second] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or hasattr(record, "left_out"):
            return True
        key = (record.name, record.msg if isinstance(record.msg, str) else type(record.msg).__name__)
        now = time.monotonic()
        with self._lock:
            second = self._kinds.get(key)
            if second is None or now >= second.ends:
                if len(self._kinds) >= MAX_KINDS:
                    self._kinds = {k: s for k, s in self._kinds.items() if now < s.ends}
                second = self._kinds[key] = _Second(ends=now + self.seconds)
            second.passed += 1
            if second.passed <= self.per_second:
                return True
            second.left_out += 1
            second.last = record
            if second.timer is None:
                second.timer = threading.Timer(second.ends - now, self._sum_up, (second,))
                second.timer.daemon = True
                second.timer.start()
        return False

    def flush(self) -> None:
        """Sum up now what is left out of seconds not yet over (at exit: their timers would not fire)."""
        with self._lock:
            pending = [(second, second.timer) for second in self._kinds.values() if second.timer is not None]
        for second, timer in pending:
            timer.cancel()
            self._sum_up(second)  # nothing twice: whichever of the timer and this comes second finds nothing left

    def _sum_up(self, second: _Second) -> None:
        with self._lock:
            last, left_out = second.last, second.left_out
            # Summed up once, by the timer or by flush; a line left out after this starts a timer again.
            second.last, second.left_out, second.timer = None, 0, None
        if last is None:
            return
        logging.getLogger(last.name).log(
            last.levelno,
            "%d more lines like this in the last %g s were not logged (log.repeats_per_second %d); the last: %s",
            left_out,
            self.seconds,
            self.per_second,
            last.getMessage(),
            extra={"left_out": left_out},
        )


def configure_logging(level: str = "info", fmt: str = "text", *, repeats_per_second: int = 0) -> None:
    """One stderr handler on the root logger; REPEATS_PER_SECOND > 0 caps each kind of line (RepeatLimit)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    if repeats_per_second > 0:
        limit = RepeatLimit(repeats_per_second)
        handler.addFilter(limit)
        atexit.register(limit.flush)  # before logging's own exit hook, which was registered first
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
