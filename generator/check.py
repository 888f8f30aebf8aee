"""What `psbridge check` concludes from the probes: per step, in place / will change / blocked.

The probes (templates/probes/, rendered into the package's probes/ folder) print one line
of JSON each; this module turns their answers and the package's plan into verdicts and an
exit code. It does no I/O, so every verdict can be tested from plain JSON.

Verdicts: `in place` (the step would change nothing), `will change` (with before -> after),
`blocked` (the step would fail: fix the server first), `cannot tell` (a probe failed or
did not run), `session` (sets up the PowerShell session only), `ok` (a read-only check).
Exit codes: 0 every state-changing step is in place; 5 the package would change something;
1 a probe failed, a step is blocked, or a state-changing step's state cannot be told.
"""

from __future__ import annotations

import json
import datetime as _dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Verdict = Literal["in place", "will change", "blocked", "cannot tell", "session", "ok"]

from .catalogue import ADDITIONAL_SERVERS_STEP, CATALOGUES, PROBES, PROFILE_MODULES
from .errors import ExitCode

#: Microsoft's troubleshooting article for server-based authentication: the documented causes and fixes.
TROUBLESHOOTING = ("https://learn.microsoft.com/dynamics365/customerengagement/on-premises/admin/"
                   "troubleshooting-server-based-authentication")

#: Ids of the steps that change state, in any profile: their verdicts decide the exit code.
_CHANGING = frozenset([*(s.id for steps in CATALOGUES.values() for s in steps if s.changes_state),
                       ADDITIONAL_SERVERS_STEP.id])


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
class CheckReport:
    verdicts: list[StepVerdict]
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> ExitCode:
        if any(v.verdict == "blocked" for v in self.verdicts):
            return ExitCode.FAILED
        if any(v.verdict == "cannot tell" and v.id in _CHANGING for v in self.verdicts):
            return ExitCode.FAILED
        if any(v.verdict == "will change" for v in self.verdicts):
            return ExitCode.WOULD_CHANGE
        return ExitCode.OK

    def as_json(self) -> dict[str, Any]:
        return {"verdicts": [asdict(v) for v in self.verdicts], "notes": self.notes, "exit_code": int(self.exit_code)}


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


def _certificate_not_after(plan: Mapping[str, Any], cert: dict[str, Any] | None) -> _dt.datetime | None:
    """The certificate's NotAfter: from the approved local copy in the plan, else the server's .cer."""
    return (parse_time((plan.get("certificate") or {}).get("not_after"))
            or parse_time((cert or {}).get("cer_not_after")))


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


def _certificate(plan: Mapping[str, Any], cert: dict[str, Any] | None, crm: dict[str, Any] | None) -> StepVerdict:
    step = (2, "certificate")
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
    store = _as_list(cert.get("store"))
    if len(store) > 1:
        return StepVerdict(*step, "blocked", f"{len(store)} certificates with subject {cert.get('cer_subject')} in "
                           "LocalMachine\\My (CRM then reports 'Private key not found'): remove the extra ones",
                           cause="two certificates with the same subject in the local certificate store: "
                           "CertificateReconfiguration.ps1 fails with \"Private key not found\"",
                           fix="remove the certificates with the same subject name that you don't need, using the "
                           "Certificate Manager MMC snap-in (" + TROUBLESHOOTING + ")")
    current = [t.upper() for t in _as_list(crm.get("thumbprints"))]
    before = ", ".join(current) or "none"
    in_store = bool(store) and str(store[0].get("thumbprint", "")).upper() == expected
    key_readable = store[0].get("key_readable") if store else None
    access = (store[0].get("key_access") if store else None) or {}
    why = "; ".join(str(x) for x in (access.get("key_file"), access.get("via") and f"via {access['via']}",
                                      access.get("note")) if x)
    if in_store and expected in current and key_readable is not False:
        detail = f"{crm.get('certificate_type')} is {expected}"
        if key_readable is None:
            detail += " (cannot tell whether the service account can read the private key" + (f": {why})" if why else ")")
        return StepVerdict(*step, "in place", detail)
    reasons = []
    if not in_store:
        reasons.append("not in LocalMachine\\My")
    if expected not in current:
        reasons.append(f"CRM {crm.get('certificate_type')} is {before}")
    if key_readable is False:
        reasons.append("the service account cannot read the private key" + (f" ({why})" if why else ""))
    return StepVerdict(*step, "will change", "; ".join(reasons), before=before, after=expected)


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


def _spn(plan: Mapping[str, Any], cert: dict[str, Any] | None, entra: dict[str, Any] | None) -> StepVerdict:
    step = (6, "spn")
    if entra is None:
        return StepVerdict(*step, "cannot tell", "the entra probe did not run or did not answer")
    if not entra.get("service_principal_found"):
        return StepVerdict(*step, "blocked", "the Dynamics CRM service principal is not in this tenant")
    spn = plan["constants"]["crm_app_id"] + "/" + plan["parameters"]["crm"]["root_domain"]
    names = [str(n) for n in _as_list(entra.get("service_principal_names"))]
    has_name = spn.lower() in (n.lower() for n in names)
    expected = _expected_thumbprint(plan, cert)
    keys = [k for k in _as_list(entra.get("key_credentials")) if isinstance(k, dict)]
    if expected is None:
        return StepVerdict(*step, "cannot tell", "the certificate's thumbprint is unknown")
    matching = [k for k in keys if _is_certificate_key(k, expected)]
    not_after = _certificate_not_after(plan, cert)
    # As step 06: a credential of the certificate counts only while it is valid through the
    # certificate's NotAfter (one second of slack); one that ends earlier is replaced.
    slack = _dt.timedelta(seconds=1)
    now = _dt.datetime.now(_dt.timezone.utc)

    def valid_through(key: dict[str, Any]) -> bool:
        end = parse_time(key.get("end"))
        if end is None:
            return False
        return end >= not_after - slack if not_after is not None else end > now

    current = [k for k in matching if valid_through(k)]
    short = [k for k in matching if not valid_through(k)]
    has_key = bool(current)
    if has_name and has_key and not short:
        return StepVerdict(*step, "in place", f"credential {expected} and SPN {spn} present")
    changes = [] if has_key else [f"add credential {expected}"]
    if short:
        until = ", ".join(str(k.get("end") or "no end date") for k in short)
        through = f" {not_after.isoformat()}" if not_after is not None else " now"
        changes.insert(0, f"replace credential {expected} that ends {until}, before the certificate's expiry{through}")
    changes += [] if has_name else [f"add SPN {spn}"]
    before = f"{len(keys)} credential(s), {len(names)} SPN(s)"
    after = f"{len(keys) - len(short) + (not has_key)} credential(s), {len(names) + (not has_name)} SPN(s)"
    return StepVerdict(*step, "will change", "; ".join(changes), before=before, after=after)


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


def evaluate(plan: Mapping[str, Any], answers: Mapping[str, dict[str, Any] | None],
             per_server: Mapping[str, Mapping[str, dict[str, Any] | None] | None] | None = None) -> CheckReport:
    """Verdicts for every step of the plan from the probes' answers (None: no answer).

    `per_server`: for a farm, each additional server's server and certificate probe answers
    (None for a server that could not be reached); the step that runs there gets one
    verdict per server.
    """
    cert, crm, entra = answers.get("certificate"), answers.get("crm"), answers.get("entra")
    by_id = {
        "prerequisites": _prerequisites(plan, answers.get("server")),
        "certificate": _certificate(plan, cert, crm),
        "spn": _spn(plan, cert, entra),
        "crm-settings": _crm_settings(plan, crm),
        "tenant-id": _tenant(plan, entra),
    }
    verdicts = []
    for step in plan["steps"]:
        if step.get("runs_on") == "additional":
            verdicts += [_on_additional_server(plan, step["index"], host, (per_server or {}).get(host))
                         for host in plan["parameters"]["crm"].get("additional_servers") or []]
            continue
        verdict = by_id.get(step["id"]) or StepVerdict(step["index"], step["id"], "session",
                                                      "sets up the PowerShell session; changes nothing")
        verdicts.append(verdict)
    notes = [f"probe {name} did not answer" for name in PROBES if answers.get(name) is None]
    return CheckReport(verdicts, notes)


def _on_additional_server(plan: Mapping[str, Any], index: int, host: str,
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

