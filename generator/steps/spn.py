"""Step spn: the certificate as a key credential of the Dynamics CRM service principal, and the SPN.

Its verdict decides, as the step's script does, whether a credential of the certificate is
valid long enough and whether the root domain's SPN is there. Its back-out removes what the
step added (key ids and the SPN read from the run record); a renewal's spn is backed out by hand.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

from ..errors import UserError
from ..readings import EntraReading, KeyCredential, Readings
from ..verdicts import (
    EXCHANGE_ONLINE,
    FAILED_AUTHENTICATION,
    MSOL_CREDENTIAL,
    OURS,
    SEQUENCE,
    StepVerdict,
    certificate_not_after,
    entra_thumbprints,
    expected_thumbprint,
    expired_certificate,
    number,
    when,
    with_causes,
)
from .base import Backout, RollbackContext, Step, StepUnit

_CHANGES = "Entra ID: adds the certificate as a key credential of the Dynamics CRM service principal "
STEPS = {
    "msonline": Step(
        0, "spn", "Set the Azure Active Directory Service Principal Name (SPN) in SharePoint", "change",
        needs=("connect", "set-certificate"),
        changes=_CHANGES + "and adds the service principal name for the root domain.",
    ),
    #: Profile graph: the step is idempotent (matched by the key, a short credential replaced).
    "graph": Step(
        0, "spn", "Add the certificate and the SPN to the Dynamics CRM service principal", "change",
        needs=("connect", "set-certificate"),
        changes=_CHANGES + "(matched by its key, the certificate's raw data; a credential of it that ends before the "
        "certificate does is replaced) and merges the service principal name for the root domain into its names.",
    ),
}

_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


def verdict(r: Readings) -> StepVerdict:
    """In place when a credential of the certificate is valid through its NotAfter and the SPN is there."""
    step = (6, "spn")
    plan, entra, now = r.plan, r.entra, r.now
    if entra is None:
        return StepVerdict(*step, "cannot tell", "the entra probe did not run or did not answer")
    if not entra.service_principal_found:
        return StepVerdict(*step, "blocked", "the Dynamics CRM service principal is not in this tenant")
    spn = plan["constants"]["crm_app_id"] + "/" + plan["parameters"]["crm"]["root_domain"]
    has_name = entra.has_name(spn)
    expected = expected_thumbprint(plan, r.certificate)
    if expected is None:
        return StepVerdict(*step, "cannot tell", "the certificate's thumbprint is unknown")
    matching = [k for k in entra.key_credentials if k.is_certificate(expected)]
    not_after = certificate_not_after(plan, r.certificate, r.crm)
    if not_after is not None and not_after <= now:
        cause, fix = expired_certificate(expected, not_after)
        return StepVerdict(*step, "blocked", f"the certificate {expected} expired on {when(not_after)}: a key "
                           "credential of it cannot be valid", cause=cause, fix=fix)
    # As step 06: a credential of the certificate counts only while it is valid through the
    # certificate's NotAfter (one second of slack); one that ends earlier is replaced (graph) or
    # joined by a new one (msonline: New-MsolServicePrincipalCredential adds, nothing removes).
    slack = _dt.timedelta(seconds=1)
    replaces = plan.get("profile") == "graph"

    def valid_through(key: KeyCredential) -> bool:
        if key.end is None:
            return False
        return key.end >= not_after - slack if not_after is not None else key.end > now

    current = [k for k in matching if valid_through(k)]
    short = [k for k in matching if not valid_through(k)]
    expired = [k for k in short if (k.end or now) < now]
    has_key = bool(current)
    # msonline's step 06 leaves a short credential alone when a valid one exists.
    if has_name and has_key and not (short and replaces):
        return StepVerdict(*step, "in place", f"credential {expected} and SPN {spn} present")
    causes: list[tuple[str, str]] = []
    changes = [] if has_key else [f"add credential {expected}"]
    if short and (replaces or not has_key):
        until = ", ".join(k.end_text or "no end date" for k in short)
        through = f" {not_after.isoformat()}" if not_after is not None else " now"
        if replaces:
            changes.insert(0, f"replace credential {expected} that ends {until}, before the certificate's "
                           f"expiry{through}")
        elif not has_key:
            changes[0] += f" valid through{through} (the one that ends {until} stays)"
    if expired and not has_key:
        ended = ", ".join(when(k.end) for k in expired if k.end is not None)
        what = ("replaces it with a credential valid from the certificate's NotBefore through its NotAfter"
                if replaces else "adds a credential valid from the certificate's NotBefore through its NotAfter; "
                "the expired one stays (Remove-MsolServicePrincipalCredential removes it)")
        causes.append((f"expired: the key credential of certificate {expected} in Entra ID ended on {ended}",
                       f"run the package: step {number(plan, 'spn')} {what} {OURS}; Microsoft: the credential's end "
                       f"date must be on or before the certificate's, otherwise an OAuth token will not be issued, "
                       f"{MSOL_CREDENTIAL}"))
    causes += _other_causes(r, expected, bool(matching), has_name, spn)
    if not has_name:
        changes.append(f"add SPN {spn}")
    before = f"{len(entra.key_credentials)} credential(s), {len(entra.service_principal_names)} SPN(s)"
    kept = len(entra.key_credentials) - (len(short) if replaces else 0)
    after = f"{kept + (not has_key)} credential(s), {len(entra.service_principal_names) + (not has_name)} SPN(s)"
    return with_causes(StepVerdict(*step, "will change", "; ".join(changes), before=before, after=after), causes)


def _other_causes(r: Readings, expected: str, matching: bool, has_name: bool, spn: str) -> list[tuple[str, str]]:
    """Known failures the step fixes: CRM signs with a certificate Entra ID lacks; the SPN is missing."""
    assert r.entra is not None
    plan, app_id, causes = r.plan, r.plan["constants"]["crm_app_id"], []
    in_entra = entra_thumbprints(r.entra, expected)
    crm_thumbprints = r.crm.thumbprints if r.crm is not None else []
    if not matching and expected in crm_thumbprints and in_entra is not None:
        causes.append((f"CRM's {r.crm.certificate_type if r.crm else None} certificate {expected} differs from the key "
                       "credentials of the Dynamics CRM service principal in Entra ID "
                       f"({', '.join(sorted(in_entra)) or 'none'}); " + FAILED_AUTHENTICATION,
                       f"run the package: step {number(plan, 'spn')} adds the key credential of certificate {expected} "
                       f"{OURS}; Microsoft: update or install the certificate and try again, {EXCHANGE_ONLINE}"))
    if not has_name:
        others = [n for n in r.entra.service_principal_names if n.lower().startswith(app_id.lower() + "/")]
        causes.append((f"the SPN {spn} for the root domain is missing from the Dynamics CRM service principal"
                       + (f" (it has {', '.join(others)})" if others else "")
                       + "; Microsoft: \"Failed Authentication\" can occur when one or more of the server-based "
                       "authentication configuration steps were not completed",
                       f"run the package: step {number(plan, 'spn')} adds {spn} and keeps the other names {OURS}; the "
                       "article's step 6 sets this SPN with the domain where the Dynamics 365 Server is located, "
                       + SEQUENCE))
    return causes


def rollback_values(ctx: RollbackContext) -> tuple[dict[str, Any], bool] | None:
    """The key ids the step added (each a GUID) and the SPN, if the step added it."""
    old, new = ctx.before.get("entra"), ctx.after.get("entra")
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None
    was, now = EntraReading.of(old), EntraReading.of(new)
    # str(): a key without an id reads "None", which is no GUID: the record is refused below.
    before_ids = {str(k.key_id) for k in was.key_credentials}
    added = [str(k.key_id) for k in now.key_credentials if str(k.key_id) not in before_ids]
    for key_id in added:
        if not _GUID.fullmatch(key_id):
            raise UserError(f"{ctx.record}: a key credential id after step spn is not a GUID; refusing to use the record")
    spn = ctx.package.plan["constants"]["crm_app_id"] + "/" + ctx.package.parameters.crm.root_domain
    removed_spn = spn if now.has_name(spn) and not was.has_name(spn) else ""
    return {"KeyIds": added, "ServicePrincipalName": removed_spn}, bool(added or removed_spn)


BACKOUT = Backout("spn", ("entra",), script="rollback/06-spn.ps1", needs=("session", "connect"),
                  profile_templates=True, values=rollback_values)

#: A renewal's spn step is not backed out by a script: removing the new key credential while CRM
#: signs with the new certificate (after the switch) is the outage the renewal avoids.
RENEWAL_BACKOUT = Backout(
    "spn", ("entra",),
    manual="Only once CRM signs with the replaced certificate again (the switch backed out, see the certificate "
    "step): remove the new certificate's key credential from the Dynamics CRM service principal by hand; its key "
    "id is in the run record's state after this step. While CRM uses the new certificate, that credential must "
    "stay. psbridge sends no script for it: a back-out run cannot see which certificate CRM's processes use.",
)

UNIT = StepUnit(
    "spn", STEPS, renewal_rank=50,
    renewal_title="Add the new certificate's key credential alongside the current one",
    renewal_changes="Entra ID: adds the new certificate as a key credential of the Dynamics CRM service principal, "
    "next to the one in use (which stays until retire-previous), reads it back, and adds the service "
    "principal name for the root domain if it is missing.",
    verdict=verdict, backout=BACKOUT, renewal_backout=RENEWAL_BACKOUT,
)
