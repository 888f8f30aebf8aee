"""The back-out of a recorded run: which reviewed rollback scripts to send, with which values.

`psbridge rollback` undoes what one run changed, in reverse step order, with the package's
own rollback scripts (rendered, hashed and approved like every step). A run record is
evidence, not an approval, and anyone who can write `runs/` could forge one: it is taken
only when the audit log holds its sha256 (the `run` line that ended it), and every value
taken from it is checked like a parameter before it becomes a PowerShell parameter (each
step's unit computes its script's values: `Backout.values`, in generator/steps/).
Pure logic over bytes already read; the session that sends the scripts is in remote.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalogue import backouts_for
from .errors import UserError
from .files import read_regular, sha256_hex
from .package import Package, PackageStep
from .run_record import RunEvent, RunStart, StateEvent, StepEnd, read_events
from .steps import RollbackContext

MAX_RECORD_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class RollbackStep:
    """One back-out script to send: the change step it undoes, its text, and its parameters."""

    step: PackageStep
    file: str
    text: str
    parameters: dict[str, Any]


@dataclass
class RollbackPlan:
    """What `psbridge rollback` will do for one recorded run."""

    record: str
    record_sha256: str
    scripted: list[RollbackStep] = field(default_factory=list)  # in the order they run (reverse step order)
    manual: list[tuple[PackageStep, str]] = field(default_factory=list)
    nothing: list[tuple[PackageStep, str]] = field(default_factory=list)  # ran, but nothing to undo / can't tell


@dataclass(frozen=True)
class Vouching:
    """Which audit lines may vouch for a run record, and what the log must show about the package.

    `lines` are the entries believed (up to the expected head when one was given); `head` is
    that head, named in refusals; `origin_required` asks the log to hold a render or approve
    line for the package's digest (a log named on the command line must be the package's own
    log, not a fresh file holding one forged `run` line); `log` names it in messages.
    """

    lines: list[dict[str, Any]]
    log: str
    head: str | None = None
    origin_required: bool = False


def read_record(path: Path, package: Package, vouching: Vouching) -> tuple[list[RunEvent], str]:
    """The run record's events (read through the record's one schema), once its sha256 is found in the
    audit log for this package's digest (in the lines `vouching` lets us believe)."""
    lines = vouching.lines
    if vouching.origin_required and not any(line.get("action") in ("render", "approve")
                                            and line.get("digest") == package.digest for line in lines):
        raise UserError(f"{vouching.log}: no render or approve line for this package's digest "
                        f"{package.digest[:16]}…: not this package's audit log; refusing to believe it")
    data = read_regular(path, str(path), limit=MAX_RECORD_BYTES, too_large="larger than any run record",
                        follow_symlinks=False)
    digest = sha256_hex(data)
    vouched = any(line.get("action") == "run" and line.get("digest") == package.digest
                  and (line.get("details") or {}).get("record_sha256") == digest for line in lines)
    if not vouched:
        upto = f" up to head {vouching.head[:16]}…" if vouching.head else ""
        raise UserError(f"{path}: its sha256 {digest[:16]}… is in no `run` line of the audit log{upto} for this "
                        "package: a run record is only believed when the audit log vouches for it")
    events = read_events(data, f"{path}: not a run record")
    if not events or not isinstance(events[0], RunStart):
        raise UserError(f"{path}: not a run record")
    if events[0].package_digest != package.digest:
        raise UserError(f"{path}: a run of another package digest")
    return events, digest


def plan_rollback(package: Package, events: list[RunEvent], record: str, record_sha256: str) -> RollbackPlan:
    """The back-out of every state-changing step that ran OK on the main server, last step first; and the
    manual procedure of one that ran OK on an additional server only (step additional-servers), which
    `rollback --last` may pick for it."""
    plan = RollbackPlan(record, record_sha256)
    ran = {e.id for e in events if isinstance(e, StepEnd) and e.state == "ok" and not e.host}
    backouts = {b.step_id: b for b in backouts_for(package.parameters)}  # a renewal's spn is manual
    ran |= {e.id for e in events if isinstance(e, StepEnd) and e.state == "ok" and e.host
            and e.id in backouts and backouts[e.id].script is None}
    states = {(e.id, e.when): e.readings for e in events if isinstance(e, StateEvent) and not e.host}
    for step in reversed([s for s in package.steps if s.changes_state and s.id in ran]):
        backout = backouts[step.id]
        if backout.script is None:
            plan.manual.append((step, backout.manual))
            continue
        before, after = states.get((step.id, "before")), states.get((step.id, "after"))
        if not before or not after:
            plan.nothing.append((step, "the state around it is not in the record: cannot tell what it changed"))
            continue
        if backout.values is None:
            raise UserError(f"no scripted back-out for step {step.id}")
        context = RollbackContext(package, before, after, record)
        found = backout.values(context)
        # What the script leaves alone (a value that was absent before the step: no script can write
        # "absent") is printed as a by-hand note, next to the script that restores the rest.
        notes = backout.notes(context) if backout.notes is not None and found is not None else []
        plan.manual += [(step, note) for note in notes]
        if found is None:
            plan.nothing.append((step, "its probes did not answer around it: cannot tell what it changed"))
        elif not found[1]:
            if not notes:
                plan.nothing.append((step, "it changed nothing (the state after it is the state before it)"))
        else:
            plan.scripted.append(RollbackStep(step, backout.script, package.rollback_scripts[step.id], found[0]))
    return plan
