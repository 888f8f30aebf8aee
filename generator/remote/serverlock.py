"""The server's run lock over a session: lock.ps1 sent before the first step, and --force-unlock.

The workstation's lock (PKG/runs/.lock) is `locks.WorkstationLock`; this is the other half, one
run at a time on the server from any workstation, held by the package's reviewed lock.ps1 in
the run's own session until the session closes.
"""

from __future__ import annotations

from ..errors import ExitCode, RuntimeFailure
from ..locks import holder_for_server, shell_of
from .context import Emit
from ..run_record import ForceUnlock, LockEvent
from .executor import Outcome, classify
from .redact import Redactor
from .transport import PSRPSession


class Refused(Exception):
    """The server's lock was not taken: nothing was sent there. Carries the run's exit code and lines."""

    def __init__(self, exit_code: int, summary: list[str]) -> None:
        super().__init__(summary[0] if summary else "locked")
        self.exit_code = exit_code
        self.summary = summary


def take_server_lock(session: PSRPSession, lock_text: str, timeout: float, emit: Emit, redact: Redactor) -> None:
    """Send lock.ps1; return when this run holds the server's lock, else raise Refused."""
    report = session.run_step(lock_text, {"Holder": holder_for_server(), "ShellId": session.shell_id}, timeout)
    if report.interrupted:
        raise KeyboardInterrupt  # the operator's Ctrl-C, not another run's lock
    if classify(report) is Outcome.OK:
        emit(LockEvent(state="held", output=[redact(o) for o in report.output]).data())
        return
    reason = report.errors[0].message if report.errors else (report.transport_error or f"state {report.state}")
    summary = [redact(f"Not started on {session.conn.host}: the server's run lock was not taken: {reason}"),
               "No step was sent. When the other run has ended, run this command again; if it crashed, "
               "add --force-unlock to close its stale session first."]
    raise Refused(ExitCode.UNKNOWN if report.transport_error else ExitCode.FAILED, summary)


def force_unlock(session: PSRPSession, lock_text: str, timeout: float, emit: Emit, redact: Redactor) -> dict[str, object]:
    """`--force-unlock`: read the server's lock, close the stale session that holds it; what was done."""
    report = session.run_step(lock_text, {"Inspect": True}, timeout)
    if classify(report) is not Outcome.OK:
        raise RuntimeFailure("--force-unlock: could not read the server's lock file")
    text = redact("\n".join(report.output)).strip()
    stale = shell_of(text)
    closed = bool(stale) and stale != session.shell_id and session.delete_shell(stale or "")
    event = ForceUnlock(lock=text, stale_shell=stale, closed=closed)
    emit(event.data())
    return {"lock": text, "stale_shell": stale, "closed": closed}
