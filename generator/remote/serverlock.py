"""The server's run lock over a session: lock.ps1 sent before the first step, its heartbeat, its
release at the end, and --force-unlock.

The workstation's lock (PKG/runs/.lock) is `locks.WorkstationLock`; this is the other half, one
run at a time on the server from any workstation, held by the package's reviewed lock.ps1 in
the run's own session until the run releases it (or the session closes). Every lock.ps1 pipeline
runs in a scope of its own, so its parameters and variables never become the steps' variables
(the open file and the record it keeps in two `$global:PSBridgeRunLock*` variables). The holder
record is JSON (`locks.ServerHolder`); a live run keeps its `heartbeat` fresh: right before each
step (servers.py), before any other pipeline when the last heartbeat is a minute old (the probes
around a step and `--verify`'s, sent back to back), and, from `HeartbeatKeeper`'s thread, every
minute the session sends nothing else (while `--step` waits at its prompt, while steps run on
another server). `--force-unlock`
closes a holder's session only when that heartbeat is older than the holder's step timeout plus
`locks.STALE_MARGIN_SECONDS`, and only after the CLI asked (or `--yes`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..errors import ExitCode, RuntimeFailure, UserError
from ..locks import ServerLockReading, server_lock_parameters
from .context import Emit
from ..run_record import ForceUnlock, LockEvent
from .executor import Outcome, classify
from .redact import Redactor
from .transport import PSRPSession

#: Seconds between the keeper's heartbeats while the session is idle (the brief: at least every minute).
HEARTBEAT_EVERY = 60.0
#: A heartbeat is a few file writes: it gets this long (or the step timeout, if shorter).
HEARTBEAT_TIMEOUT = 30.0
_REFUSAL_MARK = "): "


class Refused(Exception):
    """The server's lock was not taken: nothing was sent there. Carries the run's exit code and lines."""

    def __init__(self, exit_code: int, summary: list[str], stale: bool = False) -> None:
        super().__init__(summary[0] if summary else "locked")
        self.exit_code = exit_code
        #: The refusal, the holder's lines, and (last) what to do.
        self.summary = summary
        #: The holder lock.ps1 named has a stale heartbeat (only then is --force-unlock suggested).
        self.stale = stale


def take_server_lock(session: PSRPSession, lock_text: str, timeout: float, emit: Emit, redact: Redactor) -> None:
    """Send lock.ps1; return when this run holds the server's lock, else raise Refused."""
    report = session.run_step(lock_text, server_lock_parameters(session.shell_id, timeout), timeout,
                              local_scope=True)
    if report.interrupted:
        raise KeyboardInterrupt  # the operator's Ctrl-C, not another run's lock
    if classify(report) is Outcome.OK:
        emit(LockEvent(state="held", output=[redact(o) for o in report.output]).data())
        return
    reason = redact(report.errors[0].message if report.errors else (report.transport_error or f"state {report.state}"))
    reading = named_holder(reason)
    raise Refused(ExitCode.UNKNOWN if report.transport_error else ExitCode.FAILED,
                  refusal_lines(session.conn.host, reason, reading), reading is not None and reading.stale())


def named_holder(reason: str) -> ServerLockReading | None:
    """The record lock.ps1's refusal names after `(PATH): `, parsed; None when it names none psbridge wrote."""
    record = reason.partition(_REFUSAL_MARK)[2]
    if not record.lstrip().startswith("{"):
        return None
    try:
        return ServerLockReading.parse(record, "lock.ps1")
    except UserError:
        return None


def refusal_lines(host: str, reason: str, reading: ServerLockReading | None) -> list[str]:
    """What a refused run says: the holder lock.ps1 named (parsed, escaped), and what to do about it.

    --force-unlock is suggested only for a holder whose heartbeat is already stale; a live holder's
    run is left to end.
    """
    from ..text import printable

    head = reason.partition(_REFUSAL_MARK)[0]
    if reading is None or reading.holder is None:
        return [f"Not started on {host}: the server's run lock was not taken: {printable(reason)}",
                "No step was sent. When the other run has ended, run this command again. --force-unlock closes a "
                "holder's session only when its recorded heartbeat is stale."]
    lines = [f"Not started on {host}: the server's run lock was not taken: {printable(head)})",
             *(f"  {line}" for line in reading.describe())]
    if reading.stale():
        return lines + ["No step was sent. Its heartbeat is stale: if that run crashed, add --force-unlock to close "
                        "its session first (you will be shown the holder and asked)."]
    return lines + ["No step was sent. That run is alive (its heartbeat is recent): wait for it to end, then run "
                    "this command again."]


def heartbeat(session: PSRPSession, lock_text: str, timeout: float) -> bool:
    """lock.ps1 -Heartbeat: the held record's `heartbeat` becomes the server's time now. True when written."""
    report = session.run_step(lock_text, {"Heartbeat": True}, min(timeout, HEARTBEAT_TIMEOUT), local_scope=True)
    if report.interrupted:
        raise KeyboardInterrupt  # the operator's Ctrl-C between steps stops the run, not just the heartbeat
    return classify(report) is Outcome.OK


def release_server_lock(session: PSRPSession, lock_text: str, timeout: float) -> bool:
    """lock.ps1 -Release at the run's end, before its session closes: the record says `released` and the
    file is closed, so no later reader takes this run for a holder. True when done."""
    if session.broken:
        return False
    report = session.run_step(lock_text, {"Release": True}, min(timeout, HEARTBEAT_TIMEOUT), local_scope=True)
    return classify(report) is Outcome.OK


def read_server_lock(session: PSRPSession, lock_text: str, timeout: float, redact: Redactor) -> ServerLockReading:
    """lock.ps1 -Inspect, parsed: the server's time now and its record. Raises RuntimeFailure when it could
    not be read, UserError (one line) when the record is not one psbridge writes."""
    report = session.run_step(lock_text, {"Inspect": True}, timeout, local_scope=True)
    if classify(report) is not Outcome.OK:
        raise RuntimeFailure("--force-unlock: could not read the server's lock file")
    if len(report.output) != 1:
        raise UserError(f"--force-unlock: lock.ps1 -Inspect on {session.conn.host} printed {len(report.output)} "
                        "lines, not one record; nothing was closed")
    return ServerLockReading.parse(redact(report.output[0]), f"--force-unlock on {session.conn.host}")


def unlock_refusal(reading: ServerLockReading) -> str | None:
    """Why --force-unlock must not close the holder (its heartbeat is recent: the run is alive), or None."""
    if reading.holder is not None and not reading.stale():
        return ("--force-unlock: refused: the run holding the server's lock is alive (" + "; ".join(reading.describe())
                + "). Wait for it to end; it can be forced only once its heartbeat is stale.")
    return None


def close_stale_holder(session: PSRPSession, reading: ServerLockReading, emit: Emit) -> dict[str, object]:
    """Close the stale holder's session (the CLI has asked); the event and audit details of what was done."""
    holder = reading.holder
    age = reading.heartbeat_age()
    shell = holder.shell.upper() if holder is not None else None
    closed = shell is not None and shell != session.shell_id and session.delete_shell(shell)
    details: dict[str, object] = {
        "holder": holder.model_dump(mode="json") if holder is not None else None,
        "heartbeat_age_seconds": round(age.total_seconds(), 3) if age is not None else None,
        "stale_shell": shell, "closed": closed}
    emit(ForceUnlock.model_validate(details).data())
    return details


class HeartbeatKeeper:
    """Keeps the heartbeat of every server lock this run holds fresh while their sessions are idle.

    pypsrp's RunspacePool runs one pipeline at a time here (one runspace), so the keeper never sends
    alongside a step: every 60 s it takes a held session's `gate` without waiting; when a pipeline is
    running it skips (that pipeline is bounded by the step timeout, which the stale bound includes).
    `stop` is called before any session closes.
    """

    def __init__(self, lock_text: str, timeout: float, every: float | None = None) -> None:
        self.lock_text = lock_text
        self.timeout = timeout
        self.every = HEARTBEAT_EVERY if every is None else every
        self.sessions: list[PSRPSession] = []
        self.failed = 0
        #: When each held session's last heartbeat was sent (time.monotonic), by id(session).
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, session: PSRPSession) -> None:
        """A session whose server lock this run now holds: keep its heartbeat from now on."""
        self.sessions.append(session)
        self._last[id(session)] = time.monotonic()  # the lock was just taken: its record's heartbeat is now
        session.before_pipeline = lambda: self.beat_if_due(session)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="psbridge-lock-heartbeat", daemon=True)
            self._thread.start()

    def beat(self, session: PSRPSession) -> bool:
        """One heartbeat now (the caller's thread), unless the session is broken."""
        if session.broken:
            return False
        self._last[id(session)] = time.monotonic()
        written = heartbeat(session, self.lock_text, self.timeout)
        self.failed += 0 if written else 1
        return written

    def beat_if_due(self, session: PSRPSession) -> None:
        """Before a pipeline (the session's `before_pipeline`): a heartbeat when the last is `every` old.

        Probes sent back to back leave the keeper's thread no idle moment; without this the heartbeat
        aged by all their durations and a live run could look stale to --force-unlock."""
        if self._stop.is_set() or session.broken:
            return
        if time.monotonic() - self._last.get(id(session), 0.0) >= self.every:
            self.beat(session)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            for session in list(self.sessions):
                if self._stop.is_set() or session.broken or not session.gate.acquire(blocking=False):
                    continue
                try:
                    self.beat(session)
                except Exception:  # noqa: BLE001 - a heartbeat must never crash the run; the next one retries
                    self.failed += 1
                finally:
                    session.gate.release()

    def stop(self) -> None:
        """No more heartbeats: wait for one in flight (bounded by HEARTBEAT_TIMEOUT) to end."""
        self._stop.set()
        for session in self.sessions:
            session.before_pipeline = None
        if self._thread is not None:
            self._thread.join(timeout=HEARTBEAT_TIMEOUT + 30)

    def release_all(self, on_release: Callable[[PSRPSession, bool], None] | None = None) -> None:
        """Stop, then release every held lock (before the sessions close)."""
        self.stop()
        for session in reversed(self.sessions):
            try:
                released = release_server_lock(session, self.lock_text, self.timeout)
            except Exception:  # noqa: BLE001 - closing the session releases the file anyway
                released = False
            if on_release is not None:
                on_release(session, released)
