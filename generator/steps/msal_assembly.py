"""Step msal-assembly: the MSAL files into CRMWeb\\bin on the main server (app trust).

Microsoft's "Configure Azure app for SharePoint access" (CE on-premises 9.1) has the operator copy
Microsoft.Identity.Client.dll and .xml of NuGet package Microsoft.Identity.Client 4.11.0 into the
bin folder of CRMWeb. The package carries them (payload/, approved and hashed); the step checks
each sha256 before and after it writes, backs up what it replaces and refuses another MSAL
version. `web_state` is also the additional servers' verdict on their own web probe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..readings import MSAL_FILES, Readings, WebReading
from ..verdicts import Verdict, StepVerdict
from ..payload import MSAL_FILES as PAYLOAD_FILES
from .base import Backout, Step, StepUnit, every_profile

STEP = Step(
    0, "msal-assembly", "Put the MSAL assembly (Microsoft.Identity.Client 4.11.0) into CRMWeb\\bin", "change",
    needs=("prerequisites",),
    changes="CRM web server: writes Microsoft.Identity.Client.dll and .xml into CRMWeb\\bin (a file it replaces is "
    "backed up outside bin first), which restarts the CRM web application.",
    one_template=True, payload=PAYLOAD_FILES,
)

BACKOUT = Backout(
    "msal-assembly", ("web",),
    manual="On the server, put back the files the run replaced from the backup folder its output names "
    "(psbridge-msal\\backup-<time> next to CRMWeb), or, when it wrote files that were not there before, delete "
    "Microsoft.Identity.Client.dll and Microsoft.Identity.Client.xml from CRMWeb\\bin. Either change in bin "
    "restarts the CRM web application; the app trust's SharePoint access stops working without the DLL.",
)


@dataclass(frozen=True)
class WebState:
    """What the web probe says about one server's CRMWeb\\bin against the package's payload."""

    verdict: Verdict
    detail: str
    before: str | None = None
    after: str | None = None


def payload_hashes(plan: Mapping[str, Any]) -> dict[str, str] | None:
    """File name -> sha256 of the package's payload (plan.json `payload`), or None when it is not recorded."""
    found = {}
    for entry in plan.get("payload") or []:
        if isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("sha256"), str):
            found[entry["file"].rsplit("/", 1)[-1].lower()] = entry["sha256"].lower()
    wanted = {name.lower() for name in MSAL_FILES}
    return found if wanted <= set(found) else None


def _same_version(version: str | None) -> bool | None:
    """Whether an assembly version (4.11.0.0) is the payload's package version (4.11.0); None: unknown."""
    from ..payload import PACKAGE_VERSION  # the .nupkg reader: imported when a verdict needs it

    if not version:
        return None
    return version.split(".")[:3] == PACKAGE_VERSION.split(".")[:3]


def web_state(web: WebReading | None, plan: Mapping[str, Any]) -> WebState:
    """One server's CRMWeb\\bin judged as the step judges it: in place, missing, or another MSAL there."""
    if web is None:
        return WebState("cannot tell", "the web probe did not answer")
    if web.paths_agree is False:
        return WebState("blocked", f"the registry's WebSitePath ({web.registry_path}) and the IIS site's physical path "
                        f"({web.site_path}) disagree on where CRMWeb is")
    if not web.bin:
        reason = web.problem or "CRMWeb\\bin was not found"
        return WebState("blocked" if web.site_found is not None or web.problem else "cannot tell", reason)
    expected = payload_hashes(plan)
    if expected is None:
        return WebState("cannot tell", "plan.json records no payload (the MSAL files' sha256)")
    missing, replaced = [], []
    for name in MSAL_FILES:
        found = web.file(name)
        if found is None:
            return WebState("cannot tell", f"the web probe did not report {name}")
        if found.present and found.sha256 == expected[name.lower()]:
            continue
        if not found.present:
            missing.append(name)
            continue
        if name.endswith(".dll"):
            same = _same_version(found.assembly_version)
            if same is False:
                return WebState("blocked", f"{web.bin} holds Microsoft.Identity.Client {found.assembly_version} "
                                f"(file version {found.file_version}), not the package's version: the step does not "
                                "replace another version")
            if same is None:
                return WebState("cannot tell", f"{name} in {web.bin} has another sha256 and its version could not be read")
        replaced.append(name)
    if not missing and not replaced:
        return WebState("in place", f"both MSAL files in {web.bin} with the package's sha256")
    if web.bin_writable is False:
        return WebState("blocked", f"this session's user may not create files in {web.bin}")
    changes = [f"write {n}" for n in missing] + [f"replace {n} (backed up first)" for n in replaced]
    return WebState("will change", "; ".join(changes) + f" in {web.bin}",
                    before=", ".join([f"{n} missing" for n in missing] + [f"{n} other sha256" for n in replaced]),
                    after="both files with the package's sha256")


def verdict(r: Readings) -> StepVerdict:
    """The main server's web probe against the package's payload facts."""
    index = next((int(s["index"]) for s in r.plan.get("steps") or [] if s.get("id") == STEP.id), 12)
    state = web_state(r.web, r.plan)
    return StepVerdict(index, STEP.id, state.verdict, state.detail, before=state.before, after=state.after)


UNIT = StepUnit("msal-assembly", every_profile(STEP), included="app", renewal_rank=94, verdict=verdict,
                backout=BACKOUT)
