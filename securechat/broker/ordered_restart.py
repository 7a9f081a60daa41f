"""The one private nats-py access in securechat, quarantined: where an ordered consumer restarts.

A room's live subscription is a nats-py ordered consumer (public API:
`js.subscribe(..., ordered_consumer=True, config=ConsumerConfig(
deliver_policy=BY_START_SEQUENCE, opt_start_seq=N))`). When it misses two
heartbeats or sees a gap, nats-py recreates the consumer from the last
stream sequence it delivered -- kept in `_JSI._sseq`, which is 0 until
the first message arrives. A room that had no new event since the
replica subscribed would restart from sequence 1 and re-read its whole
history (the subscription drops what it has seen, so this costs time and
NATS traffic, never correctness: no duplicate, no gap).

nats-py (up to 2.16.0, the newest release) has no public option for that
restart point, and no public hook on restart to subscribe again ourselves;
the public alternatives cost more than they save: a plain push consumer
with flow control gets its flow-control replies sent only by the ordered
consumer's task (otherwise at the next heartbeat, stalling delivery), and
pull fetches add a round trip per batch of events to every room's feed. So this module seeds the field, and only this one:

- `self_test()` runs when a JetStreamBroker starts (`broker.seed_ordered_restart`
  true, the default): it checks that this nats-py still keeps the restart
  point in `_JSI._sseq` (an int on a fresh instance) and that the three
  restart paths (missed heartbeats, heartbeat sequence mismatch, a gap
  seen in `_process_msg`) still read it. If not, it says why and the
  broker runs the public path: no seeding, restarts re-read the room.
- `seed(psub, seq)` sets the restart point of one subscription to at least SEQ.
- `broker.seed_ordered_restart: false` turns it off with the same public fallback.

tests/broker/test_ordered_restart.py forces consumer restarts (the
consumer deleted on the server, for real) many times over several rooms
with the seed on and off: exactly once and in order either way, and no
re-read with the seed on.
"""

from __future__ import annotations

from typing import Any

__all__ = ["seed", "self_test"]

_FIELD = "_sseq"


def self_test() -> str | None:
    """None when this nats-py keeps the ordered consumer's restart point where `seed` writes it; else why not."""
    try:
        from nats.aio.client import Client
        from nats.js import api
        from nats.js.client import JetStreamContext
    except ImportError as exc:  # pragma: no cover - nats-py is a dependency
        return f"nats-py cannot be imported ({exc})"
    jsi_class = getattr(JetStreamContext, "_JSI", None)
    if jsi_class is None:
        return "nats-py has no JetStreamContext._JSI (the ordered consumer's state moved)"
    try:
        fresh = jsi_class(js=None, conn=None, stream="", ordered=True, psub=None, sub=None, ccreq=api.ConsumerConfig())
    except TypeError as exc:
        return f"nats-py's JetStreamContext._JSI takes other arguments now ({exc})"
    if not isinstance(getattr(fresh, _FIELD, None), int):
        return f"nats-py's ordered consumer keeps no integer {_FIELD} (its restart point moved)"
    restart_paths = {
        "JetStreamContext._JSI.activity_check": getattr(jsi_class, "activity_check", None),  # missed heartbeats
        "JetStreamContext._JSI.check_for_sequence_mismatch": getattr(jsi_class, "check_for_sequence_mismatch", None),
        "Client._process_msg": getattr(Client, "_process_msg", None),  # a gap in consumer sequences
    }
    for name, where in restart_paths.items():
        code = getattr(where, "__code__", None)
        if code is None or _FIELD not in code.co_names:
            return f"nats-py's {name} no longer restarts from {_FIELD}"
    return None


def seed(psub: Any, seq: int) -> bool:
    """Make PSUB's ordered consumer restart after SEQ at the earliest; False when this subscription has no such field."""
    jsi = getattr(getattr(psub, "_sub", None), "_jsi", None)
    if jsi is None or not isinstance(getattr(jsi, _FIELD, None), int):
        return False
    setattr(jsi, _FIELD, max(getattr(jsi, _FIELD), seq))
    return True
