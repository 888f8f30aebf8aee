"""`psbridge audit`: check and repair the hash-chained audit log."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click

from ..errors import RuntimeFailure, UserError
from .options import CONTEXT, audit_log_option


@click.group("audit", context_settings=CONTEXT)
def audit_group() -> None:
    """Check and repair the hash-chained audit log.

    \b
    Example:
      psbridge audit verify output/audit.jsonl
    """


@audit_group.command("verify", context_settings=CONTEXT)
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--head", metavar="SHA256", help="A head hash printed by an earlier check; detects lines cut off the end.")
@audit_log_option
def audit_verify_command(path: Path | None, head: str | None, audit_log: Path | None) -> None:
    """Walk the audit log's hash chain.

    PATH is the log, or a package folder or a packages folder: then the log is the one the
    other commands use (--audit-log, else $PSBRIDGE_AUDIT_LOG, else audit.jsonl beside the
    packages). Without PATH: --audit-log, else $PSBRIDGE_AUDIT_LOG, else output/audit.jsonl.

    Exit 0 and print the number of good lines and the head hash (record it elsewhere),
    or exit 1 naming the first broken line.

    \b
    Example:
      psbridge audit verify output/audit.jsonl
      psbridge audit verify output/contoso      # the log of that package
      psbridge audit verify output/audit.jsonl --head "$HEAD"   # from the ticket
    """
    from .. import audit as audit_chain

    if head is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", head):
        raise UserError("--head: a 64-digit hex sha256")
    log = audit_chain.resolve_for(path, audit_log)
    check = audit_chain.verify(log, head)
    if not check.ok:
        hint = f"; repair it with: psbridge audit repair {shlex.quote(str(log))}" if check.torn_bytes else ""
        raise RuntimeFailure(
            f"{log}: line {check.broken_line}: {check.problem} ({check.good_lines} good line(s) before it){hint}"
        )
    click.echo(f"{log}: {check.good_lines} good line(s); head {check.head}")


@audit_group.command("repair", context_settings=CONTEXT)
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def audit_repair_command(path: Path) -> None:
    """Cut a torn last line (bytes after the last newline) off the audit log.

    The torn bytes are kept in PATH.torn-<UTC time> for the auditors and the cut is
    recorded as a chained audit-repair line. Exit 0 when repaired or when there is nothing
    to repair; exit 1, changing nothing, when the chain is broken elsewhere or when the
    bytes after the last newline hold complete entries (lines whose newlines were removed:
    they are named by their line hashes, never deleted).

    \b
    Example:
      psbridge audit repair output/audit.jsonl
    """
    from .. import audit as audit_log

    done = audit_log.repair(path)
    if not done.removed_bytes:
        click.echo(f"{path}: nothing to repair; {done.good_lines} good line(s); head {done.head}")
        return
    click.echo(f"{path}: removed a torn line of {done.removed_bytes} bytes (sha256 {done.removed_sha256}), "
               f"kept in {done.side_file}; {done.good_lines} good line(s); head {done.head}")
