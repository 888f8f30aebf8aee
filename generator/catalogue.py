"""The step catalogue: the article's sequence as data, and every other fact about it.

Each step names its template, whether it changes persistent state, which earlier
steps it needs in the same PowerShell session, and which secrets it takes as
parameters. The profiles, the read-only probes, the article's constants and the
modules each profile imports live here too. Everything that decides *what runs*
(setup.ps1's resume logic, `run --from-step`, what `check` may send) is derived from
this module, never from a package's plan.json: a plan.json is only accepted when it
says exactly what this catalogue computes for its parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

#: A package's parameters (`parameters.Parameters`). The catalogue is the bottom floor: it reads
#: the few fields it needs and imports nothing of psbridge's, so it is typed loosely here.
Parameters = Any

#: check: reads only; session: sets up session state (imports, connection, variables),
#: safe to run again; change: changes persistent state (server, Entra ID, CRM database).
StepKind = Literal["check", "session", "change"]

#: Secret inputs a step may take as a PowerShell parameter, by the name psbridge knows them.
#: pfx_password -> [securestring]; o365_credential -> [pscredential]; graph_token -> [securestring].
SecretKind = Literal["pfx_password", "o365_credential", "graph_token"]


@dataclass(frozen=True)
class Step:
    index: int
    id: str
    title: str
    kind: StepKind
    #: Ids of earlier steps whose session state this step uses (imports, connection, variables).
    needs: tuple[str, ...] = ()
    #: PowerShell parameter name -> secret kind, passed as SecureString/PSCredential.
    inputs: dict[str, SecretKind] = field(default_factory=dict)
    #: What it changes, in words for the change-advisory board ("" for read-only steps).
    changes: str = ""
    #: "main": the server run connects to; "additional": each of `[crm] additional_servers`.
    runs_on: Literal["main", "additional"] = "main"
    #: The template's name without the profile and suffix ("06-spn"); None: `NN-id` of this index.
    #: A renewal runs the same templates in another order, so its indexes differ from theirs.
    source: str | None = None

    @property
    def changes_state(self) -> bool:
        return self.kind == "change"

    @property
    def file(self) -> str:
        return f"steps/{self.index:02d}-{self.id}.ps1"

    def template(self, profile: str) -> str:
        return f"{profile}/{self.source or f'{self.index:02d}-{self.id}'}.ps1.j2"


MSONLINE_STEPS: tuple[Step, ...] = (
    Step(1, "prerequisites", "Check the prerequisites", "check"),
    Step(
        2, "certificate", "Prepare the certificate", "change", needs=("prerequisites",),
        inputs={"PfxPassword": "pfx_password"},
        changes="CRM server: imports the PFX into LocalMachine\\My, grants the service account read "
        "access to its private key; CRM configuration database: stores it as the S2S token issuer certificate.",
    ),
    Step(
        3, "session", "Prepare the PowerShell session", "session", needs=("prerequisites",),
        changes="CRM server (only when run locally and WinRM does not answer): Enable-PSRemoting configures and "
        "restarts WinRM.",
    ),
    Step(4, "connect", "Connect to Office 365", "session", needs=("session",), inputs={"Credential": "o365_credential"}),
    Step(5, "set-certificate", "Set the certificate", "session", needs=("prerequisites",)),
    Step(
        6, "spn", "Set the Azure Active Directory Service Principal Name (SPN) in SharePoint", "change",
        needs=("connect", "set-certificate"),
        changes="Entra ID: adds the certificate as a key credential of the Dynamics CRM service principal "
        "and adds the service principal name for the root domain.",
    ),
    Step(
        7, "crm-settings", "Configure the Microsoft Dynamics 365 Server for server-based authentication", "change",
        needs=("prerequisites",),
        changes="CRM configuration database: ServerSettings S2SDefaultAuthorizationServerPrincipalId and "
        "S2SDefaultAuthorizationServerMetadataUrl.",
    ),
    Step(8, "tenant-id", "Get the SharePoint Online tenant ID", "check", needs=("connect",)),
)

#: Profile graph: the same change with Microsoft Graph PowerShell (MSOnline was retired in 2025).
#: Same ids and order; the Entra ID steps use Graph and every changing step is idempotent.
GRAPH_STEPS: tuple[Step, ...] = (
    MSONLINE_STEPS[0],
    MSONLINE_STEPS[1],
    Step(3, "session", "Prepare the PowerShell session", "session", needs=("prerequisites",)),
    Step(4, "connect", "Connect to Microsoft Graph", "session", needs=("session",), inputs={"AccessToken": "graph_token"}),
    MSONLINE_STEPS[4],
    Step(
        6, "spn", "Add the certificate and the SPN to the Dynamics CRM service principal", "change",
        needs=("connect", "set-certificate"),
        changes="Entra ID: adds the certificate as a key credential of the Dynamics CRM service principal "
        "(matched by its key, the certificate's raw data; a credential of it that ends before the certificate "
        "does is replaced) and merges the service principal name for the root domain into its names.",
    ),
    MSONLINE_STEPS[6],
    Step(8, "tenant-id", "Get the SharePoint Online tenant ID", "check", needs=("connect",)),
)

#: Microsoft: CertificateReconfiguration.ps1 runs on every server with the Web Application Server
#: role, and -updateCrm only once (step 02). A package for a farm gains this step; `run` sends it
#: to each additional server after the main sequence. Same template for both profiles.
ADDITIONAL_SERVERS_STEP = Step(
    9, "additional-servers", "Install the certificate on the additional servers", "change",
    inputs={"PfxPassword": "pfx_password"},
    changes="Additional CRM servers (each one): imports the PFX into LocalMachine\\My and grants the service "
    "account read access to its private key, without -updateCrm (step 02 updated the configuration database).",
    runs_on="additional",
)

CATALOGUES: dict[str, tuple[Step, ...]] = {"msonline": MSONLINE_STEPS, "graph": GRAPH_STEPS}

#: A renewal (`[certificate] replaces`) runs the same steps in an order in which no token is
#: ever signed with a key Entra ID does not know: the new key credential is added alongside the
#: current one and read back (spn), the certificate is installed on every additional server,
#: and only then is CRM switched to it (certificate, with -updateCrm). The article's order (CRM
#: first, Entra ID second) would leave CRM signing with a key Entra ID does not trust until step
#: 06. Then the result is verified, and only after that the replaced credential is retired.
#: Ids in run order; each keeps its template (`Step.source`).
RENEWAL_ORDER: tuple[str, ...] = (
    "prerequisites", "session", "connect", "set-certificate", "spn", "additional-servers", "certificate",
    "crm-settings", "tenant-id", "verify", "retire-previous",
)

#: Renewal-only steps and renewal titles of the article's steps.
VERIFY_STEP = Step(
    0, "verify", "Verify the new certificate end to end", "check", needs=("connect", "set-certificate"),
)
RETIRE_STEP = Step(
    0, "retire-previous", "Retire the replaced certificate's key credential", "change",
    needs=("connect", "set-certificate", "verify"),
    changes="Entra ID: removes from the Dynamics CRM service principal the key credential of the replaced "
    "certificate and expired key credentials; never the new certificate's, and nothing when the principal "
    "holds a credential of a certificate it was not told about.",
)
_RENEWAL_TITLES = {
    "spn": ("Add the new certificate's key credential alongside the current one",
            "Entra ID: adds the new certificate as a key credential of the Dynamics CRM service principal, "
            "next to the one in use (which stays until retire-previous), reads it back, and adds the service "
            "principal name for the root domain if it is missing."),
    "additional-servers": (ADDITIONAL_SERVERS_STEP.title,
                           "Additional CRM servers (each one): imports the PFX into LocalMachine\\My and grants the "
                           "service account read access to its private key, without -updateCrm, before CRM is "
                           "switched to the certificate (the switch step updates the configuration database once)."),
    "certificate": ("Switch CRM to the new certificate",
                    "CRM server: imports the PFX into LocalMachine\\My, grants the service account read access to "
                    "its private key; CRM configuration database: makes it the S2S token issuer certificate "
                    "(the switch)."),
}

#: The switch checks Entra ID for the new key credential before it changes CRM: it needs the connection.
_RENEWAL_NEEDS = {"certificate": ("prerequisites", "connect")}


def renewal_steps(profile: str, farm: bool) -> tuple[Step, ...]:
    """The steps of a renewal package, renumbered in run order; each keeps its template."""
    from dataclasses import replace

    known = {s.id: s for s in (*CATALOGUES[profile], ADDITIONAL_SERVERS_STEP, VERIFY_STEP, RETIRE_STEP)}
    order = [i for i in RENEWAL_ORDER if farm or i != "additional-servers"]
    out = []
    for index, step_id in enumerate(order, start=1):
        step = known[step_id]
        source = (f"{step.index:02d}-{step.id}" if step.index else step.id)
        title, changes = _RENEWAL_TITLES.get(step_id, (step.title, step.changes))
        needs = _RENEWAL_NEEDS.get(step_id, step.needs)
        out.append(replace(step, index=index, source=source, title=title, changes=changes, needs=needs))
    return tuple(out)
PROFILES: tuple[str, ...] = tuple(CATALOGUES)

#: The article's constants, passed to templates as data so that they are quoted like any value
#: and recorded in plan.json for the reviewer. `metadata_url` is the commercial cloud's; a
#: package uses `constants_for(params)`, which takes the cloud's values from CLOUDS.
CONSTANTS: dict[str, str] = {
    "crm_app_id": "00000007-0000-0000-c000-000000000000",
    "acs_principal_id": "00000001-0000-0000-c000-000000000000",
    "metadata_url": "https://accounts.accesscontrol.windows.net/metadata/json/1",
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
    """The constants a package uses and plan.json records: the article's, with its cloud's values."""
    cloud = cloud_for(params)
    out = {**CONSTANTS, "metadata_url": cloud.metadata_url, "cloud": cloud.name}
    if params.profile == "graph":
        out["graph_environment"] = cloud.graph_environment
    else:
        out["azure_environment"] = cloud.azure_environment
    return out

#: The read-only probes of `psbridge check`, in the order they run; `entra` needs the
#: session steps (03, 04) first.
PROBES: tuple[str, ...] = ("server", "certificate", "crm", "entra")

#: Modules each profile's steps import (the server probe reports which are installed).
PROFILE_MODULES: dict[str, tuple[str, ...]] = {
    "msonline": ("MSOnline",),
    "graph": ("Microsoft.Graph.Authentication", "Microsoft.Graph.Applications",
              "Microsoft.Graph.Identity.DirectoryManagement"),
}

@dataclass(frozen=True)
class Backout:
    """How a state-changing step is undone: a reviewed script with parameters, or by hand.

    `captures` are the read-only probes `run` sends right before the step (and, for a
    scripted back-out, right after it), so the run record holds what the step changed.
    """

    step_id: str
    captures: tuple[str, ...]
    script: str | None = None  # rollback/NN-id.ps1 in the package, or None: a manual procedure
    needs: tuple[str, ...] = ()  # session steps the script needs first (imports, the connection)
    manual: str = ""

    def template(self, profile: str) -> str:
        name = self.script.split("/", 1)[1] if self.script else ""
        return f"rollback/{profile}-{name}.j2" if self.step_id == "spn" else f"rollback/{name}.j2"


BACKOUTS: dict[str, Backout] = {
    "certificate": Backout(
        "certificate", ("certificate", "crm"),
        manual="The previous S2S certificate's private key is not in the package, so psbridge cannot put it back. "
        "By hand: run CertificateReconfiguration.ps1 -updateCrm with the previous certificate's PFX (its "
        "thumbprint is in the run record's state before the certificate step), then remove the new certificate from "
        "LocalMachine\\My if no other service uses it.",
    ),
    "spn": Backout("spn", ("entra",), script="rollback/06-spn.ps1", needs=("session", "connect")),
    "crm-settings": Backout("crm-settings", ("crm",), script="rollback/07-crm-settings.ps1"),
    "retire-previous": Backout(
        "retire-previous", ("entra",),
        manual="The run record's state before this step lists the key credentials it removed (key id, "
        "thumbprint, end). While the replaced certificate is still valid, its credential can be added back by hand "
        "from its .cer, as step spn adds one (Update-MgServicePrincipal with every key credential, or "
        "New-MsolServicePrincipalCredential with -StartDate and -EndDate from the certificate). Expired "
        "credentials it removed are of no use again.",
    ),
    "additional-servers": Backout(
        "additional-servers", ("certificate",),
        manual="On each additional server, remove the certificate from LocalMachine\\My if the previous one "
        "should be used again, and run CertificateReconfiguration.ps1 (without -updateCrm) with the previous PFX.",
    ),
}

#: What can never be undone (the article's warnings), for REVIEW.md's back-out plan.
IRREVERSIBLE = ("After the Enable Server-Based SharePoint Integration wizard, the organization cannot go back to "
                "client-based authentication (the Microsoft Dynamics CRM List Component).")


#: A renewal's spn step is not backed out by a script: removing the new key credential while CRM
#: signs with the new certificate (after the switch) is the outage the renewal avoids.
RENEWAL_SPN_BACKOUT = Backout(
    "spn", ("entra",),
    manual="Only once CRM signs with the replaced certificate again (the switch backed out, see the certificate "
    "step): remove the new certificate's key credential from the Dynamics CRM service principal by hand; its key "
    "id is in the run record's state after this step. While CRM uses the new certificate, that credential must "
    "stay. psbridge sends no script for it: a back-out run cannot see which certificate CRM's processes use.",
)


def backouts_for(params: Parameters) -> list[Backout]:
    """The back-out of each state-changing step of a package with these parameters, in step order."""
    renewal = is_renewal(params)
    return [RENEWAL_SPN_BACKOUT if renewal and s.id == "spn" else BACKOUTS[s.id]
            for s in steps_for(params) if s.changes_state]


#: The run lock script (`psbridge run` sends it before the first step; `check` never does).
LOCK_SCRIPT = "lock.ps1"


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


def catalogue(profile: str) -> tuple[Step, ...]:
    return CATALOGUES[profile]


def is_renewal(params: Parameters) -> bool:
    """Whether the parameters declare a renewal (`[certificate] replaces`)."""
    return bool(params.certificate.replaces)


def steps_for(params: Parameters) -> tuple[Step, ...]:
    """The steps of a package with these parameters: the profile's catalogue, and step 09 for a farm;
    a renewal's own order (`renewal_steps`)."""
    farm = bool(params.crm.additional_servers)
    if is_renewal(params):
        return renewal_steps(params.profile, farm)
    extra = (ADDITIONAL_SERVERS_STEP,) if farm else ()
    return CATALOGUES[params.profile] + extra


def inputs_for(step: Step, params: Parameters) -> dict[str, SecretKind]:
    """The secret parameters a step takes in a package with these parameters.

    Profile graph with app-only sign-in ([graph] client_id...) connects with a certificate
    in the server's store, so step 04 then takes no access token.
    """
    app_only = params.graph is not None and params.graph.client_id is not None
    return {name: kind for name, kind in step.inputs.items() if not (app_only and kind == "graph_token")}


def step_entry(step: Step, params: Parameters) -> dict[str, Any]:
    """What plan.json says of a step, less its sha256: computed here, checked against the package."""
    return {
        "index": step.index, "id": step.id, "title": step.title, "file": step.file,
        "changes_state": step.changes_state, "kind": step.kind, "needs": list(step.needs),
        "inputs": dict(inputs_for(step, params)), "runs_on": step.runs_on,
    }


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
