"""`psbridge runs`: the package's run history, one line per run record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import RuntimeFailure, UserError
from .options import CONTEXT, audit_log_option, package_log
from .output import safe


def _line(entry: Any) -> str:
    """One record as a line: time, outcome, run or rollback (of what), rolled back or not, the file."""
    kind = f"rollback of {Path(entry.rollback_of or '?').name}" if entry.is_rollback else "run"
    if entry.is_rollback:
        rolled = "-"
    elif entry.backed_out_by is not None:
        rolled = f"rolled back by {entry.backed_out_by.name}"
    else:
        rolled = "not rolled back"
    trust = "" if entry.vouched or entry.problem else "  (not vouched for by the audit log)"
    problem = f"  ({entry.problem})" if entry.problem else ""
    return f"{entry.started or '-':24}  {entry.outcome:18}  {kind:8}  {rolled}  {entry.path.name}{trust}{problem}"


def _data(entry: Any) -> dict[str, Any]:
    """One record as JSON (`--json`)."""
    return {"record": str(entry.path), "started": entry.started, "outcome": entry.outcome,
            "exit_code": entry.exit_code, "rollback": entry.is_rollback, "rollback_of": entry.rollback_of,
            "rolled_back_by": str(entry.backed_out_by) if entry.backed_out_by else None,
            "changed": entry.changed, "vouched": entry.vouched, "problem": entry.problem}


@click.command("runs", context_settings=CONTEXT)
@click.argument("package_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per run record.")
@audit_log_option
def runs_command(package_dir: Path, as_json: bool, audit_log: Path | None) -> None:
    """List the package's run records, oldest first: when, outcome (the record's run-end),
    run or rollback, and whether a later rollback backed it out.

    A rollback counts only when it ended ok and the audit log (--audit-log, else
    PSBRIDGE_AUDIT_LOG, else audit.jsonl beside the packages) vouches for its record; a
    record the log does not vouch for is marked. `rollback --last` backs out the last run
    that is vouched for and changed something.

    \b
    Example:
      psbridge runs output/contoso
    """
    from .. import audit
    from ..package import read_package
    from ..runs import history

    package = read_package(package_dir)
    log = package_log(audit_log, package_dir)
    try:
        lines = audit.entries(log)
    except (UserError, RuntimeFailure) as exc:
        reason = "; ".join(exc.problems) if isinstance(exc, UserError) else str(exc)
        click.echo(f"psbridge: warning: {safe(reason)}: no record is vouched for", err=True)
        lines = []
    entries = history(package, lines)
    if not entries and not as_json:
        click.echo(f"{safe(str(package_dir))}: no run records")
    for entry in entries:
        click.echo(json.dumps(_data(entry)) if as_json else safe(_line(entry)))


COMMANDS = (runs_command,)
