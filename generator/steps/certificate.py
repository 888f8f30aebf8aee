"""Step certificate: import the PFX, grant the service account its key, make it CRM's S2S certificate.

In a renewal the same step is the switch: it runs after the new key credential is in Entra ID
and the certificate is on every additional server, and only `[certificate] switch_after_hours`
after the new key credential was proven there (`switch_wait`): Microsoft's "Troubleshooting
server-based authentication" says SharePoint may take up to 24 hours to use a new certificate.
The proof is the audit log's `step-end` line of the spn step (`key_proof_details`, written by
`psbridge run` when that step ends OK; in a renewal the step ends OK only after it read the
credential back), believed only when the whole log's hash chain verifies.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..readings import Readings
from ..thumbprint import Thumbprint
from ..verdicts import (
    DUPLICATE_SUBJECT_CAUSE,
    DUPLICATE_SUBJECT_FIX,
    EXCHANGE_ONLINE,
    FAILED_AUTHENTICATION,
    OURS,
    StepVerdict,
    certificate_not_after,
    entra_thumbprints,
    expected_thumbprint,
    expired_certificate,
    number,
    when,
    with_causes,
)
from .base import Backout, Step, StepUnit, every_profile

STEP = Step(
    0, "certificate", "Prepare the certificate", "change", needs=("prerequisites",),
    inputs={"PfxPassword": "pfx_password"},
    changes="CRM server: imports the PFX into LocalMachine\\My, grants the service account read "
    "access to its private key; CRM configuration database: stores it as the S2S token issuer certificate.",
)

BACKOUT = Backout(
    "certificate", ("certificate", "crm"),
    manual="The previous S2S certificate's private key is not in the package, so psbridge cannot put it back. "
    "By hand: run CertificateReconfiguration.ps1 -updateCrm with the previous certificate's PFX (its "
    "thumbprint is in the run record's state before the certificate step), then remove the new certificate from "
    "LocalMachine\\My if no other service uses it.",
)


def verdict(r: Readings) -> StepVerdict:
    """In place when the certificate is in the store, CRM uses it and the service account reads its key."""
    step = (2, "certificate")
    plan, cert, crm, now = r.plan, r.certificate, r.crm, r.now
    if cert is None or crm is None:
        return StepVerdict(*step, "cannot tell", "the certificate or crm probe did not answer")
    approved = Thumbprint.of((plan.get("certificate") or {}).get("thumbprint"))
    on_server = cert.cer_thumbprint
    if approved and on_server and approved != on_server:
        return StepVerdict(*step, "blocked", f"the server's .cer has thumbprint {on_server}, not the approved "
                           f"{approved}: the server holds another certificate than the one approved")
    expected = expected_thumbprint(plan, cert)
    if not expected:
        return StepVerdict(*step, "cannot tell", "no .cer on the server and no local certificate in the plan")
    store = cert.store
    if len(store) > 1:
        return StepVerdict(*step, "blocked", f"{len(store)} certificates with subject {cert.cer_subject} in "
                           "LocalMachine\\My (CRM then reports 'Private key not found'): remove the extra ones",
                           cause=DUPLICATE_SUBJECT_CAUSE, fix=DUPLICATE_SUBJECT_FIX)
    current = crm.thumbprints
    before = ", ".join(current) or "none"
    kind = crm.certificate_type
    not_after = certificate_not_after(plan, cert, crm)
    if not_after is not None and not_after <= now:
        cause, fix = expired_certificate(expected, not_after)
        where = "CRM's" if expected in current else "the package's"
        return StepVerdict(*step, "blocked", f"{where} {kind} certificate {expected} expired on {when(not_after)}",
                           cause=cause, fix=fix)
    in_store = bool(store) and store[0].thumbprint == expected
    entry = store[0] if in_store else None
    has_private_key = entry.has_private_key if entry else None
    key_readable = entry.key_readable if entry else None
    access = entry.key_access if entry else {}
    why = "; ".join(str(x) for x in (access.get("key_file"), access.get("via") and f"via {access['via']}",
                                      access.get("note")) if x)
    account = ((plan.get("parameters") or {}).get("certificate") or {}).get("service_account") or "the service account"
    if in_store and expected in current and key_readable is not False and has_private_key is not False:
        detail = f"{kind} is {expected}"
        if key_readable is None:
            detail += " (cannot tell whether the service account can read the private key" + (f": {why})" if why else ")")
        return StepVerdict(*step, "in place", detail)
    reasons: list[str] = []
    causes: list[tuple[str, str]] = []
    if not in_store:
        reasons.append("not in LocalMachine\\My")
    elif has_private_key is False:
        reasons.append("the certificate in LocalMachine\\My has no private key")
    if expected not in current:
        reasons.append(f"CRM {kind} is {before}")
        causes += _crm_causes(r, expected, before)
    if key_readable is False:
        reasons.append(f"{account} cannot read the private key" + (f" ({why})" if why else ""))
        causes.append((f"{account} cannot read the private key of certificate {expected}" + (f" ({why})" if why else ""),
                       _access_fix(plan, account, access.get("via") == "denied")))
    return with_causes(StepVerdict(*step, "will change", "; ".join(reasons), before=before, after=expected), causes)


def _crm_causes(r: Readings, expected: str, before: str) -> list[tuple[str, str]]:
    """Why CRM's current certificate fails today: it expired, or Entra ID knows none of CRM's."""
    assert r.certificate is not None and r.crm is not None
    plan, now, kind = r.plan, r.now, r.crm.certificate_type
    current = r.crm.thumbprints
    causes: list[tuple[str, str]] = []
    # CRM's certificate's NotAfter: from CRM's record, else from the store (the .cer's subject).
    dates = {e.thumbprint: e.not_after for e in r.certificate.store}
    dates.update({c.thumbprint: c.not_after for c in r.crm.certificates if c.not_after is not None})
    for thumbprint in current:
        ended = dates.get(thumbprint)
        if ended is not None and ended <= now:
            causes.append((f"CRM's {kind} certificate {thumbprint} expired on {when(ended)}; " + FAILED_AUTHENTICATION,
                           f"run the package: step {number(plan, 'certificate')} puts certificate {expected} into CRM "
                           f"{OURS}; Microsoft: update or install the certificate and try again, {EXCHANGE_ONLINE}"))
    in_entra = entra_thumbprints(r.entra, expected)
    if current and in_entra is not None and not in_entra & set(current):
        steps = f"step {number(plan, 'certificate')} puts certificate {expected} into CRM" + (
            "" if expected in in_entra else f" and step {number(plan, 'spn')} adds its key credential in Entra ID")
        causes.append((f"CRM's {kind} certificate ({before}) differs from the key credentials of the Dynamics CRM "
                       f"service principal in Entra ID ({', '.join(sorted(in_entra)) or 'none'}); "
                       + FAILED_AUTHENTICATION,
                       f"run the package: {steps} {OURS}; Microsoft: update or install the certificate and "
                       f"try again, {EXCHANGE_ONLINE}"))
    return causes


def _access_fix(plan: Mapping[str, Any], account: str, denied: bool) -> str:
    """How the service account gets read access to the key: the step grants it, unless a Deny entry stands."""
    requirement = ("Microsoft's prerequisite: the service account has read access to the private keys of the "
                   "certificate, " + EXCHANGE_ONLINE)
    if denied:
        # A Deny entry wins over an Allow; whether CertificateReconfiguration.ps1 (source not
        # public) rewrites the key's ACL is unknown, and step 02's proof fails while it stands.
        return (f"remove the Deny entry for {account} from the private key's permissions (Certificates "
                "snap-in of the local computer: the certificate, All Tasks, Manage Private Keys), then run the "
                f"package: step {number(plan, 'certificate')}'s check of the access fails while a Deny entry "
                f"stands {OURS}; " + requirement)
    return (f"run the package: step {number(plan, 'certificate')} runs CertificateReconfiguration.ps1 "
            f"-serviceAccount {account}, which grants that account access to the private key, and then checks the "
            f"access {OURS}; " + requirement)


UNIT = StepUnit(
    "certificate", every_profile(STEP), renewal_rank=70,
    renewal_title="Switch CRM to the new certificate",
    renewal_changes="CRM server: imports the PFX into LocalMachine\\My, grants the service account read access to "
    "its private key; CRM configuration database: makes it the S2S token issuer certificate (the switch).",
    #: The switch checks Entra ID for the new key credential before it changes CRM: it needs the connection.
    renewal_needs=("prerequisites", "connect"),
    verdict=verdict, backout=BACKOUT,
)


# --------------------------------------------------------------------------- a renewal's wait before the switch

#: The audit line that proves the new key credential in Entra ID: action `step-end`, outcome `ok`.
#: An action of its own, so that nothing reading `run` lines (rollback's vouching, `runs`) sees it.
PROOF_ACTION = "step-end"


def key_proof_details(event: Mapping[str, Any]) -> dict[str, Any]:
    """The details of the proof line, from the spn step's step-end event (state ok) in a renewal.

    `read_back` is True because a renewal's spn step ends OK only after it read the credential back
    (the script throws otherwise) or found it in place by reading the service principal's keys.
    """
    return {"step": {"index": event.get("index"), "id": "spn", "sha256": event.get("sha256"),
                     "ended": event.get("ended"), "state": "ok"},
            "read_back": True}


@dataclass(frozen=True)
class KeyProof:
    """When the new key credential was proven in Entra ID: the proof line's own time, and its line number."""

    proven_at: _dt.datetime
    line: int


@dataclass(frozen=True)
class SwitchWait:
    """A renewal's wait before its switch: the approved hours, and the proof the audit log holds (or why none)."""

    hours: int
    log: str
    proof: KeyProof | None = None
    #: Why the log vouches for nothing (missing, broken chain); None when it was read.
    problem: str | None = None

    @property
    def until(self) -> _dt.datetime | None:
        """The earliest time of the switch; None while no proof counts."""
        return None if self.proof is None else self.proof.proven_at + _dt.timedelta(hours=self.hours)

    def waiting(self, now: _dt.datetime) -> bool:
        """Whether the switch must not be sent at `now`: no proof, or the hours have not passed."""
        until = self.until
        return until is None or now < until


def _audit_time(text: object) -> _dt.datetime:
    """An audit line's `time` (`2026-12-07T05:22:32.123456Z`); ValueError for anything else."""
    if not isinstance(text, str):
        raise ValueError("not a time")
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.timezone.utc)


#: Lines are appended in time order; workstations sharing a log may disagree by this much (approvals' skew).
PROOF_CLOCK_SKEW = _dt.timedelta(minutes=5)


def key_proof(lines: Sequence[Mapping[str, Any]], digest: str) -> KeyProof | None:
    """The last proof line for this package digest among chain-verified lines, or None.

    The last one: a later spn run that read the credential back again restarts the wait, since
    psbridge cannot tell whether the credential was removed and added again in between. One dated
    before a line the log already held (beyond PROOF_CLOCK_SKEW) does not count: psbridge appends
    with the time now, so it was added later with an older time, which would shorten the wait.
    """
    found: KeyProof | None = None
    latest: _dt.datetime | None = None
    for number, line in enumerate(lines, start=1):
        try:
            time = _audit_time(line.get("time"))
        except ValueError:
            continue
        earlier = latest
        latest = time if latest is None else max(latest, time)
        details = line.get("details") or {}
        step = details.get("step")
        if (line.get("action") != PROOF_ACTION or line.get("outcome") != "ok" or line.get("digest") != digest
                or not isinstance(step, Mapping) or step.get("id") != "spn" or details.get("read_back") is not True):
            continue
        if earlier is not None and time < earlier - PROOF_CLOCK_SKEW:
            continue  # dated before a line the log already held: appended with an older time, not written then
        found = KeyProof(time, number)
    return found


def switch_wait(package: Any, log: Path | None) -> SwitchWait | None:
    """The wait of a renewal package (`package.Package`) as the audit log `log` proves it; None when the
    package does not wait (not a renewal, or switch_after_hours = 0: it runs through as before).

    The whole log's hash chain is verified (`audit.entries`): an edited or inserted line breaks it, and
    then no line counts. What the chain cannot show is who wrote a correctly chained line: anyone who can
    write the log can append one, as for every line it holds.
    """
    from ..audit import entries
    from ..errors import RuntimeFailure, UserError

    certificate = package.parameters.certificate
    hours = certificate.switch_after_hours
    if not certificate.replaces or not hours:
        return None
    if log is None:
        return SwitchWait(hours, "(none)", problem="no audit log was given to read it from")
    try:
        lines = entries(log)
    except UserError as exc:
        return SwitchWait(hours, str(log), problem="; ".join(exc.problems))
    except RuntimeFailure as exc:
        return SwitchWait(hours, str(log), problem=str(exc))
    return SwitchWait(hours, str(log), key_proof(lines, package.digest))
