"""`psbridge rollback`: undo what one recorded run changed, with the package's back-out scripts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from ..errors import CommandFinished, ExitCode, RuntimeFailure, UserError
from .auditing import refused
from .options import CONTEXT, ApprovalOptions, ConnectionOptions, approval_options, audit_head_option, audit_log_option
from .options import connected, connection_options, gather, package_log
from .output import echo_wrapped, print_audit_head, reporter, safe, warn_if_unverified
from .prompts import confirm_or_refuse


@dataclass(frozen=True)
class RollbackFlags:
    """`rollback`'s own options (beside the connection, approval and audit-log ones)."""

    run_record: Path | None
    last: bool
    step_timeout: float
    as_json: bool
    assume_yes: bool
    head: str | None


@click.command("rollback", context_settings=CONTEXT)
@click.argument("package_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--run", "run_record", type=click.Path(dir_okay=False, path_type=Path),
              help="The run record (PACKAGE_DIR/runs/*.jsonl) whose changes to undo.")
@click.option("--last", is_flag=True,
              help="Instead of --run: the package's last run that the audit log vouches for and that changed "
                   "something; a run that changed nothing is passed over, and said so (see: psbridge runs).")
@connection_options
@click.option("--step-timeout", type=click.FloatRange(min=0, min_open=True), default=900.0, show_default=True,
              help="Seconds per script before it is stopped and reported UNKNOWN.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON event per line.")
@click.option("--yes", "assume_yes", is_flag=True,
              help="Do not ask before sending (no terminal); asked even with --require-approval.")
@approval_options
@audit_log_option
@audit_head_option
@gather(RollbackFlags, "flags")
def rollback(package_dir: Path, connection: ConnectionOptions, approval: ApprovalOptions, audit_log: Path | None,
             flags: RollbackFlags) -> None:
    """Undo what one recorded run changed, with the package's reviewed back-out scripts.

    The record is believed only when the audit log holds its sha256 for this package (the
    log: --audit-log, else PSBRIDGE_AUDIT_LOG, else audit.jsonl beside the packages; a log
    named with --audit-log must hold a render or approve line for the package; with --head
    no line after that head is believed). The values taken from it (key credential ids, the
    SPN, the previous ServerSettings) are checked like parameters, printed, and passed as
    parameters; they are evidence, not approved bytes, so rollback asks before sending
    unless --yes, even with --require-approval. Scripts run in reverse step order with the
    same connection options, locks, records and approval gate as `run`; steps without a
    script (02, 09) are listed with their manual procedure. --last picks the run (named in
    the output); a run a later rollback already backed out is said so and nothing is sent.

    Transport, port and auth come from the package's [crm] table when it names them (an
    option may repeat them; another value is refused); the users from --username and
    --o365-user, else PSBRIDGE_USERNAME and PSBRIDGE_O365_USER, else the package.

    \b
    Example:
      psbridge rollback output/contoso --last
    """
    from ..remote.action import Audited, NotRecorded
    from ..remote.advice import RunSettings, with_next_command
    from ..remote.context import RemoteContext
    from ..remote.gate import GateRequest
    from ..remote.inputs import read_step_secrets, read_winrm_password, secrets_needed
    from ..remote.rollback import RecordSource, choose_rollback, rollback_package, rollback_sends

    as_json = flags.as_json
    if (flags.run_record is None) == (not flags.last):
        raise UserError("rollback: give --run RECORD or --last (one of them)")
    log = package_log(audit_log, package_dir)
    policy = approval.policy()
    try:
        source = RecordSource(flags.run_record, log, flags.head, log_given=audit_log is not None)
        choice = choose_rollback(GateRequest(package_dir, connection.host, policy=policy), source)
    except UserError as exc:
        refused(log, "rollback", exc, package_dir, connection.host)
        raise
    except RuntimeFailure as exc:
        refused(log, "rollback", exc, package_dir, connection.host)
        raise with_next_command(exc, str(package_dir)) from None
    prepared, plan = choice.prepared, choice.plan
    if flags.last:
        echo_wrapped(f"the last run that changed something: {safe(str(choice.record))}", "rollback: ", err=as_json)
        if choice.skipped:
            echo_wrapped(safe(choice.skipped), "rollback: ", err=as_json)
    if choice.already is not None and choice.already.backed_out_by is not None:
        echo_wrapped(f"{safe(str(choice.record))} was already backed out by "
                     f"{safe(str(choice.already.backed_out_by))}; nothing sent", "rollback: ", err=as_json)
        return
    package = prepared.package
    for step, why in plan.nothing:
        click.echo(f"step {step.index:02d} {step.id}: nothing to undo: {safe(why)}", err=as_json)
    for step, manual in plan.manual:
        echo_wrapped(safe(manual, keep_newlines=True), f"step {step.index:02d} {step.id}: by hand: ", err=as_json)
    for item in plan.scripted:
        values = ", ".join(f"{k}={v!r}" for k, v in item.parameters.items())
        echo_wrapped(f"{item.file} with {safe(values)}", f"step {item.step.index:02d} {item.step.id}: ", err=as_json)
    if not plan.scripted:
        click.echo("rollback: no script to send", err=as_json)
        return
    conn = connected(connection, prepared, lambda exc: refused(log, "rollback", exc, package_dir, connection.host))
    if not flags.assume_yes:  # the values are evidence from the record, not approved bytes: always asked
        confirm_or_refuse("Send these back-out scripts with these values?",
                          no_terminal="rollback: no terminal to confirm on; pass --yes after reading the values above",
                          refused="rollback: not confirmed; nothing was sent")
    ctx = RemoteContext(package, conn, None, settings=RunSettings(step_timeout=flags.step_timeout),
                        emit=reporter(as_json))
    sends, parameters, _ = rollback_sends(ctx, plan)
    o365_user = connection.office_user(package.parameters.crm)
    secrets = read_step_secrets(secrets_needed(s for s in sends if s.index not in parameters), o365_user)
    winrm_password = read_winrm_password(conn)
    warn_if_unverified(conn.verify_tls, conn.transport)
    ctx = RemoteContext(package, conn, winrm_password, secrets, ctx.settings, ctx.emit)
    try:
        done = rollback_package(ctx, plan, Audited(log, "rollback", start="rollback-started"), policy)
    except NotRecorded as exc:
        raise exc.original from None
    if not as_json:
        print_audit_head(log, done.entry)
    if done.result.exit_code:
        raise CommandFinished(ExitCode(done.result.exit_code))
