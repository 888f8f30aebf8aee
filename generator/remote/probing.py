"""The read-only probes over a session: what `check`, `run --verify`, the state observer and the
renewal's switch guard ask the servers, and the verdicts `check.evaluate` draws from the answers.

A probe runs in a scope of its own (nothing it assigns outlives it) and prints one JSON
object; a probe that fails or prints something else is None plus a note, never a guess.
Every text that came from a server passes through the run's redactor before it is shown,
recorded or saved.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from ..catalogue import GRAPH_PROBES, SERVER_PROBES
from ..check import CheckReport, ProbeError, evaluate, holds_for_switch, parse_probe_output
from ..package import Package, PackageStep
from .context import RemoteContext
from .executor import Outcome, classify
from .inputs import step_parameters
from .redact import Redactor
from .transport import PSRPSession, open_session

#: Told about each probe as it finishes: (probe name, host, answered?), for the live lines of `check`.
Progress = Callable[[str, str, bool], None]
Answers = dict[str, dict[str, Any] | None]


@dataclass(frozen=True)
class Prober:
    """Sends probes over one session and reads their answers."""

    session: PSRPSession
    timeout: float
    redact: Redactor
    progress: Progress | None = None

    def ask(self, probes: Mapping[str, str]) -> tuple[Answers, list[str]]:
        """Send each probe, parse its JSON; a failed probe is None plus a note (never a guess)."""
        answers: Answers = {}
        notes: list[str] = []
        for name, text in probes.items():
            report = self.session.run_step(text, {}, self.timeout, local_scope=True)
            if report.interrupted:
                raise KeyboardInterrupt  # the operator's Ctrl-C during a probe stops the run, not just the probe
            answers[name] = None
            if classify(report) is not Outcome.OK:
                notes.append(self.redact(f"probe {name} failed: {report.reason}"))
            else:
                try:
                    answers[name] = parse_probe_output(name, report.output)
                except ProbeError as exc:
                    notes.append(str(exc))
            if self.progress is not None:
                self.progress(name, self.session.conn.host, answers[name] is not None)
            if self.session.broken:
                break
        return answers, notes


def redacted(report: CheckReport, redact: Redactor) -> CheckReport:
    """The report with every text that came from the server passed through the redactor.

    Verdict details, before/after and causes quote what the probes read; a server that
    echoes a secret must not get it printed, recorded in runs/ or saved in checks/.
    """
    fields = ("detail", "before", "after", "cause", "fix")
    report.verdicts[:] = [replace(v, **{f: redact.clean(getattr(v, f)) for f in fields}) for v in report.verdicts]
    report.notes[:] = [redact(n) for n in report.notes]
    report.readings.update(redact.clean(dict(report.readings)))
    return report


def main_answers(ctx: RemoteContext, prober: Prober, entra_steps: list[PackageStep] | None) -> tuple[Answers, list[str]]:
    """The main server's probe answers (and Entra ID's, after the session steps), with notes."""
    probes = ctx.package.probes
    answers, notes = prober.ask({name: text for name, text in probes.items() if name not in GRAPH_PROBES})
    graph = {name: text for name, text in probes.items() if name in GRAPH_PROBES}
    if entra_steps is None:
        notes += [f"probe {name} skipped (--no-entra)" for name in graph]
        return answers, notes
    if prober.session.broken:
        return answers, notes
    for step in entra_steps:
        report = prober.session.run_step(step.text, step_parameters(step, ctx.secrets), prober.timeout)
        if classify(report) is not Outcome.OK:
            notes.append(prober.redact(f"step {step.index:02d} {step.id} failed, so probe "
                                       f"{' and '.join(graph)} did not run: {report.reason}"))
            return answers, notes
    more, more_notes = prober.ask(graph)
    answers.update(more)
    return answers, notes + more_notes


def additional_answers(ctx: RemoteContext, timeout: float,
                       progress: Progress | None = None) -> tuple[dict[str, Answers | None], list[str]]:
    """Each additional server's server and certificate probe answers (None: not reachable), and notes."""
    per_server: dict[str, Answers | None] = {}
    notes: list[str] = []
    redact = ctx.redact
    probes = {k: v for k, v in ctx.package.probes.items() if k in SERVER_PROBES}
    for host in ctx.package.parameters.crm.additional_servers or []:
        from ..errors import ConnectFailure

        try:
            there = open_session(ctx.on(host).conn, ctx.winrm_password, redact, exchange_keys=False)
        except ConnectFailure as exc:
            notes.append(f"server {host}: could not connect: {exc}")
            per_server[host] = None
            continue
        try:
            found, probe_notes = Prober(there, timeout, redact, progress).ask(probes)
        finally:
            there.close()
        per_server[host] = found
        notes += [f"server {host}: {note}" for note in probe_notes]
    return per_server, notes


def verify_in_session(ctx: RemoteContext, session: PSRPSession, timeout: float) -> CheckReport:
    """`run --verify`: probe the run's own session (already connected by its step 04) and every
    additional server, and judge every step, so that the step that ran there is judged too."""
    redact = ctx.redact
    answers, notes = main_answers(ctx, Prober(session, timeout, redact), [])
    per_server = None
    if ctx.package.parameters.crm.additional_servers:
        per_server, farm_notes = additional_answers(ctx, timeout)
        notes += farm_notes
    report = evaluate(ctx.package.plan, answers, per_server)
    report.notes.extend(notes)
    return redacted(report, redact)


def farm_not_ready(ctx: RemoteContext, expected: str | None) -> list[str]:
    """Why CRM must not be switched to `expected` yet: each additional server that does not hold it."""
    per_server, notes = additional_answers(ctx, ctx.settings.step_timeout)
    replaces = ctx.package.parameters.certificate.replaces or ""
    problems = [f"{host}: {why}" for host in ctx.package.parameters.crm.additional_servers or []
                if (why := holds_for_switch(per_server.get(host), expected, replaces))]
    redact = ctx.redact
    return [redact(line) for line in problems + (notes if problems else [])]


def observer(ctx: RemoteContext, session: PSRPSession) -> Callable[[PackageStep, Literal["before", "after"]], None]:
    """Record, with the package's read-only probes, the state a change step is about to change (and did).

    The readings go into the run record as `state` events; `psbridge rollback` takes the values
    it passes to a back-out script from them. A probe that does not answer is recorded as null:
    the run goes on, and the back-out of that step will refuse. Every step with captures is read
    after it too, the manual back-outs' steps included: equal readings around each step are how a
    re-run is known to have changed nothing (`runs.what_changed`), so that `rollback --last` skips it.
    """
    from ..run_record import StateEvent
    from ..steps import unit

    package: Package = ctx.package
    prober = Prober(session, ctx.settings.step_timeout, ctx.redact)

    def observe(step: PackageStep, when: Literal["before", "after"]) -> None:
        # The unit's first-setup back-out says what to capture, a renewal's too: its spn back-out is
        # manual, but the text sends the operator to the state recorded after the step.
        found = unit(step.id)
        backout = found.backout if found is not None else None
        if backout is None:
            return
        readings, notes = prober.ask({name: package.probes[name] for name in backout.captures})
        cleaned = prober.redact.clean(readings)
        if cleaned != readings:  # a difference in a secret is gone from the record: say so, equal is no proof
            notes.append("a secret was redacted from these readings")
        ctx.emit(StateEvent(when=when, index=step.index, id=step.id, readings=cleaned, notes=notes).data())

    return observe
