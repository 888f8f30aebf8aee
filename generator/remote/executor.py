"""One loop for every pipeline a run or a rollback sends: in order, and never past a failure.

Free of pypsrp: a step's outcome is judged from what the session reported (`classify`), every
text from the server is redacted where it enters an event, and the first step that is not OK
(failed, unknown, or stopped by the operator) ends the loop: the next step is never sent.
`psbridge run` and `psbridge rollback` both use `Executor`; what each says at the end comes
from its `Summarize` (the run's, with the exact command to continue, is in advice.py).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..errors import ExitCode
from ..package import PackageStep
from ..run_record import ErrorRecord, RunEnd, RunQuit, StepEnd, StepStart, event_time
from .redact import Redactor


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

    `state` is the PSInvocationState name the server reported last ("Completed", "Failed",
    "Stopped", "Running"...). `timed_out`: psbridge stopped it at the step timeout;
    `interrupted`: the operator pressed Ctrl-C and psbridge stopped it; `transport_error`:
    the connection broke while it ran.
    """

    state: str
    output: list[str] = field(default_factory=list)
    errors: list[RemoteError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: The Information stream (Write-Information; Write-Host in PowerShell 5+): what scripts such as
    #: CertificateReconfiguration.ps1 print, which is neither output nor an error.
    information: list[str] = field(default_factory=list)
    timed_out: bool = False
    interrupted: bool = False
    transport_error: str | None = None

    @property
    def reason(self) -> str:
        """Why it did not succeed, in one line: its first error, else the transport's, else its state."""
        return self.errors[0].message if self.errors else (self.transport_error or self.state)


def classify(report: PipelineReport) -> Outcome:
    """A step succeeded only if its pipeline completed AND wrote no error record.

    A timeout or a broken connection is UNKNOWN, never success or plain failure: the script
    may have done some or all of its work.
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

    def run_step(self, script: str, parameters: Mapping[str, Any], timeout: float) -> PipelineReport: ...


@dataclass
class StepResult:
    index: int
    id: str
    sha256: str | None
    outcome: Outcome
    started: str
    ended: str
    seconds: float
    output: list[str] = field(default_factory=list)
    errors: list[RemoteError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    information: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class RunResult:
    results: list[StepResult]
    exit_code: int
    summary: list[str]
    reason: str = "done"
    stopped_at: int | None = None


@dataclass(frozen=True)
class Executed:
    """How the loop ended, before anyone put it in words."""

    results: list[StepResult]
    stopped_at: PackageStep | None
    reason: str  # done | failed | unknown | quit | not-ready | connection-lost
    refusal: list[str] = field(default_factory=list)  # a guard's lines (reason not-ready)


#: Turns how the loop ended into the exit code and the closing lines.
Summarize = Callable[[Executed], tuple[int, list[str]]]
Confirm = Callable[[PackageStep], Literal["y", "n", "q"]]


@dataclass(frozen=True)
class Hooks:
    """What the caller adds around each step; every hook is optional."""

    #: `--step`: asked before each step (y run, n skip, q quit).
    confirm: Confirm | None = None
    #: Reads and records the state around a state-changing step: (step, "before" | "after").
    observe: Callable[[PackageStep, Literal["before", "after"]], None] | None = None
    #: Asked right before a step is sent: None lets it go, lines stop the run there (exit 1).
    guard: Callable[[PackageStep], list[str] | None] | None = None
    #: Asked last, after `observe`'s probes and just before the step goes: as `guard` (the run's lock
    #: heartbeat, which one of those probes may have found failing).
    ready: Callable[[PackageStep], list[str] | None] | None = None


@dataclass(frozen=True)
class StepPlan:
    """What the loop sends: the selected steps of a package (or a rollback's scripts), and how."""

    #: Every step of the package (the numbering and resume logic need them all), and those to send.
    steps: Sequence[PackageStep]
    selected: Sequence[PackageStep]
    parameters_for: Callable[[PackageStep], Mapping[str, Any]]
    summarize: Summarize
    step_timeout: float = 900.0
    #: False when the caller ends the run itself (a run over several servers has one run-end).
    emit_end: bool = True
    #: The undone step of each back-out script, by the script's index (rollback only).
    for_step: Mapping[int, int] = field(default_factory=dict)


class Executor:
    """Runs the selected steps in order and stops at the first step that is not OK.

    `emit` receives every event (already redacted) for the operator's screen and the run
    record. The next step is never sent after a failure, an unknown outcome or an operator's quit.
    """

    def __init__(self, plan: StepPlan, emit: Callable[[dict[str, Any]], None], redact: Redactor,
                 hooks: Hooks = Hooks(), clock: Callable[[], float] = time.monotonic) -> None:
        self.plan = plan
        self.emit = emit
        self.redact = redact
        self.hooks = hooks
        self.clock = clock
        self.total = max(s.index for s in plan.steps)

    def run(self, session: StepSession) -> RunResult:
        executed = self._loop(session)
        exit_code, summary = self.plan.summarize(executed)
        stopped = executed.stopped_at.index if executed.stopped_at else None
        if self.plan.emit_end:
            self.emit(RunEnd(exit_code=exit_code, ended=event_time(), stopped_at=stopped, reason=executed.reason,
                             summary=summary).data())
        return RunResult(executed.results, exit_code, summary, executed.reason, stopped)

    def _loop(self, session: StepSession) -> Executed:
        results: list[StepResult] = []
        for step in self.plan.selected:
            if getattr(session, "broken", False):
                # A probe (or an earlier pipeline) lost the connection: nothing more goes over it.
                return Executed(results, step, "connection-lost")
            unmet = self._skipped_needs(step, results)
            answer = "y" if unmet or self.hooks.confirm is None else self.hooks.confirm(step)
            if answer == "q":
                self.emit(RunQuit(index=step.index, id=step.id).data())
                return Executed(results, step, "quit")
            if unmet or answer == "n":
                # --step: a step the operator skipped, or one that needs a skipped step (a renewal's
                # retire-previous needs verify), is not sent.
                detail = f"not sent: it needs {unmet}, which was skipped" if unmet else ""
                self._skip(step, results, detail)
                continue
            refusal = self.hooks.guard(step) if self.hooks.guard is not None else None
            if refusal:
                return Executed(results, step, "not-ready", refusal)
            if step.changes_state and self.hooks.observe is not None:
                self.hooks.observe(step, "before")  # what the step is about to change, for the back-out
            if getattr(session, "broken", False):  # that probe lost the connection: the step is not sent
                return Executed(results, step, "connection-lost")
            refusal = self.hooks.ready(step) if self.hooks.ready is not None else None
            if refusal:
                return Executed(results, step, "not-ready", refusal)
            result = self._send(session, step)
            results.append(result)
            if result.outcome is Outcome.OK and step.changes_state and self.hooks.observe is not None:
                self.hooks.observe(step, "after")
            if result.outcome is not Outcome.OK:
                return Executed(results, step, result.outcome.value)
        return Executed(results, None, "done")

    def _skip(self, step: PackageStep, results: list[StepResult], detail: str) -> None:
        now = event_time()
        result = StepResult(step.index, step.id, step.sha256, Outcome.SKIPPED, now, now, 0.0, detail=detail)
        results.append(result)
        self.emit(self._step_end(step, result))

    def _send(self, session: StepSession, step: PackageStep) -> StepResult:
        """Send one step and judge it; whatever breaks on the way, the step may have run: UNKNOWN."""
        started = event_time()
        self.emit(StepStart(index=step.index, total=self.total, id=step.id, title=step.title, sha256=step.sha256,
                            started=started).data())
        t0 = self.clock()
        try:
            report = session.run_step(step.text, self.plan.parameters_for(step), self.plan.step_timeout)
        except Exception as exc:  # noqa: BLE001 - whatever broke, the step may have run: UNKNOWN
            report = PipelineReport("Unknown", transport_error=f"psbridge lost track of the step ({type(exc).__name__})")
        except KeyboardInterrupt:  # Ctrl-C while the step was sent: it may have run, so UNKNOWN, not 130
            report = PipelineReport("Unknown", interrupted=True, transport_error="interrupted while the step was being sent")
        seconds = self.clock() - t0
        outcome = classify(report)
        redact = self.redact
        result = StepResult(
            step.index, step.id, step.sha256, outcome, started, event_time(), round(seconds, 3),
            output=[redact(o) for o in report.output],
            errors=[RemoteError(redact(e.message), redact(e.category), e.line, redact(e.position))
                    for e in report.errors],
            warnings=[redact(w) for w in report.warnings],
            information=[redact(i) for i in report.information],
            detail=redact(self._detail(report, outcome)),
        )
        self.emit(self._step_end(step, result))
        return result

    def _step_end(self, step: PackageStep, result: StepResult) -> dict[str, Any]:
        return StepEnd(
            total=self.total, title=step.title, index=result.index, id=result.id, sha256=result.sha256,
            started=result.started, ended=result.ended, seconds=result.seconds, output=result.output,
            errors=[ErrorRecord(message=e.message, category=e.category, line=e.line, position=e.position)
                    for e in result.errors],
            warnings=result.warnings, information=result.information, detail=result.detail,
            state=result.outcome.value, for_step=self.plan.for_step.get(step.index),
        ).data()

    @staticmethod
    def _skipped_needs(step: PackageStep, results: list[StepResult]) -> str:
        """The steps `step` needs that were skipped in this run, as `step 10 (verify)`; "" when none."""
        skipped = {r.id: r.index for r in results if r.outcome is Outcome.SKIPPED}
        return ", ".join(f"step {skipped[n]:02d} ({n})" for n in step.needs if n in skipped)

    def _detail(self, report: PipelineReport, outcome: Outcome) -> str:
        """Why an outcome is UNKNOWN, in the operator's words."""
        stopping = report.interrupted or report.timed_out
        parts = []
        if report.interrupted:
            parts.append("interrupted by the operator")
        if report.timed_out:
            parts.append(f"timed out after {self.plan.step_timeout:g}s")
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


def exit_code_of(outcome: Outcome) -> ExitCode:
    """A step's outcome as the run's exit code: unknown is 4, anything else not OK is 1."""
    if outcome is Outcome.OK:
        return ExitCode.OK
    return ExitCode.UNKNOWN if outcome is Outcome.UNKNOWN else ExitCode.FAILED
