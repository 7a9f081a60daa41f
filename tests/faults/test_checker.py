"""The checker itself: each rule flags its breach in a hand-written log, beside the clean log that passes."""

from __future__ import annotations

from typing import Any

import pytest
from fault_checker import JOIN, LEAVE, MESSAGE, ClientRecord, check

Entry = tuple[Any, ...]


def recv(room: str, event_id: int, kind: int, sender: str, text: str = "") -> Entry:
    return ("recv", 0.0, room, event_id, kind, sender, text)


def sent(room: str, text: str) -> Entry:
    return ("sent", 0.0, room, text)


def clean() -> dict[str, list[Entry]]:
    """alice and bob in room r: both join, alice posts a#1, bob posts b#1."""
    alice = [recv("r", 1, JOIN, "alice"), recv("r", 2, JOIN, "bob"), sent("r", "a#1"), recv("r", 3, MESSAGE, "alice", "a#1"), recv("r", 4, MESSAGE, "bob", "b#1")]
    bob = [recv("r", 2, JOIN, "bob"), recv("r", 3, MESSAGE, "alice", "a#1"), sent("r", "b#1"), recv("r", 4, MESSAGE, "bob", "b#1")]
    return {"alice": alice, "bob": bob}


def records(logs: dict[str, list[Entry]], unacked: dict[str, list[tuple[str, str]]] | None = None) -> list[ClientRecord]:
    unacked = unacked or {}
    return [ClientRecord(name, ("r",), tuple(log), tuple(unacked.get(name, ()))) for name, log in logs.items()]


def test_clean_log_passes() -> None:
    """Every send echoed, every member has every event after its JOIN, once, in order."""
    report = check(records(clean()))
    assert report.ok, report.violations
    assert (report.sent, report.acknowledged, report.delivered) == (2, 2, 4)


def test_a_silent_loss_is_flagged() -> None:
    """bob misses a#1 with no gap reported: a loss and an unreported gap."""
    logs = clean()
    logs["bob"] = [e for e in logs["bob"] if not (e[0] == "recv" and e[3] == 3)]
    report = check(records(logs))
    assert (report.losses, report.lost_messages, report.unreported_gaps) == (1, 1, 1)
    assert any("bob in room r: never received id 3" in v for v in report.violations)


def test_a_loss_at_the_tail_is_flagged() -> None:
    """bob stops receiving before the last event and is not told."""
    logs = clean()
    logs["bob"] = logs["bob"][:-1]
    report = check(records(logs))
    assert report.losses == 1 and not report.ok


def test_a_reported_gap_excuses_the_events_inside_it() -> None:
    """The same miss, but bob's session reported OUT_OF_RANGE between: told, not lost."""
    logs = clean()
    logs["bob"] = [recv("r", 2, JOIN, "bob"), ("gap", 0.0, "OUT_OF_RANGE"), sent("r", "b#1"), recv("r", 4, MESSAGE, "bob", "b#1")]
    report = check(records(logs))
    assert report.ok, report.violations
    assert (report.reported_gaps, report.reported_gap_events, report.losses) == (1, 1, 0)


def test_a_gap_reported_elsewhere_does_not_excuse() -> None:
    """A gap reported after the missing event's neighbours is not a report of that gap."""
    logs = clean()
    logs["bob"] = [recv("r", 2, JOIN, "bob"), sent("r", "b#1"), recv("r", 4, MESSAGE, "bob", "b#1"), ("gap", 0.0, "later")]
    report = check(records(logs))
    assert report.losses == 1 and not report.ok


def test_a_send_accepted_twice_is_a_duplicate() -> None:
    """a#1 under two ids (the resend was accepted again): a duplicate, received twice by both."""
    logs = clean()
    for name in ("alice", "bob"):
        logs[name].append(recv("r", 5, MESSAGE, "alice", "a#1"))
    report = check(records(logs))
    assert (report.duplicates, report.duplicate_deliveries) == (1, 2)
    assert any("'a#1' accepted 2 times (ids [3, 5])" in v for v in report.violations)


@pytest.mark.parametrize("told_everywhere, allowed", [(True, True), (False, False)])
def test_a_duplicate_across_a_reported_crash_is_told_only_in_single_mode(told_everywhere: bool, allowed: bool) -> None:
    """Single server killed: a repeat is 'told' only when every member that got both copies was told of a gap between."""
    logs = clean()
    for name in ("alice", "bob"):
        if told_everywhere or name == "alice":
            logs[name].append(("gap", 0.0, "OUT_OF_RANGE"))
        logs[name].append(recv("r", 5, MESSAGE, "alice", "a#1"))
    single = check(records(logs), told_duplicates=True)
    assert single.ok is allowed, single.violations
    assert single.told_duplicates == (1 if allowed else 0)
    assert not check(records(logs)).ok  # replicas never get this excuse


def test_one_id_received_twice_is_flagged() -> None:
    """The client's own de-duplication failing shows as the same id twice, out of order."""
    logs = clean()
    logs["bob"].append(recv("r", 3, MESSAGE, "alice", "a#1"))
    report = check(records(logs))
    assert report.duplicate_deliveries == 1 and report.order_breaks == 1


def test_a_phantom_is_flagged() -> None:
    """A message nobody sent (or sent by someone else, or to another room)."""
    logs = clean()
    logs["alice"].append(recv("r", 5, MESSAGE, "bob", "a#1"))
    logs["bob"].append(recv("r", 5, MESSAGE, "bob", "a#1"))
    report = check(records(logs))
    assert report.phantoms == 2


def test_members_disagreeing_on_an_id_is_an_order_break() -> None:
    """Id 4 means b#1 to alice and something else to bob."""
    logs = clean()
    logs["bob"][-1] = recv("r", 4, LEAVE, "carol")
    report = check(records(logs))
    assert report.order_breaks >= 1 and not report.ok


def test_an_unacknowledged_send_must_be_reported() -> None:
    """b#2 never echoed: fine when the session reports it unacknowledged, a breach when it does not."""
    logs = clean()
    logs["bob"].append(sent("r", "b#2"))
    assert check(records(logs, {"bob": [("r", "b#2")]})).ok
    report = check(records(logs))
    assert any("'b#2' was never acknowledged" in v for v in report.violations)


def test_a_member_that_never_joined_is_flagged() -> None:
    """No JOIN of its own in a room it is in: the checker cannot vouch for it."""
    logs = clean()
    logs["bob"] = logs["bob"][1:]
    report = check(records(logs))
    assert any("bob never received its own JOIN" in v for v in report.violations)


def test_outside_senders_are_not_phantoms() -> None:
    """The soak's churners send without a checker log: their messages are events to deliver, not phantoms."""
    logs = clean()
    for name in ("alice", "bob"):
        logs[name].append(recv("r", 5, MESSAGE, "carol", "carol churn 1"))
    assert not check(records(logs)).ok
    assert check(records(logs), outside_senders=frozenset({"carol"})).ok
