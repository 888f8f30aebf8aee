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


#: The back-out script's parameter for each ServerSettings value.
_PARAMETERS = {_PRINCIPAL: "PrincipalId", _URL: "MetadataUrl"}


def _around(ctx: RollbackContext) -> tuple[CrmReading, CrmReading] | None:
    """The crm readings right before and right after the step, or None when a probe did not answer."""
    old, new = ctx.before.get("crm"), ctx.after.get("crm")
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None
    return CrmReading.of(old), CrmReading.of(new)


def rollback_values(ctx: RollbackContext) -> tuple[dict[str, Any], bool] | None:
    """The previous values the step replaced (checked like parameters: a GUID and an https URL).

    Only a value that was there before is restored: a value that was absent is left out (an empty
    string is not "not set", and no Microsoft page we found says how to remove one); `rollback_notes` says
    what to do by hand for it. The bool: whether a value that was there before was changed.
    """
    around = _around(ctx)
    if around is None:
        return None
    was, now = around
    principal, url = was.setting(_PRINCIPAL), was.setting(_URL)
    if principal and not _GUID.fullmatch(principal):
        raise UserError(f"{ctx.record}: the previous {_PRINCIPAL} is not a GUID; refusing to use the record")
    if url and not _HTTPS.fullmatch(url):
        raise UserError(f"{ctx.record}: the previous {_URL} is not an https URL; refusing to use the record")
    present = {name: value for name, value in ((_PRINCIPAL, principal), (_URL, url)) if value}
    changed = any(value != now.setting(name) for name, value in present.items())
    return {_PARAMETERS[name]: value for name, value in present.items()}, changed


def rollback_notes(ctx: RollbackContext) -> list[str]:
    """For each value the step set where none was before: left as it is, and the procedure to change it by hand."""
    around = _around(ctx)
    if around is None:
        return []
    was, now = around
    return [_absent_note(name, now.setting(name)) for name in (_PRINCIPAL, _URL)
            if not was.setting(name) and now.setting(name)]


def _absent_note(name: str, current: str) -> str:
    """The by-hand procedure for a ServerSettings value that was not set before step 07."""
    return (f"ServerSettings {name} was not set before this step (the run record's state before it) and is now "
            f"{current!r}. The back-out leaves it as it is: writing an empty string is not \"not set\", and "
            "no Microsoft page psbridge relies on says how to remove an advanced setting. To give it another value "
            "by hand, on a server with the Deployment Tools role, as a deployment "
            "administrator, run in Windows PowerShell:\n"
            "  Add-PSSnapin Microsoft.Crm.PowerShell\n"
            "  $setting = New-Object 'Microsoft.Xrm.Sdk.Deployment.ConfigurationEntity'\n"
            "  $setting.LogicalName = 'ServerSettings'\n"
            "  $setting.Attributes = New-Object 'Microsoft.Xrm.Sdk.Deployment.AttributeCollection'\n"
            f"  $setting.Attributes.Add((New-Object 'System.Collections.Generic.KeyValuePair[String, Object]' "
            f"('{name}', '<value>')))\n"
            "  Set-CrmAdvancedSetting -Entity $setting\n"
            "To remove it, ask Microsoft Support: server-side synchronization with Exchange Online reads the same "
            "setting.")


BACKOUT = Backout("crm-settings", ("crm",), script="rollback/07-crm-settings.ps1", values=rollback_values,
                  notes=rollback_notes)

UNIT = StepUnit("crm-settings", every_profile(STEP), renewal_rank=80, verdict=verdict, backout=BACKOUT)
