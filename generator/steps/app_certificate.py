"""Step app-certificate (app trust): the package's S2S certificate as a key credential of the Entra app.

Microsoft's page uploads CRM's S2S certificate to the app ("Upload the existing certificate to Azure
application certificates"); SharePoint Online then trusts tokens CRM signs with it. The step merges
the credential into the app's keyCredentials (never dropping another), reads it back, and stops when
Graph shortened or refused it. In a first setup a valid credential of another certificate means CRM
would sign with something else: blocked. Its back-out removes the key ids the run added.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

from ..errors import UserError
from ..readings import AppReading, KeyCredential, Readings
from ..verdicts import (
    StepVerdict,
    certificate_not_after,
    expected_thumbprint,
    expired_certificate,
    replaced_thumbprint,
    when,
)
from .base import Backout, RollbackContext, Step, StepUnit, every_profile

STEP = Step(
    0, "app-certificate", "Add the certificate to the Entra app's certificates", "change",
    needs=("connect", "set-certificate"),
    changes="Entra ID: adds the certificate as a key credential of the app registration (matched by its key; the "
    "other credentials are kept), valid from the certificate's NotBefore through its NotAfter, and reads it back.",
    one_template=True,
)

_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_SLACK = _dt.timedelta(seconds=1)


def _label(key: KeyCredential) -> str:
    return (key.thumbprint or "(not a certificate)") + (f" (key id {key.key_id})" if key.key_id else "") + (
        f", ends {when(key.end)}" if key.end else "")


def _others(r: Readings, app: AppReading, expected: str) -> list[KeyCredential]:
    """Valid credentials of certificates the package was not told about (a renewal's replaced one is known)."""
    replaces = replaced_thumbprint(r.plan)
    return [k for k in app.key_credentials if not k.is_certificate(expected)
            and (k.end is None or k.end >= r.now) and not (replaces and k.thumbprint == replaces)]


def verdict(r: Readings) -> StepVerdict:
    """In place when a credential of the certificate is valid through its NotAfter; blocked on another's."""
    step = (0, "app-certificate")
    app = r.app
    if app is None:
        return StepVerdict(*step, "cannot tell", "the app probe did not run or did not answer")
    expected = expected_thumbprint(r.plan, r.certificate)
    if expected is None:
        return StepVerdict(*step, "cannot tell", "the certificate's thumbprint is unknown")
    not_after = certificate_not_after(r.plan, r.certificate, r.crm)
    if not_after is not None and not_after <= r.now:
        cause, fix = expired_certificate(expected, not_after)
        return StepVerdict(*step, "blocked", f"the certificate {expected} expired on {when(not_after)}", cause=cause,
                           fix=fix)
    if not app.app_found:
        adopted = bool(((r.plan.get("parameters") or {}).get("app") or {}).get("client_id"))
        if adopted or app.app_found is None:
            return StepVerdict(*step, "cannot tell", "the app is not found (see step app-registration)")
        return StepVerdict(*step, "will change", f"add credential {expected} to the app step app-registration creates",
                           before="no app", after=f"credential {expected}")
    if (app.app_count or 1) > 1:
        return StepVerdict(*step, "cannot tell", f"{app.app_count} applications match (see step app-registration)")
    if app.malformed_keys:
        return StepVerdict(*step, "cannot tell", "the app probe printed a key credential that is not an object")
    matching = [k for k in app.key_credentials if k.is_certificate(expected)]
    current = [k for k in matching if k.end is not None and (not_after is None or k.end >= not_after - _SLACK)]
    short = [k for k in matching if k not in current and k.end is not None and k.end >= r.now]
    others = _others(r, app, expected)
    if others and not r.plan.get("parameters", {}).get("certificate", {}).get("replaces"):
        return StepVerdict(*step, "blocked", "the app holds a valid key credential of another certificate: "
                           + "; ".join(_label(k) for k in others) + f" (the package's is {expected}): CRM would "
                           "sign with a certificate the app does not know, or the app trusts one CRM does not use",
                           fix="find out which certificate CRM uses; if the other credential is stale, remove it from "
                           "the app by hand (Certificates & secrets), or build the package from that certificate")
    if others:
        return StepVerdict(*step, "blocked", "the app holds valid key credentials of certificates this renewal was not "
                           "told about: " + "; ".join(_label(k) for k in others),
                           fix="remove stale credentials from the app by hand, then run the renewal")
    if current:
        return StepVerdict(*step, "in place", f"credential {expected} valid through {when(current[0].end)}"
                           if current[0].end else f"credential {expected}")
    if short:
        ends = when(short[0].end) if short[0].end else "(no end date)"
        return StepVerdict(*step, "blocked", f"the app's credential of {expected} ends {ends}, before the certificate"
                           + (f" ({when(not_after)})" if not_after else ""),
                           cause="a credential of the certificate ends before the certificate does (Microsoft Graph "
                           "may cap a key credential at one year)",
                           fix="renew the certificate before the credential ends, or remove the short credential by "
                           "hand and run the package again: the step stops rather than adding it again")
    return StepVerdict(*step, "will change", f"add credential {expected}" + (
        f" valid through {when(not_after)}" if not_after else ""),
        before=f"{len(app.key_credentials)} credential(s)", after=f"{len(app.key_credentials) + 1} credential(s)")


def rollback_values(ctx: RollbackContext) -> tuple[dict[str, Any], bool] | None:
    """The key ids the step added to the app (each checked as a GUID)."""
    old, new = ctx.before.get("app"), ctx.after.get("app")
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None
    was, now = AppReading.of(old), AppReading.of(new)
    if now.app_found is not True:
        return None
    before_ids = {str(k.key_id) for k in was.key_credentials} if was.app_found else set()
    added = [str(k.key_id) for k in now.key_credentials if str(k.key_id) not in before_ids]
    for key_id in added:
        if not _GUID.fullmatch(key_id):
            raise UserError(f"{ctx.record}: a key credential id after step app-certificate is not a GUID; "
                            "refusing to use the record")
    return {"KeyIds": added}, bool(added)


BACKOUT = Backout("app-certificate", ("app",), script="rollback/10-app-certificate.ps1", needs=("session", "connect"),
                  values=rollback_values)

#: As spn's: removing the new certificate's credential while CRM signs with it is the outage a renewal avoids.
RENEWAL_BACKOUT = Backout(
    "app-certificate", ("app",),
    manual="Only once CRM signs with the replaced certificate again (the switch backed out, see the certificate "
    "step): remove the new certificate's key credential from the app by hand (Certificates & secrets); its key id "
    "is in the run record's state after this step. While CRM uses the new certificate, that credential must stay.",
)

UNIT = StepUnit(
    "app-certificate", every_profile(STEP), included="app", renewal_rank=55,
    renewal_title="Add the new certificate to the Entra app alongside the current one",
    renewal_changes="Entra ID: adds the new certificate as a key credential of the app registration, next to the "
    "one in use (which stays until retire-previous), and reads it back.",
    verdict=verdict, backout=BACKOUT, renewal_backout=RENEWAL_BACKOUT,
)
