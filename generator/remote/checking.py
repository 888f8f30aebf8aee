"""`psbridge check`: read the live state and judge every step, like `terraform plan`; audited.

Read-only: it sends the package's probes and, for Entra ID, only the session steps the
catalogue names; never a step that changes state. It takes no lock and writes no run record:
its evidence is the saved check (checks/*.json) and the one audit line it writes when it ends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import __version__, audit
from ..check import CheckReport, evaluate, evidence
from ..clock import file_stamp, stamp
from ..errors import UserError
from ..files import write_file
from ..package import Package, PackageStep
from ..steps.certificate import switch_wait
from .context import RemoteContext
from .gate import session_steps
from .graph_signout import sign_out_of_graph, warn_on_stderr
from .probing import Progress, Prober, additional_answers, main_answers, redacted
from .transport import open_session
from .inputs import secrets_needed


def check_steps(package: Package, *, entra: bool) -> list[PackageStep] | None:
    """The steps `check` may send besides the probes: the session steps that connect to Entra ID.

    Taken from the catalogue through the verified package: never a step that changes state.
    """
    return session_steps(package.steps, "connect") if entra else None


@dataclass(frozen=True)
class CheckOptions:
    """What the operator asked of `check`."""

    entra: bool = True
    timeout: float = 300.0
    warn_days: int = 60
    #: Save the evidence: "" for PACKAGE/checks/<UTC time>.json, a path for that file, None not at all.
    save_to: str | None = None
    progress: Progress | None = None
    #: The audit log a renewal's wait before its switch is proven in (`steps.certificate.switch_wait`).
    audit_log: Path | None = None


@dataclass(frozen=True)
class Checked:
    report: CheckReport
    entry: dict[str, Any]
    saved: Path | None


def probe_package(ctx: RemoteContext, options: CheckOptions) -> CheckReport:
    """Connect, probe, judge, disconnect; then each additional server's probes.

    Raises ConnectFailure (exit 3) when the main server can't be reached; an additional server
    that can't be reached is a note and "cannot tell" for its step.
    """
    package, redact = ctx.package, ctx.redact
    entra_steps = check_steps(package, entra=options.entra)
    session = open_session(ctx.conn, ctx.winrm_password, redact, exchange_keys=bool(secrets_needed(entra_steps or [])))
    try:
        answers, notes = main_answers(ctx, Prober(session, options.timeout, redact, options.progress), entra_steps)
    finally:
        # The session steps signed in to Entra ID: sign out, on every way out, before the session closes.
        warn_on_stderr(sign_out_of_graph(session if entra_steps else None, package, redact))
        session.close()
    per_server, more_notes = additional_answers(ctx, options.timeout, options.progress)
    report = evaluate(package.plan, answers, per_server, switch_wait=switch_wait(package, options.audit_log))
    report.notes.extend(notes + more_notes)
    report.readings.update({"main": answers, "additional": per_server})
    return replace(redacted(report, redact), warn_days=options.warn_days)


def record_check(ctx: RemoteContext, report: CheckReport, options: CheckOptions, log: Path) -> Checked:
    """After `probe_package`: the evidence saved when asked, and the one audit line of the check."""
    saved = save_check(report, ctx, options.save_to) if options.save_to is not None else None
    entry = audit.record(log, "check", ctx.package, f"exit {int(report.exit_code)}", host=ctx.conn.host,
                         verdicts={v.id: v.verdict for v in report.verdicts},
                         **({"saved": str(saved)} if saved else {}))
    return Checked(report, entry, saved)


def save_check(report: CheckReport, ctx: RemoteContext, save_to: str) -> Path:
    """Write the check's evidence: to FILE, or PACKAGE_DIR/checks/<UTC time>.json (an evidence folder)."""
    package = ctx.package
    if save_to:
        target = Path(save_to)
    else:
        assert package.path is not None
        folder = package.path / "checks"
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise UserError(f"{folder}: exists and is not a folder; saved checks live in a folder of that name")
        folder.mkdir(mode=0o755, exist_ok=True)
        target = folder / f"{file_stamp()}.json"
    data = evidence(report, package=package.name, digest=package.digest, host=ctx.conn.host,
                    checked_at=stamp(digits=3), tool_version=__version__)
    write_file(target, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"), 0o644,
               overwrite=bool(save_to))
    return target
