"""`psbridge check`: read the live state and say what the package would change (read-only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from ..errors import CommandFinished, RuntimeFailure, UserError
from ..expiry import EXPIRY_WARNING_DAYS
from .auditing import gate, refused
from .options import CONTEXT, ApprovalOptions, ConnectionOptions, approval_options, audit_log_option, connection_options
from .options import connected, gather, package_log
from .output import print_audit_head, print_check, probe_line, safe, warn_if_unverified


@dataclass(frozen=True)
class CheckFlags:
    """`check`'s own options (beside the connection, approval and audit-log ones)."""

    no_entra: bool
    probe_timeout: float
    as_json: bool
    save_to: str | None
    legacy_out: str | None
    warn_days: int

    def saving(self) -> str | None:
        """Where to save the evidence: --save, else the deprecated --out (warned: `--out` means a folder elsewhere)."""
        if self.legacy_out is None:
            return self.save_to
        if self.save_to is not None:
            raise UserError("--save and --out: give --save only (--out is deprecated for check)")
        click.echo("psbridge: warning: --out is deprecated for check: use --save", err=True)
        return self.legacy_out


@click.command("check", context_settings=CONTEXT)
@click.argument("package_dir", type=click.Path(file_okay=False, path_type=Path))
@connection_options
@click.option("--no-entra", is_flag=True, help="Skip Entra ID (it needs the session steps 03 and 04 and their secrets).")
@click.option("--probe-timeout", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
              help="Seconds per probe.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts as one JSON document.")
@click.option("--save", "save_to", is_flag=False, flag_value="", default=None, metavar="[FILE.json]",
              help="Save what check saw (evidence); without FILE: PACKAGE_DIR/checks/<UTC time>.json.")
@click.option("--out", "legacy_out", is_flag=False, flag_value="", default=None, metavar="[FILE.json]", hidden=True,
              help="Deprecated spelling of --save (warned).")
@click.option("--warn-days", type=click.IntRange(min=0), default=EXPIRY_WARNING_DAYS, show_default=True, metavar="N",
              help="Exit 6 when all is in place but CRM's S2S certificate or its key credential in Entra ID "
                   "ends within N days, or another key credential of the CRM service principal has expired.")
@approval_options
@audit_log_option
@gather(CheckFlags, "flags")
def check(package_dir: Path, connection: ConnectionOptions, approval: ApprovalOptions, audit_log: Path | None,
          flags: CheckFlags) -> None:
    """Read the live state and say what the package would change, like `terraform plan`.

    Read-only: it sends the package's probe scripts (probes/, approved with the package)
    and, for Entra ID, only the session steps the catalogue names (03 session, 04
    connect); never a step that changes state, whatever plan.json says. Per step: in
    place, will change (before -> after), blocked or cannot tell. Then what ends when:
    CRM's S2S certificate, its key credential in Entra ID and the other credentials.
    Exit 0 nothing would change, 5 something would change, 6 all in place but something
    ends within --warn-days (or another credential has expired), 1 a probe failed or a
    step is blocked, 3 could not connect.

    Transport, port and auth come from the package's [crm] table when it names them (an
    option may repeat them; another value is refused); the users from --username and
    --o365-user, else PSBRIDGE_USERNAME and PSBRIDGE_O365_USER, else the package.

    \b
    Examples:
      psbridge check output/contoso
      psbridge check output/contoso --username 'CONTOSO\\crmadmin' --save
    """
    from ..remote.advice import with_next_command
    from ..remote.checking import CheckOptions, check_steps, probe_package, record_check
    from ..remote.context import RemoteContext
    from ..remote.gate import GateRequest
    from ..remote.inputs import read_step_secrets, read_winrm_password, secrets_needed

    save_to = flags.saving()
    log = package_log(audit_log, package_dir)
    try:
        prepared = gate(log, "check", GateRequest(package_dir, connection.host, policy=approval.policy(),
                                                  for_check=True))
    except RuntimeFailure as exc:
        raise with_next_command(exc, str(package_dir)) from None
    policy_given = approval.require_approval
    conn = connected(connection, prepared,
                     (lambda exc: refused(log, "check", exc, package_dir, connection.host)) if policy_given else None)
    o365_user = connection.office_user(prepared.package.parameters.crm)
    for problem in prepared.package.replaced:
        click.echo(f"psbridge: warning: {safe(problem)}; check sends the probes psbridge renders itself",
                   err=True)
    entra = check_steps(prepared.package, entra=not flags.no_entra)
    secrets = read_step_secrets(secrets_needed(entra or []), o365_user)
    winrm_password = read_winrm_password(conn)
    warn_if_unverified(conn.verify_tls, conn.transport)
    ctx = RemoteContext(prepared.package, conn, winrm_password, secrets)
    check_options = CheckOptions(entra=not flags.no_entra, timeout=flags.probe_timeout, warn_days=flags.warn_days,
                                 save_to=save_to, progress=probe_line(flags.as_json), audit_log=log)
    report = probe_package(ctx, check_options)
    print_check(report, as_json=flags.as_json)
    checked = record_check(ctx, report, check_options, log)
    if checked.saved is not None:
        click.echo(f"saved: {checked.saved}", err=flags.as_json)
    if not flags.as_json:
        print_audit_head(log, checked.entry)
    if report.exit_code:
        raise CommandFinished(report.exit_code)
