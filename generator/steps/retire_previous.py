"""Step retire-previous (renewal only): remove the replaced certificate's key credential, and expired ones."""

from __future__ import annotations

from ..readings import Readings
from ..verdicts import StepVerdict, expected_thumbprint, replaced_thumbprint, when
from .base import Backout, Step, StepUnit, every_profile

STEP = Step(
    0, "retire-previous", "Retire the replaced certificate's key credential", "change",
    needs=("connect", "set-certificate", "verify"),
    changes="Entra ID: removes from the Dynamics CRM service principal the key credential of the replaced "
    "certificate and expired key credentials; never the new certificate's, and nothing when the principal "
    "holds a credential of a certificate it was not told about.",
    one_template=True,
)

BACKOUT = Backout(
    "retire-previous", ("entra",),
    manual="The run record's state before this step lists the key credentials it removed (key id, "
    "thumbprint, end). While the replaced certificate is still valid, its credential can be added back by hand "
    "from its .cer, as step spn adds one (Update-MgServicePrincipal with every key credential, or "
    "New-MsolServicePrincipalCredential with -StartDate and -EndDate from the certificate). Expired "
    "credentials it removed are of no use again.",
)


def verdict(r: Readings) -> StepVerdict:
    """Which key credentials the step would remove, as its script decides.

    It removes the replaced certificate's credential and expired ones, never the package's own,
    and stops (blocked) when a credential of another certificate that has not expired is there.
    """
    step = (0, "retire-previous")
    replaces = replaced_thumbprint(r.plan)
    entra = r.entra
    if entra is None:
        return StepVerdict(*step, "cannot tell", "the entra probe did not run or did not answer")
    if not entra.service_principal_found:
        return StepVerdict(*step, "blocked", "the Dynamics CRM service principal is not in this tenant")
    expected = expected_thumbprint(r.plan, r.certificate)
    if expected is None:
        return StepVerdict(*step, "cannot tell", "the certificate's thumbprint is unknown")
    retire, unknown = [], []
    for key in entra.key_credentials:
        if key.is_certificate(expected):
            continue
        label = (key.thumbprint or "(not a certificate)") + (f" (key id {key.key_id})" if key.key_id else "")
        if key.thumbprint == replaces or (key.end is not None and key.end < r.now):
            retire.append(label)
        elif key.keyless and r.plan.get("profile") == "graph":
            continue  # as the step: returned without its key, its certificate cannot be told; kept, no stop
        else:
            unknown.append(label + (f", ends {when(key.end)}" if key.end else ""))
    shown = replaces or ""
    app = _app_part(r, expected, replaces)
    if isinstance(app, StepVerdict):
        return app
    retire += app
    if unknown:
        return StepVerdict(*step, "blocked", "the Dynamics CRM service principal holds key credentials of "
                           f"certificates this renewal was not told about ({'; '.join(unknown)}): retire-previous "
                           "would stop before removing anything",
                           fix="find out what uses them (another integration, such as server-side synchronization "
                           "with Exchange Online, uses the same service principal); remove stale ones by hand, or "
                           f"remove the credential of {shown} by hand and skip this step")
    if not retire:
        return StepVerdict(*step, "in place", f"no key credential of {shown} and none expired")
    return StepVerdict(*step, "will change", "remove key credential(s) " + ", ".join(retire),
                       before=f"{len(retire)} to retire", after="none")


def _app_part(r: Readings, expected: str, replaces: str | None) -> StepVerdict | list[str]:
    """In a package of the app trust: the app's credentials of the replaced certificate, which the step also
    removes, or the verdict when the app cannot be judged (it must hold the new certificate's credential)."""
    if ((r.plan.get("parameters") or {}).get("trust")) != "app":
        return []
    step = (0, "retire-previous")
    if r.app is None or r.app.app_found is None:
        return StepVerdict(*step, "cannot tell", "the app probe did not run or did not answer")
    if not r.app.app_found:
        return StepVerdict(*step, "blocked", "the app is not in this tenant: retire-previous stops before removing "
                           "anything (see step app-registration)")
    if not any(k.is_certificate(expected) for k in r.app.key_credentials):
        return StepVerdict(*step, "blocked", f"the app holds no key credential of the new certificate {expected}: "
                           "retire-previous stops before removing anything (see step app-certificate)")
    return [f"app: {k.thumbprint} (key id {k.key_id})" for k in r.app.key_credentials
            if not k.is_certificate(expected) and replaces and k.thumbprint == replaces]


UNIT = StepUnit("retire-previous", every_profile(STEP), included="renewal", renewal_rank=110,
                verdict=verdict, backout=BACKOUT)
