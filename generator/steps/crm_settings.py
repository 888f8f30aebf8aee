"""Step crm-settings: CRM's ServerSettings for server-based authentication, and their back-out."""

from __future__ import annotations

import re
from typing import Any

from ..errors import UserError
from ..readings import CrmReading, Readings
from ..verdicts import StepVerdict
from .base import Backout, RollbackContext, Step, StepUnit, every_profile

STEP = Step(
    0, "crm-settings", "Configure the Microsoft Dynamics 365 Server for server-based authentication", "change",
    needs=("prerequisites",),
    changes="CRM configuration database: ServerSettings S2SDefaultAuthorizationServerPrincipalId and "
    "S2SDefaultAuthorizationServerMetadataUrl.",
)

_PRINCIPAL, _URL = "S2SDefaultAuthorizationServerPrincipalId", "S2SDefaultAuthorizationServerMetadataUrl"
_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_HTTPS = re.compile(r"https://[A-Za-z0-9.-]+(?::\d{1,5})?(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?")


def verdict(r: Readings) -> StepVerdict:
    """In place when both values are the article's (the cloud's metadata URL); else what differs."""
    step = (7, "crm-settings")
    if r.crm is None:
        return StepVerdict(*step, "cannot tell", "the crm probe did not answer")
    wanted = {_PRINCIPAL: r.plan["constants"]["acs_principal_id"], _URL: r.plan["constants"]["metadata_url"]}
    current = r.crm.server_settings
    differs = {k: v for k, v in wanted.items() if (current.get(k) or "") != v}
    if not differs:
        return StepVerdict(*step, "in place", "both ServerSettings values are set")
    before = "; ".join(f"{k}={current.get(k) or '(unset)'}" for k in differs)
    after = "; ".join(f"{k}={v}" for k, v in differs.items())
    return StepVerdict(*step, "will change", f"{len(differs)} ServerSettings value(s) differ", before=before, after=after)


def rollback_values(ctx: RollbackContext) -> tuple[dict[str, Any], bool] | None:
    """The previous values (checked like parameters: a GUID and an https URL), and whether they changed."""
    old, new = ctx.before.get("crm"), ctx.after.get("crm")
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None
    was, now = CrmReading.of(old), CrmReading.of(new)
    principal, url = was.setting(_PRINCIPAL), was.setting(_URL)
    if principal and not _GUID.fullmatch(principal):
        raise UserError(f"{ctx.record}: the previous {_PRINCIPAL} is not a GUID; refusing to use the record")
    if url and not _HTTPS.fullmatch(url):
        raise UserError(f"{ctx.record}: the previous {_URL} is not an https URL; refusing to use the record")
    return {"PrincipalId": principal, "MetadataUrl": url}, was.server_settings != now.server_settings


BACKOUT = Backout("crm-settings", ("crm",), script="rollback/07-crm-settings.ps1", values=rollback_values)

UNIT = StepUnit("crm-settings", every_profile(STEP), renewal_rank=80, verdict=verdict, backout=BACKOUT)
