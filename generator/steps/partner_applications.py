"""Step partner-applications: the organization database's PartnerApplicationBase rows (app trust).

Microsoft's "Configure Azure app for SharePoint access" (CE on-premises 9.1) has an operator run a
SQL script in the organization database: Microsoft's SharePoint Online row gets the tenant's id,
and a row for the customer's app is inserted. The step runs it (templates/sql/) as one
transaction, reads the rows back, and prints what it did; its verdict reads the `org` probe; its
back-out is scripted from the `org` readings recorded around it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import UserError
from ..readings import OrgReading, PartnerRow, Readings
from ..verdicts import StepVerdict, number
from .base import Backout, RollbackContext, Step, StepUnit, every_profile

#: Microsoft's page's constants (templates/steps/partner-applications/_organization.ps1.j2 holds the same).
SHAREPOINT_APP_ID = "38616d01-8e81-42dd-82fb-b68f2cecac3a"
SHAREPOINT_PRINCIPAL_ID = "00000003-0000-0ff1-ce00-000000000000"
APPLICATION_NAME = "Microsoft SharePoint Online"

STEP = Step(
    0, "partner-applications", "Add the app to the organization database (PartnerApplicationBase)", "change",
    # connect: a created app's client id is read from Entra ID by its uniqueName, as app-certificate does,
    # so a resumed run (`--from-step`) finds it again without a variable of an earlier step.
    needs=("prerequisites", "connect"),
    changes="CRM organization database: table PartnerApplicationBase, Microsoft's SharePoint Online row (its "
    "TenantId set to the tenant's, or the row inserted) and a row for the app (inserted), in one transaction.",
    one_template=True,
)

_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
#: The second hop, what it means and what to do (the same words as sql/_invoke-sql.ps1.j2's).
SECOND_HOP_CAUSE = ("SQL Server could not be reached with this session's Windows account: from a PSRP session "
                    "authenticated with Negotiate or Kerberos, the operator's credentials cannot be passed on to "
                    "another machine (a second hop)")
SECOND_HOP_FIX = ("run the package in a session that can delegate (CredSSP, or Kerberos constrained delegation to "
                  "the SQL Server's MSSQLSvc service), or run it on the SQL Server itself")


def _index(plan: Mapping[str, Any], step_id: str, default: int) -> int:
    """The step's number in this plan (check replaces it anyway; messages use `number`)."""
    return next((int(s["index"]) for s in plan.get("steps") or [] if s.get("id") == step_id), default)


def blocked_by_database(org: OrgReading) -> tuple[str, str | None, str | None] | None:
    """Why the step cannot run against this organization database (detail, cause, fix), or None.

    The order is the order of what the step meets: the organization, the connection, the table,
    the rights, the one organization row Microsoft's script requires.
    """
    if org.found is not True:
        return (f"the organization {org.organization or '?'} was not found by Get-CrmOrganization"
                + (f": {org.error}" if org.error else ""), None, None)
    if org.sql_reachable is False:
        return (f"SQL Server {org.sql_server} (database {org.database}) is not reachable: {org.sql_error or ''}".strip(),
                SECOND_HOP_CAUSE, SECOND_HOP_FIX)
    rights = org.rights
    if rights is None:
        return None
    if rights.table_found is False:
        return f"database {org.database} has no table dbo.PartnerApplicationBase: not an organization database", None, None
    missing = [what for what, ok in (("SELECT", rights.can_select), ("INSERT", rights.can_insert),
                                     ("UPDATE", rights.can_update)) if ok is not True]
    if missing:
        return (f"the login {rights.login_name or '?'} lacks {', '.join(missing)} on dbo.PartnerApplicationBase "
                f"(HAS_PERMS_BY_NAME)", None, "grant the rights (or run as a login that has them, e.g. a member of "
                "db_owner of the organization database)")
    if rights.organization_count is not None and rights.organization_count != 1:
        return (f"OrganizationBase holds {rights.organization_count} rows, not exactly one: Microsoft's script stops "
                "('Organization records does not equal 1')", None, None)
    return None


def _row_problem(row: PartnerRow, what: str) -> str | None:
    """A row the step's SQL refuses to touch (another PrincipalId, Name or organization): it stops."""
    if row.principal_id != SHAREPOINT_PRINCIPAL_ID or row.name != APPLICATION_NAME or row.organization_known is False:
        return (f"{what} exists with PrincipalId {row.principal_id}, Name {row.name!r}"
                f"{' and an OrganizationId of no organization in this database' if row.organization_known is False else ''}: "
                "the step leaves such a row alone and stops")
    return None


def verdict(r: Readings) -> StepVerdict:
    """In place when both rows hold the tenant; will change when a row is missing or Microsoft's has another TenantId."""
    step = (_index(r.plan, "partner-applications", 11), "partner-applications")
    org = r.org
    if org is None:
        return StepVerdict(*step, "cannot tell", "the org probe did not run or did not answer")
    blocked = blocked_by_database(org)
    if blocked is not None:
        detail, cause, fix = blocked
        return StepVerdict(*step, "blocked", detail, cause=cause, fix=fix)
    if org.rows is None:
        return StepVerdict(*step, "cannot tell", "the rows were not read" + (f": {org.sql_error}" if org.sql_error else ""))
    tenant = str(r.plan["parameters"]["sharepoint"].get("tenant_id") or "").lower()
    microsoft = org.row(SHAREPOINT_APP_ID)
    adopted = (r.plan["parameters"].get("app") or {}).get("client_id")
    client = str(adopted or org.client_id or "").lower() or None
    customer = org.row(client) if client else None
    for row, what in ((microsoft, "Microsoft's SharePoint Online row"), (customer, "the app's row")):
        problem = _row_problem(row, what) if row is not None else None
        if problem:
            return StepVerdict(*step, "blocked", problem)
    if customer is not None and customer.tenant_id != tenant:
        return StepVerdict(*step, "blocked", f"the app's row exists with TenantId {customer.tenant_id or 'NULL'}, not "
                           f"{tenant}: Microsoft's script does not correct it, the step stops")
    changes, before, after = [], [], []
    if microsoft is None:
        changes.append("insert Microsoft's SharePoint Online row")
        before.append("Microsoft row: absent")
        after.append(f"Microsoft row: TenantId {tenant}")
    elif microsoft.tenant_id != tenant:
        changes.append("set the TenantId of Microsoft's SharePoint Online row")
        before.append(f"Microsoft row: TenantId {microsoft.tenant_id or 'NULL'}")
        after.append(f"Microsoft row: TenantId {tenant}")
    if client is None:
        known = "the app does not exist yet" if org.app_count == 0 else "its client id is not known to the org probe"
        if org.app_count == 0:
            changes.append("insert the app's row")
            before.append("app row: absent (no app yet)")
            after.append(f"app row: TenantId {tenant}")
        elif not changes:
            return StepVerdict(*step, "cannot tell", f"Microsoft's SharePoint Online row holds the tenant; the app's "
                               f"row cannot be read ({known}: the app is found by its uniqueName once Microsoft Graph "
                               "is connected)")
    elif customer is None:
        changes.append(f"insert the app's row ({client})")
        before.append("app row: absent")
        after.append(f"app row: TenantId {tenant}")
    if not changes:
        return StepVerdict(*step, "in place", f"both rows hold TenantId {tenant}")
    return StepVerdict(*step, "will change", "; ".join(changes) + f" (step {number(r.plan, 'partner-applications')})",
                       before="; ".join(before), after="; ".join(after))


def _guid(value: str | None, what: str, record: str) -> str:
    """A GUID from a record, or the record is refused (it becomes a parameter of the rollback script)."""
    if value is None or not _GUID.fullmatch(value):
        raise UserError(f"{record}: {what} is not a GUID; refusing to use the record")
    return value.lower()


def rollback_values(ctx: RollbackContext) -> tuple[dict[str, Any], bool] | None:
    """What the run did to each row, from the org readings before and after it, checked.

    Microsoft's row: absent before and present after = inserted (deleted on back-out); another
    TenantId after = updated (its previous TenantId, NULL included, is put back). The app's row:
    absent before and present after = inserted (deleted on back-out).
    """
    old, new = ctx.before.get("org"), ctx.after.get("org")
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None
    was, now = OrgReading.of(old), OrgReading.of(new)
    if was.rows is None or now.rows is None:
        return None
    client = _guid(now.client_id, "the app's client id after step partner-applications", ctx.record)
    if was.client_id is not None and was.client_id != client:
        raise UserError(f"{ctx.record}: the org readings around step partner-applications name two client ids; "
                        "refusing to use the record")
    tenant = _guid(str(ctx.package.parameters.sharepoint.tenant_id or ""), "the tenant id", ctx.record)
    microsoft_before, microsoft_after = was.row(SHAREPOINT_APP_ID), now.row(SHAREPOINT_APP_ID)
    old_tenant: str | None = None
    if microsoft_before is None and microsoft_after is not None:
        microsoft = "inserted"
    elif (microsoft_before is not None and microsoft_after is not None
          and microsoft_before.tenant_id != microsoft_after.tenant_id):
        microsoft = "updated"
        if microsoft_before.tenant_id is not None:
            # As CONVERT(NVARCHAR, uniqueidentifier) writes it, which the rollback SQL compares with.
            old_tenant = _guid(microsoft_before.tenant_id, "the previous TenantId", ctx.record).upper()
    else:
        microsoft = "unchanged"
    if microsoft != "unchanged" and (microsoft_after is None or microsoft_after.tenant_id != tenant):
        raise UserError(f"{ctx.record}: Microsoft's row after step partner-applications does not hold the package's "
                        "tenant id; refusing to use the record")
    customer = "inserted" if was.row(client) is None and now.row(client) is not None else "unchanged"
    values = {"ClientId": client, "TenantId": tenant, "MicrosoftRow": microsoft, "OldTenantId": old_tenant,
              "CustomerRow": customer}
    return values, microsoft != "unchanged" or customer != "unchanged"


BACKOUT = Backout("partner-applications", ("org",), script="rollback/11-partner-applications.ps1",
                  values=rollback_values)

UNIT = StepUnit("partner-applications", every_profile(STEP), included="app", renewal_rank=92, verdict=verdict,
                backout=BACKOUT)
