"""Step session: prepare the PowerShell session (imports; msonline may enable WinRM when run locally)."""

from __future__ import annotations

from .base import Step, StepUnit

STEPS = {
    "msonline": Step(
        0, "session", "Prepare the PowerShell session", "session", needs=("prerequisites",),
        changes="CRM server (only when run locally and WinRM does not answer): Enable-PSRemoting configures and "
        "restarts WinRM.",
    ),
    "graph": Step(0, "session", "Prepare the PowerShell session", "session", needs=("prerequisites",)),
}

#: A session step: check says "session" (no verdict of its own), and there is nothing to back out.
UNIT = StepUnit("session", STEPS, renewal_rank=20)
