"""The audit lines the commands write about refused and failed attempts.

A refusal is logged before its error ends the command, so the audit trail shows attempts
too; if the log itself fails then, the refusal's own error still wins. (Policy that
belongs in the library; it lives here until it moves there.)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import RuntimeFailure, UserError
from .output import safe

if TYPE_CHECKING:
    from ..package import Package
    from ..remote.gate import GateRequest, PreparedRun


def problems_of(exc: Exception) -> list[str]:
    """The one-line problems of a UserError, or the message of any other failure."""
    return list(exc.problems) if isinstance(exc, UserError) else [str(exc)]


def audit_failure(log: Path, action: str, exc: Exception, package: object = None, **details: Any) -> None:
    """Log a refused or failed action before its error propagates; the audit trail shows attempts too."""
    record_attempt(log, action, package, "error", problems=problems_of(exc), **details)


def record_attempt(log: Path, action: str, package: object, outcome: str, **details: Any) -> None:
    """Log a refused attempt; if the log itself fails, say so without hiding the refusal's own error."""
    from .. import audit

    try:
        audit.record(log, action, package, outcome, **details)
    except (UserError, RuntimeFailure) as failure:
        for line in problems_of(failure):
            click.echo(f"psbridge: warning: the refusal was not recorded: {safe(line)}", err=True)


def read_package_logged(package_dir: Path, log: Path, action: str) -> Package:
    """Read the package folder once; a folder that is not a package is logged, then refused (exit 2)."""
    from ..package import read_package

    try:
        return read_package(package_dir)
    except UserError as exc:
        audit_failure(log, action, exc, folder=str(package_dir))
        raise


def refused(log: Path, action: str, exc: Exception, package_dir: Path, host: str | None) -> None:
    """Print why the gate refused, and log it, before the exception ends the command."""
    from ..approvals import NotApproved

    if isinstance(exc, NotApproved):
        for reason in exc.reasons:
            click.echo(f"psbridge: refused: {safe(reason)}", err=True)
    problems = list(exc.problems) if isinstance(exc, UserError) else list(getattr(exc, "reasons", [str(exc)]))
    record_attempt(log, action, None, "refused", problems=problems, folder=str(package_dir), host=host)


def gate(log: Path, action: str, request: GateRequest) -> PreparedRun:
    """The package gate (remote.gate.prepare); a refusal is printed and logged before it ends the command.

    `check` without --require-approval logs no refusal: it changes nothing.
    """
    from ..remote.gate import prepare

    try:
        return prepare(request)
    except (UserError, RuntimeFailure) as exc:
        if action != "check" or request.policy is not None:
            refused(log, action, exc, request.package_dir, request.host_option)
        raise
