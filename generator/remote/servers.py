"""A run over several servers: the main server's steps, each additional server's step, in order.

A first setup runs the main server's steps, then the additional servers' step on each of them.
A renewal installs the new certificate on every additional server before the main server
switches CRM to it, so the main server comes twice, in the same session (and under the same
lock): before and after them. Right before the switch the wait guard refuses it (and every step
after it) until `[certificate] switch_after_hours` have passed since the audit log's proof that
step spn read the new key credential back, and the switch guard asks each additional server
itself whether it holds the new certificate. A run has one run-end event, written by
the caller (`action`), whatever server it stopped on.
"""

from __future__ import annotations


from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..catalogue import is_renewal
from .. import clock
from ..clock import format_time
from ..steps.certificate import PROOF_ACTION, SwitchWait, key_proof_details, switch_wait
from ..check import CheckReport
from ..readings import CertificateReading
from ..thumbprint import Thumbprint
from ..errors import ConnectFailure, ExitCode, RuntimeFailure
from ..package import PackageStep
from .advice import ContinueCommand, RunAdvice, resume_advice
from .context import RemoteContext
from ..run_record import FarmGate, ForceUnlock
from .executor import Confirm, Executor, Hooks, Outcome, RunResult, StepPlan, StepResult
from .gate import approvals_lapsed
from .inputs import payload_parameters, secrets_needed, step_parameters
from .probing import Prober, farm_not_ready, observer, verify_in_session
from .serverlock import HeartbeatKeeper, Refused, before_step, close_stale_holder, heartbeat_refusal, heartbeat_warning
from .serverlock import read_server_lock, take_server_lock, unlock_refusal
from .transport import Connection, PSRPSession, open_session

if TYPE_CHECKING:
    from ..approvals import ApprovalPolicy

#: Asked right before a step is sent (`executor.Hooks.guard`): None lets it go, lines stop the run.
Guard = Callable[[PackageStep], list[str] | None]


@dataclass(frozen=True)
class Target:
    """A run of consecutive steps on one server: the main one (`host` None) or an additional one."""

    conn: Connection
    steps: list[PackageStep]
    host: str | None


@dataclass(frozen=True)
class RunOptions:
    """What the operator asked of this run, beyond the package and the connection."""

    selected: list[PackageStep]
    additional: list[str]
    confirm: Confirm | None = None
    from_step: int | None = None
    force_unlock: bool = False
    #: `--force-unlock`: shown the stale holder's lines, says whether to close its session (the CLI asks,
    #: or `--yes` answers); None closes nothing.
    confirm_unlock: Callable[[list[str]], bool] | None = None
    #: `run --verify`: check's probes in the main session after the last step.
    verify: bool = False
    #: Shows `--verify`'s check report to the operator (as `check` prints it) before it is recorded.
    show_check: Callable[[CheckReport], None] | None = None
    #: `--require-approval`'s policy: the approvals are judged again right before each changing step.
    approval: ApprovalPolicy | None = None


@dataclass
class HostOutcome:
    """How the steps on one server ended."""

    exit_code: int
    summary: list[str]
    stopped_at: int | None = None
    reason: str = "done"
    results: list[StepResult] = field(default_factory=list)


def targets_of(selected: Sequence[PackageStep], conn: Connection, additional: list[str]) -> list[Target]:
    """Where each run of consecutive steps goes, in step order."""
    segments: list[list[PackageStep]] = []
    for step in selected:
        if segments and segments[-1][0].spec.runs_on == step.spec.runs_on:
            segments[-1].append(step)
        else:
            segments.append([step])
    out: list[Target] = []
    for steps in segments:
        if steps[0].spec.runs_on == "main":
            out.append(Target(conn, steps, None))
        else:
            out += [Target(replace(conn, host=host), steps, host) for host in additional]
    return out


class ServerRun:
    """The steps of one run on each of its servers in turn (one session per server, kept to the end)."""

    def __init__(self, ctx: RemoteContext, options: RunOptions) -> None:
        self.ctx = ctx
        self.options = options
        self.targets = targets_of(options.selected, ctx.conn, options.additional)
        #: (step, additional host) -> its end state, for the summary of a run interrupted between steps.
        self.ended: dict[tuple[int, str | None], str] = {}
        self.sessions: list[PSRPSession] = []
        self.main: PSRPSession | None = None
        self.results: list[StepResult] = []
        self.verification: CheckReport | None = None
        #: The state readings recorded around the main server's changing steps: (step id, when) -> readings.
        self.readings: dict[tuple[str, str], dict[str, Any]] = {}
        #: Writes an audit line (what, details): --force-unlock is audited when it closes a session.
        self.audit: Callable[[str, dict[str, Any]], None] | None = None
        #: Keeps the heartbeat of each server lock this run holds; releases them before the sessions close.
        self.keeper: HeartbeatKeeper | None = None
        #: How many heartbeats of each session had failed when the last step's guard sent its own, by id.
        self._failures_seen: dict[int, int] = {}

    def note(self, event: dict[str, Any]) -> None:
        """Every event passes here on its way out: step ends are remembered for an interruption."""
        if event.get("event") == "step-end":
            self.ended[(event["index"], event.get("host"))] = event.get("state", "")
        elif event.get("event") == "state" and not event.get("host"):
            self.readings[(event["id"], event["when"])] = event.get("readings") or {}
        self.ctx.emit(event)
        self._prove_key(event)

    def _prove_key(self, event: dict[str, Any]) -> None:
        """A renewal's spn step ended OK on the main server: the audit log's proof line (the new key
        credential is in Entra ID, read back), which the wait before the switch counts from.

        Written after the record took the event; a log that refuses it stops the run like a record that
        can't be written (the switch would be refused without it anyway).
        """
        log = self.ctx.settings.audit_log
        if (event.get("event") != "step-end" or event.get("id") != "spn" or event.get("state") != "ok"
                or event.get("host") or log is None or not is_renewal(self.ctx.package.parameters)):
            return
        from .. import audit

        audit.record(log, PROOF_ACTION, self.ctx.package, "ok", host=self.ctx.conn.host, **key_proof_details(event))

    def run(self) -> RunResult:
        """Each target in turn; the first that does not end well ends the run (Raises ConnectFailure
        only while nothing ran). Then `--verify` in the main session."""
        done: list[str] = []
        succeeded: list[tuple[str, list[str]]] = []
        results = self.results
        for target in self.targets:
            outcome = self._run_on(target, nothing_ran=not done)
            results += outcome.results
            if outcome.exit_code:
                before = [f"Done before: {'; '.join(done)}."] if done else []
                return RunResult(results, outcome.exit_code, before + outcome.summary, outcome.reason,
                                 outcome.stopped_at)
            done.append(f"{_step_range(target.steps)} on {target.conn.host}")
            succeeded.append((target.conn.host, outcome.summary))
        lines = succeeded[0][1] if len(succeeded) == 1 else [
            f"On {host}: {line}" for host, summary in succeeded for line in summary]
        code, reason = self._verify(lines)
        self._warn_heartbeats()  # a failure while --verify's probes ran
        return RunResult(results, code, lines, reason, None)

    def close(self) -> None:
        """Release the server locks this run holds (their records say `released`), then close the sessions."""
        try:
            if self.keeper is not None:
                self.keeper.release_all()
        finally:
            for session in reversed(self.sessions):
                session.close()

    def _verify(self, lines: list[str]) -> tuple[int, str]:
        """`--verify`: the probes in the run's main session after its last step; exit 5 when a step that
        ran does not show in place."""
        from ..run_record import VerifyEvent

        if not self.options.verify:
            return ExitCode.OK, "done"
        if self.main is None:
            self.note(VerifyEvent.model_validate({"skipped": "no step ran on the main server"}).data())
            return ExitCode.OK, "done"
        self.verification = verify_in_session(self.ctx, self.main, self.ctx.settings.step_timeout)
        if self.options.show_check is not None:
            self.options.show_check(self.verification)
        verification = self.verification.as_json()
        self.note(VerifyEvent.model_validate(verification).data())
        changing = {s.id for s in self.options.selected if s.changes_state}
        unverified = [f"step {v['index']:02d} {v['id']} is {v['verdict']}" + (f" ({v['detail']})" if v.get("detail")
                                                                             else "")
                      for v in verification.get("verdicts", []) if v["id"] in changing and v["verdict"] != "in place"]
        if not unverified:
            return ExitCode.OK, "done"
        lines.append("Verification failed: after the run, " + "; ".join(unverified)
                     + ". The steps succeeded, but the server does not show the change (exit 5).")
        return ExitCode.WOULD_CHANGE, "unverified"

    def _session_for(self, target: Target) -> tuple[PSRPSession, bool]:
        """The main server's open session again (True), or a new one (False); raises ConnectFailure."""
        if target.host is None and self.main is not None:
            return self.main, True
        needed = [s for s in self.options.selected if s.spec.runs_on == "main"] if target.host is None else target.steps
        session = open_session(target.conn, self.ctx.winrm_password, self.ctx.redact,
                               exchange_keys=bool(secrets_needed(needed)))
        self.sessions.append(session)
        if target.host is None:
            self.main = session
        return session, False

    def _run_on(self, target: Target, nothing_ran: bool) -> HostOutcome:
        """Connect to one server, take its lock, run its steps there."""
        ctx, host = self.ctx, target.conn.host
        command = ctx.continue_command(from_server=target.host)
        emit = self.note if target.host is None else (lambda event: self.note({**event, "host": host}))
        try:
            session, reused = self._session_for(target)
        except ConnectFailure as exc:
            if nothing_ran:
                raise
            # Steps already ran elsewhere: a failed run (exit 1) that names the host, not "nothing ran".
            return HostOutcome(ExitCode.FAILED, [f"Stopped: could not connect to {host}: {exc}",
                                              "Fix the connection, then continue with:",
                                              f"  {command.at(target.steps[0].index)}"],
                            target.steps[0].index, "unreachable")
        if not reused:
            refused = self._lock(session, emit, nothing_ran, target, command)
            if refused is not None:
                return refused
        executor = Executor(
            StepPlan(ctx.package.steps, target.steps, lambda step: {**step_parameters(step, ctx.secrets), **payload_parameters(step, ctx.package)},
                     RunAdvice(ctx.package.steps, target.steps, command, self.options.from_step),
                     step_timeout=ctx.settings.step_timeout, emit_end=False),
            emit, ctx.redact,
            Hooks(confirm=self.options.confirm, observe=observer(ctx.with_emit(emit), session),
                  guard=_chained(self._approval_guard(command),
                                 self._wait_guard(command) if target.host is None else None,
                                 self._switch_guard(session, emit) if target.host is None else None,
                                 self._heartbeat_guard(session, command)),
                  ready=self._heartbeat_ready(session, command)))
        result = executor.run(session)
        self._warn_heartbeats()
        summary = list(result.summary)
        if result.exit_code == ExitCode.UNKNOWN and target.host is not None:
            summary += self._after_unknown(target, command)
        return HostOutcome(result.exit_code, summary, result.stopped_at, result.reason, result.results)

    def _lock(self, session: PSRPSession, emit: Callable[[dict[str, Any]], None], nothing_ran: bool,
              target: Target, command: ContinueCommand) -> HostOutcome | None:
        """The server's lock for this run (--force-unlock first when asked); None when held."""
        ctx = self.ctx
        lock_text = ctx.package.lock_script
        if self.options.force_unlock:
            self._force_unlock(session, lock_text, emit)
        try:
            take_server_lock(session, lock_text, ctx.settings.step_timeout, emit, ctx.redact)
        except Refused as refused:
            if nothing_ran:
                return HostOutcome(refused.exit_code, refused.summary, None, "locked")
            # Steps already ran elsewhere in this run: "run this command again" would send them again.
            host = session.conn.host
            return HostOutcome(refused.exit_code, [
                *refused.summary[:-1], f"Nothing was sent to {host}. When the other run there has ended, continue with:",
                f"  {command.at(target.steps[0].index)}"]
                + ([f"Its heartbeat is stale: if it crashed, add --force-unlock to that command to close its session on "
                    f"{host} first."] if refused.stale else []), target.steps[0].index, "locked")
        if self.keeper is None:
            self.keeper = HeartbeatKeeper(lock_text, ctx.settings.step_timeout)
        self.keeper.hold(session)
        return None

    def _force_unlock(self, session: PSRPSession, lock_text: str, emit: Callable[[dict[str, Any]], None]) -> None:
        """`--force-unlock`: read the holder; refuse a live one; ask (the CLI's hook), then close its session."""
        ctx = self.ctx
        reading = read_server_lock(session, lock_text, ctx.settings.step_timeout, ctx.redact)
        holder = reading.holder
        if holder is None or holder.shell.upper() == session.shell_id.upper():
            # Nothing to close: the lock is free (or its last holder released it); taking it follows.
            emit(ForceUnlock(holder=holder.model_dump(mode="json") if holder else None).data())
            return
        refusal = unlock_refusal(reading)
        if refusal is not None:
            raise RuntimeFailure(refusal)
        ask = self.options.confirm_unlock
        if ask is None or not ask([f"{session.conn.host}: the server's run lock is stale:", *reading.describe()]):
            raise RuntimeFailure("--force-unlock: not confirmed; nothing was closed and no step was sent")
        details = close_stale_holder(session, reading, emit)
        if self.audit is not None:
            self.audit("force-unlock", details)

    def _heartbeat_guard(self, session: PSRPSession, command: ContinueCommand) -> Guard:
        """Right before each step (after `--step`'s prompt): the server lock's heartbeat, in the step's session;
        when it had to be written and was not (`serverlock.before_step`), the step is not sent (exit 1, why,
        and the command that continues)."""

        def guard(step: PackageStep) -> list[str] | None:
            keeper = self.keeper
            if keeper is None or session not in keeper.sessions:
                return None
            self._warn_heartbeats()  # earlier failures, shown once, before this step's outcome
            failed = before_step(keeper, session, step.changes_state)
            self._failures_seen[id(session)] = keeper.failures(session)
            self._warn_heartbeats(besides=session if failed else None)  # a refusal says it itself
            if failed is None:
                return None
            return heartbeat_refusal(f"step {step.index:02d} ({step.id})", session.conn.host, failed,
                                     step.changes_state, self.ctx.redact) + [
                "Make sure no other psbridge run is working on that server, then continue with:",
                f"  {command.at(step.index)}"]

        return guard

    def _heartbeat_ready(self, session: PSRPSession, command: ContinueCommand) -> Guard:
        """The last check before a step goes, after the probes around a changing step: when a heartbeat
        failed since the guard's (a probe's, or the keeper's between them), the guard is asked again, so
        one more heartbeat must be written before the step is sent."""
        guard = self._heartbeat_guard(session, command)

        def ready(step: PackageStep) -> list[str] | None:
            keeper = self.keeper
            if keeper is None or keeper.failures(session) == self._failures_seen.get(id(session), 0):
                return None
            return guard(step)

        return ready

    def _warn_heartbeats(self, besides: PSRPSession | None = None) -> None:
        """The heartbeat failures not yet shown, one warning each (the first of a run of failures on a
        session), from the run's own thread: a lock event the screen prints as a warning, escaped."""
        if self.keeper is None:
            return
        for session, reason in self.keeper.take_warnings():
            if session is not besides:
                event = heartbeat_warning(session.conn.host, reason, self.ctx.redact)
                self.note(event if session is self.main else {**event, "host": session.conn.host})

    def _after_unknown(self, target: Target, command: ContinueCommand) -> list[str]:
        """On an additional server, after an UNKNOWN step: how to go on if it did take effect."""
        later = [s.index for s in self.ctx.package.steps if s.index > target.steps[-1].index]
        hosts = self.options.additional
        index = hosts.index(target.host) if target.host in hosts else -1
        next_server = hosts[index + 1] if 0 <= index < len(hosts) - 1 else None
        if next_server is not None:
            return ["or, if it did take effect, continue with the next server:",
                    f"  {command.on(next_server).at(target.steps[0].index)}"]
        if later:  # a renewal: the main server's steps after the additional servers'
            return ["or, if it did take effect, continue on the main server:", f"  {command.on(None).at(later[0])}"]
        return []

    def _approval_guard(self, command: ContinueCommand) -> Guard | None:
        """With --require-approval: the approvals judged again right before each state-changing step.

        The gate judged them before connecting, but a run can wait past an approval's expiry (at
        `--step`'s prompt, on a slow step). The same policy judges the same package object (its
        bytes are not read again; the approvals and trusted keys are), at the clock's time now;
        when too few valid approvals remain the step is not sent (exit 1) and the lines say which
        approval no longer counts and how to go on after a new one.
        """
        policy = self.options.approval
        if policy is None:
            return None
        package = self.ctx.package

        def guard(step: PackageStep) -> list[str] | None:
            if not step.changes_state:
                return None
            refusal = approvals_lapsed(package, policy, f"step {step.index:02d} ({step.id})", "continue with:")
            return None if refusal is None else refusal + [f"  {command.at(step.index)}"]

        return guard

    def _wait_guard(self, command: ContinueCommand) -> Guard | None:
        """A renewal's wait before its switch: the switch step, and every main-server step after it, is not
        sent until `[certificate] switch_after_hours` have passed since the new key credential was proven in
        Entra ID (the audit log's chain-verified proof line, `steps.certificate.switch_wait`); None for a
        package that does not wait (not a renewal, or 0 hours: it runs through).

        The log is read right before the step, so a run that added the key in this very session finds its
        own proof line: a renewal run therefore stops after the key is added, and says when to continue.
        """
        package = self.ctx.package
        switch = next((s for s in package.steps if s.id == "certificate"), None)
        spn = next((s for s in package.steps if s.id == "spn"), None)
        hours = package.parameters.certificate.switch_after_hours
        if switch is None or spn is None or not is_renewal(package.parameters) or not hours:
            return None
        log = self.ctx.settings.audit_log
        passed: list[bool] = []  # once the wait has passed it stays passed: the log is not read again

        def guard(step: PackageStep) -> list[str] | None:
            if passed or step.spec.runs_on != "main" or step.index < switch.index:
                return None
            wait = switch_wait(package, log)
            if wait is None or not wait.waiting(clock.utc_now()):
                passed.append(True)
                return None
            return _wait_refusal(wait, step, spn, command)

        return guard

    def _switch_guard(self, session: PSRPSession,
                      emit: Callable[[dict[str, Any]], None]) -> Callable[[PackageStep], list[str] | None] | None:
        """A renewal's guard before its switch (step certificate) on the main server; None for other packages.

        The switch makes CRM sign with the new key on every Web Application server, so each
        additional server must hold the new certificate, with a private key the service account
        can read, first. The guard asks the servers themselves (read-only probes, in sessions of
        their own) right before the switch, whatever the run did before: a resumed run may not
        have installed it everywhere.
        """
        ctx = self.ctx
        package = ctx.package
        farm = next((s for s in package.steps if s.spec.runs_on == "additional"), None)
        if farm is None or not is_renewal(package.parameters):
            return None

        def guard(step: PackageStep) -> list[str] | None:
            if step.id != "certificate":
                return None
            expected = Thumbprint.of((package.certificate or {}).get("thumbprint"))
            if expected is None:  # no approved thumbprint: the main server's .cer is the new certificate
                found, _ = Prober(session, ctx.settings.step_timeout, ctx.redact).ask(
                    {"certificate": package.probes["certificate"]})
                expected = CertificateReading.of(found.get("certificate") or {}).cer_thumbprint
            problems = farm_not_ready(ctx, expected)
            emit(FarmGate(servers=list(package.parameters.crm.additional_servers or []), certificate=expected,
                          ready=not problems, problems=problems).data())
            if not problems:
                return None
            return ([f"Not sent: step {step.index:02d} ({step.id}) would switch CRM to the new certificate, but not "
                     "every additional server holds it:"] + [f"  {line}" for line in problems]
                    + [f"Install it there first (step {farm.index:02d} changes nothing where it is in place), then "
                       "the run goes on:", f"  {ctx.continue_command().at(farm.index)}"])

        return guard

    def interrupted(self) -> tuple[list[str], int | None]:
        """What a run interrupted between steps says: the first step not sent, and how to go on.

        Never a command that starts before the run's own --from-step, and none at all when
        continuing would send a state-changing step of this run again (after a --step skip).
        """
        package, ended = self.ctx.package, self.ended
        pending = next(((step, t.host) for t in self.targets for step in t.steps if (step.index, t.host) not in ended),
                       None)
        summary = ["interrupted by the operator between steps"]
        if pending is None:
            return summary, None
        step, host = pending
        changed = {index for (index, where), state in ended.items() if state == "ok" and where is None}
        skipped = sorted({(index, s.id) for (index, _), state in ended.items() if state == "skipped"
                          for s in package.steps if s.index == index})
        first = min([step.index] + [i for i, _ in skipped])
        if self.options.from_step is not None:  # never before the run's own start
            first = max(first, self.options.from_step)
        if first != step.index:  # --from-server goes only with the additional servers' step, from the first one
            farm = next((s.index for s in package.steps if s.spec.runs_on != "main"), None)
            host = self.options.additional[0] if first == farm and self.options.additional else None
        summary.append(f"Not sent: step {step.index:02d} ({step.id}) and what follows.")
        return summary + resume_advice(package.steps, changed, skipped, first,
                                       self.ctx.continue_command(from_server=host)), step.index


def _wait_refusal(wait: SwitchWait, step: PackageStep, spn: PackageStep, command: ContinueCommand) -> list[str]:
    """Why the step waits (one line, with the UTC time), and the exact command that continues."""
    label = f"step {step.index:02d} ({step.id})" + (" switches CRM to the new certificate" if step.id == "certificate"
                                                    else " comes after the switch")
    until = wait.until
    if until is None or wait.proof is None:
        why = wait.problem or f"no line of step {spn.index:02d} (spn) ending OK for this package digest"
        return [f"Not sent: {label}, {wait.hours} hours ([certificate] switch_after_hours) after step "
                f"{spn.index:02d} (spn) proved the new key credential in Entra ID, and the audit log {wait.log} "
                f"holds no such proof that its hash chain vouches for ({why}).",
                f"Run step {spn.index:02d} (it changes nothing when the key credential is in place; it reads it "
                "back), then wait:", f"  {command.at(spn.index)}"]
    return [f"Not sent: {label} only after {format_time(until)} (UTC): the new key credential was read back in "
            f"Entra ID at {format_time(wait.proof.proven_at)} (audit log {wait.log}, line {wait.proof.line}) and "
            f"[certificate] switch_after_hours is {wait.hours} (SharePoint may take up to 24 hours to use a new "
            "certificate).",
            f"Continue after {format_time(until)} with:", f"  {command.at(step.index)}"]


def _chained(*guards: Guard | None) -> Guard | None:
    """One guard asking each of `guards` in turn; the first that refuses stops the step."""
    present = [g for g in guards if g is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]

    def guard(step: PackageStep) -> list[str] | None:
        for one in present:
            refusal = one(step)
            if refusal:
                return refusal
        return None

    return guard


def _step_range(steps: list[PackageStep]) -> str:
    """`steps 01-08` / `step 09`, for summaries."""
    if len(steps) == 1:
        return f"step {steps[0].index:02d}"
    return f"steps {steps[0].index:02d}-{steps[-1].index:02d}"


def ran_ok(results: Sequence[StepResult]) -> set[str]:
    """The ids of the steps that succeeded."""
    return {r.id for r in results if r.outcome is Outcome.OK}
