"""The package's run history: every record in PACKAGE/runs/, what it did, and what backed it out.

`psbridge runs` lists it; `psbridge rollback --last` picks from it the last run the audit log
vouches for and that changed something, and both `rollback` forms refuse a run that a later,
successful, vouched-for rollback already backed out. Records are read only through the run
record's one schema (run_record.read_events); a record that cannot be read is listed with its
problem rather than hiding the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import UserError
from .files import read_regular, sha256_hex
from .package import Package
from .run_record import RunEnd, RunStart, StepEnd, read_events

MAX_RECORD_BYTES = 16 * 1024 * 1024


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
    changing = {s.id for s in package.steps if s.changes_state}
    changed = start.rollback_of is None and any(
        isinstance(e, StepEnd) and e.state == "ok" and not e.host and e.id in changing for e in events)
    return RunEntry(path, digest, start.started, end.exit_code if end else None, end.reason if end else "",
                    start.rollback_of, start.rollback_of_sha256, changed, _vouched(lines, package.digest, digest))


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


def backed_out(entries: list[RunEntry], sha256: str) -> RunEntry | None:
    """The run of `sha256` when a later rollback already backed it out, else None."""
    return next((e for e in entries if e.sha256 == sha256 and e.backed_out_by is not None), None)
