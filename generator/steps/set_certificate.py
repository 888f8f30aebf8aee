"""Step set-certificate: read the certificate into the session (both profiles share the template)."""

from __future__ import annotations

from .base import Step, StepUnit, every_profile

STEP = Step(0, "set-certificate", "Set the certificate", "session", needs=("prerequisites",), one_template=True)

UNIT = StepUnit("set-certificate", every_profile(STEP), renewal_rank=40)
