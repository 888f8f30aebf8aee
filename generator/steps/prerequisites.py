"""Step prerequisites: PowerShell 5.1, elevation, the CRM snap-in, the profile's modules, the files."""

from __future__ import annotations

from ..readings import Readings
from ..verdicts import StepVerdict
from .base import Step, StepUnit, every_profile

STEP = Step(0, "prerequisites", "Check the prerequisites", "check")


def verdict(r: Readings) -> StepVerdict:
    """Blocked while anything the sequence needs is missing on the server."""
    from ..catalogue import PROFILE_MODULES  # the catalogue is built from the units: imported when called

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
    for found, what in ((server.tools_script, "CertificateReconfiguration.ps1"), (server.pfx_file, "the PFX file"),
                        (server.cer_file, "the .cer file")):
        if not found:
            problems.append(f"{what} not found")
    if problems:
        return StepVerdict(1, "prerequisites", "blocked", "; ".join(problems))
    return StepVerdict(1, "prerequisites", "ok", f"{server.edition} {server.version}, elevated, "
                       f"execution policy {server.execution_policy}")


UNIT = StepUnit("prerequisites", every_profile(STEP), renewal_rank=10, verdict=verdict)
