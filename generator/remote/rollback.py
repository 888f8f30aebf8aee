"""`psbridge rollback`: the reviewed back-out scripts of one recorded run, on run's own executor.

Same machinery as `run` (`action.audited_action`): the workstation and server locks, a run record
written before anything is sent, the audit line first, one pipeline per script, and a stop at
the first script that does not succeed (nothing after it is sent).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pathlib import Path

from .. import audit
from ..approvals import ApprovalPolicy
from ..backout import RollbackPlan, Vouching, plan_rollback, read_record
from ..catalogue import backouts_for
from ..errors import ExitCode
from ..package import PackageStep
from ..runs import RunEntry, backed_out, history, last_change, skipped_after
from .action import Audited, Finished, audited_action, finish, started
from .context import RemoteContext
from .gate import GateRequest, PreparedRun, approvals_lapsed, prepare
from .executor import Executed, Executor, Hooks, RunResult, StepPlan, exit_code_of, Outcome
from .inputs import payload_parameters, secrets_needed, step_parameters
from .graph_signout import sign_out_of_graph, warn_on_stderr
from .serverlock import HeartbeatKeeper, Refused, take_server_lock
from .serverlock import before_step, heartbeat_refusal, heartbeat_warning
from .transport import PSRPSession, open_session


@dataclass(frozen=True)
class RecordSource:
    """Where rollback's evidence comes from: the run record, the audit log that must vouch for it,
    the head recorded elsewhere (lines after it are not believed), and whether the log was named
    on the command line (then it must hold a render or approve line for the package)."""

    record: Path | None
    log: Path
    head: str | None = None
    log_given: bool = False


@dataclass(frozen=True)
class RollbackChoice:
    """What rollback will back out: the record (given, or chosen by --last), the plan, and the
    later rollback that already backed that run out (then nothing is to be sent)."""

    prepared: PreparedRun
    plan: RollbackPlan
    record: Path
    already: RunEntry | None = None
    #: --last: the later runs it passed over and why, in words (None: it took the newest run).
    skipped: str | None = None


def prepare_rollback(request: GateRequest, source: RecordSource) -> tuple[PreparedRun, RollbackPlan]:
    """The gate, then the run record (believed only when the audit log, up to the expected head,
    vouches for its sha256), then what to undo: every state-changing step that ran OK, last first,
    with values checked like parameters."""
    choice = choose_rollback(request, source)
    return choice.prepared, choice.plan


def choose_rollback(request: GateRequest, source: RecordSource) -> RollbackChoice:
    """`prepare_rollback` for the record given or, without one (--last), for the package's last run the
    audit log vouches for that changed something; with the later rollback that already backed it out."""
    prepared = prepare(request)
    lines = audit.entries(source.log, source.head)
    entries = history(prepared.package, lines)
    picked: RunEntry | None = None
    record = source.record
    if record is None:  # --last
        picked = last_change(entries)
        record = picked.path
    vouching = Vouching(lines, str(source.log), source.head, source.log_given)
    events, digest = read_record(record, prepared.package, vouching)
    plan = plan_rollback(prepared.package, events, str(record), digest)
    skipped = skipped_after(entries, picked) if picked is not None else None
    return RollbackChoice(prepared, plan, record, backed_out(entries, digest), skipped)


def rollback_sends(ctx: RemoteContext, plan: RollbackPlan) -> tuple[list[PackageStep], dict[int, dict[str, Any]],
                                                                      dict[int, int]]:
    """What rollback sends, numbered from 1: the session steps its scripts need, then each script.

    Returns the steps, each script's parameters by its number, and the package step it undoes.
    """
    backouts = {b.step_id: b for b in backouts_for(ctx.package.parameters)}
    needs = {need for item in plan.scripted for need in backouts[item.step.id].needs}
    sends: list[PackageStep] = []
    parameters: dict[int, dict[str, Any]] = {}
    undoes: dict[int, int] = {}
    for step in (s for s in ctx.package.steps if s.id in needs):
        sends.append(replace(step, spec=replace(step.spec, index=len(sends) + 1)))
    for item in plan.scripted:
        number = len(sends) + 1
        name = f"undo-{item.step.id}"
        spec = replace(item.step.spec, index=number, id=name, title=name, needs=(), inputs={})
        sends.append(PackageStep(spec, {}, item.text, ctx.package.listing.get(item.file, "")))
        parameters[number] = dict(item.parameters)
        undoes[number] = item.step.index
    return sends, parameters, undoes


def approval_guard(ctx: RemoteContext, policy: ApprovalPolicy | None,
                   undoes: Mapping[int, int]) -> Callable[[PackageStep], list[str] | None] | None:
    """With --require-approval: the approvals judged again right before each back-out script.

    The gate judged them before the values were shown and asked about; the operator may answer
    after an approval expired. A back-out changes state as a step does, so, as `run` does before
    each state-changing step, it is not sent (exit 1) when too few valid approvals remain.
    """
    if policy is None:
        return None
    package = ctx.package

    def guard(step: PackageStep) -> list[str] | None:
        if step.index not in undoes:  # a session step (03, 04) changes nothing
            return None
        return approvals_lapsed(package, policy, f"the back-out of step {undoes[step.index]:02d}",
                                "run the same psbridge rollback command again: the back-out scripts change "
                                "nothing that is already undone.")

    return guard


def rollback_package(ctx: RemoteContext, plan: RollbackPlan, audited: Audited,
                     policy: ApprovalPolicy | None = None) -> Finished:
    """Send the plan's back-out scripts (reverse step order) after the session steps they need; with
    `policy` (--require-approval), the approvals are judged again right before each script."""
    sends, parameters, undoes = rollback_sends(ctx, plan)
    start = started(ctx, rollback_of=plan.record, rollback_of_sha256=plan.record_sha256,
                    steps=[s.index for s in sends if s.index not in undoes]
                    + [f"undo {index:02d}" for index in undoes.values()])
    details = {"host": ctx.conn.host, "of": plan.record, "of_sha256": plan.record_sha256}
    with audited_action(ctx, audited, start, details) as recorder:
        ctx = ctx.with_emit(recorder.emit)
        session = open_session(ctx.conn, ctx.winrm_password, ctx.redact,
                               exchange_keys=bool(secrets_needed(s for s in sends if s.index not in undoes)))
        sending = False
        keeper = HeartbeatKeeper(ctx.package.lock_script, ctx.settings.step_timeout)
        try:
            try:
                take_server_lock(session, ctx.package.lock_script, ctx.settings.step_timeout, ctx.emit, ctx.redact)
            except Refused as refused:
                return finish(recorder, RunResult([], refused.exit_code, refused.summary, "locked"),
                              host=ctx.conn.host, of=plan.record)
            keeper.hold(session)  # the lock's heartbeat while the back-outs run; released below
            executor = Executor(StepPlan(sends, sends, lambda s: parameters.get(s.index) or {**step_parameters(s, ctx.secrets), **payload_parameters(s, ctx.package)},
                                         _summarize(plan), step_timeout=ctx.settings.step_timeout, emit_end=False,
                                         for_step=undoes), ctx.emit, ctx.redact,
                                Hooks(guard=heartbeat_guard(ctx, keeper, session, undoes,
                                                            approval_guard(ctx, policy, undoes))))
            sending = True
            result = executor.run(session)
            warn_heartbeats(ctx, keeper)
        finally:
            try:
                # The session steps may have signed in to Microsoft Graph: sign out on every way out.
                warn_on_stderr(sign_out_of_graph(session if sending else None, ctx.package, ctx.redact))
                keeper.release_all()
            finally:
                session.close()
        return finish(recorder, result, host=ctx.conn.host, of=plan.record)


def _summarize(plan: RollbackPlan):  # noqa: ANN202 - a Summarize
    def summarize(executed: Executed) -> tuple[int, list[str]]:
        if executed.stopped_at is None:
            done = ", ".join(f"step {i.step.index:02d} {i.step.id}" for i in plan.scripted) or "nothing scripted"
            return ExitCode.OK, [f"Backed out: {done}."]
        if executed.reason == "not-ready":  # a guard (the approvals judged again) stopped it: its lines say why
            return ExitCode.FAILED, list(executed.refusal)
        last = executed.results[-1] if executed.results else None
        outcome = last.outcome if last is not None else Outcome.FAILED
        return exit_code_of(outcome), [f"Stopped: {executed.stopped_at.id} did not succeed ({outcome.value}); nothing "
                                       "after it was sent. Fix the cause, then run the same rollback command again: "
                                       "the back-out scripts change nothing that is already undone."]
    return summarize


def heartbeat_guard(ctx: RemoteContext, keeper: HeartbeatKeeper, session: PSRPSession, undoes: Mapping[int, int],
                    first: Callable[[PackageStep], list[str] | None] | None) -> Callable[[PackageStep], list[str] | None]:
    """Right before each script (after `first`, the approvals' guard): the server lock's heartbeat, as `run`
    sends it before each step. A back-out changes state: when its heartbeat is not written it is not sent
    (exit 1, `serverlock.before_step`); a first failure before a session step is a warning."""

    def guard(step: PackageStep) -> list[str] | None:
        refusal = first(step) if first is not None else None
        if refusal:
            return refusal
        warn_heartbeats(ctx, keeper)
        changes = step.index in undoes
        failed = before_step(keeper, session, changes)
        if failed is not None:
            keeper.take_warnings()  # the refusal says it
            return heartbeat_refusal(f"{step.id} (script {step.index})", session.conn.host, failed, changes,
                                     ctx.redact) + [
                "Make sure no other psbridge run is working on that server, then run the same rollback command "
                "again: the back-out scripts change nothing that is already undone."]
        warn_heartbeats(ctx, keeper)
        return None

    return guard


def warn_heartbeats(ctx: RemoteContext, keeper: HeartbeatKeeper) -> None:
    """The lock's heartbeat failures not yet shown (the keeper's thread keeps them): one warning each."""
    for session, reason in keeper.take_warnings():
        ctx.emit(heartbeat_warning(session.conn.host, reason, ctx.redact))
