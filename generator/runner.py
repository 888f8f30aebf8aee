"""What `psbridge run` decides, kept apart from how it talks to the server.

Everything here is free of pypsrp so it can be tested without a network: choosing
the steps of a verified package (`--from-step` through `catalogue.resume_selection`),
the outcome of a step from what
the pipeline reported, the events shown to the operator, the run record, secret
redaction and the closing summary with the exact command to continue.
The I/O side (generator/remote.py) implements `StepSession` with pypsrp.
"""

from __future__ import annotations

import enum
import json
import os
import re
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

from .catalogue import resume_selection, session_steps_for
from .clock import file_stamp, stamp
from .errors import ExitCode, RuntimeFailure, UserError
from .package import Package, PackageStep
from .text import printable


# -- choosing the steps -------------------------------------------------------


def select_steps(steps: Sequence[PackageStep], from_step: int | None) -> list[PackageStep]:
    """The steps to run, in order: all of them, or a continuation at `from_step`.

    `steps` come from the catalogue (through the verified package), so the order, the
    selection and each step's kind can't be changed by editing plan.json.
    """
    if from_step is None:
        return list(steps)
    indexes = [s.index for s in steps]
    if from_step not in indexes:
        raise UserError(f"--from-step: {from_step} is not a step of this package (steps {indexes[0]}..{indexes[-1]})")
    chosen = set(resume_selection([s.spec for s in steps], from_step))
    return [s for s in steps if s.index in chosen]


def secrets_needed(steps: Iterable[PackageStep]) -> set[str]:
    """Secret kinds the selected steps take, so nothing else is asked for."""
    return {kind for step in steps for kind in step.inputs.values()}


def session_steps(steps: Sequence[PackageStep], step_id: str) -> list[PackageStep]:
    """The session steps `step_id` needs, itself included (what `check` may send); never a changing step."""
    wanted = {s.id for s in session_steps_for([s.spec for s in steps], step_id)}
    chosen = [s for s in steps if s.id in wanted]
    assert not any(s.changes_state for s in chosen), "the catalogue's session steps never change state"
    return chosen


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
    """Hides every secret in text that came back from the server before anyone sees it.

    Each run of text covered by occurrences of secrets of 8 characters or more (one inside
    another, or two overlapping) is replaced by one fixed marker, so no part leaks. A shorter secret can't be replaced safely (a one-letter
    password would mask every such letter and so reveal itself): every line that
    contains it is withheld instead.
    """

    MARKER = "[redacted]"
    WITHHELD = "[line withheld: it contained a secret]"
    SHORT = 8
    #: Used instead when a secret happens to occur in the usual text (a password "redacted");
    #: the empty string is the last resort, since it contains no secret.
    _MARKERS = (MARKER, "<hidden>", "#####", "")
    _WITHHELDS = (WITHHELD, "<line withheld>", "#####", "")

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        if secret and secret not in self._secrets:
            self._secrets = sorted({*self._secrets, secret}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        short = [s for s in self._secrets if len(s) < self.SHORT]
        if short:
            text = self._withhold(text, short)
        long = [s for s in self._secrets if len(s) >= self.SHORT]
        return self._mask(text, long) if long else text

    def _safe_choice(self, candidates: tuple[str, ...]) -> str:
        """The first marker text that contains none of the secrets."""
        return next(c for c in candidates if not any(s in c for s in self._secrets))

    @staticmethod
    def _hits(text: str, secrets: list[str]) -> list[bool]:
        """Per character of `text`: is it part of an occurrence of one of the secrets?

        Found in the original text, all at once: replacing one secret after another would
        break an occurrence of the next where the two overlap, and leak its rest.
        """
        hit = [False] * len(text)
        for secret in secrets:
            start = text.find(secret)
            while start != -1:
                hit[start:start + len(secret)] = [True] * len(secret)
                start = text.find(secret, start + 1)
        return hit

    def _mask(self, text: str, long: list[str]) -> str:
        """Replace each run of characters that belong to occurrences of long secrets by one marker."""
        hit = self._hits(text, long)
        if not any(hit):
            return text
        marker, out, i = self._safe_choice(self._MARKERS), [], 0
        while i < len(text):
            if not hit[i]:
                out.append(text[i])
                i += 1
                continue
            while i < len(text) and hit[i]:
                i += 1
            out.append(marker)
        return "".join(out)

    def _withhold(self, text: str, short: list[str]) -> str:
        """Replace every line that overlaps an occurrence of a short secret (a secret may span lines)."""
        hit = self._hits(text, short)
        if not any(hit):
            return text
        lines, pos = [], 0
        for line in text.split("\n"):
            end = pos + len(line)
            # the newline after a line belongs to it: a secret that spans lines withholds both
            covered = any(hit[pos:end + 1])
            lines.append(self._safe_choice(self._WITHHELDS) if covered else line)
            pos = end + 1
        return "\n".join(lines)


# -- events, record, summary ----------------------------------------------------


def event_time() -> str:
    """Event times: UTC with milliseconds."""
    return stamp(digits=3)


class RunRecord:
    """PACKAGE/runs/<UTC time>.jsonl, mode 0600, one event per line, flushed as it goes.

    Flushed per event so that a run killed half way still leaves evidence of the
    steps that were sent. Created with O_EXCL so two runs never share a file.
    """

    def __init__(self, package_dir: Path) -> None:
        runs = package_dir / "runs"
        if runs.is_symlink() or (runs.exists() and not runs.is_dir()):
            raise UserError(f"{runs}: exists and is not a folder; run records live in a folder of that name")
        try:
            runs.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{runs}: cannot create ({exc.strerror or exc}); the run could not be recorded") from None
        name = file_stamp()
        for n in range(100):
            candidate = runs / (f"{name}.jsonl" if n == 0 else f"{name}-{n}.jsonl")
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                continue
            except OSError as exc:
                raise UserError(f"{candidate}: cannot create ({exc.strerror or exc}); the run could not be recorded") from None
            break
        else:  # pragma: no cover - needs 100 runs in one microsecond
            raise UserError(f"{runs}: cannot create a run record")
        os.fchmod(fd, 0o600)
        self.path = candidate
        self._file: TextIO = os.fdopen(fd, "w", encoding="utf-8")

    def write(self, event: Mapping[str, Any]) -> None:
        """Append one event; a record that can't be written stops the run before its next step."""
        try:
            self._file.write(json.dumps(event, ensure_ascii=False, sort_keys=False) + "\n")
            self._file.flush()
        except OSError as exc:
            raise RuntimeFailure(f"{self.path}: cannot write the run record ({exc.strerror or exc}); "
                                 "the run stops here") from None

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # a failed flush was reported by write



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
class RunSettings:
    """How the operator asked for the run, beyond the connection: what the continue command repeats."""

    o365_user: str | None = None
    step_timeout: float = 900.0
    step_mode: bool = False
    as_json: bool = False
    verify: bool = False
    require_approval: bool = False
    trusted_keys: Path | None = None
    min_approvals: int = 1
    forbid: tuple[str, ...] = ()
    audit_log: Path | None = None
    assume_yes: bool = False

    def options(self) -> tuple[str, ...]:
        """The command-line options that reproduce these settings (never a secret)."""
        opts: list[str] = []
        if self.o365_user:
            opts += ["--o365-user", self.o365_user]
        if self.step_timeout != 900.0:
            opts += ["--step-timeout", f"{self.step_timeout:g}"]
        opts += ["--step"] if self.step_mode else []
        opts += ["--json"] if self.as_json else []
        opts += ["--verify"] if self.verify else []
        if self.require_approval:
            opts += ["--require-approval", "--trusted-keys", str(self.trusted_keys), "--min-approvals",
                     str(self.min_approvals)]
            for spec in self.forbid:
                opts += ["--forbid-key", spec]
        if self.audit_log is not None:
            opts += ["--audit-log", str(self.audit_log)]
        opts += ["--yes"] if self.assume_yes else []
        return tuple(opts)


@dataclass(frozen=True)
class ContinueCommand:
    """Everything needed to print the exact `psbridge run` command that continues a run (no secrets)."""

    package_dir: str
    options: tuple[str, ...]
    #: The additional server to continue on (`--from-server`), for a step that runs on each of them.
    from_server: str | None = None

    def at(self, index: int) -> str:
        words = ["psbridge", "run", self.package_dir, *self.options, "--from-step", str(index)]
        words += ["--from-server", self.from_server] if self.from_server else []
        return " ".join(shlex.quote(w) for w in words)


def resume_advice(steps: Sequence[PackageStep], changed: set[int], skipped: Sequence[tuple[int, str]], first: int,
                  command: ContinueCommand) -> list[str]:
    """How to go on from step `first`, never by a command that sends a state-changing step again.

    `--from-step N` runs every step from N on: after the operator skipped a step and later
    steps changed state (`changed`: the steps that succeeded in this run), that command would
    change them a second time, so it is not printed; the lines say which steps stand in the way.
    """
    lines = []
    if skipped:
        lines.append("Skipped at the operator's request: " + ", ".join(f"{i:02d} {name}" for i, name in skipped) + ".")
    by_index = {s.index: s for s in steps}
    again = [i for i in resume_selection([s.spec for s in steps], first) if i in changed and by_index[i].changes_state]
    if again:
        names = ", ".join(f"{i:02d} {by_index[i].id}" for i in again)
        lines.append(f"No command to continue is printed: --from-step {first} would send {names} again, "
                     "which already changed state. Run the skipped step files by hand on the server, "
                     "each once (they are in the package's steps/ folder).")
    else:
        lines.append("Continue with:")
        lines.append(f"  {command.at(first)}")
    return lines


@dataclass
class RunResult:
    results: list[StepResult]
    exit_code: int
    summary: list[str]
    reason: str = "done"
    stopped_at: int | None = None


Confirm = Callable[[PackageStep], Literal["y", "n", "q"]]


class Executor:
    """Runs the selected steps in order and stops at the first step that is not OK.

    `emit` receives every event (already redacted) for the operator's screen and the
    run record. The next step is never sent after a failure, an unknown outcome or
    an operator's quit.
    """

    def __init__(
        self,
        steps: Sequence[PackageStep],
        selected: Sequence[PackageStep],
        parameters_for: Callable[[PackageStep], Mapping[str, Any]],
        emit: Callable[[dict[str, Any]], None],
        redact: Redactor,
        continue_command: ContinueCommand,
        *,
        step_timeout: float,
        confirm: Confirm | None = None,
        clock: Callable[[], float] = time.monotonic,
        emit_end: bool = True,
        observe: Callable[[PackageStep, str], None] | None = None,
        guard: Callable[[PackageStep], list[str] | None] | None = None,
        resume_floor: int | None = None,
    ) -> None:
        self.steps = list(steps)
        self.selected = list(selected)
        self.parameters_for = parameters_for
        self.emit = emit
        self.redact = redact
        self.continue_command = continue_command
        self.step_timeout = step_timeout
        self.confirm = confirm
        self.clock = clock
        #: False when the caller ends the run itself (a run over several servers has one run-end).
        self.emit_end = emit_end
        #: Reads and records the state around a state-changing step: (step, "before" | "after").
        self.observe = observe
        #: Asked right before a step is sent: None lets it go, lines stop the run there (exit 1).
        self.guard = guard
        self._refusal: list[str] = []
        #: The run's own --from-step: a continue command never starts before it (the earlier steps
        #: this run sent are session steps that a later one needs; the state-changing ones before
        #: it succeeded in an earlier run and must not be sent again).
        self.resume_floor = resume_floor

    def run(self, session: StepSession) -> RunResult:
        total = max(s.index for s in self.steps)
        results: list[StepResult] = []
        for step in self.selected:
            text, digest = step.text, step.sha256
            if getattr(session, "broken", False):
                # A probe (or an earlier pipeline) lost the connection: nothing more goes over it.
                return self._finish(results, stopped_at=step, reason="connection-lost")
            unmet = self._skipped_needs(step, results)
            if unmet:
                # --step: the operator skipped a step this one needs (a renewal's retire-previous
                # needs verify): it is not sent either, whatever the answer would be.
                now = event_time()
                result = StepResult(step.index, step.id, digest, Outcome.SKIPPED, now, now, 0.0,
                                    detail=f"not sent: it needs {unmet}, which was skipped")
                results.append(result)
                self.emit(self._step_end_event(step, result, total))
                continue
            if self.confirm is not None:
                answer = self.confirm(step)
                if answer == "q":
                    self.emit({"event": "run-quit", "index": step.index, "id": step.id})
                    return self._finish(results, stopped_at=step, reason="quit")
                if answer == "n":
                    now = event_time()
                    result = StepResult(step.index, step.id, digest, Outcome.SKIPPED, now, now, 0.0)
                    results.append(result)
                    self.emit(self._step_end_event(step, result, total))
                    continue
            refusal = self.guard(step) if self.guard is not None else None
            if refusal:
                self._refusal = refusal
                return self._finish(results, stopped_at=step, reason="not-ready")
            if step.changes_state and self.observe is not None:
                self.observe(step, "before")  # what the step is about to change, for the back-out
            if getattr(session, "broken", False):  # that probe lost the connection: the step is not sent
                return self._finish(results, stopped_at=step, reason="connection-lost")
            started = event_time()
            self.emit({"event": "step-start", "index": step.index, "total": total, "id": step.id,
                       "title": step.title, "sha256": digest, "started": started})
            t0 = self.clock()
            try:
                report = session.run_step(text, self.parameters_for(step), self.step_timeout)
            except Exception as exc:  # noqa: BLE001 - whatever broke, the step may have run: UNKNOWN
                report = PipelineReport("Unknown", transport_error=f"psbridge lost track of the step ({type(exc).__name__})")
            except KeyboardInterrupt:  # Ctrl-C while the step was sent: it may have run, so UNKNOWN, not 130
                report = PipelineReport("Unknown", interrupted=True,
                                        transport_error="interrupted while the step was being sent")
            seconds = self.clock() - t0
            outcome = classify(report)
            detail = self._detail(report, outcome)
            result = StepResult(
                step.index, step.id, digest, outcome, started, event_time(), round(seconds, 3),
                output=[self.redact(o) for o in report.output],
                errors=[RemoteError(self.redact(e.message), self.redact(e.category), e.line, self.redact(e.position))
                        for e in report.errors],
                warnings=[self.redact(w) for w in report.warnings],
                information=[self.redact(i) for i in report.information],
                detail=self.redact(detail),
            )
            results.append(result)
            self.emit(self._step_end_event(step, result, total))
            if outcome is Outcome.OK and step.changes_state and self.observe is not None:
                self.observe(step, "after")
            if outcome is not Outcome.OK:
                return self._finish(results, stopped_at=step, reason=outcome.value)
        return self._finish(results, stopped_at=None, reason="done")

    def _resume_at(self, index: int) -> int:
        """Where a continue command starts: `index`, but never before the run's own --from-step."""
        return index if self.resume_floor is None else max(index, self.resume_floor)

    def _skipped_needs(self, step: PackageStep, results: list[StepResult]) -> str:
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
    def _step_end_event(step: PackageStep, result: StepResult, total: int) -> dict[str, Any]:
        event: dict[str, Any] = {"event": "step-end", "total": total, "title": step.title}
        event.update(asdict(result))
        event["state"] = result.outcome.value
        del event["outcome"]
        return event

    def _finish(self, results: list[StepResult], *, stopped_at: PackageStep | None, reason: str) -> RunResult:
        summary: list[str] = []
        skipped = [r for r in results if r.outcome is Outcome.SKIPPED]
        if stopped_at is None:
            exit_code = ExitCode.FAILED if skipped else ExitCode.OK
            ran = len(results) - len(skipped)
            summary.append(f"{ran} of {len(self.selected)} selected steps succeeded.")
            if skipped:
                summary += self._skipped_advice(results, skipped[0].index)
        else:
            label = f"step {stopped_at.index:02d} ({stopped_at.id})"
            nxt = self._next_index(stopped_at.index)
            if reason == "not-ready":
                exit_code = ExitCode.FAILED
                summary += self._refusal
            elif reason == "connection-lost":
                exit_code = ExitCode.FAILED
                summary.append(f"Stopped: the connection was lost before {label}; nothing of it was sent.")
                summary.append("Check the connection, then continue with:")
                summary.append(f"  {self.continue_command.at(self._resume_at(stopped_at.index))}")
            elif reason == "failed":
                exit_code = ExitCode.FAILED
                summary.append(f"Stopped: {label} failed; no later step was sent.")
                summary.append("Fix the cause of the error above, then continue with:")
                summary.append(f"  {self.continue_command.at(self._resume_at(stopped_at.index))}")
            elif reason == "unknown":
                exit_code = ExitCode.UNKNOWN
                summary.append(f"Stopped: the outcome of {label} is UNKNOWN; no later step was sent.")
                summary.append("Check on the server whether it took effect. To run it again:")
                summary.append(f"  {self.continue_command.at(self._resume_at(stopped_at.index))}")
                if nxt is not None:
                    summary.append("or, if it did take effect, continue after it:")
                    summary.append(f"  {self.continue_command.at(self._resume_at(nxt))}")
            else:
                exit_code = ExitCode.FAILED
                summary.append(f"Stopped by the operator before {label}.")
                done = {r.index for r in results}
                not_run = [s for s in self.selected if s.index not in done]
                summary.append("Not run: " + ", ".join(f"{s.index:02d} {s.id}" for s in not_run) + ".")
                first = min([r.index for r in skipped] + [stopped_at.index])
                summary += self._skipped_advice(results, first)
        if self.emit_end:
            self.emit({"event": "run-end", "exit_code": exit_code, "ended": event_time(),
                       "stopped_at": stopped_at.index if stopped_at else None, "reason": reason, "summary": summary})
        return RunResult(results, exit_code, summary, reason, stopped_at.index if stopped_at else None)

    def _skipped_advice(self, results: list[StepResult], first: int) -> list[str]:
        """How to run what was skipped (see `resume_advice`)."""
        skipped = [r for r in results if r.outcome is Outcome.SKIPPED]
        changed = {r.index for r in results if r.outcome is Outcome.OK}
        return resume_advice(self.steps, changed, [(r.index, r.id) for r in skipped], self._resume_at(first),
                             self.continue_command)

    def _next_index(self, index: int) -> int | None:
        """The step after `index`, to continue after an UNKNOWN one; None on an additional server.

        There `--from-server` goes only with that server's step: the caller says how to go on
        (the next server, or the main server's next step).
        """
        if self.continue_command.from_server is not None:
            return None
        later = [s.index for s in self.steps if s.index > index]
        return later[0] if later else None


# -- the operator's screen ----------------------------------------------------------


class HumanReporter:
    """One live line per step (`[06/08] spn … ok 1.2s`), error details on failure, then the summary.

    Every text that came from the server or the operator's options goes through
    `text.printable`, so a server's error message can't forge a progress line or move
    the cursor.
    """

    def __init__(self, out: Callable[..., None]) -> None:
        self.out = out

    def _lines(self, prefix: str, value: object) -> None:
        for line in str(value).splitlines() or [""]:
            self.out(f"{prefix}{printable(line)}")

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = event["event"]
        where = f" on {printable(event['host'])}" if kind.startswith("step-") and event.get("host") else ""
        if kind == "step-start":
            self.out(f"[{event['index']:02d}/{event['total']:02d}] {event['id']}{where} … ", nl=False)
        elif kind == "step-end":
            state = event["state"]
            if state == "skipped":
                why = f" ({printable(event['detail'])})" if event.get("detail") else ""
                self.out(f"[{event['index']:02d}/{event['total']:02d}] {event['id']}{where} … skipped{why}")
                return
            label = {"ok": "ok", "failed": "FAILED", "unknown": "UNKNOWN"}[state]
            self.out(f"{label} {event['seconds']:.1f}s")
            if state != "ok":
                for line in event.get("information") or []:
                    self._lines("    host: ", line)
                for err in event["errors"]:
                    self._lines("    error: ", err["message"])
                    if err["category"]:
                        self._lines("    category: ", err["category"])
                    if err["line"] is not None:
                        self.out(f"    script line: {err['line']}")
                    if err["position"]:
                        self._lines("      ", err["position"])
                if event["detail"]:
                    self._lines("    ", event["detail"])
        elif kind == "run-start":
            user = f" as {event['user']}" if event.get("user") else ""
            self.out(printable(f"psbridge run: {event['package']} on {event['host']}:{event['port']} "
                               f"({event['transport']}, {event['auth']}{user}); record: {event['record']}"))
        elif kind == "run-end":
            if event.get("reason") == "connect-failed":
                return  # the command line prints that one line on stderr
            self.out("")
            for line in event["summary"]:
                self.out(printable(line))
        elif kind == "run-quit":
            self.out(f"quit before step {event['index']:02d} ({event['id']})")


class JsonReporter:
    """`--json`: one JSON object per line, the same events the run record gets."""

    def __init__(self, out: Callable[..., None]) -> None:
        self.out = out

    def __call__(self, event: Mapping[str, Any]) -> None:
        self.out(json.dumps(event, ensure_ascii=False))


# -- before connecting: the package, the host, the approval ---------------------------


@dataclass(frozen=True)
class PreparedRun:
    """Everything decided before a secret is read or a connection opened, from one package read."""

    package: Package
    selected: list[PackageStep]
    host: str
    approval: Any  # approvals.Verification when --require-approval, else None
    #: The additional servers the selected additional-server step runs on, in order.
    additional: list[str] = field(default_factory=list)


def additional_servers(package: Package, selected: Sequence[PackageStep], from_step: int | None,
                       from_server: str | None) -> list[str]:
    """The additional servers to run on: all of them, or from `--from-server` on (with its step)."""
    from .parameters import normalize_host

    servers = list(package.parameters.crm.additional_servers or [])
    if from_server is None:
        return servers if any(s.spec.runs_on != "main" for s in selected) else []
    farm = [s.index for s in package.steps if s.spec.runs_on != "main"]
    if not farm:
        raise UserError("--from-server: the package names no [crm] additional_servers")
    if from_step != farm[0]:
        raise UserError(f"--from-server: give it with --from-step {farm[0]} (the step that runs on each server)")
    keys = [normalize_host(h) for h in servers]
    if normalize_host(from_server) not in keys:
        raise UserError(f"--from-server {from_server}: not one of the package's additional servers "
                        f"({', '.join(servers)})")
    return servers[keys.index(normalize_host(from_server)):]


def resolve_host(option: str | None, package: Package, *, require_server: bool) -> str:
    """The host to connect to: the package's approved `[crm] server`, or `--host` when it names none.

    A package that names its server can't be sent anywhere else, so a change approved for
    a test server is never run on production by a typo or a copied command.
    """
    from .parameters import normalize_host

    server = package.parameters.crm.server
    if server is None:
        if require_server:
            raise UserError(f"{package.label}: names no [crm] server; --require-approval runs only a package "
                            "approved for one server (add `server = \"…\"` to [crm], render and approve again)")
        if not option:
            raise UserError("--host: required (the package names no [crm] server)")
        return option
    if option and normalize_host(option) != normalize_host(server):
        raise UserError(f"--host {option}: the package is for crm.server = {server}; refusing another host")
    return server


def prepare(package_dir: Path, host_option: str | None, *, from_step: int | None = None,
            policy: Any = None, from_server: str | None = None, for_check: bool = False) -> PreparedRun:
    """Read the package once, check it and (with a policy) its approvals; choose steps and host.

    `policy` is an `approvals.ApprovalPolicy` for `--require-approval`: the package must then
    be approved by enough people. Without one, `run` still sends only a package that is
    exactly what psbridge renders from its plan.json (a hand edit with updated hashes never
    runs, approved or not). `check` (`for_check`) reads a package of another psbridge version
    or a hand-edited one too, but sends only the probes and session steps psbridge renders
    itself from the package's parameters: never a script text someone edited.
    """
    from .package import read_package

    package = read_package(package_dir).require_intact()
    if for_check and policy is None:
        package = package.as_rendered()
    elif policy is None:
        package.require_reproducible()
    approval = None
    if policy is not None:
        from .approvals import require_approved

        approval = require_approved(package, policy)
    host = resolve_host(host_option, package, require_server=policy is not None)
    selected = select_steps(package.steps, from_step)
    return PreparedRun(package, selected, host, approval, additional_servers(package, selected, from_step, from_server))


# -- after a successful run: what the operator does next ------------------------------------

_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_THUMBPRINT = re.compile(r"thumbprint ([0-9A-Fa-f]{40})\b")


def next_steps(package: Package, results: Sequence[StepResult]) -> list[str]:
    """The tenant ID and certificate the run reported, and the manual wizard with them filled in.

    Read from the steps' own output (step 05 prints the thumbprint, step 08 the tenant ID);
    a value that is not of its shape is not shown. Empty when step 08 did not run.
    """
    outputs = {r.id: r.output for r in results if r.outcome is Outcome.OK}
    replaced = package.parameters.certificate.replaces
    if replaced:
        # A renewal: the integration is enabled already; what is left is the old certificate.
        if "retire-previous" not in outputs:
            return []
        servers = [package.parameters.crm.server or "the main server", *(package.parameters.crm.additional_servers or [])]
        return ["Renewal done: CRM signs with the new certificate, and Entra ID no longer trusts the replaced one.",
                f"Next: remove the replaced certificate {replaced.upper()} from LocalMachine\\My (certlm.msc) on "
                f"{', '.join(servers)} once nothing else uses it; psbridge does not remove it.",
                "The Enable Server-Based SharePoint Integration wizard is not run again."]
    if "tenant-id" not in outputs:
        return []
    tenant = next((m.group(0) for line in outputs["tenant-id"] for m in [_GUID.search(line)] if m), None)
    thumb = next((m.group(1).upper() for line in outputs.get("set-certificate", [])
                  for m in [_THUMBPRINT.search(line)] if m), None)
    sites = list(package.parameters.sharepoint.sites)
    lines = ["Next: the Enable Server-Based SharePoint Integration wizard (manual; it cannot be undone).",
             f"  tenant ID:    {tenant or '(not in step 08 output)'}"]
    if thumb:
        lines.append(f"  certificate:  {thumb}")
    lines += ["  1. In Customer Engagement (on-premises), go to Document Management.",
              "  2. Choose Enable server-based SharePoint integration, review, Next.",
              "  3. For the SharePoint sites, select Online, Next.",
              "  4. On Prepare Sites, enter the site collection URL" + ("s:" if len(sites) > 1 else ":")]
    lines += [f"       {site}" for site in sites]
    lines += [f"     and the tenant ID {tenant or 'that step 08 printed'}; Next.",
              "  5. If all sites are valid, select Enable."]
    return lines
