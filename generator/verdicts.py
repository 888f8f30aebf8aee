"""A step's verdict on `psbridge check`'s readings, and what the steps' verdict functions share.

Each step's verdict function lives in its unit (generator/steps/); `check.evaluate` calls
them. This module holds the verdict type, Microsoft's documents the verdicts cite, and the
few facts several steps derive from the same readings (which certificate the package
expects, when it ends, which certificates Entra ID knows). Pure: no I/O.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from . import clock
from .readings import CertificateReading, CrmReading, EntraReading, parse_time
from .thumbprint import Thumbprint

Verdict = Literal["in place", "will change", "blocked", "cannot tell", "session", "ok"]

_ADMIN = "https://learn.microsoft.com/dynamics365/customerengagement/on-premises/admin/"
#: Microsoft's troubleshooting article for server-based authentication: the documented causes and fixes.
TROUBLESHOOTING = _ADMIN + "troubleshooting-server-based-authentication"
#: The sequence article (the seed): step 6 sets the SPN <CRM app id>/<root domain>; its troubleshooting
#: section: "Failed Authentication. This error can be returned when the certificate used for
#: server-to-server authentication is missing or invalid."
SEQUENCE = _ADMIN + "on-prem-server-based-sharepoint-online"
#: The same sequence for Exchange Online: the prerequisite "the account that runs the Asynchronous
#: Processing Service has read access to private keys of the certificate", and for "Failed
#: Authentication": "To resolve, update or install the certificate and try again."
EXCHANGE_ONLINE = _ADMIN + "connect-dynamics-365-on-premises-exchange-online"
#: New-MsolServicePrincipalCredential: an asymmetric credential's -EndDate "must be set to on or before
#: the date that the X509 certificate is valid until, otherwise an OAuth token will not be issued".
MSOL_CREDENTIAL = "https://learn.microsoft.com/powershell/module/msonline/new-msolserviceprincipalcredential"

FAILED_AUTHENTICATION = ("the Enable Server-Based SharePoint Integration wizard then returns \"Failed Authentication\", "
                         "which Microsoft documents for a certificate used for server-to-server authentication "
                         "that is missing or invalid")

#: Marks a fix that is what psbridge's package does, where Microsoft documents no fix of its own.
OURS = "(psbridge's fix, not Microsoft's)"

#: Two certificates with the .cer's subject in LocalMachine\My: Microsoft's documented failure and fix.
DUPLICATE_SUBJECT_CAUSE = ("two certificates with the same subject in the local certificate store: "
                           "CertificateReconfiguration.ps1 fails with \"Private key not found\"")
DUPLICATE_SUBJECT_FIX = ("remove the certificates with the same subject name that you don't need, using the "
                         "Certificate Manager MMC snap-in (" + TROUBLESHOOTING + ")")


@dataclass(frozen=True)
class StepVerdict:
    index: int
    id: str
    verdict: Verdict
    detail: str = ""
    before: str | None = None
    after: str | None = None
    #: A known failure Microsoft documents, as the state shows it, and the documented fix.
    cause: str | None = None
    fix: str | None = None
    #: For a step that runs on each additional server: which server this verdict is about.
    host: str | None = None
    #: A renewal's switch that waits (`[certificate] switch_after_hours`): the UTC time before which `run`
    #: does not send it; shown as `will change (after <time>)`. Left out of the JSON when None.
    not_before: str | None = None


def when(moment: _dt.datetime) -> str:
    return clock.format_time(moment)


def with_causes(verdict: StepVerdict, causes: Sequence[tuple[str, str]]) -> StepVerdict:
    """The verdict with its known failures: one cause and one fix per line, in the same order."""
    if not causes:
        return verdict
    return replace(verdict, cause="\n".join(c for c, _ in causes), fix="\n".join(f for _, f in causes))


def number(plan: Mapping[str, Any], step_id: str) -> str:
    """The step's number in this package (`02`): a renewal runs the same steps in another order."""
    return next((f"{s['index']:02d}" for s in plan.get("steps") or [] if s.get("id") == step_id), "??")


def expected_thumbprint(plan: Mapping[str, Any], cert: CertificateReading | None) -> Thumbprint | None:
    """The certificate the package installs: the approved local copy's, else the server's .cer's."""
    approved = Thumbprint.of((plan.get("certificate") or {}).get("thumbprint"))
    return approved or (cert.cer_thumbprint if cert is not None else None)


def replaced_thumbprint(plan: Mapping[str, Any]) -> Thumbprint | None:
    """The certificate a renewal replaces (`[certificate] replaces`), or None."""
    return Thumbprint.of(((plan.get("parameters") or {}).get("certificate") or {}).get("replaces"))


def certificate_not_after(plan: Mapping[str, Any], cert: CertificateReading | None,
                          crm: CrmReading | None = None) -> _dt.datetime | None:
    """The certificate's NotAfter: from the approved local copy in the plan, else the server's .cer,
    else CRM's record of it (when CRM holds the expected certificate)."""
    expected = expected_thumbprint(plan, cert)
    return (parse_time((plan.get("certificate") or {}).get("not_after"))
            or (cert.cer_not_after if cert is not None else None)
            or next((c.not_after for c in (crm.certificates if crm else ()) if c.thumbprint == expected), None))


def expired_certificate(expected: str, not_after: _dt.datetime) -> tuple[str, str]:
    """The package's own certificate has expired: no step of this package can help."""
    return (f"the certificate {expected} expired on {when(not_after)}; " + FAILED_AUTHENTICATION,
            f"build a new package from a valid certificate and run it {OURS}; Microsoft: "
            f"update or install the certificate and try again, {EXCHANGE_ONLINE}")


def entra_thumbprints(entra: EntraReading | None, expected: str | None) -> set[str] | None:
    """The thumbprints of the CRM service principal's key credentials; None when one of them is unknown.

    A key's thumbprint comes from the key itself (SHA-1 of its DER, computed by the probe);
    `matches_certificate` says whether it is the package's certificate.
    """
    if entra is None or not entra.service_principal_found or entra.malformed_keys:
        return None
    found: set[str] = set()
    for key in entra.key_credentials:
        if key.matches_certificate is True and expected:
            found.add(expected)
        elif key.thumbprint:
            found.add(key.thumbprint)
        else:
            return None
    return found
