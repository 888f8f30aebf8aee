"""Step tenant-id: read the SharePoint Online tenant ID (read-only)."""

from __future__ import annotations

from ..readings import Readings
from ..verdicts import StepVerdict
from .base import Step, StepUnit, every_profile

STEP = Step(0, "tenant-id", "Get the SharePoint Online tenant ID", "check", needs=("connect",))


def verdict(r: Readings) -> StepVerdict:
    """Blocked when the connection reached another tenant than the parameters name."""
    step = (8, "tenant-id")
    if r.entra is None:
        return StepVerdict(*step, "cannot tell", "the entra probe did not run or did not answer")
    found = r.entra.tenant_id
    wanted = r.plan["parameters"]["sharepoint"].get("tenant_id")
    if wanted and found.lower() != wanted.lower():
        return StepVerdict(*step, "blocked", f"connected to tenant {found}, the parameters expect {wanted}")
    return StepVerdict(*step, "ok", f"tenant ID {found}")


UNIT = StepUnit("tenant-id", every_profile(STEP), renewal_rank=90, verdict=verdict)
