"""`psbridge run`: run a rendered package on the CRM server over PowerShell Remoting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import CommandFinished, ExitCode, RuntimeFailure, UserError
from .auditing import gate, refused
from .options import CONTEXT, ApprovalOptions, ConnectionOptions, approval_options, audit_log_option
from .options import connected, connection_options, gather, implied_audit_log, package_log
from .output import echo_wrapped, print_audit_head, print_check, reporter, safe, warn_if_unverified
from .prompts import ask_step, confirm_or_refuse, has_terminal

if TYPE_CHECKING:
    from ..check import CheckReport
    from ..remote.gate import PreparedRun


@dataclass(frozen=True)
class RunFlags:
    """`run`'s own options (beside the connection, approval and audit-log ones)."""

    from_step: int | None
    step_mode: bool
    step_timeout: float
    as_json: bool
    verify_after: bool
    from_server: str | None
    assume_yes: bool
    force_unlock: bool


@click.command("run", context_settings=CONTEXT)
@click.argument("package_dir", type=click.Path(file_okay=False, path_type=Path))
@connection_options
@click.option("--from-step", type=click.IntRange(min=1), help="Continue a failed run at step N (re-runs only the session steps N needs).")
@click.option("--step", "step_mode", is_flag=True, help="Ask before each step: y run, n skip, q quit.")
@click.option("--step-timeout", type=click.FloatRange(min=0, min_open=True), default=900.0, show_default=True,
              help="Seconds per step before it is stopped and reported UNKNOWN.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON event per line instead of progress lines.")
@click.option("--verify", "verify_after", is_flag=True, help="After the last step, run the read-only probes of `psbridge check` and record them.")
@click.option("--from-server", help="With --from-step N of the additional-servers step (09; 06 in a renewal): continue it at this server.")
@click.option("--yes", "assume_yes", is_flag=True,
              help="Run a package without --require-approval without asking (needed when there is no terminal).")
@click.option("--force-unlock", is_flag=True,
              help="Close the session of a crashed run that still holds the server's run lock: only when its "
                   "heartbeat is stale (older than its step timeout + 5 minutes); shows the holder and asks "
                   "unless --yes (audited).")
@approval_options
@audit_log_option
@gather(RunFlags, "flags")
def run(package_dir: Path, connection: ConnectionOptions, approval: ApprovalOptions, audit_log: Path | None,
        flags: RunFlags) -> None:
    """Run a rendered package on the CRM server over PowerShell Remoting, step by step.

    The package is read once and checked (every file as plan.json records, the steps as
    psbridge's catalogue computes them; with --require-approval also byte-identical to
    psbridge's render and approved) before any secret is asked for; only those bytes
    are sent. One runspace runs all steps with $ErrorActionPreference = 'Stop'; the run
    stops at the first step that fails (exit 1) or whose outcome is unknown (timeout,
    lost connection: exit 4), and prints the exact command to continue. Exit 3: could
    not connect or authenticate. Records: PACKAGE_DIR/runs/<UTC time>.jsonl and the
    audit log (its run-start line is written before connecting, or nothing runs).

    Transport, port and auth come from the package's [crm] table when it names them (an
    option may repeat them; another value is refused); the users from --username and
    --o365-user, else PSBRIDGE_USERNAME and PSBRIDGE_O365_USER, else the package.

    \b
    Examples:
      PSBRIDGE_WINRM_PASSWORD=… psbridge run output/contoso
      psbridge run output/contoso --from-step 7
    """
    from ..remote.action import Audited, NotRecorded
    from ..remote.advice import RunSettings, next_steps, with_next_command
    from ..remote.context import RemoteContext
    from ..remote.gate import GateRequest
    from ..remote.inputs import read_step_secrets, read_winrm_password, secrets_needed
    from ..remote.run import run_package
    from ..remote.servers import RunOptions
    from ..remote.settings import implied_options

    log = package_log(audit_log, package_dir)
    policy = approval.policy()
    # Before any secret is asked for or any connection made: the package, its approval, the host.
    try:
        prepared = gate(log, "run", GateRequest(package_dir, connection.host, from_step=flags.from_step,
                                                policy=policy, from_server=flags.from_server))
    except RuntimeFailure as exc:
        raise with_next_command(exc, str(package_dir)) from None
    package = prepared.package
    _warn_if_certificate_ends_first(prepared)
    _warn_if_approvals_end_first(prepared, package_dir)
    crm = package.parameters.crm
    conn = connected(connection, prepared, lambda exc: refused(log, "run", exc, package_dir, connection.host))
    if policy is None:
        _confirm_unapproved(prepared, flags.assume_yes, flags.as_json)
    settings = RunSettings(
        o365_user=connection.office_user(crm), step_timeout=flags.step_timeout, step_mode=flags.step_mode,
        as_json=flags.as_json, verify=flags.verify_after, require_approval=approval.require_approval,
        trusted_keys=approval.trusted_keys, min_approvals=approval.min_approvals,
        forbid=policy.forbid if policy else (), audit_log=log, assume_yes=flags.assume_yes,
        implied=(*implied_options(prepared.host, crm), *implied_audit_log(package_dir)),
    )
    secrets = read_step_secrets(secrets_needed(prepared.selected), settings.o365_user)
    winrm_password = read_winrm_password(conn)
    warn_if_unverified(conn.verify_tls, conn.transport)
    ctx = RemoteContext(package, conn, winrm_password, secrets, settings, reporter(flags.as_json))
    as_json = flags.as_json
    run_options = RunOptions(prepared.selected, prepared.additional, confirm=ask_step if flags.step_mode else None,
                             from_step=flags.from_step, force_unlock=flags.force_unlock,
                             confirm_unlock=_confirm_unlock(flags.assume_yes), verify=flags.verify_after,
                             show_check=lambda report: _show_verification(report, as_json), approval=policy)
    try:
        done = run_package(ctx, run_options, Audited(log, "run"), prepared.approval)
    except NotRecorded as exc:
        raise exc.original from None  # the log refused the start: nothing ran, nothing more to log there
    if not flags.as_json:
        print_audit_head(log, done.entry)
        if done.result.exit_code == 0:
            for line in next_steps(package, done.result.results, done.facts):
                click.echo(safe(line))
    if done.result.exit_code:
        raise CommandFinished(ExitCode(done.result.exit_code))


def _warn_if_certificate_ends_first(prepared: PreparedRun) -> None:
    """One warning line when the package's certificate ends before its approval does.

    The approval lets the change run until its latest expiry; a certificate that ends
    earlier would be installed expired by a run late in that window (or already is).
    Without --require-approval there is no approval window to compare with.
    """
    from ..clock import parse_time, utc_now

    facts = prepared.package.certificate
    used = prepared.approval.approvals_used if prepared.approval is not None else []
    if not facts or not used:
        return
    try:
        not_after = parse_time(facts.get("not_after"))
        latest = max(used, key=lambda a: parse_time(a.expires_at))
        approval_ends = parse_time(latest.expires_at)
    except ValueError:
        return  # facts psbridge did not write: the gates judge those, not this warning
    if not_after >= approval_ends:
        return
    verb = "expired" if not_after <= utc_now() else "expires"
    subject = facts.get("subject") or "(empty subject)"
    click.echo(safe(f"psbridge: warning: the certificate {subject} {verb} {facts['not_after']}, before the approval "
                    f"({latest.approver} until {latest.expires_at})"), err=True)


def _warn_if_approvals_end_first(prepared: PreparedRun, package_dir: Path) -> None:
    """One warning line per approval relied on that expires before `[change] window` ends (ISO windows only)."""
    from ..approvals import window_shortfalls
    from ..clock import utc_now

    used = prepared.approval.approvals_used if prepared.approval is not None else []
    for short in window_shortfalls(prepared.package, [(a.approver, a.expires_at) for a in used]):
        click.echo(safe("psbridge: warning: " + short.line(str(package_dir), "<your key>", utc_now())), err=True)


def _confirm_unapproved(prepared: PreparedRun, assume_yes: bool, as_json: bool) -> None:
    """A package run without --require-approval never runs silently, like `terraform apply`.

    Before any secret is read or any connection made: say where it runs, which bytes (the
    digest) and what it changes, then ask [y/N]; with no terminal, only `--yes` lets it run.
    Approval files in the package are not checked here, so they are not mentioned as approval.
    """
    package = prepared.package
    changing = ", ".join(f"{s.index:02d} {s.id}" for s in prepared.selected if s.changes_state) or "none"
    servers = ", ".join([prepared.host, *prepared.additional])
    err = as_json  # --json keeps stdout for JSON events
    # Within 100 columns (issue 21): the digest on a line of its own (it made the first line 108 columns).
    click.echo(safe(f"psbridge run: package {package.name}"), err=err)
    click.echo(f"  digest: {package.digest}", err=err)
    echo_wrapped(safe(servers), "  on: ", "      ", err=err)
    echo_wrapped(changing, "  steps that change state: ", "      ", err=err)
    click.echo("  approvals: not checked (this run has no --require-approval)", err=err)
    if assume_yes:
        return
    confirm_or_refuse("Run it?", no_terminal="run: no terminal to confirm on; pass --yes to run this package without "
                      "--require-approval, or require its approval", refused="run: not confirmed; nothing ran")


def _confirm_unlock(assume_yes: bool) -> Callable[[list[str]], bool]:
    """`--force-unlock`'s question: the library found a stale holder; show it (on stderr) and ask [y/N].

    `--yes` answers yes; with no terminal and no `--yes` nothing is closed (exit 2).
    """

    def ask(lines: list[str]) -> bool:
        for line in lines:
            click.echo(safe(line), err=True)
        if assume_yes:
            return True
        if not has_terminal():
            raise UserError("run --force-unlock: no terminal to confirm on; pass --yes to close the stale holder's "
                            "session")
        return click.confirm("Close that run's session on the server?", default=False, err=True)

    return ask


def _show_verification(report: CheckReport, as_json: bool) -> None:
    """`run --verify`: check's block after the run's last step, under a heading that says what it is."""
    if not as_json:
        click.echo("")
        click.echo("verify: what the server shows after the run (the probes of psbridge check):")
    print_check(report, as_json=as_json)
