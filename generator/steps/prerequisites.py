"""Step prerequisites: PowerShell 5.1, elevation, the CRM snap-in, the profile's modules, the files."""

from __future__ import annotations

from ..readings import Readings, ServerReading
from ..verdicts import StepVerdict, expected_thumbprint, replaced_thumbprint
from .base import PROFILE_MODULES, Step, StepUnit, every_profile

STEP = Step(0, "prerequisites", "Check the prerequisites", "check")


def verdict(r: Readings) -> StepVerdict:
    """Blocked while anything the sequence needs is missing on the server."""
    server = r.server
    if server is None:
        return StepVerdict(1, "prerequisites", "cannot tell", "the server probe did not answer")
    problems = []
    if server.edition != "Desktop" or not str(server.version or "").startswith("5.1"):
        problems.append(f"Windows PowerShell 5.1 required, found {server.edition} {server.version}")
    if not server.elevated:
        problems.append("not elevated")
    if not server.snapin:
        problems.append("Microsoft.Crm.PowerShell snap-in not registered")
    for module in PROFILE_MODULES[r.plan["profile"]]:
        if not server.modules.get(module):
            problems.append(f"module {module} not installed")
    if server.reports_tools_dir and not server.tools_dir:
        problems.append("the CRM install folder is not in the registry (HKLM:\\SOFTWARE\\Microsoft\\MSCRM, "
                        "CRM_Server_InstallDir): set crm.tools_dir")
    certificate = (r.plan.get("parameters") or {}).get("certificate") or {}
    for found, what, path in ((server.tools_script, "CertificateReconfiguration.ps1", None),
                              (server.pfx_file, "the PFX file", certificate.get("pfx_path")),
                              (server.cer_file, "the .cer file", certificate.get("cer_path"))):
        if not found:
            problems.append(f"{what} not found" + (SECOND_HOP if str(path or "").startswith("\\\\") else ""))
    problems += _execution_policy(r)
    problems += _certificate_in_use(r)
    unknown: list[str] = []
    if (r.plan.get("parameters") or {}).get("trust") == "app":
        problems += _app_problems(r, unknown)
    if problems:
        return StepVerdict(1, "prerequisites", "blocked", "; ".join(problems))
    if unknown:
        return StepVerdict(1, "prerequisites", "cannot tell", "; ".join(unknown))
    return StepVerdict(1, "prerequisites", "ok", f"{server.edition} {server.version}, elevated, "
                       f"execution policy {server.execution_policy}")


#: Why a UNC certificate path looks missing over remoting (the same words as step 01's).
SECOND_HOP = (" (a UNC path: over a remote session the server cannot pass your credentials on to the share - the "
              "second hop - so a file that exists looks missing. Copy the file to a local folder on the server and "
              "set that path in the parameters, or connect with CredSSP: psbridge run --auth credssp.)")


def _execution_policy(r: Readings) -> list[str]:
    """Whether the execution policy lets step 02 run CertificateReconfiguration.ps1 as a file (step 01's check)."""
    server = r.server
    assert server is not None
    why = policy_refusal(server)
    if why is None:
        return []
    return [f"step {_index(r, 'certificate')} runs CertificateReconfiguration.ps1 as a file, and PowerShell would "
            f"refuse it: {why}"]


def policy_refusal(server: ServerReading) -> str | None:
    """Why the execution policy would refuse CertificateReconfiguration.ps1 on this server (None: it would not).

    Script text sent over PSRP is not a file, so no policy blocks the steps; the vendor script is
    one, on the main server (step 02) and on each additional server. Restricted runs no file;
    AllSigned needs a valid signature by a trusted publisher; RemoteSigned needs one on a file marked
    as downloaded (Zone.Identifier), Unrestricted asks about such a file (a remote session cannot
    answer) unless a trusted publisher signed it, as RemoteSigned lets it run (Windows PowerShell
    5.1's PSAuthorizationManager). A reading the probe did not give decides nothing.
    """
    policy = server.execution_policy or ""
    if not server.tools_script or not policy or policy == "Bypass":
        return None
    fix_policy = ("set the policy to RemoteSigned (Set-ExecutionPolicy RemoteSigned -Scope LocalMachine; "
                  "Get-ExecutionPolicy -List shows the scope that sets it, and a Group Policy scope wins)")
    if policy == "AllSigned":
        if server.script_trusted is not False:
            return None
        return (f"the execution policy is AllSigned and its signature is {server.script_signature}"
                + (" but its publisher is not in Trusted Publishers" if server.script_signature == "Valid" else "")
                + f": sign it with a certificate in Trusted Publishers, or {fix_policy}")
    if policy in ("RemoteSigned", "Unrestricted"):
        if server.script_downloaded is not True or server.script_trusted is not False:
            return None
        return (f"the execution policy is {policy} and the file is marked as downloaded from the internet "
                "(its Zone.Identifier stream): check the file, then unblock it on the server with Unblock-File")
    return f"the execution policy is {policy}, which runs no script file: {fix_policy}"


def _index(r: Readings, step_id: str) -> str:
    """A step's number as the package shows it (02), from the plan."""
    found = [s.get("index") for s in r.plan.get("steps") or [] if isinstance(s, dict) and s.get("id") == step_id]
    return f"{found[0]:02d}" if found and isinstance(found[0], int) else step_id


def _certificate_in_use(r: Readings) -> list[str]:
    """A first setup refuses to replace a valid S2STokenIssuer certificate CRM already uses (step 01's check).

    Server-side synchronization with Exchange Online signs with the same certificate slot and the same
    Dynamics CRM principal: replacing its certificate silently breaks it. A renewal
    (`[certificate] replaces`) replaces it on purpose; CRM holding the package's own certificate is fine.
    """
    crm = r.crm
    if replaced_thumbprint(r.plan) is not None or crm is None or crm.certificate_type != "S2STokenIssuer":
        return []
    own = (r.certificate.cer_thumbprint if r.certificate is not None else None) or expected_thumbprint(r.plan, None)
    if own is None:
        return []
    valid = [c.thumbprint for c in crm.certificates if c.not_after is None or c.not_after > r.now]
    if not valid or own in valid:
        return []
    return [f"CRM already uses the valid S2STokenIssuer certificate {t}, not this package's {own}: a first setup "
            "would replace it (server-side synchronization with Exchange Online shares it). Render a renewal with "
            f"[certificate] replaces = '{t}'." for t in valid]


def _app_problems(r: Readings, unknown: list[str]) -> list[str]:
    """The app trust's prerequisites from the org and web probes (what step 01's app checks refuse).

    What the probes cannot tell goes to `unknown`: the verdict is then "cannot tell", not "ok".
    """
    from .msal_assembly import _same_version  # sibling units: imported when an app package is judged
    from .partner_applications import blocked_by_database

    problems: list[str] = []
    org, web = r.org, r.web
    if org is None:
        unknown.append("the org probe did not answer")
    else:
        blocked = blocked_by_database(org)
        if blocked is not None:
            problems.append(blocked[0] + (f" ({blocked[2]})" if blocked[2] else ""))
        elif org.rights is not None and org.rights.can_delete is not True:
            problems.append(f"the login {org.rights.login_name or '?'} lacks DELETE on dbo.PartnerApplicationBase "
                            "(the partner-applications back-out needs it)")
        elif org.rights is None:
            unknown.append("the org probe read no rights" + (f": {org.sql_error}" if org.sql_error else ""))
        version = _version(org.version)
        if version is not None and version < (9, 1, 0):
            problems.append(f"CRM {org.version} is older than 9.1 (Microsoft documents the app trust for 9.1 with "
                            "Service Update 1.36)")
    if web is None:
        unknown.append("the web probe did not answer")
    elif web.paths_agree is False or not web.bin:
        problems.append("CRMWeb\\bin: " + (web.problem or "not found"))
    else:
        if web.bin_writable is not True:
            problems.append(f"this session's user may not create files in {web.bin} (or it cannot be told)")
        dll = web.file("Microsoft.Identity.Client.dll")
        if dll is not None and dll.present and _same_version(dll.assembly_version) is False:
            problems.append(f"{web.bin} holds Microsoft.Identity.Client {dll.assembly_version}, not the package's "
                            "version: psbridge does not replace another version")
    return problems


def _version(text: str | None) -> tuple[int, ...] | None:
    """A dotted version as numbers (9.1.36.12), or None when it is not one."""
    parts = (text or "").strip().split(".")
    return tuple(int(p) for p in parts) if len(parts) >= 2 and all(p.isdigit() for p in parts) else None


UNIT = StepUnit("prerequisites", every_profile(STEP), renewal_rank=10, verdict=verdict)
