"""Step app-registration (app trust): the Entra app SharePoint Online trusts, its service principal,
SharePoint's Sites.FullControl.All in its requiredResourceAccess, and admin consent.

Microsoft's "Configure Azure app for SharePoint access" creates the app by hand in the portal. The
package either adopts an existing app (`[app] client_id`) or creates one found again by its Graph
`uniqueName` (`[app] name`), so a re-run finds the same app. Granting tenant-wide full control is
done only for an app the package creates: for an adopted app without consent the step stops
(blocked), because that grant is the administrator's decision. The verdict reads the `app` probe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..readings import AppReading, Readings
from ..verdicts import StepVerdict
from .base import Backout, Step, StepUnit, every_profile

STEP = Step(
    0, "app-registration", "Create or adopt the Entra app for SharePoint Online, with admin consent", "change",
    needs=("connect",),
    changes="Entra ID: creates the app registration found by its uniqueName (or adopts the one named by client "
    "id, which must be single tenant), its service principal, SharePoint Online's Sites.FullControl.All in its "
    "required permissions (merged with the others) and, for an app it created, admin consent (an app role "
    "assignment of that role); an adopted app without consent stops the step.",
    one_template=True,
)

#: The audience Microsoft's CE page requires ("Accounts in this organizational directory only").
SINGLE_TENANT = "AzureADMyOrg"


def _adopted(plan: Mapping[str, Any]) -> bool:
    """Whether the package adopts an existing app (`[app] client_id`) rather than creating one."""
    return bool(((plan.get("parameters") or {}).get("app") or {}).get("client_id"))


def _app_label(plan: Mapping[str, Any]) -> str:
    app = (plan.get("parameters") or {}).get("app") or {}
    return f"app {app['client_id']}" if app.get("client_id") else f"app with uniqueName {app.get('name')}"


def consent_commands(plan: Mapping[str, Any], app_id: str) -> str:
    """The Graph PowerShell an administrator runs to grant the consent psbridge will not grant itself."""
    c = plan["constants"]
    return (f"$Sp = Get-MgServicePrincipal -Filter \"appId eq '{app_id}'\"; "
            f"$SharePoint = Get-MgServicePrincipal -Filter \"appId eq '{c['sharepoint_app_id']}'\"; "
            "New-MgServicePrincipalAppRoleAssignment -ServicePrincipalId $Sp.Id -PrincipalId $Sp.Id "
            f"-ResourceId $SharePoint.Id -AppRoleId '{c['sites_full_control_role_id']}' "
            "(or grant admin consent for Sites.FullControl.All on the app's API permissions page in the Entra admin "
            "center)")


def _blocked_by_tenant(plan: Mapping[str, Any], app: AppReading) -> StepVerdict | None:
    """SharePoint's service principal or role is not what the catalogue says: the step stops."""
    step = (0, "app-registration")
    wanted = plan["constants"]["sites_full_control_role_id"]
    if app.sharepoint_found is False:
        return StepVerdict(*step, "blocked", "the Office 365 SharePoint Online service principal "
                           f"({plan['constants']['sharepoint_app_id']}) is not in this tenant")
    if app.sharepoint_role_id is not None and app.sharepoint_role_id.lower() != wanted.lower():
        return StepVerdict(*step, "blocked", f"SharePoint's Sites.FullControl.All application role has id "
                           f"{app.sharepoint_role_id}, not {wanted}: the step stops before any write",
                           fix="report it: psbridge's catalogue constant no longer matches the tenant")
    return None


def verdict(r: Readings) -> StepVerdict:
    """In place, will change (a created app's missing pieces), blocked (an adopted app the step refuses)."""
    step = (0, "app-registration")
    plan, app = r.plan, r.app
    adopted = _adopted(plan)
    if app is None:
        return StepVerdict(*step, "cannot tell", "the app probe did not run or did not answer")
    if app.app_found is None:
        return StepVerdict(*step, "cannot tell", "the app probe could not tell whether the app exists")
    blocked = _blocked_by_tenant(plan, app)
    if blocked is not None:
        return blocked
    label = _app_label(plan)
    if not app.app_found:
        if adopted:
            return StepVerdict(*step, "blocked", f"{label} is not in this tenant",
                               fix="check [app] client_id (the app's Application (client) ID), or use [app] name "
                               "to let the package create the app")
        return StepVerdict(*step, "will change", f"create {label}, its service principal, the Sites.FullControl.All "
                           "permission and admin consent", before="no app",
                           after=f"single-tenant {label} with service principal, permission and consent")
    if (app.app_count or 1) > 1:
        return StepVerdict(*step, "blocked", f"{app.app_count} applications match {label}: the step needs exactly one")
    if app.sign_in_audience != SINGLE_TENANT:
        return StepVerdict(*step, "blocked", f"{label} has signInAudience {app.sign_in_audience or '(unknown)'}, not "
                           f"{SINGLE_TENANT} (single tenant)",
                           fix="Microsoft's page requires \"Accounts in this organizational directory only\": change "
                           "the app's supported account types, or name another app")
    if app.service_principal_found is None or app.role_required is None or app.consent_granted is None:
        return StepVerdict(*step, "cannot tell", f"the app probe could not read all of {label}'s service principal, "
                           "permissions and consent")
    missing = [what for what, there in (("service principal", app.service_principal_found),
                                        ("Sites.FullControl.All in requiredResourceAccess", app.role_required),
                                        ("admin consent", app.consent_granted)) if not there]
    owners = app.owner_text()
    if not missing:
        return StepVerdict(*step, "in place", f"{label} ({app.app_id}): single tenant, service principal, "
                           f"Sites.FullControl.All consented; owners: {owners}")
    if adopted and not app.consent_granted:
        return StepVerdict(*step, "blocked", f"{label} has no admin consent for SharePoint's Sites.FullControl.All "
                           f"(missing: {', '.join(missing)}): psbridge grants tenant-wide full control only to an "
                           "app it creates",
                           fix="an administrator decides: grant admin consent to the app, then run the package "
                           f"again: {consent_commands(plan, app.app_id or '<client id>')}")
    return StepVerdict(*step, "will change", "add " + ", ".join(missing) + f" ({label}; owners: {owners})",
                       before="missing: " + ", ".join(missing), after="all in place")


MANUAL = (
    "Removing the app, its service principal or the consent is a manual procedure: by the time it is backed out "
    "the app may be in use (CRM's SharePoint integration signs in with it). The run record's state (probe app) "
    "says what step app-registration found and did (client id, object id, whether it created the app). An "
    "administrator, connected with Connect-MgGraph -Scopes 'Application.ReadWrite.All', "
    "'AppRoleAssignment.ReadWrite.All':\n"
    "- consent only: `$Sp = Get-MgServicePrincipal -Filter \"appId eq '<client id>'\"; "
    "Get-MgServicePrincipalAppRoleAssignment -ServicePrincipalId $Sp.Id | Where-Object { $_.AppRoleId -eq "
    "'678536fe-1083-478a-9c59-b99265e6b0d3' } | ForEach-Object { Remove-MgServicePrincipalAppRoleAssignment "
    "-ServicePrincipalId $Sp.Id -AppRoleAssignmentId $_.Id }`;\n"
    "- the service principal: `Remove-MgServicePrincipal -ServicePrincipalId $Sp.Id`;\n"
    "- an app the run created (never an adopted one): `Remove-MgApplication -ApplicationId '<object id>'` (it stays "
    "restorable for 30 days under Deleted applications).\n"
    "An adopted app is left as it was found, except the Sites.FullControl.All entry the step may have added to "
    "its API permissions: remove it there by hand if the app did not have it before."
)

BACKOUT = Backout("app-registration", ("app",), manual=MANUAL)

UNIT = StepUnit("app-registration", every_profile(STEP), included="app", renewal_rank=52,
                verdict=verdict, backout=BACKOUT)
