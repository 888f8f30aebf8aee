"""The package's run history: every record in PACKAGE/runs/, what it did, and what backed it out.

`psbridge runs` lists it; `psbridge rollback --last` picks from it the last run the audit log
vouches for and that changed something (a re-run that read the same state before and after each of
its changing steps did not), and both `rollback` forms refuse a run that a later, successful,
vouched-for rollback already backed out. Records are read only through the run
record's one schema (run_record.read_events); a record that cannot be read is listed with its
problem rather than hiding the others.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from .errors import UserError
from .files import read_regular, sha256_hex
from .package import Package
from .run_record import RunEnd, RunEvent, RunStart, StateEvent, StepEnd, StepStart, read_events
from .steps import unit

MAX_RECORD_BYTES = 16 * 1024 * 1024

#: What the run's redactor writes in place of a secret (remote/redact.py): two readings that differed only
#: in a secret read the same once redacted, so a reading holding one cannot show that nothing changed.
REDACTION_MARKS = ("[redacted]", "[line withheld", "<hidden>", "<line withheld>", "#####")

#: What a run did to the servers, as far as its record tells: "changed" (a state-changing step ended ok and
#: its readings do not show that it left the state as it was), "nothing" (every state-changing step sent
#: ended ok and read the same state before and after it), "unsure" (neither: no state-changing step ended
#: ok, or none that did changed anything while another failed or ended unknown).
Change = Literal["changed", "nothing", "unsure"]


@dataclass(frozen=True)
class RunEntry:
    """One run record as the operator needs it: when, how it ended, what it was, and whether it changed
    something; `backed_out_by` is the later successful rollback that names it (by its sha256)."""

    path: Path
    sha256: str
    started: str
    exit_code: int | None
    reason: str
    rollback_of: str | None
    rollback_of_sha256: str | None
    changed: bool
    vouched: bool
    problem: str | None = None
    backed_out_by: Path | None = None
    #: True: state-changing steps ended ok and each read the same state before and after it.
    no_change: bool = False

    @property
    def is_rollback(self) -> bool:
        return self.rollback_of_sha256 is not None or self.rollback_of is not None

    @property
    def outcome(self) -> str:
        """The run-end's outcome in words: ok, or the reason and exit code; no run-end when it has none."""
        if self.problem is not None:
            return "unreadable"
        if self.exit_code is None:
            return "no run-end"
        return "ok" if self.exit_code == 0 else f"{self.reason or 'failed'} (exit {self.exit_code})"


def _vouched(lines: Iterable[Mapping[str, Any]], digest: str, sha256: str) -> bool:
    """Whether a `run` or `rollback` end line of the audit log for this package names the record's sha256."""
    return any(line.get("action") in ("run", "rollback") and line.get("digest") == digest
               and (line.get("details") or {}).get("record_sha256") == sha256 for line in lines)


def _entry(path: Path, package: Package, lines: Sequence[Mapping[str, Any]]) -> RunEntry:
    """One record read through the schema; a record that is not one is an entry with its problem."""
    try:
        data = read_regular(path, str(path), limit=MAX_RECORD_BYTES, too_large="larger than any run record",
                            follow_symlinks=False)
        events = read_events(data, str(path))
    except UserError as exc:
        return RunEntry(path, "", "", None, "", None, None, False, False, problem="; ".join(exc.problems))
    digest = sha256_hex(data)
    start = events[0] if events and isinstance(events[0], RunStart) else None
    if start is None or start.package_digest != package.digest:
        problem = "not a run record" if start is None else "a run of another package digest"
        return RunEntry(path, digest, start.started if start else "", None, "", None, None, False, False, problem)
    end = next((e for e in reversed(events) if isinstance(e, RunEnd)), None)
    change = "unsure" if start.rollback_of is not None else what_changed(package, events)
    return RunEntry(path, digest, start.started, end.exit_code if end else None, end.reason if end else "",
                    start.rollback_of, start.rollback_of_sha256, change == "changed",
                    _vouched(lines, package.digest, digest), no_change=change == "nothing")


def what_changed(package: Package, events: Sequence[RunEvent]) -> Change:
    """Whether the run changed something, judged from its record.

    Every state-changing step that ended ok counts as a change unless its readings prove otherwise:
    a false "changed" only makes `rollback --last` show a run whose back-out has nothing to undo, but a
    false "changed nothing" would hide a live change from it. A step on an additional server always
    counts (its capture, the certificate, does not see the MSAL files the app trust's step writes there).
    """
    changing = {s.id for s in package.steps if s.changes_state}
    ended = [e for e in events if isinstance(e, StepEnd) and e.id in changing and e.state != "skipped"]
    # A step sent but never ended (the process was killed while it ran) may have changed anything.
    unended = {(e.id, e.host) for e in events if isinstance(e, StepStart) and e.id in changing} - {
        (e.id, e.host) for e in ended}
    states = Counter((e.id, e.host, e.when) for e in events if isinstance(e, StateEvent))
    readings = {(e.id, e.host, e.when): e for e in events if isinstance(e, StateEvent)}
    for end in (e for e in ended if e.state == "ok"):
        key = (end.id, end.host)
        if end.host or any(states[(*key, when)] != 1 for when in ("before", "after")):
            return "changed"
        if not _same_state(end.id, readings[(*key, "before")], readings[(*key, "after")]):
            return "changed"
    return "nothing" if ended and not unended and all(e.state == "ok" for e in ended) else "unsure"


def _same_state(step_id: str, before: StateEvent, after: StateEvent) -> bool:
    """Whether two readings show the same state: each of the step's captures answered both times (no null,
    no note), nothing in them was redacted, and they are equal as recorded. Anything less cannot show that
    nothing changed."""
    found = unit(step_id)
    captures = set(found.backout.captures) if found is not None and found.backout is not None else set()
    if before.notes or after.notes or not captures or not before.readings.keys() == after.readings.keys() == captures:
        return False
    if any(not isinstance(r, dict) for r in (*before.readings.values(), *after.readings.values())):
        return False
    if _holds_redaction(before.readings) or _holds_redaction(after.readings):
        return False
    return before.readings == after.readings


def _holds_redaction(value: Any) -> bool:
    """Whether any text in the reading (keys too) carries a redaction marker."""
    if isinstance(value, str):
        return any(mark in value for mark in REDACTION_MARKS)
    if isinstance(value, dict):
        return any(_holds_redaction(k) or _holds_redaction(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_redaction(v) for v in value)
    return False


def history(package: Package, lines: Sequence[Mapping[str, Any]]) -> list[RunEntry]:
    """The package's run records, oldest first, each with the later rollback that backed it out (if any).

    `lines` are the audit log entries believed: a rollback backs a run out only when it ended ok
    and the log vouches for its own record, so a forged rollback record hides no run.
    """
    folder = (package.path or Path(".")) / "runs"
    paths = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    entries = sorted((_entry(p, package, lines) for p in paths), key=lambda e: (e.started, e.path.name))
    done = {e.rollback_of_sha256: e.path for e in entries if e.is_rollback and e.exit_code == 0 and e.vouched}
    return [_with_backout(e, done.get(e.sha256)) for e in entries]


def _with_backout(entry: RunEntry, by: Path | None) -> RunEntry:
    """The entry with the rollback that backed it out (never for a rollback itself)."""
    if by is None or entry.is_rollback:
        return entry
    return replace(entry, backed_out_by=by)


def last_change(entries: list[RunEntry]) -> RunEntry:
    """The last run (not a rollback) the audit log vouches for that changed something; UserError when none."""
    for entry in reversed(entries):
        if not entry.is_rollback and entry.vouched and entry.changed:
            return entry
    raise UserError("rollback --last: no run of this package that the audit log vouches for changed anything; "
                    "nothing to roll back (see: psbridge runs PACKAGE_DIR)")


def skipped_after(entries: list[RunEntry], picked: RunEntry) -> str | None:
    """The runs (not rollbacks) after `picked` that --last passed over, in words, so the operator who
    expected the newest run learns why another was chosen; None when there are none."""
    later = [e for e in entries[entries.index(picked) + 1:] if not e.is_rollback]
    groups: dict[str, list[str]] = {}
    for entry in later:
        groups.setdefault(_why_skipped(entry), []).append(entry.path.name)
    if not later:
        return None
    parts = [f"that {why} ({', '.join(names)})" for why, names in groups.items()]
    if len(parts) == 1:
        return f"skipped {len(later)} later run{'s' if len(later) > 1 else ''} {parts[0]}"
    counted = [f"{len(names)} {part}" for names, part in zip(groups.values(), parts)]
    return f"skipped {len(later)} later runs: " + "; ".join(counted)


def _why_skipped(entry: RunEntry) -> str:
    """Why --last passed over a later run (no rollback, not the one picked), to follow "that"."""
    if entry.problem is not None:
        return "cannot be read"
    if not entry.vouched:
        return "the audit log does not vouch for"
    if entry.no_change:
        return "changed nothing"
    return "recorded no change to undo"


def backed_out(entries: list[RunEntry], sha256: str) -> RunEntry | None:
    """The run of `sha256` when a later rollback already backed it out, else None."""
    return next((e for e in entries if e.sha256 == sha256 and e.backed_out_by is not None), None)
