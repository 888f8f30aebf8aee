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
from dataclasses import dataclass

from ..errors import ExitCode, RuntimeFailure, UserError
from ..locks import ServerLockReading, server_lock_parameters
from .context import Emit
from ..run_record import ForceUnlock, LockEvent
from ..text import clip
from .executor import Outcome, classify
from .redact import Redactor
from .transport import PSRPSession

#: Seconds between the keeper's heartbeats while the session is idle (the brief: at least every minute).
HEARTBEAT_EVERY = 60.0
#: A heartbeat is a few file writes: it gets this long (or the step timeout, if shorter).
HEARTBEAT_TIMEOUT = 30.0
#: How much of a failed heartbeat's reason a warning or a refusal quotes.
REASON_LIMIT = 300
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


@dataclass(frozen=True)
class Beat:
    """One heartbeat: written, or why not (the server's text, not yet redacted)."""

    written: bool
    reason: str = ""


def heartbeat(session: PSRPSession, lock_text: str, timeout: float) -> Beat:
    """lock.ps1 -Heartbeat: the held record's `heartbeat` becomes the server's time now.

    Not written when its pipeline errs (lock.ps1 throws when this session no longer holds the lock),
    times out or loses the connection: the reason says which."""
    report = session.run_step(lock_text, {"Heartbeat": True}, min(timeout, HEARTBEAT_TIMEOUT), local_scope=True)
    if report.interrupted:
        raise KeyboardInterrupt  # the operator's Ctrl-C between steps stops the run, not just the heartbeat
    if classify(report) is Outcome.OK:
        return Beat(True)
    return Beat(False, "no answer within its timeout" if report.timed_out else report.reason)


def heartbeat_reason(reason: str, redact: Redactor) -> str:
    """A failed heartbeat's reason as a warning or a refusal quotes it: redacted first (a clipped or
    re-spaced secret would no longer be found), then on one line and clipped."""
    return clip(redact(" ".join(redact(reason).split())), REASON_LIMIT)  # re-spaced text redacted again


def before_step(keeper: HeartbeatKeeper, session: PSRPSession, changes_state: bool) -> Beat | None:
    """The heartbeat right before a step; the failed one that must stop the step, else None.

    Without heartbeats the lock's record ages toward stale while the run goes on, and another
    operator's --force-unlock may then take the lock of this live run. So the heartbeat is mandatory
    before a step that changes state, and before any step once an earlier heartbeat of the session
    failed (the keeper's, a probe's). Before a read-only step a first failure is only a warning
    (`take_warnings`). A connection lost in it is left to the executor, which sends nothing more
    (exit 1, as before); Ctrl-C in it raises KeyboardInterrupt (130).
    """
    mandatory = changes_state or keeper.missed(session)
    beat = keeper.beat(session)
    if beat.written or session.broken or not mandatory:
        return None
    return beat


def heartbeat_refusal(label: str, host: str, beat: Beat, changes_state: bool, redact: Redactor) -> list[str]:
    """Why a step (`label`: `step 02 (certificate)`) is not sent after its heartbeat failed, in lines that fit
    100 columns but for the server's reason; the caller adds how to continue."""
    rule = ("A step that changes state is not sent without a heartbeat." if changes_state
            else "After a failed heartbeat, no step is sent without a new one.")
    return [f"Not sent: {label}: the run lock's heartbeat on {host} failed right before it:",
            f"  {heartbeat_reason(beat.reason, redact)}",
            "While heartbeats fail the lock's record ages toward stale: another operator's --force-unlock could",
            f"take the lock of this live run. {rule}"]


def heartbeat_warning(host: str, reason: str, redact: Redactor) -> dict[str, object]:
    """The lock event of a heartbeat failure that did not stop a step (the screen prints it as a warning)."""
    text = (f"the heartbeat of the server's run lock on {host} failed: {heartbeat_reason(reason, redact)}. While "
            "heartbeats fail the lock's record ages toward stale and another operator's --force-unlock could take "
            "it; the heartbeat before the next step on that server must succeed, or the run stops there.")
    return LockEvent(state="heartbeat-failed", output=[text]).data()


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

    A failed heartbeat is remembered, never silent: the first of a run of failures on a session is a
    warning kept for the run's own thread (`take_warnings`: this thread writes neither the screen nor
    the run record), and until a heartbeat is written again the session has `missed` one, which makes
    the heartbeat before its next step mandatory (servers.py stops the run when that one fails too).
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
        #: Guards what the keeper's thread and the run's thread both change (below and `failed`).
        self._lock = threading.Lock()
        #: The reason of the last failed heartbeat of each session not written since, by id(session).
        self._missed: dict[int, str] = {}
        #: Warnings not yet shown: (session, reason), the first failure of each run of failures.
        self._unreported: list[tuple[PSRPSession, str]] = []
        #: How many heartbeats of each session failed so far, by id(session).
        self._failures: dict[int, int] = {}

    def hold(self, session: PSRPSession) -> None:
        """A session whose server lock this run now holds: keep its heartbeat from now on."""
        self.sessions.append(session)
        self._last[id(session)] = time.monotonic()  # the lock was just taken: its record's heartbeat is now
        session.before_pipeline = lambda: self.beat_if_due(session)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="psbridge-lock-heartbeat", daemon=True)
            self._thread.start()

    def beat(self, session: PSRPSession) -> Beat:
        """One heartbeat now (the caller's thread), unless the session is broken; its result noted."""
        if session.broken:
            return Beat(False, "the connection is lost")
        self._last[id(session)] = time.monotonic()
        result = heartbeat(session, self.lock_text, self.timeout)
        if not session.broken:  # a lost connection stops the run by itself; it is not the lock's failure
            self._note(session, result)
        return result

    def _note(self, session: PSRPSession, result: Beat) -> None:
        """Count a failure; the first since the last written heartbeat becomes a warning to show."""
        with self._lock:
            key = id(session)
            if result.written:
                self._missed.pop(key, None)
                return
            self.failed += 1
            self._failures[key] = self._failures.get(key, 0) + 1
            if key not in self._missed:
                self._unreported.append((session, result.reason))
            self._missed[key] = result.reason

    def missed(self, session: PSRPSession) -> bool:
        """The session's last heartbeat failed (none written since): the next one before a step must succeed."""
        with self._lock:
            return id(session) in self._missed

    def failures(self, session: PSRPSession) -> int:
        """How many heartbeats of the session failed so far: a caller that noted it can tell whether one
        failed since."""
        with self._lock:
            return self._failures.get(id(session), 0)

    def take_warnings(self) -> list[tuple[PSRPSession, str]]:
        """The failures not yet shown, each once: (session, reason). Called from the run's own thread."""
        with self._lock:
            taken, self._unreported = self._unreported, []
        return taken

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
                except Exception as exc:  # noqa: BLE001 - a heartbeat must never crash the run; the next one retries
                    self._note(session, Beat(False, f"psbridge could not send it ({type(exc).__name__})"))
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
