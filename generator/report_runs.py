"""The report's runs: each run record of PKG/runs/ read through the run record's one schema, as a timeline.

Split from report.py (which keeps the page): a run record is outside text, so every value is
checked before the timeline's arithmetic touches it. Infinity, NaN or 1e300 seconds, a date in
year 1 or 9999 and a step number of thirty digits are shown as the record's problems, never
placed on the time axis (where they would overflow) and never a traceback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .errors import UserError
from .files import read_regular
from .run_record import parse_event
from .text import clip

#: Evidence files are small (a run record is a few hundred KiB at most); bounds against a hostile folder.
MAX_EVIDENCE_BYTES = 16 * 1024 * 1024
#: A step's seconds beyond this (a year) are not a duration the timeline can place; years it places.
MAX_STEP_SECONDS = 366 * 24 * 3600.0
EARLIEST, LATEST = 1970, 9000
#: Step numbers are two digits; anything else in a record or plan.json is shown as text.
MAX_STEP_INDEX = 999
#: Lines of server text shown per stream and step; the run record has all of them.
MAX_LINES = 200

def read_evidence(path: Path, limit: int = MAX_EVIDENCE_BYTES) -> tuple[bytes | None, str | None]:
    """An evidence file's bytes, or why not (files.read_regular: never follows a link, never blocks on a FIFO).

    A report shows what it could not read instead of stopping, so the error becomes the reason.
    """
    try:
        return read_regular(path, path.name, limit=limit, too_large="more than a report reads",
                            follow_symlinks=False), None
    except UserError as exc:
        return None, "; ".join(exc.problems)


def as_text(value: Any) -> str:
    """Any JSON value as text ("" for None)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _lines(value: Any, limit: int = MAX_LINES) -> tuple[list[str], int]:
    """A list of strings (or one multi-line string) as lines, at most `limit`, and how many were left out."""
    items = value if isinstance(value, list) else [value] if value else []
    lines = [line for item in items for line in as_text(item).split("\n")]
    return lines[:limit], max(0, len(lines) - limit)


def _time(value: Any) -> datetime | None:
    """An aware time the timeline can place, or None: a date outside EARLIEST..LATEST (year 1, year 9999)
    would overflow the timeline's arithmetic, so it is shown as text but not placed."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            return None
        utc = moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None
    return moment if EARLIEST <= utc.year <= LATEST else None


def _duration(value: Any) -> float | None:
    """A step's recorded seconds, when it is a finite number a step can take (0 to MAX_STEP_SECONDS); else None.

    The record is outside text: Infinity, NaN or 1e300 would overflow the timeline's arithmetic.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) and 0.0 <= seconds <= MAX_STEP_SECONDS else None


def step_number(value: Any) -> Any:
    """A step number as the template shows it: an int of a step number's size, else its text (never Infinity)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_STEP_INDEX:
        return value
    return as_text(value)


@dataclass
class RunStepView:
    index: Any
    id: str
    title: str
    host: str
    state: str
    started: str
    ended: str
    seconds: float | None
    offset_pct: float = 0.0
    width_pct: float = 0.0
    detail: str = ""
    errors: list[str] = field(default_factory=list)  # one text per error record
    streams: list[tuple[str, list[str], int]] = field(default_factory=list)
    #: What the probes read right before and right after the step, as `what: before → after` lines.
    readings: list[str] = field(default_factory=list)
    #: A rollback's back-out script: the step of the package it undoes.
    for_step: str = ""


@dataclass
class RunView:
    file: str
    started: str = ""
    ended: str = ""
    host: str = ""
    connection: str = ""
    user: str = ""
    tool_version: str = ""
    digest: str = ""
    steps_selected: str = ""
    from_step: str = ""
    outcome: str = "no end recorded"
    exit_code: str = ""
    reason: str = ""
    summary: list[str] = field(default_factory=list)
    approvals: list[dict[str, str]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # lock, force-unlock, quit, notes
    steps: list[RunStepView] = field(default_factory=list)
    verify: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    seconds: float | None = None
    #: A rollback's run: the record it backs out ("" for a run).
    rollback_of: str = ""
    #: A run a later successful rollback backed out (the audit log vouching for it): that rollback's record and end.
    backed_out_by: str = ""
    backed_out_at: str = ""
    #: Whether an audit `run` line holds this record's sha256 (None: not judged, the record was not read).
    vouched: bool | None = None

    @property
    def kind(self) -> str:
        """"rollback" or "run": how the report labels the record."""
        return "rollback" if self.rollback_of else "run"


def read_run(path: Path, digest: str) -> RunView:
    """One run record as a timeline: every event, each step's outcome and duration."""
    run = RunView(file=f"runs/{path.name}")
    data, problem = read_evidence(path)
    if data is None:
        run.problems.append(problem or "unreadable")
        run.outcome = "unreadable"
        return run
    open_steps: dict[tuple[Any, str], dict[str, Any]] = {}
    states: dict[tuple[Any, str], dict[str, Any]] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            run.problems.append(f"line {number}: not a JSON event")
            continue
        if not isinstance(event, dict):
            run.problems.append(f"line {number}: not a JSON object")
            continue
        try:  # the run record's one schema (run_record): what is shown is what validated
            event = parse_event(event).data()
        except ValueError as exc:
            run.problems.append(clip(f"line {number}: not a run event ({exc})", 200))
            continue
        kind = event.get("event")
        host = as_text(event.get("host"))
        if kind == "run-start":
            run.started, run.host, run.user = as_text(event.get("started")), host, as_text(event.get("user"))
            run.connection = " ".join(as_text(event.get(k)) for k in ("transport", "auth") if event.get(k))
            if event.get("port"):
                run.connection = f"port {as_text(event.get('port'))} {run.connection}".strip()
            run.tool_version, run.digest = as_text(event.get("tool_version")), as_text(event.get("package_digest"))
            steps = event.get("steps")
            run.steps_selected = ", ".join(f"{s:02d}" if isinstance(s, int) else as_text(s) for s in steps) \
                if isinstance(steps, list) else ""
            run.from_step = as_text(event.get("from_step"))
            run.rollback_of = as_text(event.get("rollback_of"))
            servers = event.get("servers")
            if isinstance(servers, list) and len(servers) > 1:
                run.events.append("servers: " + ", ".join(as_text(s) for s in servers))
        elif kind == "approval":
            for item in event.get("approvals") or []:
                if isinstance(item, dict):
                    run.approvals.append({k: as_text(item.get(k)) for k in ("approver", "fingerprint", "expires_at")})
        elif kind == "lock":
            run.events.append(f"server run lock: {as_text(event.get('state'))}")
        elif kind == "force-unlock":
            run.events.append(f"force-unlock: stale shell {as_text(event.get('stale_shell'))}, "
                              f"closed: {as_text(event.get('closed'))}")
        elif kind == "run-quit":
            run.events.append(f"operator quit before step {as_text(event.get('index'))} ({as_text(event.get('id'))})")
        elif kind == "state":
            states.setdefault((event.get("index"), host), {})[as_text(event.get("when"))] = event.get("readings")
        elif kind == "step-start":
            open_steps[(event.get("index"), host)] = event
        elif kind == "step-end":
            open_steps.pop((event.get("index"), host), None)
            run.steps.append(_run_step(event, host))
            run.problems += [f"line {number}: {p}" for p in _timing_problems(event)]
        elif kind == "verify":
            run.verify = verdicts_view(event)
        elif kind == "run-end":
            code = event.get("exit_code")
            run.exit_code, run.reason, run.ended = as_text(code), as_text(event.get("reason")), as_text(event.get("ended"))
            summary = event.get("summary")
            run.summary = [as_text(s) for s in summary] if isinstance(summary, list) else []
            run.outcome = {0: "ok", 1: "failed", 3: "could not connect", 4: "unknown", 130: "interrupted"}.get(
                code, f"exit {run.exit_code}") if isinstance(code, int) else "ended"
            if run.reason == "not-recorded":
                run.outcome = "not started (not recorded)"
    for event in open_steps.values():  # sent, never ended: the run was cut off during the step
        step = _run_step(event, as_text(event.get("host")))
        step.state, step.detail = "no end recorded", "the record ends during this step: check the server"
        run.steps.append(step)
    for step in run.steps:
        found = states.get((step.index, step.host))
        if found:
            step.readings = state_change(found.get("before"), found.get("after"))
    if run.digest and run.digest != digest:
        run.problems.append(f"this run was of another digest ({run.digest[:16]}…), not the package as it is now")
    _place_bars(run)
    return run


def _run_step(event: Mapping[str, Any], host: str) -> RunStepView:
    step = RunStepView(
        step_number(event.get("index")), as_text(event.get("id")), as_text(event.get("title")), host,
        as_text(event.get("state") or "started"), as_text(event.get("started")), as_text(event.get("ended")),
        _duration(event.get("seconds")), detail=as_text(event.get("detail")),
        for_step=f"{event['for_step']:02d}" if isinstance(event.get("for_step"), int) else "",
    )
    for err in event.get("errors") or []:
        if not isinstance(err, dict):
            err = {"message": err}
        lines = [f"error: {as_text(err.get('message'))}"]
        lines += [f"category: {as_text(err.get('category'))}"] if err.get("category") else []
        lines += [f"script line {as_text(err.get('line'))}"] if err.get("line") not in (None, "") else []
        lines += [as_text(err.get("position"))] if err.get("position") else []
        step.errors.append("\n".join(lines))
    for name in ("information", "warnings", "output"):
        lines, left_out = _lines(event.get(name))
        if lines:
            step.streams.append((name, lines, left_out))
    return step


#: Readings shown per step, and the width of one value: the run record has all of them.
MAX_STATE_LINES = 20
MAX_STATE_VALUE = 120


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Readings as `a.b: value` pairs (lists and scalars shown as JSON text, clipped)."""
    if isinstance(value, dict) and value:
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix or "(reading)": clip(as_text(value) if value is not None else "none", MAX_STATE_VALUE)}


def state_change(before: Any, after: Any) -> list[str]:
    """What the probes read around a step as `what: before → after`, the readings that differ first.

    Without an `after` reading (a step whose back-out is by hand reads only before it) each line
    is `what: before`; readings that did not change are counted, not listed.
    """
    old = _flatten(before) if before is not None else {}
    if after is None:
        lines = [f"{key}: {value} (before the step)" for key, value in old.items()]
    else:
        new = _flatten(after)
        keys = list(old) + [k for k in new if k not in old]
        changed = [k for k in keys if old.get(k) != new.get(k)]
        lines = [f"{k}: {old.get(k, 'none')} → {new.get(k, 'none')}" for k in changed]
        same = len(keys) - len(changed)
        lines += [f"{same} other reading(s) unchanged"] if same else []
        lines = lines or ["no reading changed"]
    left = len(lines) - MAX_STATE_LINES
    return lines[:MAX_STATE_LINES] + ([f"… and {left} more in the run record"] if left > 0 else [])


def _timing_problems(event: Mapping[str, Any]) -> list[str]:
    """What of a step's timing the timeline cannot place (shown as the record's problem, not placed)."""
    problems = []
    seconds = event.get("seconds")
    if seconds is not None and _duration(seconds) is None:
        problems.append(clip(f"seconds {as_text(seconds)} is not a step's duration (0 to a year); not placed", 200))
    started = event.get("started")
    if started and _time(started) is None:
        problems.append(clip(f"started {as_text(started)} is not a time with an offset in {EARLIEST}-{LATEST}; "
                             "not placed", 200))
    return problems


def _place_bars(run: RunView) -> None:
    """Each step's bar on the run's time axis: where it started and how long it took."""
    starts = [(_time(s.started), s) for s in run.steps]
    known = [(t, s) for t, s in starts if t is not None]
    if not known:
        return
    started, ended = _time(run.started), _time(run.ended)
    origin = min([t for t, _ in known] + ([started] if started else []))
    ends = [t + _seconds(s) for t, s in known]
    end = max(ends + ([ended] if ended else []))
    total = max((end - origin).total_seconds(), 0.001)
    run.seconds = round((end - origin).total_seconds(), 3)
    for t, s in known:
        s.offset_pct = round(min(100.0, max(0.0, (t - origin).total_seconds() / total * 100)), 2)
        width = (s.seconds or 0.0) / total * 100
        s.width_pct = round(min(100.0 - s.offset_pct, max(0.6, width)), 2)


def _seconds(step: RunStepView) -> timedelta:
    return timedelta(seconds=step.seconds or 0.0)


def verdicts_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """A check result (checks/*.json, or a run's verify event) as rows; `problem` when it is none."""
    verdicts = record.get("verdicts")
    if record.get("skipped"):
        return {"rows": [], "notes": [], "exit_code": "", "problem": f"skipped: {as_text(record.get('skipped'))}"}
    if not isinstance(verdicts, list):
        return {"rows": [], "notes": [], "exit_code": "", "problem": "no verdicts in it"}
    rows = []
    for v in verdicts:
        if not isinstance(v, dict):
            continue
        index = v.get("index")
        rows.append({
            "step": f"{index:02d} {as_text(v.get('id'))}" if isinstance(index, int) else as_text(v.get("id")),
            "verdict": as_text(v.get("verdict")), "detail": as_text(v.get("detail")),
            "change": f"{as_text(v.get('before'))} -> {as_text(v.get('after'))}"
            if v.get("before") is not None or v.get("after") is not None else "",
            "cause": as_text(v.get("cause")), "fix": as_text(v.get("fix")),
        })
    notes = record.get("notes")
    return {"rows": rows, "notes": [as_text(n) for n in notes] if isinstance(notes, list) else [],
            "exit_code": as_text(record.get("exit_code")), "problem": ""}
