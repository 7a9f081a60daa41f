"""Per-identity and per-server limits on streams, connections and message rate.

`Admission` is consulted by ChatService when a stream opens, when it ends,
for every posted message, for every room it creates and for every JOIN or
LEAVE it would announce: messages, new rooms and presence share one
per-identity budget (max_messages_per_second, message_burst). Refusals are `securechat.protocol.Refusal`s: a
status, a machine-readable reason, and a message naming the limit and its
config key, so the user knows what to change.

Connections are counted as distinct peer addresses with at least one open
chat stream: gRPC Python has no connection hook. The hard cap on accepted
TCP connections is set in gRPC core too (`grpc.max_allowed_incoming_connections`),
which refuses beyond it without telling us; this class logs when the cap is
reached so the operator can see why clients are turned away.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import grpc

from securechat.config import Limits
from securechat.protocol import Reason, Refusal

log = logging.getLogger(__name__)


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved; one token per message."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def full(self) -> bool:
        return self.tokens + (time.monotonic() - self.stamp) * self.rate >= self.burst

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Admission:
    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._streams: Counter[str] = Counter()  # identity -> open streams
        self._buckets: dict[str, TokenBucket] = {}  # identity -> its shared message budget
        self._connections: Counter[str] = Counter()  # peer address -> open streams

    @property
    def connections(self) -> int:
        return len(self._connections)

    def open_stream(self, identity: str, peer: str) -> Refusal | None:
        limits = self._limits
        if self._streams[identity] >= limits.max_streams_per_identity:
            log.warning(
                "refused a chat stream of %s: RESOURCE_EXHAUSTED (max_streams_per_identity %d)",
                identity,
                limits.max_streams_per_identity,
            )
            return Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                Reason.TOO_MANY_STREAMS,
                f"identity '{identity}' already has {self._streams[identity]} open chat streams; "
                f"the limit max_streams_per_identity is {limits.max_streams_per_identity}",
            )
        if peer not in self._connections and len(self._connections) >= limits.max_connections:
            log.warning(
                "connection limit reached: %d connections with open streams (limits.max_connections); refusing %s from %s",
                limits.max_connections,
                identity,
                peer,
            )
            return Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                Reason.TOO_MANY_CONNECTIONS,
                f"the server has {len(self._connections)} connections; the limit max_connections is {limits.max_connections}",
            )
        self._streams[identity] += 1
        self._connections[peer] += 1
        if len(self._connections) == limits.max_connections:
            log.warning(
                "connection limit reached: %d connections (limits.max_connections); new ones are refused until one closes",
                limits.max_connections,
            )
        if identity not in self._buckets:
            self._buckets[identity] = TokenBucket(limits.max_messages_per_second, limits.message_burst)
        return None

    def close_stream(self, identity: str, peer: str) -> None:
        for counts, key in ((self._streams, identity), (self._connections, peer)):
            counts[key] -= 1
            if counts[key] <= 0:
                del counts[key]
        if identity not in self._streams:
            # Keep a half-spent budget for a while: reconnecting must not refill it.
            bucket = self._buckets.get(identity)
            if bucket is not None and bucket.full():
                del self._buckets[identity]
            if len(self._buckets) > len(self._streams) + 1000:
                self.sweep()

    def sweep(self) -> None:
        """Forget the budgets of identities without streams that have refilled."""
        for name in [name for name, bucket in self._buckets.items() if name not in self._streams and bucket.full()]:
            del self._buckets[name]

    def allow_message(self, identity: str) -> Refusal | None:
        bucket = self._buckets.get(identity)
        if bucket is None or bucket.take():
            return None
        limits = self._limits
        return Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            Reason.RATE_LIMITED,
            f"identity '{identity}' is sending too fast; the limit max_messages_per_second is "
            f"{limits.max_messages_per_second} (message_burst {limits.message_burst})",
        )

    def allow_new_room(self, identity: str) -> Refusal | None:
        """Creating a room (the first member on this server) costs one message from the identity's budget."""
        bucket = self._buckets.get(identity)
        if bucket is None or bucket.take():
            return None
        limits = self._limits
        log.warning(
            "refused a new room of %s: creating rooms faster than its message budget",
            identity,
            extra={"identity": identity},
        )
        return Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            Reason.RATE_LIMITED,
            f"identity '{identity}' is creating rooms too fast: each new room counts as a message against "
            f"max_messages_per_second {limits.max_messages_per_second} (message_burst {limits.message_burst})",
        )

    def allow_presence(self, identity: str) -> bool:
        """Whether a JOIN or LEAVE of IDENTITY is announced: each costs one message from its budget.

        Without budget the member still joins or leaves, unannounced (as in
        rooms above announce_max_members): opening and closing streams cannot
        flood a room with presence events.
        """
        bucket = self._buckets.get(identity)
        return bucket is None or bucket.take()

    def tracked(self) -> tuple[int, int, int]:
        """(identities with streams, rate buckets, connections): all zero when idle."""
        return len(self._streams), len(self._buckets), len(self._connections)
