"""What a run says when it ends: the exact command to continue, never one that repeats a change.

Pure functions over the steps and how the loop ended (`executor.Executed`): the closing
summary of `psbridge run`, the continue command with the operator's own options (no
secrets), and what to do next after a successful run (the manual wizard, with the values
the run read).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..catalogue import resume_selection
from ..errors import ExitCode, RuntimeFailure
from ..package import Package, PackageStep
from ..thumbprint import Thumbprint
from .executor import Executed, Outcome, StepResult


#: The options of a continue command that take no value (remote.transport.Connection.continue_options,
#: RunSettings.options).
_FLAGS = frozenset({"--no-verify-tls", "--step", "--json", "--verify", "--require-approval", "--yes"})
#: The options of a continue command that `psbridge check` does not take (or should not: --json).
_RUN_ONLY = frozenset({"--step-timeout", "--step", "--json", "--verify", "--yes"})


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
    #: The option values the package and the environment already give (cli.options.implied_options, and
    #: the audit log's default place): a continue command leaves them out, so it repeats only what differs.
    implied: tuple[tuple[str, str], ...] = ()

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
            opts += ["--require-approval", "--trusted-keys", str(self.trusted_keys)]
            opts += ["--min-approvals", str(self.min_approvals)] if self.min_approvals != 1 else []
            for spec in self.forbid:
                opts += ["--forbid-key", spec]
        if self.audit_log is not None:
            opts += ["--audit-log", str(self.audit_log)]
        opts += ["--yes"] if self.assume_yes else []
        return self.trim(tuple(opts))

    def trim(self, options: tuple[str, ...]) -> tuple[str, ...]:
        """`options` (the connection's, as `--name value` pairs and flags) without the pairs `implied` gives.

        Why: a continue command of 260 columns gets retyped wrong; the package and the environment
        carry the connection, so the command repeats only what differs from them.
        """
        out: list[str] = []
        words = list(options)
        while words:
            word = words.pop(0)
            if word not in _FLAGS and words:
                value = words.pop(0)
                if (word, value) not in self.implied:
                    out += [word, value]
            else:
                out.append(word)
        return tuple(out)


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

    def on(self, server: str | None) -> ContinueCommand:
        return replace(self, from_server=server)

    def check(self) -> str:
        """The read-only `psbridge check` with the same connection and approval options.

        Why: after a step whose outcome is UNKNOWN, the operator's next question is what is in
        place now; check answers it without changing anything. Options only `run` takes are left out.
        """
        words = ["psbridge", "check", self.package_dir]
        options = list(self.options)
        while options:
            word = options.pop(0)
            takes_value = word not in _FLAGS and bool(options)
            value = options.pop(0) if takes_value else None
            if word in _RUN_ONLY:
                continue
            words += [word] if value is None else [word, value]
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


@dataclass(frozen=True)
class RunAdvice:
    """`psbridge run`'s closing lines (a `Summarize`): what happened and the exact command to go on.

    `resume_floor` is the run's own --from-step: a continue command never starts before it (the
    earlier steps this run sent are session steps a later one needs; the state-changing ones
    before it succeeded in an earlier run and must not be sent again).
    """

    steps: Sequence[PackageStep]
    selected: Sequence[PackageStep]
    command: ContinueCommand
    resume_floor: int | None = None

    def __call__(self, executed: Executed) -> tuple[int, list[str]]:
        results, stopped_at, reason = executed.results, executed.stopped_at, executed.reason
        skipped = [r for r in results if r.outcome is Outcome.SKIPPED]
        if stopped_at is None:
            ran = len(results) - len(skipped)
            lines = [f"{ran} of {len(self.selected)} selected steps succeeded."]
            if skipped:
                lines += self._skipped_advice(results, skipped[0].index)
            return (ExitCode.FAILED if skipped else ExitCode.OK), lines
        if reason == "not-ready":
            return ExitCode.FAILED, list(executed.refusal)
        label = f"step {stopped_at.index:02d} ({stopped_at.id})"
        again = self.command.at(self._resume_at(stopped_at.index))
        if reason == "connection-lost":
            return ExitCode.FAILED, [f"Stopped: the connection was lost before {label}; nothing of it was sent.",
                                     "Check the connection, then continue with:", f"  {again}"]
        if reason == "failed":
            return ExitCode.FAILED, [f"Stopped: {label} failed; no later step was sent.",
                                     "Fix the cause of the error above, then continue with:", f"  {again}"]
        if reason == "unknown":
            lines = [f"Stopped: the outcome of {label} is UNKNOWN; no later step was sent.",
                     "See whether it took effect (read-only):", f"  {self.command.check()}",
                     "To run it again:", f"  {again}"]
            nxt = self._next_index(stopped_at.index)
            if nxt is not None:
                lines += ["or, if it did take effect, continue after it:",
                          f"  {self.command.at(self._resume_at(nxt))}"]
            return ExitCode.UNKNOWN, lines
        done = {r.index for r in results}
        not_run = [s for s in self.selected if s.index not in done]
        lines = [f"Stopped by the operator before {label}.",
                 "Not run: " + ", ".join(f"{s.index:02d} {s.id}" for s in not_run) + "."]
        first = min([r.index for r in skipped] + [stopped_at.index])
        return ExitCode.FAILED, lines + self._skipped_advice(results, first)

    def _resume_at(self, index: int) -> int:
        """Where a continue command starts: `index`, but never before the run's own --from-step."""
        return index if self.resume_floor is None else max(index, self.resume_floor)

    def _skipped_advice(self, results: list[StepResult], first: int) -> list[str]:
        """How to run what was skipped (see `resume_advice`)."""
        skipped = [r for r in results if r.outcome is Outcome.SKIPPED]
        changed = {r.index for r in results if r.outcome is Outcome.OK}
        return resume_advice(self.steps, changed, [(r.index, r.id) for r in skipped], self._resume_at(first),
                             self.command)

    def _next_index(self, index: int) -> int | None:
        """The step after `index`, to continue after an UNKNOWN one; None on an additional server.

        There `--from-server` goes only with that server's step: the caller says how to go on
        (the next server, or the main server's next step).
        """
        if self.command.from_server is not None:
            return None
        later = [s.index for s in self.steps if s.index > index]
        return later[0] if later else None


def approval_next(package_dir: str, reasons: Sequence[str]) -> tuple[str, str] | None:
    """What fixes a refusal for want of valid approvals, and the command: (`a new approval`, `psbridge approve …`).

    An approval that expired, none that counts, or fewer than `--min-approvals` is fixed by a new
    one. None when a reason is about the package itself (an altered package is not fixed by
    approving it again).
    """
    if not reasons:
        return None
    expired = any(": expired: at " in r for r in reasons)
    shortfall = re.fullmatch(r"too few approvals: (no|\d+) valid .*, (\d+) required", reasons[-1])
    about_approvals = all(r.startswith(("approvals/", "unexpected file: ")) for r in reasons[:-1])
    if not (expired or (shortfall and about_approvals)):
        return None
    which = "a new approval"
    if shortfall and shortfall.group(1) != "no":
        which = f"another trusted person's approval: {int(shortfall.group(2)) - int(shortfall.group(1))} more"
    return which, f"psbridge approve {shlex.quote(package_dir)} --key KEY"


def approval_advice(package_dir: str, reasons: Sequence[str]) -> str | None:
    """The next command after `--require-approval` refused a package for want of a valid approval
    (`approval_next`), as the end of the refusal's one line: say the command, not only the reason."""
    found = approval_next(package_dir, reasons)
    if found is None:
        return None
    which, command = found
    return f"next: {command} ({which}), then this command again"


def with_next_command(exc: RuntimeFailure, package_dir: str) -> RuntimeFailure:
    """The gate's refusal, its one line ending with the next command when there is one (`approval_advice`)."""
    from ..approvals import NotApproved

    if isinstance(exc, NotApproved):
        advice = approval_advice(package_dir, exc.reasons)
        if advice is not None:
            return RuntimeFailure(f"{exc}; {advice}")
    return exc


@dataclass(frozen=True)
class RunFacts:
    """What a successful run read that the operator needs next, as values (not scraped from text)."""

    tenant_id: str | None = None
    thumbprint: Thumbprint | None = None


def next_steps(package: Package, results: Sequence[StepResult], facts: RunFacts) -> list[str]:
    """The tenant ID and certificate the run reported, and the manual wizard with them filled in.

    Empty when step tenant-id did not run OK (or, for a renewal, when retire-previous did not).
    """
    ok = {r.id for r in results if r.outcome is Outcome.OK}
    replaced = package.parameters.certificate.replaces
    if replaced:
        # A renewal: the integration is enabled already; what is left is the old certificate.
        if "retire-previous" not in ok:
            return []
        servers = [package.parameters.crm.server or "the main server", *(package.parameters.crm.additional_servers or [])]
        return ["Renewal done: CRM signs with the new certificate, and Entra ID no longer trusts the replaced one.",
                f"Next: remove the replaced certificate {replaced.upper()} from LocalMachine\\My (certlm.msc) on "
                f"{', '.join(servers)} once nothing else uses it; psbridge does not remove it.",
                "The Enable Server-Based SharePoint Integration wizard is not run again."]
    if "tenant-id" not in ok:
        return []
    tenant = facts.tenant_id
    sites = list(package.parameters.sharepoint.sites)
    lines = ["Next: the Enable Server-Based SharePoint Integration wizard (manual; it cannot be undone).",
             f"  tenant ID:    {tenant or '(not in step 08 output)'}"]
    if facts.thumbprint:
        lines.append(f"  certificate:  {facts.thumbprint}")
    lines += ["  1. In Customer Engagement (on-premises), go to Document Management.",
              "  2. Choose Enable server-based SharePoint integration, review, Next.",
              "  3. For the SharePoint sites, select Online, Next.",
              "  4. On Prepare Sites, enter the site collection URL" + ("s:" if len(sites) > 1 else ":")]
    lines += [f"       {site}" for site in sites]
    lines += [f"     and the tenant ID {tenant or 'that step 08 printed'}; Next.",
              "  5. If all sites are valid, select Enable."]
    return lines
