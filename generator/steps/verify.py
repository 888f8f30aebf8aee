"""Step verify (renewal only): prove the new certificate end to end before anything is retired."""

from __future__ import annotations

from ..readings import Readings
from ..verdicts import StepVerdict
from .base import Step, StepUnit, every_profile

STEP = Step(0, "verify", "Verify the new certificate end to end", "check", needs=("connect", "set-certificate"),
            one_template=True)


def verdict(r: Readings) -> StepVerdict:
    """Read-only: check has nothing to judge before the run (the step proves the switch during it)."""
    return StepVerdict(0, "verify", "ok", "read-only: during a run it proves the switch before anything is retired")


UNIT = StepUnit("verify", every_profile(STEP), included="renewal", renewal_rank=100, verdict=verdict)
