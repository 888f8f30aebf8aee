"""`psbridge runs`: the package's run history, one line per run record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import RuntimeFailure, UserError
from .options import CONTEXT, audit_log_option, package_log
from .output import safe, wrap


#: The outcome column's width: `unverified (exit 5)`; a longer outcome drops the word "exit".
OUTCOME = 19


def _lines(entries: list[Any]) -> list[str]:
    """The records as rows of at most 100 columns (with the usual record names): number, record, outcome,
    run (changed or not) or rollback (of which row), and for a run whether a later rollback backed it
    out (by which row). A record's problem goes on lines of its own, wrapped, under its row."""
    number = {entry.path: n for n, entry in enumerate(entries, 1)}
    by_sha = {entry.sha256: n for n, entry in enumerate(entries, 1) if entry.sha256}
    lines: list[str] = []
    for n, entry in enumerate(entries, 1):
        outcome = entry.outcome if len(entry.outcome) <= OUTCOME else entry.outcome.replace("(exit ", "(")
        head = f"{n:>3}  {safe(entry.path.name):29}  {safe(outcome):{OUTCOME}}  "
        if entry.problem:
            lines.append(head.rstrip())
            lines += wrap(safe(entry.problem), " " * 5, " " * 5)
            continue
        if entry.is_rollback:
            of = by_sha.get(entry.rollback_of_sha256 or "")
            what = f"rollback  of {of}" if of else f"rollback  of {safe(Path(entry.rollback_of or '?').name)}"
        else:
            what = f"run       {_change(entry):15}"
        if not entry.vouched:
            lines.append(f"{head}{what[:8]}  not vouched for by the audit log")
            continue
        if not entry.is_rollback:
            by = entry.backed_out_by
            what += "  " + (f"rolled back by {number.get(by) or safe(by.name)}" if by is not None else "not rolled back")
        lines.append(head + what)
    return [line.rstrip() for line in lines]


def _change(entry: Any) -> str:
    """Whether a run changed something, as its record tells (`runs.what_changed`)."""
    if entry.changed:
        return "changed"
    return "changed nothing" if entry.no_change else "-"


def _data(entry: Any) -> dict[str, Any]:
    """One record as JSON (`--json`)."""
    return {"record": str(entry.path), "started": entry.started, "outcome": entry.outcome,
            "exit_code": entry.exit_code, "rollback": entry.is_rollback, "rollback_of": entry.rollback_of,
            "rolled_back_by": str(entry.backed_out_by) if entry.backed_out_by else None,
            "changed": entry.changed, "no_change": entry.no_change, "vouched": entry.vouched,
            "problem": entry.problem}


@click.command("runs", context_settings=CONTEXT)
@click.argument("package_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per run record.")
@audit_log_option
def runs_command(package_dir: Path, as_json: bool, audit_log: Path | None) -> None:
    """List the package's run records, oldest first, one numbered row each: the record (its name
    is the time it started, UTC), its outcome (the record's run-end), run or rollback (of which
    row), whether a run changed something, and whether a later rollback backed it out.

    A run "changed nothing" when every state-changing step it sent ended ok and read the same
    state before and after it (its record's probe readings, all answered, nothing redacted);
    `rollback --last` passes over such a run.

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
    for line in ([json.dumps(_data(entry)) for entry in entries] if as_json else _lines(entries)):
        click.echo(line)


COMMANDS = (runs_command,)
