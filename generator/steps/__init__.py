"""The steps, one unit each: the registry the catalogue, `check` and `rollback` are derived from.

A step is one module here (its `UNIT`: Step per profile, renewal facts, verdict, back-out)
plus its template folder `templates/steps/<id>/` (`<profile>.ps1.j2` or `step.ps1.j2`, and
`rollback[-<profile>].ps1.j2` for a scripted back-out). `UNITS` is the article's order:
first the steps of every package, then the farm's, then the renewal-only ones. Everything
reads the registry when it is called (`units()`, `unit()`), never a copy made at import, so
a unit added to `UNITS` is in the catalogue, the rendered package, check's verdicts and the
rollback plan.
"""

from __future__ import annotations

from . import (
    additional_servers,
    app_certificate,
    app_registration,
    certificate,
    connect,
    crm_settings,
    msal_assembly,
    partner_applications,
    prerequisites,
    retire_previous,
    session,
    set_certificate,
    spn,
    tenant_id,
    verify,
)
from .base import (
    PROFILE_MODULES,
    PROFILES,
    Backout,
    RollbackContext,
    SecretKind,
    ServerVerdictContext,
    Step,
    StepKind,
    StepUnit,
    every_profile,
)

__all__ = ["PROFILE_MODULES", "PROFILES", "UNITS", "Backout", "RollbackContext", "SecretKind", "ServerVerdictContext", "Step",
           "StepKind", "StepUnit", "every_profile", "unit", "units"]

UNITS: tuple[StepUnit, ...] = (
    prerequisites.UNIT,
    certificate.UNIT,
    session.UNIT,
    connect.UNIT,
    set_certificate.UNIT,
    spn.UNIT,
    crm_settings.UNIT,
    tenant_id.UNIT,
    app_registration.UNIT,
    app_certificate.UNIT,
    partner_applications.UNIT,
    msal_assembly.UNIT,
    additional_servers.UNIT,
    verify.UNIT,
    retire_previous.UNIT,
)


def units() -> tuple[StepUnit, ...]:
    """The registered units, in the article's order (read at call time, so a test can add one)."""
    return UNITS


def unit(step_id: str) -> StepUnit | None:
    """The unit of a step id, or None (a plan may name a step this psbridge does not know)."""
    return next((u for u in units() if u.id == step_id), None)
