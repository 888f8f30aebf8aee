"""What `psbridge run` decides, kept apart from how it talks to the server.

Everything here is free of pypsrp so it can be tested without a network: reading
plan.json and checking every step file against its sha256, choosing the steps
(`--from-step` through `steps.resume_selection`), the outcome of a step from what
the pipeline reported, the events shown to the operator, the run record, secret
redaction and the closing summary with the exact command to continue.
The I/O side (generator/remote.py) implements `StepSession` with pypsrp.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import os
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO, get_args

from .errors import UserError
from .plan import read_plan_json, sha256_hex
from .steps import SecretKind, resume_selection

#: The secret kinds of generator.steps.SecretKind that `run` knows how to pass.
KNOWN_SECRET_KINDS: frozenset[str] = frozenset(get_args(SecretKind))


# -- the package --------------------------------------------------------------


@dataclass(frozen=True)
class PlanStep:
    """A step as plan.json describes it (the `StepLike` that resume_selection needs)."""

    index: int
    id: str
    title: str
    file: str
    sha256: str
    changes_state: bool
    kind: str
    needs: tuple[str, ...]
    inputs: dict[str, str]


@dataclass(frozen=True)
class Plan:
    name: str
    profile: str
    steps: tuple[PlanStep, ...]

    def by_index(self, index: int) -> PlanStep:
        return next(s for s in self.steps if s.index == index)


def load_plan(package_dir: Path) -> Plan:
    """Read PACKAGE/plan.json; every problem is one line of a UserError (exit 2)."""
    path = package_dir / "plan.json"
    data = read_plan_json(package_dir)
    problems: list[str] = []
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise UserError(f"{path}: steps: missing or empty")
    steps: list[PlanStep] = []
    for n, raw in enumerate(raw_steps):
        where = f"{path}: steps[{n}]"
        try:
            step = PlanStep(
                index=int(raw["index"]),
                id=str(raw["id"]),
                title=str(raw.get("title", raw["id"])),
                file=str(raw["file"]),
                sha256=str(raw["sha256"]).lower(),
                changes_state=bool(raw["changes_state"]),
                kind=str(raw.get("kind", "change" if raw["changes_state"] else "check")),
                needs=tuple(str(x) for x in raw.get("needs", [])),
                inputs={str(k): str(v) for k, v in (raw.get("inputs") or {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problems.append(f"{where}: malformed ({exc})")
            continue
        unknown = sorted(set(step.inputs.values()) - KNOWN_SECRET_KINDS)
        if unknown:
            problems.append(f"{where}: inputs: unknown secret kind {', '.join(unknown)}")
        file_path = Path(step.file)
        if file_path.is_absolute() or ".." in file_path.parts:
            problems.append(f"{where}: file: must be a path inside the package")
        steps.append(step)
    ids = [s.id for s in steps]
    for step in steps:
        for need in step.needs:
            if need not in ids:
                problems.append(f"{path}: step {step.id}: needs unknown step {need}")
    if [s.index for s in steps] != sorted({s.index for s in steps}):
        problems.append(f"{path}: steps: indexes must be unique and ascending")
    if problems:
        raise UserError(*problems)
    return Plan(str(data.get("name", package_dir.name)), str(data.get("profile", "")), tuple(steps))


def read_step_texts(package_dir: Path, plan: Plan) -> dict[int, tuple[str, str]]:
    """Every step file's text and sha256, refusing any file that differs from plan.json.

    All steps are checked, not only the selected ones: a package with any changed
    step is no longer the package that was reviewed. The text sent is the file
    decoded as UTF-8 (BOM dropped); line endings are kept as they are.
    """
    problems: list[str] = []
    texts: dict[int, tuple[str, str]] = {}
    for step in plan.steps:
        path = package_dir / step.file
        try:
            raw = path.read_bytes()
        except OSError:
            problems.append(f"{path}: missing or unreadable")
            continue
        digest = sha256_hex(raw)
        if digest != step.sha256:
            problems.append(f"{path}: changed since it was rendered (sha256 differs from plan.json); refusing to run it")
            continue
        try:
            texts[step.index] = (raw.decode("utf-8-sig"), digest)
        except UnicodeDecodeError:
            problems.append(f"{path}: not UTF-8")
    if problems:
        raise UserError(*problems)
    return texts


def read_probe_texts(package_dir: Path) -> dict[str, str]:
    """The package's read-only probe scripts by name, refusing any that differs from plan.json."""
    plan_path = package_dir / "plan.json"
    recorded = read_plan_json(package_dir).get("probes") or []
    if not recorded:
        raise UserError(f"{plan_path}: the package has no probes; render it again with this psbridge version")
    problems: list[str] = []
    texts: dict[str, str] = {}
    for probe in recorded:
        path = package_dir / str(probe.get("file", ""))
        try:
            raw = path.read_bytes()
        except OSError:
            problems.append(f"{path}: missing or unreadable")
            continue
        if sha256_hex(raw) != probe.get("sha256"):
            problems.append(f"{path}: changed since it was rendered (sha256 differs from plan.json); refusing to send it")
            continue
        texts[str(probe.get("id"))] = raw.decode("utf-8-sig")
    if problems:
        raise UserError(*problems)
    return texts


def session_steps_for(plan: Plan, step_id: str) -> list[PlanStep]:
    """The session-only steps that `step_id` needs, itself included: what `check` may send.

    Read-only checks are left out (the probes cover them) and a step that changes state
    can never be part of it: the catalogue's `needs` of a session step are session steps.
    """
    by_id = {s.id: s for s in plan.steps}
    wanted, pending = set(), [step_id]
    while pending:
        step = by_id[pending.pop()]
        if step.kind == "session" and step.id not in wanted:
            wanted.add(step.id)
            pending.extend(step.needs)
    chosen = [s for s in plan.steps if s.id in wanted]
    if any(s.changes_state for s in chosen):
        raise UserError("plan.json: a session step is marked as changing state; refusing to check")
    return chosen


def select_steps(plan: Plan, from_step: int | None) -> list[PlanStep]:
    """The steps to run, in order: all of them, or a continuation at `from_step`."""
    if from_step is None:
        return list(plan.steps)
    indexes = [s.index for s in plan.steps]
    if from_step not in indexes:
        raise UserError(f"--from-step: {from_step} is not a step of this package (steps {indexes[0]}..{indexes[-1]})")
    chosen = resume_selection(plan.steps, from_step)
    return [plan.by_index(i) for i in chosen]


def secrets_needed(steps: Iterable[PlanStep]) -> set[str]:
    """Secret kinds the selected steps take, so nothing else is asked for."""
    return {kind for step in steps for kind in step.inputs.values()}


# -- outcomes -----------------------------------------------------------------


class Outcome(str, enum.Enum):
    OK = "ok"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class RemoteError:
    """An error record as the operator needs it: message, category, where in the script."""

    message: str
    category: str = ""
    line: int | None = None
    position: str = ""


@dataclass
class PipelineReport:
    """What the session saw of one pipeline, before any judgement.

    `state` is the PSInvocationState name the server reported last ("Completed",
    "Failed", "Stopped", "Running"...). `timed_out` means psbridge stopped it at the
    step timeout, `interrupted` that the operator pressed Ctrl-C and psbridge stopped
    it; `transport_error` means the connection broke while it ran.
    """

    state: str
    output: list[str] = field(default_factory=list)
    errors: list[RemoteError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: The Information stream (Write-Information; Write-Host in PowerShell 5+): what scripts
    #: such as CertificateReconfiguration.ps1 print, which is neither output nor an error.
    information: list[str] = field(default_factory=list)
    timed_out: bool = False
    interrupted: bool = False
    transport_error: str | None = None


def classify(report: PipelineReport) -> Outcome:
    """A step succeeded only if its pipeline completed AND wrote no error record.

    A timeout or a broken connection is UNKNOWN, never success or plain failure:
    the script may have done some or all of its work.
    """
    if report.timed_out or report.interrupted or report.transport_error is not None:
        return Outcome.UNKNOWN
    if report.state == "Completed":
        return Outcome.OK if not report.errors else Outcome.FAILED
    if report.state == "Failed":
        return Outcome.FAILED
    return Outcome.UNKNOWN


class StepSession(Protocol):
    """The I/O side: one connection, one runspace, one pipeline per step."""

    def run_step(self, script: str, parameters: Mapping[str, str], timeout: float) -> PipelineReport: ...


# -- secrets ------------------------------------------------------------------


class Redactor:
    """Replaces every occurrence of every secret value; longest first so parts never leak."""

    MASK = "********"

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def add(self, secret: str) -> None:
        if secret and secret not in self._secrets:
            self._secrets = sorted({*self._secrets, secret}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, self.MASK)
        return text


# -- events, record, summary ----------------------------------------------------


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RunRecord:
    """PACKAGE/runs/<UTC time>.jsonl, mode 0600, one event per line, flushed as it goes.

    Flushed per event so that a run killed half way still leaves evidence of the
    steps that were sent. Created with O_EXCL so two runs never share a file.
    """

    def __init__(self, package_dir: Path) -> None:
        runs = package_dir / "runs"
        runs.mkdir(mode=0o700, exist_ok=True)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        for n in range(100):
            candidate = runs / (f"{stamp}.jsonl" if n == 0 else f"{stamp}-{n}.jsonl")
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            break
        else:  # pragma: no cover - needs 100 runs in one microsecond
            raise UserError(f"{runs}: cannot create a run record")
        os.fchmod(fd, 0o600)
        self.path = candidate
        self._file: TextIO = os.fdopen(fd, "w", encoding="utf-8")

    def write(self, event: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(event, ensure_ascii=False, sort_keys=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@dataclass
class StepResult:
    index: int
    id: str
    sha256: str
    outcome: Outcome
    started: str
    ended: str
    seconds: float
    output: list[str] = field(default_factory=list)
    errors: list[RemoteError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    information: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass(frozen=True)
class ContinueCommand:
    """Everything needed to print the exact `psbridge run` command that continues a run (no secrets)."""

    package_dir: str
    options: tuple[str, ...]

    def at(self, index: int) -> str:
        words = ["psbridge", "run", self.package_dir, *self.options, "--from-step", str(index)]
        return " ".join(shlex.quote(w) for w in words)


@dataclass
class RunResult:
    results: list[StepResult]
    exit_code: int
    summary: list[str]


Confirm = Callable[[PlanStep], Literal["y", "n", "q"]]


class Executor:
    """Runs the selected steps in order and stops at the first step that is not OK.

    `emit` receives every event (already redacted) for the operator's screen and the
    run record. The next step is never sent after a failure, an unknown outcome or
    an operator's quit.
    """

    def __init__(
        self,
        plan: Plan,
        selected: Sequence[PlanStep],
        texts: Mapping[int, tuple[str, str]],
        parameters_for: Callable[[PlanStep], Mapping[str, str]],
        emit: Callable[[dict[str, Any]], None],
        redact: Redactor,
        continue_command: ContinueCommand,
        *,
        step_timeout: float,
        confirm: Confirm | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.selected = list(selected)
        self.texts = texts
        self.parameters_for = parameters_for
        self.emit = emit
        self.redact = redact
        self.continue_command = continue_command
        self.step_timeout = step_timeout
        self.confirm = confirm
        self.clock = clock

    def run(self, session: StepSession) -> RunResult:
        total = max(s.index for s in self.plan.steps)
        results: list[StepResult] = []
        for step in self.selected:
            text, digest = self.texts[step.index]
            if self.confirm is not None:
                answer = self.confirm(step)
                if answer == "q":
                    self.emit({"event": "run-quit", "index": step.index, "id": step.id})
                    return self._finish(results, stopped_at=step, reason="quit")
                if answer == "n":
                    now = utc_now()
                    result = StepResult(step.index, step.id, digest, Outcome.SKIPPED, now, now, 0.0)
                    results.append(result)
                    self.emit(self._step_end_event(step, result, total))
                    continue
            started = utc_now()
            self.emit({"event": "step-start", "index": step.index, "total": total, "id": step.id,
                       "title": step.title, "sha256": digest, "started": started})
            t0 = self.clock()
            report = session.run_step(text, self.parameters_for(step), self.step_timeout)
            seconds = self.clock() - t0
            outcome = classify(report)
            detail = self._detail(report, outcome)
            result = StepResult(
                step.index, step.id, digest, outcome, started, utc_now(), round(seconds, 3),
                output=[self.redact(o) for o in report.output],
                errors=[RemoteError(self.redact(e.message), self.redact(e.category), e.line, self.redact(e.position))
                        for e in report.errors],
                warnings=[self.redact(w) for w in report.warnings],
                information=[self.redact(i) for i in report.information],
                detail=self.redact(detail),
            )
            results.append(result)
            self.emit(self._step_end_event(step, result, total))
            if outcome is not Outcome.OK:
                return self._finish(results, stopped_at=step, reason=outcome.value)
        return self._finish(results, stopped_at=None, reason="done")

    def _detail(self, report: PipelineReport, outcome: Outcome) -> str:
        """Why an outcome is UNKNOWN, in the operator's words."""
        stopping = report.interrupted or report.timed_out
        parts = []
        if report.interrupted:
            parts.append("interrupted by the operator")
        if report.timed_out:
            parts.append(f"timed out after {self.step_timeout:g}s")
        if report.transport_error is not None:
            if stopping:
                parts.append(f"stopping the pipeline failed ({report.transport_error}); it may still be running")
            else:
                parts.append(f"connection lost while the step ran: {report.transport_error}")
        elif stopping:
            parts.append("psbridge stopped the pipeline")
        elif outcome is Outcome.UNKNOWN:
            parts.append(f"pipeline ended in state {report.state}")
        return "; ".join(parts)

    @staticmethod
    def _step_end_event(step: PlanStep, result: StepResult, total: int) -> dict[str, Any]:
        event: dict[str, Any] = {"event": "step-end", "total": total, "title": step.title}
        event.update(asdict(result))
        event["state"] = result.outcome.value
        del event["outcome"]
        return event

    def _finish(self, results: list[StepResult], *, stopped_at: PlanStep | None, reason: str) -> RunResult:
        summary: list[str] = []
        skipped = [r for r in results if r.outcome is Outcome.SKIPPED]
        if stopped_at is None:
            exit_code = 1 if skipped else 0
            ran = len(results) - len(skipped)
            summary.append(f"{ran} of {len(self.selected)} selected steps succeeded.")
            if skipped:
                names = ", ".join(f"{r.index:02d} {r.id}" for r in skipped)
                summary.append(f"Skipped at the operator's request: {names}. Run them with --from-step when ready:")
                summary.append(f"  {self.continue_command.at(skipped[0].index)}")
        else:
            label = f"step {stopped_at.index:02d} ({stopped_at.id})"
            nxt = self._next_index(stopped_at.index)
            if reason == "failed":
                exit_code = 1
                summary.append(f"Stopped: {label} failed; no later step was sent.")
                summary.append("Fix the cause of the error above, then continue with:")
                summary.append(f"  {self.continue_command.at(stopped_at.index)}")
            elif reason == "unknown":
                exit_code = 4
                summary.append(f"Stopped: the outcome of {label} is UNKNOWN; no later step was sent.")
                summary.append("Check on the server whether it took effect. To run it again:")
                summary.append(f"  {self.continue_command.at(stopped_at.index)}")
                if nxt is not None:
                    summary.append("or, if it did take effect, continue after it:")
                    summary.append(f"  {self.continue_command.at(nxt)}")
            else:
                exit_code = 1
                summary.append(f"Stopped by the operator before {label}. Continue with:")
                summary.append(f"  {self.continue_command.at(stopped_at.index)}")
        self.emit({"event": "run-end", "exit_code": exit_code, "ended": utc_now(),
                   "stopped_at": stopped_at.index if stopped_at else None, "reason": reason, "summary": summary})
        return RunResult(results, exit_code, summary)

    def _next_index(self, index: int) -> int | None:
        later = [s.index for s in self.plan.steps if s.index > index]
        return later[0] if later else None


# -- the operator's screen ----------------------------------------------------------


class HumanReporter:
    """One live line per step (`[06/08] spn … ok 1.2s`), error details on failure, then the summary."""

    def __init__(self, out: Callable[..., None]) -> None:
        self.out = out

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = event["event"]
        if kind == "step-start":
            self.out(f"[{event['index']:02d}/{event['total']:02d}] {event['id']} … ", nl=False)
        elif kind == "step-end":
            state = event["state"]
            if state == "skipped":
                self.out(f"[{event['index']:02d}/{event['total']:02d}] {event['id']} … skipped")
                return
            label = {"ok": "ok", "failed": "FAILED", "unknown": "UNKNOWN"}[state]
            self.out(f"{label} {event['seconds']:.1f}s")
            if state != "ok":
                for line in event.get("information") or []:
                    self.out(f"    host: {line}")
                for err in event["errors"]:
                    self.out(f"    error: {err['message']}")
                    if err["category"]:
                        self.out(f"    category: {err['category']}")
                    if err["line"] is not None:
                        self.out(f"    script line: {err['line']}")
                    if err["position"]:
                        for line in str(err["position"]).splitlines():
                            self.out(f"      {line}")
                if event["detail"]:
                    self.out(f"    {event['detail']}")
        elif kind == "run-start":
            user = f" as {event['user']}" if event.get("user") else ""
            self.out(f"psbridge run: {event['package']} on {event['host']}:{event['port']} "
                     f"({event['transport']}, {event['auth']}{user}); record: {event['record']}")
        elif kind == "run-end":
            if event.get("reason") == "connect-failed":
                return  # the command line prints that one line on stderr
            self.out("")
            for line in event["summary"]:
                self.out(line)
        elif kind == "run-quit":
            self.out(f"quit before step {event['index']:02d} ({event['id']})")


class JsonReporter:
    """`--json`: one JSON object per line, the same events the run record gets."""

    def __init__(self, out: Callable[..., None]) -> None:
        self.out = out

    def __call__(self, event: Mapping[str, Any]) -> None:
        self.out(json.dumps(event, ensure_ascii=False))
