"""The step catalogue: the article's sequence as data, and every other fact about it.

Each step is one unit in generator/steps/ (its Step per profile, renewal facts, verdict,
back-out; its templates in templates/steps/<id>/): the Step says whether it changes
persistent state, which earlier steps it needs in the same PowerShell session, and which
secrets it takes as parameters. This module derives the sequences from the units' registry:
a first setup (`catalogue`, `farm_steps`), a renewal (`renewal_steps`), the back-outs
(`backouts_for`). The profiles, the read-only probes, the article's constants and the
modules each profile imports live here too. Everything that decides *what runs*
(setup.ps1's resume logic, `run --from-step`, what `check` may send) is derived from
this module, never from a package's plan.json: a plan.json is only accepted when it
says exactly what this catalogue computes for its parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .steps import PROFILE_MODULES, PROFILES, Backout, SecretKind, Step, StepKind, unit, units

__all__ = ["PROFILE_MODULES", "PROFILES", "Backout", "SecretKind", "Step", "StepKind"]

#: A package's parameters (`parameters.Parameters`). The catalogue reads the few fields it needs
#: and imports nothing of psbridge's but the step units, so it is typed loosely here.
Parameters = Any


def catalogue(profile: str) -> tuple[Step, ...]:
    """The steps of every package of a profile (units included "always"), numbered in the article's order."""
    always = [u for u in units() if u.included == "always"]
    return tuple(replace(u.step(profile), index=index) for index, u in enumerate(always, start=1))


def app_steps(profile: str) -> tuple[Step, ...]:
    """The steps the app trust (`trust = "app"`) adds after the article's: Microsoft's "Configure Azure
    app for SharePoint access" (the app, its certificate, the organization database, the MSAL assembly)."""
    first = len(catalogue(profile)) + 1
    app = [u for u in units() if u.included == "app"]
    return tuple(replace(u.step(profile), index=index) for index, u in enumerate(app, start=first))


def farm_steps(profile: str, first: int | None = None) -> tuple[Step, ...]:
    """The steps a farm's package adds after the others (Microsoft: CertificateReconfiguration.ps1
    runs on every server with the Web Application Server role, -updateCrm only once)."""
    first = len(catalogue(profile)) + 1 if first is None else first
    farm = [u for u in units() if u.included == "farm"]
    return tuple(replace(u.step(profile), index=index) for index, u in enumerate(farm, start=first))


def renewal_order(farm: bool = True, app: bool = False) -> tuple[str, ...]:
    """A renewal's step ids in run order (each unit's `renewal_rank`).

    A renewal (`[certificate] replaces`) runs the same steps in an order in which no token is
    ever signed with a key Entra ID does not know: the new key credential is added alongside the
    current one and read back (spn), the certificate is installed on every additional server,
    and only then is CRM switched to it (certificate, with -updateCrm). The article's order (CRM
    first, Entra ID second) would leave CRM signing with a key Entra ID does not trust until step
    06. Then the result is verified, and only after that the replaced credential is retired.
    """
    ranked = [u for u in units() if u.renewal_rank is not None and (farm or u.included != "farm")
              and (app or u.included != "app")]
    return tuple(u.id for u in sorted(ranked, key=lambda u: u.renewal_rank or 0))


def renewal_steps(profile: str, farm: bool, app: bool = False) -> tuple[Step, ...]:
    """The steps of a renewal package, renumbered in run order; each keeps its template (by its id)."""
    out = []
    for index, step_id in enumerate(renewal_order(farm, app), start=1):
        found = unit(step_id)
        assert found is not None
        step = found.step(profile)
        out.append(replace(step, index=index, title=found.renewal_title or step.title,
                           changes=found.renewal_changes or step.changes,
                           needs=step.needs if found.renewal_needs is None else found.renewal_needs))
    return tuple(out)


def _derived(name: str) -> Any:
    """The catalogue's names derived from the step units, computed when read (see `__getattr__`)."""
    by_id = {u.id: u for u in units()}
    derived: dict[str, Any] = {
        "CATALOGUES": lambda: {profile: catalogue(profile) for profile in PROFILES},
        "MSONLINE_STEPS": lambda: catalogue("msonline"),
        # Profile graph: the same change with Microsoft Graph PowerShell (MSOnline was retired in 2025).
        "GRAPH_STEPS": lambda: catalogue("graph"),
        "ADDITIONAL_SERVERS_STEP": lambda: farm_steps("msonline")[0],
        "VERIFY_STEP": lambda: by_id["verify"].step("msonline"),
        "RETIRE_STEP": lambda: by_id["retire-previous"].step("msonline"),
        "RENEWAL_ORDER": renewal_order,
        "BACKOUTS": lambda: {u.id: u.backout for u in units() if u.backout is not None},
        "RENEWAL_SPN_BACKOUT": lambda: by_id["spn"].renewal_backout,
    }
    if name not in derived:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return derived[name]()


def __getattr__(name: str) -> Any:
    """CATALOGUES, MSONLINE_STEPS, GRAPH_STEPS, ADDITIONAL_SERVERS_STEP, VERIFY_STEP, RETIRE_STEP,
    RENEWAL_ORDER, BACKOUTS, RENEWAL_SPN_BACKOUT: derived from the registry each time they are read,
    so that no copy made at import can disagree with the step units (generator/steps/)."""
    return _derived(name)


#: The article's constants, passed to templates as data so that they are quoted like any value
#: and recorded in plan.json for the reviewer. `metadata_url` is the commercial cloud's; a
#: package uses `constants_for(params)`, which takes the cloud's values from CLOUDS.
CONSTANTS: dict[str, str] = {
    "crm_app_id": "00000007-0000-0000-c000-000000000000",
    "acs_principal_id": "00000001-0000-0000-c000-000000000000",
    "metadata_url": "https://accounts.accesscontrol.windows.net/metadata/json/1",
}


#: The app trust's constants (`trust = "app"` only: an ACS package's plan.json stays as it was): the
#: resource appId of Office 365 SharePoint Online and its application role Sites.FullControl.All
#: (SharePoint/sp-dev-docs docs/embedded/development/auth.md; the same pair as the CE page's
#: PrincipalId constant). Step app-registration confirms the role id against the SharePoint
#: service principal's appRoles at run time and stops when it differs.
APP_CONSTANTS: dict[str, str] = {
    "sharepoint_app_id": "00000003-0000-0ff1-ce00-000000000000",
    "sites_full_control_role": "Sites.FullControl.All",
    "sites_full_control_role_id": "678536fe-1083-478a-9c59-b99265e6b0d3",
}


@dataclass(frozen=True)
class Cloud:
    """A Microsoft 365 cloud as the SharePoint site's host tells it, with only documented values."""

    name: str
    #: The SharePoint Online host suffix of this cloud.
    host_suffix: str
    #: ServerSettings S2SDefaultAuthorizationServerMetadataUrl (step 07).
    metadata_url: str
    #: Connect-MgGraph -Environment (a name Get-MgEnvironment lists).
    graph_environment: str
    #: Connect-MsolService -AzureEnvironment (AzureCloud is the cmdlet's default).
    azure_environment: str


#: The clouds psbridge can configure, by SharePoint Online host. Sources:
#: - commercial (GCC shares its hosts and Entra ID): the article's metadata URL; Connect-MgGraph
#:   targets Global by default; Connect-MsolService's default AzureCloud.
#: - GCC High: SharePoint Online is *.sharepoint.us ("Office 365 U.S. Government GCC High
#:   endpoints", https://learn.microsoft.com/microsoft-365/enterprise/microsoft-365-u-s-government-gcc-high-endpoints;
#:   DoD's SharePoint is *.sharepoint-mil.us / *.dps.mil, so the host does tell them apart);
#:   metadata URL https://login.microsoftonline.us/metadata/json/1 ("Connect Dynamics 365
#:   Customer Engagement (on-premises) to Exchange Online", GCC High note:
#:   https://learn.microsoft.com/dynamics365/customerengagement/on-premises/admin/connect-dynamics-365-on-premises-exchange-online);
#:   Graph environment USGov (graph.microsoft.us, Get-MgEnvironment:
#:   https://learn.microsoft.com/powershell/module/microsoft.graph.authentication/get-mgenvironment);
#:   MSOnline's USGovernment (https://learn.microsoft.com/powershell/module/msonline/connect-msolservice).
CLOUDS: tuple[Cloud, ...] = (
    Cloud("commercial", ".sharepoint.com", CONSTANTS["metadata_url"], "Global", "AzureCloud"),
    Cloud("usgov-gcchigh", ".sharepoint.us", "https://login.microsoftonline.us/metadata/json/1", "USGov", "USGovernment"),
)

#: SharePoint Online hosts of clouds for which Microsoft documents no S2S metadata URL for the
#: CRM's ServerSettings: refused by validation rather than configured with a guessed value.
UNDOCUMENTED_CLOUDS: dict[str, str] = {
    ".sharepoint.cn": "Office 365 operated by 21Vianet",
    ".sharepoint-mil.us": "Office 365 U.S. Government DoD",
}


def cloud_for_host(host: str) -> Cloud | None:
    """The documented cloud of a SharePoint Online host, or None."""
    host = host.lower().rstrip(".")
    return next((c for c in CLOUDS if host.endswith(c.host_suffix)), None)


def cloud_for(params: Parameters) -> Cloud:
    """The cloud of the parameters' sites (validation allows one host, of a documented cloud)."""
    from urllib.parse import urlsplit

    cloud = cloud_for_host(urlsplit(params.sharepoint.sites[0]).hostname or "")
    if cloud is None:  # pragma: no cover - parameters.sharepoint_site refuses such hosts
        raise ValueError("the SharePoint site is in no cloud with documented values")
    return cloud


def constants_for(params: Parameters) -> dict[str, str]:
    """The constants a package uses and plan.json records: the article's, with its cloud's values, and
    the app trust's (`APP_CONSTANTS`) in a package of the app trust only."""
    cloud = cloud_for(params)
    out = {**CONSTANTS, "metadata_url": cloud.metadata_url, "cloud": cloud.name}
    if params.profile == "graph":
        out["graph_environment"] = cloud.graph_environment
    else:
        out["azure_environment"] = cloud.azure_environment
    if getattr(params, "app_trust", False):
        out.update(APP_CONSTANTS)
    return out

#: The read-only probes of `psbridge check`, in the order they run; `entra` needs the
#: session steps (03, 04) first.
PROBES: tuple[str, ...] = ("server", "certificate", "crm", "entra")
#: The app trust's probes (`trust = "app"`), after those: `web` (CRMWeb and its bin folder, on every
#: server), `org` (the organization database's PartnerApplicationBase rows) and `app` (the Entra app;
#: it needs the session steps, like `entra`).
APP_PROBES: tuple[str, ...] = ("web", "org", "app")
#: The probes that need the connection to Microsoft Graph (the session steps) first (`org` finds a created
#: app's client id by its uniqueName).
GRAPH_PROBES: frozenset[str] = frozenset({"entra", "org", "app"})
#: The probes also sent to each additional server (`web` only in a package of the app trust).
SERVER_PROBES: tuple[str, ...] = ("server", "certificate", "web")


def probes_for(params: Parameters) -> tuple[str, ...]:
    """The probes of a package with these parameters: the article's, and the app trust's."""
    return PROBES + (APP_PROBES if getattr(params, "app_trust", False) else ())


#: What can never be undone (the article's warnings), for REVIEW.md's back-out plan.
IRREVERSIBLE = ("After the Enable Server-Based SharePoint Integration wizard, the organization cannot go back to "
                "client-based authentication (the Microsoft Dynamics CRM List Component).")


def backouts_for(params: Parameters) -> list[Backout]:
    """The back-out of each state-changing step of a package with these parameters, in step order."""
    renewal = is_renewal(params)
    out = []
    for step in steps_for(params):
        if not step.changes_state:
            continue
        found = unit(step.id)
        backout = ((found.renewal_backout if renewal else None) or found.backout) if found is not None else None
        if backout is None:
            raise LookupError(f"step {step.id} changes state but its unit defines no back-out")
        out.append(backout)
    return out


#: The run lock script (`psbridge run` sends it before the first step; `check` never does).
LOCK_SCRIPT = "lock.ps1"
#: A graph package's Graph sign-out (Disconnect-MgGraph), sent last by run, check and rollback.
SIGNOUT_SCRIPT = "signout.ps1"


class StepLike(Protocol):
    """What resume logic needs of a step: the catalogue's Step, or a step read from plan.json."""

    @property
    def index(self) -> int: ...
    @property
    def id(self) -> str: ...
    @property
    def changes_state(self) -> bool: ...
    @property
    def needs(self) -> Sequence[str]: ...


def resume_selection(steps: Sequence[StepLike], from_index: int) -> list[int]:
    """Indexes to run, in order, when continuing at step `from_index` in a fresh session.

    Every step from `from_index` on runs. Before it, a step runs again only if it does
    not change state and a step that will run needs it (directly or through another
    such step); a state-changing step before `from_index` never runs again.
    """
    by_id = {s.id: s for s in steps}
    chosen = {s.index for s in steps if s.index >= from_index}
    pending = [s for s in steps if s.index in chosen]
    while pending:
        step = pending.pop()
        for need_id in step.needs:
            need = by_id[need_id]
            if need.index not in chosen and not need.changes_state:
                chosen.add(need.index)
                pending.append(need)
    return sorted(chosen)


def resume_thresholds(steps: Sequence[StepLike]) -> dict[int, int]:
    """Per step index, the largest `-FromStep` for which it still runs (setup.ps1's `if`s)."""
    thresholds: dict[int, int] = {}
    for from_index in range(1, len(steps) + 1):
        for index in resume_selection(steps, from_index):
            thresholds[index] = from_index
    return thresholds


def is_renewal(params: Parameters) -> bool:
    """Whether the parameters declare a renewal (`[certificate] replaces`)."""
    return bool(params.certificate.replaces)


def steps_for(params: Parameters) -> tuple[Step, ...]:
    """The steps of a package with these parameters: the profile's catalogue, and step 09 for a farm;
    a renewal's own order (`renewal_steps`)."""
    farm, app = bool(params.crm.additional_servers), bool(getattr(params, "app_trust", False))
    if is_renewal(params):
        return renewal_steps(params.profile, farm, app)
    first = catalogue(params.profile) + (app_steps(params.profile) if app else ())
    return first + (farm_steps(params.profile, len(first) + 1) if farm else ())


def inputs_for(step: Step, params: Parameters) -> dict[str, SecretKind]:
    """The secret parameters a step takes in a package with these parameters.

    Profile graph with app-only sign-in ([graph] client_id...) connects with a certificate
    in the server's store, so step 04 then takes no access token.
    """
    app_only = params.graph is not None and params.graph.client_id is not None
    return {name: kind for name, kind in step.inputs.items() if not (app_only and kind == "graph_token")}


def step_entry(step: Step, params: Parameters) -> dict[str, Any]:
    """What plan.json says of a step, less its sha256: computed here, checked against the package."""
    entry = {
        "index": step.index, "id": step.id, "title": step.title, "file": step.file,
        "changes_state": step.changes_state, "kind": step.kind, "needs": list(step.needs),
        "inputs": dict(inputs_for(step, params)), "runs_on": step.runs_on,
    }
    if step.payload and getattr(params, "app_trust", False):  # only an app package carries a payload:
        entry["payload"] = list(step.payload)                  # an ACS package's entries stay as they were
    return entry


def probe_file(name: str) -> str:
    return f"probes/{name}.ps1"


def session_steps_for(steps: Sequence[Step], step_id: str) -> list[Step]:
    """The session-only steps that `step_id` needs, itself included: what `check` may send.

    Read-only checks are left out (the probes cover them), and a step that changes state
    never is: only steps of kind "session" are followed.
    """
    by_id = {s.id: s for s in steps}
    wanted: set[str] = set()
    pending = [step_id]
    while pending:
        step = by_id[pending.pop()]
        if step.kind == "session" and step.id not in wanted:
            wanted.add(step.id)
            pending.extend(step.needs)
    return [s for s in steps if s.id in wanted]


def ids(steps: Iterable[StepLike]) -> list[str]:
    return [s.id for s in steps]


@dataclass(frozen=True)
class Layout:
    """Every catalogue fact one package's render needs, computed once from its parameters.

    The renderer asks for this once instead of calling back into the catalogue for each piece.
    """

    steps: tuple[Step, ...]
    constants: dict[str, str]
    renewal: bool
    #: Per step index, the largest `-FromStep` for which it still runs (setup.ps1's `if`s).
    thresholds: dict[int, int]
    backouts: tuple[Backout, ...]
    probes: tuple[str, ...]
    #: The modules the profile's steps import (the server probe reports which are installed).
    modules: tuple[str, ...]
    #: What plan.json says of each step (less its sha256), by index.
    entries: dict[int, dict[str, Any]]


def layout_for(params: Parameters) -> Layout:
    """The catalogue's facts for a package with these parameters (see `Layout`)."""
    steps = steps_for(params)
    return Layout(steps, constants_for(params), is_renewal(params), resume_thresholds(steps),
                  tuple(backouts_for(params)), probes_for(params), PROFILE_MODULES[params.profile],
                  {s.index: step_entry(s, params) for s in steps})
