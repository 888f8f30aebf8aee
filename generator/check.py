"""What `psbridge check` concludes from the probes: per step, in place / will change / blocked.

The probes (templates/probes/, rendered into the package's probes/ folder) print one line
of JSON each; this module turns their answers and the package's plan into verdicts and an
exit code. It does no I/O, so every verdict can be tested from plain JSON.

Verdicts: `in place` (the step would change nothing), `will change` (with before -> after),
`blocked` (the step would fail: fix the server first), `cannot tell` (a probe failed or
did not run), `session` (sets up the PowerShell session only), `ok` (a read-only check).
Exit codes: 0 every state-changing step is in place; 5 the package would change something;
1 a probe failed or was skipped (any step's state cannot be told), or a step is blocked;
6 everything is in place, but CRM's S2S certificate or its key credential in Entra ID ends
within the warning window (`warn_days`), or another key credential of the Dynamics CRM
service principal has expired. Precedence: 1, then 5, then 6, then 0.

Expiry (`Expiry`): what ends when, read at `now`: the S2S certificate CRM uses (crm probe:
thumbprint and NotAfter), the key credential of it on the Dynamics CRM service principal, and
the principal's other key credentials (entra probe).
"""

from __future__ import annotations

import json
import datetime as _dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Verdict = Literal["in place", "will change", "blocked", "cannot tell", "session", "ok"]

from . import clock
from .catalogue import ADDITIONAL_SERVERS_STEP, PROBES, PROFILE_MODULES
from .expiry import EXPIRY_WARNING_DAYS
from .errors import ExitCode

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

_FAILED_AUTHENTICATION = ("the Enable Server-Based SharePoint Integration wizard then returns \"Failed Authentication\", "
                          "which Microsoft documents for a certificate used for server-to-server authentication "
                          "that is missing or invalid")

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


@dataclass(frozen=True)
class Ending:
    """One thing that ends: CRM's S2S certificate (NotAfter) or a key credential (its end date)."""

    thumbprint: str | None
    ends: _dt.datetime | None
    #: A key credential (True) or a certificate (False): a credential's facts carry its key id, type, usage.
    credential: bool = False
    key_id: str | None = None
    type: str | None = None
    usage: str | None = None

    def days_left(self, now: _dt.datetime) -> int | None:
        """Whole days until it ends (negative once it has ended); None when the date is unknown."""
        return None if self.ends is None else (self.ends - now).days

    def within(self, now: _dt.datetime, days: int) -> bool:
        """Whether it ends within `days` days of `now`, or has ended."""
        return self.ends is not None and self.ends - now <= _dt.timedelta(days=days)

    def describe(self) -> str:
        """The thumbprint, and a credential's key id when known."""
        return (self.thumbprint or "(no thumbprint)") + (f" (key id {self.key_id})" if self.key_id else "")

    def facts(self, now: _dt.datetime, days: int) -> dict[str, Any]:
        ended = self.ends is not None and self.ends <= now
        data: dict[str, Any] = {"thumbprint": self.thumbprint}
        if self.credential:
            data.update(key_id=self.key_id, type=self.type, usage=self.usage)
        return {**data, "ends": _when(self.ends) if self.ends else None, "days_left": self.days_left(now),
                "expired": ended, "within_warn_days": self.within(now, days) and not ended}


@dataclass(frozen=True)
class Expiry:
    """What ends when, read at `now`: the S2S certificate(s) CRM uses and the Dynamics CRM
    service principal's key credentials (the one of CRM's certificate, and the others).

    `entra_read` is False when the entra probe did not answer (then no credential is known).
    """

    now: _dt.datetime
    certificate_type: str | None = None
    certificates: tuple[Ending, ...] = ()
    credential: Ending | None = None
    other_credentials: tuple[Ending, ...] = ()
    entra_read: bool = False

    def warnings(self, days: int) -> list[str]:
        """One line per thing to act on: what and when (each is a reason for exit 6)."""
        lines = []
        for cert in self.certificates:
            if cert.within(self.now, days):
                lines.append(f"CRM's {self.certificate_type} certificate {cert.thumbprint} {self._ends(cert, 'expires')}")
        if self.credential is not None and self.credential.within(self.now, days):
            lines.append(f"the key credential of certificate {self.credential.thumbprint} on the Dynamics CRM service "
                         f"principal in Entra ID {self._ends(self.credential, 'ends')}")
        for key in self.other_credentials:
            if key.ends is not None and key.ends <= self.now:
                lines.append(f"another key credential of the Dynamics CRM service principal in Entra ID, "
                             f"{key.describe()}, {self._ends(key, 'ends')}: remove it, or renew it if it is used")
        return lines

    def _ends(self, item: Ending, verb: str) -> str:
        assert item.ends is not None
        days = item.days_left(self.now)
        if item.ends <= self.now:
            return f"{'expired' if verb == 'expires' else 'ended'} on {_when(item.ends)}"
        return f"{verb} on {_when(item.ends)} ({days} day{'' if days == 1 else 's'} left)"

    def as_json(self, days: int) -> dict[str, Any]:
        return {
            "checked_at": _when(self.now), "warn_days": days, "certificate_type": self.certificate_type,
            "certificates": [c.facts(self.now, days) for c in self.certificates],
            "credential": self.credential.facts(self.now, days) if self.credential else None,
            "other_credentials": [k.facts(self.now, days) for k in self.other_credentials],
            "entra_read": self.entra_read, "warnings": self.warnings(days),
        }


@dataclass(frozen=True)
class CheckReport:
    verdicts: list[StepVerdict]
    notes: list[str] = field(default_factory=list)
    #: What the probes read, for the saved evidence (`check --out`): main server and additional ones.
    readings: dict[str, Any] = field(default_factory=dict)
    #: What ends when (None: not read); with `warn_days`, it decides exit 6.
    expiry: Expiry | None = None
    #: The warning window in days (`check --warn-days`): `replace(report, warn_days=n)`.
    warn_days: int = EXPIRY_WARNING_DAYS

    @property
    def expiry_warnings(self) -> list[str]:
        return self.expiry.warnings(self.warn_days) if self.expiry is not None else []

    @property
    def exit_code(self) -> ExitCode:
        # Anything unread (a probe failed or was skipped) is a failed check, never "all well":
        # a monitoring job must not read exit 0 from a server it could not see.
        if any(v.verdict in ("blocked", "cannot tell") for v in self.verdicts):
            return ExitCode.FAILED
        if any(v.verdict == "will change" for v in self.verdicts):
            return ExitCode.WOULD_CHANGE
        if self.expiry_warnings:
            return ExitCode.EXPIRING
        return ExitCode.OK

    def as_json(self) -> dict[str, Any]:
        return {"verdicts": [asdict(v) for v in self.verdicts], "notes": self.notes,
                "expiry": self.expiry.as_json(self.warn_days) if self.expiry is not None else None,
                "exit_code": int(self.exit_code)}


class ProbeError(ValueError):
    """A probe's output is not the JSON object it must print."""


def parse_probe_output(name: str, lines: Sequence[str]) -> dict[str, Any]:
    """The probe's JSON: the last non-empty output line, an object whose `probe` names it."""
    text = next((line for line in reversed(lines) if line.strip()), "")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ProbeError(f"probe {name}: output is not JSON") from None
    if not isinstance(data, dict) or data.get("probe") != name:
        raise ProbeError(f"probe {name}: output is not the {name} probe's object")
    return data


def _as_list(value: Any) -> list[Any]:
    """ConvertTo-Json writes a one-element array as the element itself, and an empty one as null."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def parse_time(value: Any) -> _dt.datetime | None:
    """A probe's timestamp (round-trip format `o`, or the older `yyyy-MM-ddTHH:mm:ssZ`) in UTC.

    .NET writes seven fractional digits; Python reads at most six, so the rest is cut.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")
    try:
        parsed = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed.astimezone(_dt.timezone.utc)


def _crm_certificates(crm: dict[str, Any] | None) -> list[tuple[str, _dt.datetime | None]]:
    """CRM's certificates of the type (thumbprint, NotAfter): `certificates`, or the older `thumbprints` only."""
    dated = [c for c in _as_list((crm or {}).get("certificates")) if isinstance(c, dict) and c.get("thumbprint")]
    if dated:
        return [(str(c["thumbprint"]).upper(), parse_time(c.get("not_after"))) for c in dated]
    return [(str(t).upper(), None) for t in _as_list((crm or {}).get("thumbprints"))]


def _certificate_not_after(plan: Mapping[str, Any], cert: dict[str, Any] | None,
                           crm: dict[str, Any] | None = None) -> _dt.datetime | None:
    """The certificate's NotAfter: from the approved local copy in the plan, else the server's .cer,
    else CRM's record of it (when CRM holds the expected certificate)."""
    expected = _expected_thumbprint(plan, cert)
    return (parse_time((plan.get("certificate") or {}).get("not_after"))
            or parse_time((cert or {}).get("cer_not_after"))
            or next((end for t, end in _crm_certificates(crm) if t == expected), None))


# --------------------------------------------------------------------------- per step


def _prerequisites(plan: Mapping[str, Any], server: dict[str, Any] | None) -> StepVerdict:
    if server is None:
        return StepVerdict(1, "prerequisites", "cannot tell", "the server probe did not answer")
    problems = []
    if server.get("edition") != "Desktop" or not str(server.get("version", "")).startswith("5.1"):
        problems.append(f"Windows PowerShell 5.1 required, found {server.get('edition')} {server.get('version')}")
    if not server.get("elevated"):
        problems.append("not elevated")
    if not server.get("snapin"):
        problems.append("Microsoft.Crm.PowerShell snap-in not registered")
    modules = server.get("modules") or {}
    for module in PROFILE_MODULES[plan["profile"]]:
        if not modules.get(module):
            problems.append(f"module {module} not installed")
    if "tools_dir" in server and not server.get("tools_dir"):
        problems.append("the CRM install folder is not in the registry (HKLM:\\SOFTWARE\\Microsoft\\MSCRM, "
                        "CRM_Server_InstallDir): set crm.tools_dir")
    for key, what in (("tools_script", "CertificateReconfiguration.ps1"), ("pfx_file", "the PFX file"),
                      ("cer_file", "the .cer file")):
        if not server.get(key):
            problems.append(f"{what} not found")
    if problems:
        return StepVerdict(1, "prerequisites", "blocked", "; ".join(problems))
    return StepVerdict(1, "prerequisites", "ok", f"{server['edition']} {server['version']}, elevated, "
                       f"execution policy {server.get('execution_policy')}")


def _expected_thumbprint(plan: Mapping[str, Any], cert: dict[str, Any] | None) -> str | None:
    approved = (plan.get("certificate") or {}).get("thumbprint")
    return (approved or (cert or {}).get("cer_thumbprint") or "").upper() or None


def _when(moment: _dt.datetime) -> str:
    return clock.format_time(moment)


#: Marks a fix that is what psbridge's package does, where Microsoft documents no fix of its own.
_OURS = "(psbridge's fix, not Microsoft's)"


def _with_causes(verdict: StepVerdict, causes: Sequence[tuple[str, str]]) -> StepVerdict:
    """The verdict with its known failures: one cause and one fix per line, in the same order."""
    if not causes:
        return verdict
    return replace(verdict, cause="\n".join(c for c, _ in causes), fix="\n".join(f for _, f in causes))


def _no(plan: Mapping[str, Any], step_id: str) -> str:
    """The step's number in this package (`02`): a renewal runs the same steps in another order."""
    return next((f"{s['index']:02d}" for s in plan.get("steps") or [] if s.get("id") == step_id), "??")


def _expired_certificate(expected: str, not_after: _dt.datetime) -> tuple[str, str]:
    """The package's own certificate has expired: no step of this package can help."""
    return (f"the certificate {expected} expired on {_when(not_after)}; " + _FAILED_AUTHENTICATION,
            f"build a new package from a valid certificate and run it {_OURS}; Microsoft: "
            f"update or install the certificate and try again, {EXCHANGE_ONLINE}")


def _entra_thumbprints(entra: dict[str, Any] | None, expected: str | None) -> set[str] | None:
    """The thumbprints of the CRM service principal's key credentials; None when one of them is unknown.

    A key's thumbprint comes from the key itself (SHA-1 of its DER, computed by the probe);
    `matches_certificate` says whether it is the package's certificate.
    """
    if entra is None or not entra.get("service_principal_found"):
        return None
    found: set[str] = set()
    for key in _as_list(entra.get("key_credentials")):
        if not isinstance(key, dict):
            return None
        if key.get("matches_certificate") is True and expected:
            found.add(expected)
        elif key.get("thumbprint"):
            found.add(str(key["thumbprint"]).upper())
        else:
            return None
    return found


def _certificate(plan: Mapping[str, Any], cert: dict[str, Any] | None, crm: dict[str, Any] | None,
                 entra: dict[str, Any] | None = None, now: _dt.datetime | None = None) -> StepVerdict:
    step = (2, "certificate")
    now = now or clock.utc_now()
    if cert is None or crm is None:
        return StepVerdict(*step, "cannot tell", "the certificate or crm probe did not answer")
    approved = ((plan.get("certificate") or {}).get("thumbprint") or "").upper()
    on_server = (cert.get("cer_thumbprint") or "").upper()
    if approved and on_server and approved != on_server:
        return StepVerdict(*step, "blocked", f"the server's .cer has thumbprint {on_server}, not the approved "
                           f"{approved}: the server holds another certificate than the one approved")
    expected = _expected_thumbprint(plan, cert)
    if not expected:
        return StepVerdict(*step, "cannot tell", "no .cer on the server and no local certificate in the plan")
    store = [e for e in _as_list(cert.get("store")) if isinstance(e, dict)]
    if len(store) > 1:
        return StepVerdict(*step, "blocked", f"{len(store)} certificates with subject {cert.get('cer_subject')} in "
                           "LocalMachine\\My (CRM then reports 'Private key not found'): remove the extra ones",
                           cause="two certificates with the same subject in the local certificate store: "
                           "CertificateReconfiguration.ps1 fails with \"Private key not found\"",
                           fix="remove the certificates with the same subject name that you don't need, using the "
                           "Certificate Manager MMC snap-in (" + TROUBLESHOOTING + ")")
    crm_certificates = _crm_certificates(crm)
    current = [t for t, _ in crm_certificates]
    before = ", ".join(current) or "none"
    kind = crm.get("certificate_type")
    not_after = _certificate_not_after(plan, cert, crm)
    if not_after is not None and not_after <= now:
        cause, fix = _expired_certificate(expected, not_after)
        where = "CRM's" if expected in current else "the package's"
        return StepVerdict(*step, "blocked", f"{where} {kind} certificate {expected} expired on {_when(not_after)}",
                           cause=cause, fix=fix)
    entry = store[0] if store else {}
    in_store = bool(store) and str(entry.get("thumbprint", "")).upper() == expected
    has_private_key = entry.get("has_private_key") if in_store else None
    key_readable = entry.get("key_readable") if in_store else None
    access = (entry.get("key_access") if in_store else None) or {}
    why = "; ".join(str(x) for x in (access.get("key_file"), access.get("via") and f"via {access['via']}",
                                      access.get("note")) if x)
    account = ((plan.get("parameters") or {}).get("certificate") or {}).get("service_account") or "the service account"
    requirement = ("Microsoft's prerequisite: the service account has read access to the private keys of the "
                   "certificate, " + EXCHANGE_ONLINE)
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
        # CRM's certificate's NotAfter: from CRM's record, else from the store (the .cer's subject).
        dates = {str(e.get("thumbprint", "")).upper(): parse_time(e.get("not_after")) for e in store}
        dates.update({t: end for t, end in crm_certificates if end is not None})
        for thumbprint in current:
            ended = dates.get(thumbprint)
            if ended is not None and ended <= now:
                causes.append((f"CRM's {kind} certificate {thumbprint} expired on {_when(ended)}; "
                               + _FAILED_AUTHENTICATION,
                               f"run the package: step {_no(plan, 'certificate')} puts certificate {expected} into CRM {_OURS}; "
                               f"Microsoft: "
                               f"update or install the certificate and try again, {EXCHANGE_ONLINE}"))
        in_entra = _entra_thumbprints(entra, expected)
        if current and in_entra is not None and not in_entra & set(current):
            steps = f"step {_no(plan, 'certificate')} puts certificate {expected} into CRM" + (
                "" if expected in in_entra else f" and step {_no(plan, 'spn')} adds its key credential in Entra ID")
            causes.append((f"CRM's {kind} certificate ({before}) differs from the key credentials of the Dynamics CRM "
                           f"service principal in Entra ID ({', '.join(sorted(in_entra)) or 'none'}); "
                           + _FAILED_AUTHENTICATION,
                           f"run the package: {steps} {_OURS}; Microsoft: update or install the certificate and "
                           f"try again, {EXCHANGE_ONLINE}"))
    if key_readable is False:
        reasons.append(f"{account} cannot read the private key" + (f" ({why})" if why else ""))
        if access.get("via") == "denied":
            # A Deny entry wins over an Allow; whether CertificateReconfiguration.ps1 (source not
            # public) rewrites the key's ACL is unknown, and step 02's proof fails while it stands.
            fix = (f"remove the Deny entry for {account} from the private key's permissions (Certificates "
                   "snap-in of the local computer: the certificate, All Tasks, Manage Private Keys), then run the "
                   f"package: step {_no(plan, 'certificate')}'s check of the access fails while a Deny entry stands {_OURS}; "
                   + requirement)
        else:
            fix = (f"run the package: step {_no(plan, 'certificate')} runs CertificateReconfiguration.ps1 -serviceAccount {account}, which "
                   f"grants that account access to the private key, and then checks the access {_OURS}; "
                   + requirement)
        causes.append((f"{account} cannot read the private key of certificate {expected}" + (f" ({why})" if why else ""),
                       fix))
    verdict = StepVerdict(*step, "will change", "; ".join(reasons), before=before, after=expected)
    return _with_causes(verdict, causes)


def _is_certificate_key(key: dict[str, Any], expected: str) -> bool:
    """Whether a key credential the entra probe reported is the package's certificate.

    The probe compares the key itself with the .cer's raw data (`matches_certificate`), as
    Microsoft's ConfigureCrmServerSideSync.ps1 does, and derives the thumbprint from the key
    (SHA-1 of the DER). Graph's customKeyIdentifier is never used: its bytes are the text of
    the thumbprint, not the thumbprint.
    """
    if key.get("matches_certificate") is True:
        return True
    if key.get("matches_certificate") is False:
        return False
    return str(key.get("thumbprint") or "").upper() == expected


def _spn(plan: Mapping[str, Any], cert: dict[str, Any] | None, entra: dict[str, Any] | None,
         crm: dict[str, Any] | None = None, now: _dt.datetime | None = None) -> StepVerdict:
    step = (6, "spn")
    now = now or clock.utc_now()
    if entra is None:
        return StepVerdict(*step, "cannot tell", "the entra probe did not run or did not answer")
    if not entra.get("service_principal_found"):
        return StepVerdict(*step, "blocked", "the Dynamics CRM service principal is not in this tenant")
    app_id = plan["constants"]["crm_app_id"]
    root_domain = plan["parameters"]["crm"]["root_domain"]
    spn = app_id + "/" + root_domain
    names = [str(n) for n in _as_list(entra.get("service_principal_names"))]
    has_name = spn.lower() in (n.lower() for n in names)
    expected = _expected_thumbprint(plan, cert)
    keys = [k for k in _as_list(entra.get("key_credentials")) if isinstance(k, dict)]
    if expected is None:
        return StepVerdict(*step, "cannot tell", "the certificate's thumbprint is unknown")
    matching = [k for k in keys if _is_certificate_key(k, expected)]
    not_after = _certificate_not_after(plan, cert, crm)
    if not_after is not None and not_after <= now:
        cause, fix = _expired_certificate(expected, not_after)
        return StepVerdict(*step, "blocked", f"the certificate {expected} expired on {_when(not_after)}: a key "
                           "credential of it cannot be valid", cause=cause, fix=fix)
    # As step 06: a credential of the certificate counts only while it is valid through the
    # certificate's NotAfter (one second of slack); one that ends earlier is replaced (graph) or
    # joined by a new one (msonline: New-MsolServicePrincipalCredential adds, nothing removes).
    slack = _dt.timedelta(seconds=1)
    replaces = plan.get("profile") == "graph"

    def valid_through(key: dict[str, Any]) -> bool:
        end = parse_time(key.get("end"))
        if end is None:
            return False
        return end >= not_after - slack if not_after is not None else end > now

    current = [k for k in matching if valid_through(k)]
    short = [k for k in matching if not valid_through(k)]
    expired = [k for k in short if (parse_time(k.get("end")) or now) < now]
    has_key = bool(current)
    # msonline's step 06 leaves a short credential alone when a valid one exists.
    if has_name and has_key and not (short and replaces):
        return StepVerdict(*step, "in place", f"credential {expected} and SPN {spn} present")
    causes: list[tuple[str, str]] = []
    changes = [] if has_key else [f"add credential {expected}"]
    if short and (replaces or not has_key):
        until = ", ".join(str(k.get("end") or "no end date") for k in short)
        through = f" {not_after.isoformat()}" if not_after is not None else " now"
        if replaces:
            changes.insert(0, f"replace credential {expected} that ends {until}, before the certificate's "
                           f"expiry{through}")
        elif not has_key:
            changes[0] += f" valid through{through} (the one that ends {until} stays)"
    if expired and not has_key:
        ended = ", ".join(_when(parse_time(k.get("end"))) for k in expired)  # type: ignore[arg-type]
        what = ("replaces it with a credential valid from the certificate's NotBefore through its NotAfter"
                if replaces else "adds a credential valid from the certificate's NotBefore through its NotAfter; "
                "the expired one stays (Remove-MsolServicePrincipalCredential removes it)")
        causes.append((f"expired: the key credential of certificate {expected} in Entra ID ended on {ended}",
                       f"run the package: step {_no(plan, 'spn')} {what} {_OURS}; Microsoft: the credential's end date must be on "
                       f"or before the certificate's, otherwise an OAuth token will not be issued, {MSOL_CREDENTIAL}"))
    crm_thumbprints = [t for t, _ in _crm_certificates(crm)]
    in_entra = _entra_thumbprints(entra, expected)
    if not matching and expected in crm_thumbprints and in_entra is not None:
        causes.append((f"CRM's {(crm or {}).get('certificate_type')} certificate {expected} differs from the key "
                       "credentials of the Dynamics CRM service principal in Entra ID "
                       f"({', '.join(sorted(in_entra)) or 'none'}); " + _FAILED_AUTHENTICATION,
                       f"run the package: step {_no(plan, 'spn')} adds the key credential of certificate {expected} {_OURS}; "
                       f"Microsoft: update or install the certificate and try again, {EXCHANGE_ONLINE}"))
    if not has_name:
        changes.append(f"add SPN {spn}")
        others = [n for n in names if n.lower().startswith(app_id.lower() + "/")]
        causes.append((f"the SPN {spn} for the root domain is missing from the Dynamics CRM service principal"
                       + (f" (it has {', '.join(others)})" if others else "")
                       + "; Microsoft: \"Failed Authentication\" can occur when one or more of the server-based "
                       "authentication configuration steps were not completed",
                       f"run the package: step {_no(plan, 'spn')} adds {spn} and keeps the other names {_OURS}; the article's step 6 "
                       "sets this SPN with the domain where the Dynamics 365 Server is located, " + SEQUENCE))
    before = f"{len(keys)} credential(s), {len(names)} SPN(s)"
    kept = len(keys) - (len(short) if replaces else 0)
    added = (not has_key)
    after = f"{kept + added} credential(s), {len(names) + (not has_name)} SPN(s)"
    return _with_causes(StepVerdict(*step, "will change", "; ".join(changes), before=before, after=after), causes)


def _retire_previous(plan: Mapping[str, Any], cert: dict[str, Any] | None, entra: dict[str, Any] | None,
                     now: _dt.datetime) -> StepVerdict:
    """A renewal's retire-previous, as its script decides: which key credentials it would remove.

    It removes the replaced certificate's credential and expired ones, never the package's own,
    and stops (blocked) when a credential of another certificate that has not expired is there.
    """
    step = (0, "retire-previous")
    replaces = str(((plan.get("parameters") or {}).get("certificate") or {}).get("replaces") or "").upper()
    if entra is None:
        return StepVerdict(*step, "cannot tell", "the entra probe did not run or did not answer")
    if not entra.get("service_principal_found"):
        return StepVerdict(*step, "blocked", "the Dynamics CRM service principal is not in this tenant")
    expected = _expected_thumbprint(plan, cert)
    if expected is None:
        return StepVerdict(*step, "cannot tell", "the certificate's thumbprint is unknown")
    retire, unknown = [], []
    for key in (k for k in _as_list(entra.get("key_credentials")) if isinstance(k, dict)):
        if _is_certificate_key(key, expected):
            continue
        thumbprint = str(key.get("thumbprint") or "").upper()
        end = parse_time(key.get("end"))
        label = (thumbprint or "(not a certificate)") + (f" (key id {key['key_id']})" if key.get("key_id") else "")
        if thumbprint == replaces or (end is not None and end < now):
            retire.append(label)
        else:
            unknown.append(label + (f", ends {_when(end)}" if end else ""))
    if unknown:
        return StepVerdict(*step, "blocked", "the Dynamics CRM service principal holds key credentials of "
                           f"certificates this renewal was not told about ({'; '.join(unknown)}): retire-previous "
                           "would stop before removing anything",
                           fix="find out what uses them (another integration, such as server-side synchronization "
                           "with Exchange Online, uses the same service principal); remove stale ones by hand, or "
                           f"remove the credential of {replaces} by hand and skip this step")
    if not retire:
        return StepVerdict(*step, "in place", f"no key credential of {replaces} and none expired")
    return StepVerdict(*step, "will change", "remove key credential(s) " + ", ".join(retire),
                       before=f"{len(retire)} to retire", after="none")


def _crm_settings(plan: Mapping[str, Any], crm: dict[str, Any] | None) -> StepVerdict:
    step = (7, "crm-settings")
    if crm is None:
        return StepVerdict(*step, "cannot tell", "the crm probe did not answer")
    wanted = {"S2SDefaultAuthorizationServerPrincipalId": plan["constants"]["acs_principal_id"],
              "S2SDefaultAuthorizationServerMetadataUrl": plan["constants"]["metadata_url"]}
    current = crm.get("server_settings") or {}
    differs = {k: v for k, v in wanted.items() if (current.get(k) or "") != v}
    if not differs:
        return StepVerdict(*step, "in place", "both ServerSettings values are set")
    before = "; ".join(f"{k}={current.get(k) or '(unset)'}" for k in differs)
    after = "; ".join(f"{k}={v}" for k, v in differs.items())
    return StepVerdict(*step, "will change", f"{len(differs)} ServerSettings value(s) differ", before=before, after=after)


def _tenant(plan: Mapping[str, Any], entra: dict[str, Any] | None) -> StepVerdict:
    step = (8, "tenant-id")
    if entra is None:
        return StepVerdict(*step, "cannot tell", "the entra probe did not run or did not answer")
    found = str(entra.get("tenant_id") or "")
    wanted = plan["parameters"]["sharepoint"].get("tenant_id")
    if wanted and found.lower() != wanted.lower():
        return StepVerdict(*step, "blocked", f"connected to tenant {found}, the parameters expect {wanted}")
    return StepVerdict(*step, "ok", f"tenant ID {found}")


def _expiry(plan: Mapping[str, Any], cert: dict[str, Any] | None, crm: dict[str, Any] | None,
            entra: dict[str, Any] | None, now: _dt.datetime) -> Expiry:
    """What ends when: CRM's S2S certificate(s), the key credential of it in Entra ID, the other credentials.

    CRM's NotAfter comes from its record (crm probe); a package made before the probe printed it
    falls back to the package's certificate (same thumbprint) or the store. The key credential
    of CRM's certificate is the one with that thumbprint (or the one the entra probe matched with
    the package's .cer, when CRM holds that certificate); of several, the one that ends last.
    """
    expected = _expected_thumbprint(plan, cert)
    store = {str(e.get("thumbprint", "")).upper(): parse_time(e.get("not_after"))
             for e in _as_list((cert or {}).get("store")) if isinstance(e, dict)}
    certificates = []
    for thumbprint, ends in _crm_certificates(crm):
        if ends is None:
            ends = _certificate_not_after(plan, cert) if thumbprint == expected else store.get(thumbprint)
        certificates.append(Ending(thumbprint, ends))
    read = entra is not None and bool(entra.get("service_principal_found"))
    keys = [k for k in _as_list((entra or {}).get("key_credentials")) if isinstance(k, dict)] if read else []
    used = {c.thumbprint for c in certificates}

    def ending(key: dict[str, Any]) -> Ending:
        thumbprint = str(key.get("thumbprint") or "").upper() or None
        if thumbprint is None and key.get("matches_certificate") is True:
            thumbprint = expected
        return Ending(thumbprint, parse_time(key.get("end")), credential=True, key_id=key.get("key_id"),
                      type=key.get("type"), usage=key.get("usage"))

    def of_crm(key: dict[str, Any]) -> bool:
        if key.get("matches_certificate") is True and expected in used:
            return True
        return str(key.get("thumbprint") or "").upper() in used

    never = _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)
    matching = sorted((ending(k) for k in keys if of_crm(k)), key=lambda e: e.ends or never, reverse=True)
    others = [ending(k) for k in keys if not of_crm(k)] + matching[1:]
    return Expiry(now, crm.get("certificate_type") if crm else None, tuple(certificates),
                  matching[0] if matching else None, tuple(others), read)


def evaluate(plan: Mapping[str, Any], answers: Mapping[str, dict[str, Any] | None],
             per_server: Mapping[str, Mapping[str, dict[str, Any] | None] | None] | None = None, *,
             now: _dt.datetime | None = None, warn_days: int = EXPIRY_WARNING_DAYS) -> CheckReport:
    """Verdicts for every step of the plan from the probes' answers (None: no answer), at `now` (UTC).

    `per_server`: for a farm, each additional server's server and certificate probe answers
    (None for a server that could not be reached); the step that runs there gets one
    verdict per server. The report's `expiry` says what ends when, at `now`; `warn_days` is
    its warning window (exit 6).
    """
    cert, crm, entra = answers.get("certificate"), answers.get("crm"), answers.get("entra")
    now = now or clock.utc_now()
    by_id = {
        "prerequisites": _prerequisites(plan, answers.get("server")),
        "certificate": _certificate(plan, cert, crm, entra, now),
        "spn": _spn(plan, cert, entra, crm, now),
        "crm-settings": _crm_settings(plan, crm),
        "tenant-id": _tenant(plan, entra),
        "verify": StepVerdict(0, "verify", "ok", "read-only: during a run it proves the switch before anything is "
                              "retired"),
        "retire-previous": _retire_previous(plan, cert, entra, now),
    }
    verdicts = []
    for step in plan["steps"]:
        if step.get("runs_on") == "additional":
            verdicts += [on_additional_server(plan, step["index"], host, (per_server or {}).get(host))
                         for host in plan["parameters"]["crm"].get("additional_servers") or []]
            continue
        verdict = by_id.get(step["id"]) or StepVerdict(step["index"], step["id"], "session",
                                                      "sets up the PowerShell session; changes nothing")
        # A renewal runs the same steps in another order: the plan says each one's index.
        verdicts.append(replace(verdict, index=step["index"]))
    notes = [f"probe {name} did not answer" for name in PROBES if answers.get(name) is None]
    return CheckReport(verdicts, notes, expiry=_expiry(plan, cert, crm, entra, now), warn_days=warn_days)


def on_additional_server(plan: Mapping[str, Any], index: int, host: str,
                          answers: Mapping[str, dict[str, Any] | None] | None) -> StepVerdict:
    """Step 09 on one additional server: the certificate in its store, with a key the service account reads."""
    step = (index, ADDITIONAL_SERVERS_STEP.id)
    server = (answers or {}).get("server")
    cert = (answers or {}).get("certificate")
    if server is None or cert is None:
        return StepVerdict(*step, "cannot tell", f"{host}: the server or certificate probe did not answer", host=host)
    missing = [what for key, what in (("tools_script", "CertificateReconfiguration.ps1"), ("pfx_file", "the PFX file"),
                                      ("cer_file", "the .cer file")) if not server.get(key)]
    store = _as_list(cert.get("store"))
    if len(store) > 1:
        return StepVerdict(*step, "blocked", f"{host}: {len(store)} certificates with subject "
                           f"{cert.get('cer_subject')} in LocalMachine\\My", host=host,
                           cause="two certificates with the same subject in the local certificate store: "
                           "CertificateReconfiguration.ps1 fails with \"Private key not found\"",
                           fix="remove the certificates with the same subject name that you don't need, using the "
                           "Certificate Manager MMC snap-in (" + TROUBLESHOOTING + ")")
    expected = _expected_thumbprint(plan, cert)
    in_store = bool(expected) and bool(store) and str(store[0].get("thumbprint", "")).upper() == expected
    readable = store[0].get("key_readable") if store else None
    if in_store and readable is not False:
        note = "" if readable else " (cannot tell whether the service account can read the private key)"
        return StepVerdict(*step, "in place", f"{host}: certificate {expected} in LocalMachine\\My{note}", host=host)
    if missing:
        return StepVerdict(*step, "blocked", f"{host}: {', '.join(missing)} not found", host=host)
    reason = "the service account cannot read the private key" if in_store else "not in LocalMachine\\My"
    return StepVerdict(*step, "will change", f"{host}: {reason}", host=host, after=expected)


def holds_for_switch(answers: Mapping[str, dict[str, Any] | None] | None, expected: str | None,
                     replaces: str) -> str:
    """Why an additional server is not ready for a renewal's switch to `expected` ("" when it is).

    Stricter than `check`'s verdict, and the same rule as the step that installs it: the new
    certificate itself (not the replaced one, not whatever the server's .cer is) in
    LocalMachine\\My, with its private key, which the service account is shown to read.
    """
    cert = (answers or {}).get("certificate")
    if answers is None or cert is None:
        return "the server or certificate probe did not answer"
    if not expected:
        return "the new certificate's thumbprint is unknown (no approved certificate, and the main server's .cer " \
               "was not read)"
    if expected.upper() == replaces.upper():
        return f"{expected} is the certificate this renewal replaces"
    on_server = str(cert.get("cer_thumbprint") or "").upper()
    if on_server != expected.upper():
        return f"its .cer is {on_server or 'missing'}, not the new certificate {expected}"
    entry = next((e for e in _as_list(cert.get("store")) if isinstance(e, dict)
                  and str(e.get("thumbprint") or "").upper() == expected.upper()), None)
    if entry is None:
        return f"the new certificate {expected} is not in LocalMachine\\My"
    if entry.get("has_private_key") is not True:
        return f"the new certificate {expected} is in LocalMachine\\My without its private key (or it cannot be told)"
    if entry.get("key_readable") is not True:
        return "the service account cannot be shown to read the new certificate's private key"
    return ""


def evidence(report: CheckReport, *, package: str, digest: str, host: str, checked_at: str,
             tool_version: str) -> dict[str, Any]:
    """What `check --out` saves: the package's digest, the server, the time, every verdict and reading."""
    return {
        "format": "psbridge-check-v1", "tool_version": tool_version, "package": package, "package_digest": digest,
        "host": host, "checked_at": checked_at, **report.as_json(), "readings": report.readings,
    }

