"""Where the audit log lives: one rule for every command.

The ``--audit-log`` option if given; else the environment variable ``PSBRIDGE_AUDIT_LOG``
(one organisation-wide log, one chain across folders) if set and not empty; else
``audit.jsonl`` next to the work (in the ``--out`` folder for render, in the parent of
PACKAGE_DIR for commands that take a package); else ``output/audit.jsonl``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

#: The environment variable naming one organisation-wide audit log (see `resolve_log`).
ENV_AUDIT_LOG = "PSBRIDGE_AUDIT_LOG"
LOG_NAME = "audit.jsonl"
_FALLBACK_LOG = Path("output") / LOG_NAME


def resolve_log(explicit: Path | str | None, *, near: Path | str | None) -> Path:
    """The audit log to use: `explicit` (the --audit-log option) if given, else
    $PSBRIDGE_AUDIT_LOG if set and not empty, else ``near/audit.jsonl``, else
    ``output/audit.jsonl`` (relative to the working folder) when `near` is None.
    """
    if explicit is not None:
        return Path(explicit)
    configured = os.environ.get(ENV_AUDIT_LOG, "")
    if configured:
        return Path(configured)
    if near is not None:
        return Path(near) / LOG_NAME
    return _FALLBACK_LOG



def resolve_for(target: Path | str | None, explicit: Path | str | None = None) -> Path:
    """The audit log `audit verify TARGET` checks: TARGET may be the log itself, a package folder
    (one holding plan.json) or a packages folder, resolved by the rule of every other command
    (`resolve_log`): --audit-log, else PSBRIDGE_AUDIT_LOG, else audit.jsonl beside the packages.

    A log file given both as TARGET and as --audit-log is ambiguous: UserError.
    """
    if target is None or not Path(target).is_dir():
        if target is not None and explicit is not None:
            raise UserError(f"{target}: give the log as PATH or as --audit-log, not both")
        return resolve_log(explicit if explicit is not None else target, near=None)
    folder = Path(os.path.abspath(target))
    return resolve_log(explicit, near=folder.parent if (folder / "plan.json").is_file() else folder)
