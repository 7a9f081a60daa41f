"""The checker: what every client logged, held against securechat's delivery promise.

Input: one `ClientRecord` per client (see fault_clients.py for the log format).
Each message text is unique in a run, so a text names one send everywhere.

What is asserted (each breach is a line in `Report.violations`):

1. Nothing received that was never sent: every MESSAGE event's text was
   sent by its `sender`, to that room.
2. One order per room: an id means the same event for every member, and
   every member receives a room's ids in increasing order. Ids are the
   room's order, so equal content per id and increasing ids per member
   mean every member saw the same order.
3. Nothing twice: one send has one id (a repeat under a new id is a
   duplicate acceptance); no member receives one send twice.
4. Nothing lost silently: a client is in a room from its own first JOIN
   there; every event of the room after that (any member saw it) reaches
   it, unless the client was told of a gap between the events it got
   before and after (OUT_OF_RANGE, reported by the session as a gap).
   Every client stays until the end of a run, so the tail counts too.
5. Unacknowledged sends are either delivered once or reported by the
   session as not acknowledged when it closes.

`told_duplicates=True` (the single in-memory server, which forgets what it
accepted when it is killed) counts a duplicate as told instead of a breach
when every member that received both copies was told of a gap between them.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

MESSAGE, JOIN, LEAVE = 1, 2, 3
Entry = tuple[Any, ...]


@dataclass(frozen=True)
class ClientRecord:
    name: str
    rooms: tuple[str, ...]
    log: tuple[Entry, ...]
    unacknowledged: tuple[tuple[str, str], ...] = ()


@dataclass
class Report:
    clients: int = 0
    sent: int = 0
    acknowledged: int = 0
    delivered: int = 0  # MESSAGE events received, summed over clients
    duplicates: int = 0  # sends accepted under more than one id (breaches)
    duplicate_deliveries: int = 0  # a client received one send twice (breaches)
    told_duplicates: int = 0  # single server: repeats across a crash the members were told of
    losses: int = 0  # events a client should have received and did not, with no gap reported
    unreported_gaps: int = 0  # runs of such events: each is one silent gap in one client's room
    lost_messages: int = 0  # of those, MESSAGE events
    reported_gaps: int = 0  # gaps the clients were told of (OUT_OF_RANGE)
    reported_gap_events: int = 0  # events inside those gaps
    unacknowledged_reported: int = 0  # sends without an echo that the session reported as such
    phantoms: int = 0
    order_breaks: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        data = {key: value for key, value in self.__dict__.items() if key != "violations"}
        data["violations"] = self.violations[:50]
        data["violation_count"] = len(self.violations)
        return data


def check(records: list[ClientRecord], *, told_duplicates: bool = False, outside_senders: frozenset[str] = frozenset()) -> Report:
    """Check every rule; OUTSIDE_SENDERS are identities whose sends were not logged (the soak's churners)."""
    report = Report(clients=len(records))
    sent: dict[str, tuple[str, str]] = {}  # text -> (sender, room)
    content: dict[tuple[str, int], tuple[int, str, str]] = {}  # (room, id) -> (kind, sender, text)
    ids_of_text: dict[tuple[str, str], set[int]] = defaultdict(set)  # (room, text) -> ids
    room_ids: dict[str, set[int]] = defaultdict(set)

    for record in records:
        for entry in record.log:
            if entry[0] == "sent":
                sent[entry[3]] = (record.name, entry[2])
                report.sent += 1
    for record in records:
        for entry in record.log:
            if entry[0] != "recv":
                continue
            _, _, room, event_id, kind, sender, text = entry
            key = (room, event_id)
            seen = content.setdefault(key, (kind, sender, text))
            if seen != (kind, sender, text):
                report.order_breaks += 1
                report.violations.append(f"room {room} id {event_id}: {record.name} got {(kind, sender, text)}, another member got {seen}")
            room_ids[room].add(event_id)
            if kind == MESSAGE:
                report.delivered += 1
                ids_of_text[(room, text)].add(event_id)
                origin = sent.get(text)
                if sender not in outside_senders and (origin is None or origin != (sender, room)):
                    report.phantoms += 1
                    report.violations.append(f"room {room} id {event_id}: {record.name} received {text!r} from {sender}, which {sender} never sent to {room}")

    # -- per client: order, duplicates, losses ----------------------------------------------
    sorted_room_ids = {room: sorted(ids) for room, ids in room_ids.items()}
    duplicate_pairs: dict[tuple[str, str], list[tuple[str, bool]]] = defaultdict(list)  # (room, text) -> [(client, told)]
    for record in records:
        acked = {entry[6] for entry in record.log if entry[0] == "recv" and entry[4] == MESSAGE and entry[5] == record.name}
        report.acknowledged += len(acked & {text for text, (sender, _) in sent.items() if sender == record.name})
        gaps = [index for index, entry in enumerate(record.log) if entry[0] == "gap"]
        report.reported_gaps += len(gaps)
        told_end = any(entry[0] == "ended" for entry in record.log)
        per_room: dict[str, list[tuple[int, int]]] = defaultdict(list)  # room -> [(log index, id)]
        for index, entry in enumerate(record.log):
            if entry[0] == "recv":
                per_room[entry[2]].append((index, entry[3]))
        for room in record.rooms:
            received = per_room.get(room, [])
            ids = [event_id for _, event_id in received]
            for (_, a), (_, b) in zip(received, received[1:], strict=False):
                if b <= a:
                    report.order_breaks += 1
                    report.violations.append(f"{record.name} in room {room}: id {b} after {a}")
            texts: dict[str, list[int]] = defaultdict(list)
            for index, event_id in received:
                kind, _, text = content[(room, event_id)]
                if kind == MESSAGE:
                    texts[text].append(index)
            for text, positions in texts.items():
                if len(positions) > 1:
                    told = all(_gap_between(gaps, a, b) for a, b in zip(positions, positions[1:], strict=False))
                    duplicate_pairs[(room, text)].append((record.name, told))
            start = next((event_id for index, event_id in received if _is_own_join(content[(room, event_id)], record.name)), None)
            if start is None:
                report.violations.append(f"{record.name} never received its own JOIN in room {room} ({len(received)} events there)")
                continue
            got = set(ids)
            last_gap_position = -1
            for event_id in sorted_room_ids.get(room, []):
                if event_id <= start or event_id in got:
                    continue
                # Between which two received events does it fall, and was a gap reported there?
                position = bisect.bisect_left(ids, event_id)
                before = received[position - 1][0] if position > 0 else -1
                after = received[position][0] if position < len(received) else len(record.log)
                if _gap_between(gaps, before, after) or (position == len(received) and told_end):
                    report.reported_gap_events += 1
                    continue
                report.losses += 1
                if position != last_gap_position:
                    report.unreported_gaps += 1
                    last_gap_position = position
                kind, sender, text = content[(room, event_id)]
                if kind == MESSAGE:
                    report.lost_messages += 1
                if report.losses <= 20:
                    report.violations.append(
                        f"{record.name} in room {room}: never received id {event_id} ({_kind_name(kind)} {sender} {text!r}) and was told of no gap"
                    )

    for (room, text), ids in ids_of_text.items():
        if len(ids) > 1:
            members = duplicate_pairs.get((room, text), [])
            if told_duplicates and members and all(told for _, told in members):
                report.told_duplicates += 1
                continue
            report.duplicates += 1
            report.duplicate_deliveries += len(members)
            report.violations.append(f"room {room}: {text!r} accepted {len(ids)} times (ids {sorted(ids)}); received twice by {[name for name, _ in members]}")
    for (room, text), members in duplicate_pairs.items():
        if len(ids_of_text[(room, text)]) == 1:  # one id, received twice: the client's de-duplication failed
            report.duplicate_deliveries += len(members)
            report.violations.append(f"room {room}: {text!r} (one id) received twice by {[name for name, _ in members]}")

    # -- unacknowledged sends ---------------------------------------------------------------
    for record in records:
        acked = {entry[6] for entry in record.log if entry[0] == "recv" and entry[4] == MESSAGE and entry[5] == record.name}
        reported = {text for _, text in record.unacknowledged}
        for entry in record.log:
            if entry[0] != "sent" or entry[3] in acked:
                continue
            text = entry[3]
            if text in reported:
                report.unacknowledged_reported += 1
            elif len(ids_of_text.get((entry[2], text), ())) != 1:
                report.violations.append(f"{record.name}: {text!r} was never acknowledged, not delivered, and not reported as unacknowledged")
        for text in reported & acked:
            report.violations.append(f"{record.name}: {text!r} was acknowledged but the session still reports it unacknowledged")
    return report


def _gap_between(gaps: list[int], before: int, after: int) -> bool:
    """A gap entry in the log strictly between log positions `before` and `after`."""
    position = bisect.bisect_right(gaps, before)
    return position < len(gaps) and gaps[position] < after


def _is_own_join(event: tuple[int, str, str], name: str) -> bool:
    return event[0] == JOIN and event[1] == name


def _kind_name(kind: int) -> str:
    return {MESSAGE: "MESSAGE", JOIN: "JOIN", LEAVE: "LEAVE"}.get(kind, str(kind))
