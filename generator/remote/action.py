"""The audited remote action: what `run` and `rollback` do around their steps, in one place.

Before anything is sent: the workstation lock (PKG/runs/.lock), the run record (runs/*.jsonl),
its run-start event, and the audit log's start line. If either can't be written, nothing is
sent (`NotRecorded`). After the steps: one run-end event, and the audit log's end line with the
record's sha256 (the hash of the bytes this run wrote, which is what `rollback` later believes).
Whatever ends the run (Ctrl-C between steps, a refused connection, a failure after the start)
leaves the record and the audit log saying how it ended. `check` takes neither lock nor record:
it writes one audit line when it ends (see `check_package`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__, audit
from ..errors import ConnectFailure, ExitCode, Interrupted, RuntimeFailure, UserError, stop_code
from ..locks import WorkstationLock
from .advice import RunFacts
from .context import RemoteContext
from ..run_record import RunEnd, RunRecord, RunStart, event_time
from .executor import RunResult

#: What the audit log's end line says of a run's exit code.
OUTCOMES = {0: "ok", 1: "failed", 4: "unknown", 5: "unverified"}


def outcome_of(exit_code: int) -> str:
    return OUTCOMES.get(exit_code, f"exit {exit_code}")


class NotRecorded(Exception):
    """The run could not be recorded before connecting (the audit log refused its start): nothing ran.

    Carries the log's own error; nothing more is logged in that log.
    """

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


class EndNotRecorded(RuntimeFailure):
    """The run ended, but the audit log did not take its end line; exit code: the run's, else 1."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = ExitCode(exit_code) if exit_code else ExitCode.FAILED


@dataclass(frozen=True)
class Audited:
    """Where and as what the action is audited."""

    log: Path
    action: str  # "run" | "rollback"
    #: The audit log's start line: its outcome ("started", "rollback-started") and details.
    start: str = "started"


@dataclass
class Finished:
    """A finished run: its result and the audit log's end line (its head is what the ticket quotes)."""

    result: RunResult
    entry: dict[str, Any]
    record: Path
    #: What the operator needs next (the wizard's values), read as values during the run.
    facts: RunFacts = field(default_factory=RunFacts)


class Recorder:
    """The run record and the audit log of one action, and the one run-end event."""

    def __init__(self, ctx: RemoteContext, audited: Audited) -> None:
        self.audited = audited
        self.package = ctx.package
        self.record = RunRecord(ctx.package.path or Path("."))
        self.screen = ctx.emit
        self.redact = ctx.redact
        self.ended = False

    def emit(self, event: dict[str, Any]) -> None:
        """An event to the record (first: a record that can't be written stops the run) and the screen."""
        self.record.write(event)
        self.screen(event)
        self.ended = self.ended or event.get("event") == "run-end"

    def line(self, outcome: str, **details: Any) -> dict[str, Any]:
        """One audit line about this package."""
        return audit.record(self.audited.log, self.audited.action, self.package, outcome, **details)

    def facts(self) -> dict[str, Any]:
        """The record's path and the sha256 of exactly the bytes this run wrote to it."""
        return {"record": str(self.record.path), "record_sha256": self.record.sha256}

    def end(self, code: int, reason: str, summary: list[str], stopped_at: int | None = None) -> None:
        """The run's one run-end event; if the record itself is what failed, let it be."""
        if self.ended:
            return
        try:
            self.emit(RunEnd(exit_code=int(code), ended=event_time(), stopped_at=stopped_at, reason=reason,
                             summary=summary).data())
        except RuntimeFailure:
            pass

    def attempt(self, outcome: str, **details: Any) -> None:
        """An audit line after something already went wrong: its own failure must not hide the first one."""
        try:
            self.line(outcome, **details)
        except (UserError, RuntimeFailure):
            pass


@contextmanager
def audited_action(ctx: RemoteContext, audited: Audited, start: RunStart,
                   start_details: dict[str, Any]) -> Iterator[Recorder]:
    """Lock, record and audit one run; yield the recorder whose `emit` the steps report through.

    The body ends by calling `recorder.end(...)` with the run's exit code; whatever else ends it
    is recorded here, in the record and in the audit log, and then raised.
    """
    package = ctx.package
    assert package.path is not None, "a run is of a package folder"
    workstation = WorkstationLock(package.path)
    workstation.acquire(package=package.name, digest=package.digest, host=ctx.conn.host,
                        **({"rollback": start.rollback_of} if start.rollback_of else {}))
    try:
        recorder = Recorder(ctx, audited)
        try:
            _start(recorder, start, start_details)
            yield recorder
        except KeyboardInterrupt:
            recorder.end(stop_code(), "interrupted", ["interrupted by the operator between steps"])
            recorder.attempt("interrupted", host=ctx.conn.host, **recorder.facts())
            raise Interrupted("interrupted between steps; the run record says what ran") from None
        except ConnectFailure as exc:
            recorder.end(ExitCode.CONNECT, "connect-failed", [str(exc)])
            recorder.attempt("connect-failed", host=ctx.conn.host)
            raise
        except (UserError, RuntimeFailure) as exc:
            text = "; ".join(exc.problems) if isinstance(exc, UserError) else str(exc)
            recorder.end(getattr(exc, "exit_code", ExitCode.FAILED), "error", [ctx.redact(text)])
            problems = list(exc.problems) if isinstance(exc, UserError) else [str(exc)]
            recorder.attempt("failed", host=ctx.conn.host, problems=problems)
            raise
        except Exception as exc:
            recorder.end(ExitCode.FAILED, "error", [ctx.redact(f"{type(exc).__name__}: {exc}")])
            raise
        finally:
            recorder.record.close()
    finally:
        workstation.release()


def _start(recorder: Recorder, start: RunStart, details: dict[str, Any]) -> None:
    """The run-start event (and the approval) and the audit log's start line, or NotRecorded."""
    start = start.model_copy(update={"record": str(recorder.record.path)})
    try:
        recorder.emit(start.data())
        for event in details.pop("_events", []):
            recorder.emit(event)
        recorder.line(recorder.audited.start, **{**details, "record": str(recorder.record.path)})
    except Exception as exc:
        # The run could not be recorded (the audit log refused the start line): nothing is sent.
        reason = "; ".join(exc.problems) if isinstance(exc, UserError) else str(exc)
        recorder.end(getattr(exc, "exit_code", ExitCode.FAILED), "not-recorded",
                     [recorder.redact(f"not started: the run could not be recorded: {reason}")])
        raise NotRecorded(exc) from None


def finish(recorder: Recorder, result: RunResult, **details: Any) -> Finished:
    """The run-end event and the audit log's end line with the record's sha256."""
    recorder.end(result.exit_code, result.reason, result.summary, result.stopped_at)
    outcome = outcome_of(result.exit_code)
    try:
        entry = recorder.line(outcome, **details, **recorder.facts())
    except (UserError, RuntimeFailure) as exc:
        # The run happened and its record (runs/) says so; the audit log only lacks its end.
        problems = exc.problems if isinstance(exc, UserError) else (str(exc),)
        raise EndNotRecorded("; ".join(f"the run ended ({outcome}) but its end is not in the audit log: {line}"
                                       for line in problems), result.exit_code) from None
    return Finished(result, entry, recorder.record.path)


def started(ctx: RemoteContext, **fields: Any) -> RunStart:
    """The run-start event of `ctx`'s run (the record's path is filled in when the record exists)."""
    conn = ctx.conn
    return RunStart(started=event_time(), tool_version=__version__, package=ctx.package.name,
                    package_digest=ctx.package.digest, host=conn.host, port=conn.port, transport=conn.transport,
                    auth=conn.auth, user=conn.username, **fields)


AuditLine = Callable[[str, dict[str, Any]], None]
