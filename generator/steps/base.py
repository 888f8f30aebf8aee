"""What a step is: its catalogue facts (`Step`), its back-out (`Backout`) and the unit that holds both.

A `StepUnit` is one step as one module defines it: its `Step` per profile, where it goes in a
first setup and in a renewal, its verdict on `psbridge check`'s probe readings and its
back-out. Its templates live in `templates/steps/<id>/` (or the folder the unit names), so a
step's facts, logic and PowerShell are found together. This module imports nothing of
psbridge's but the verdict and reading types, so that the catalogue can be built from the units.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:  # pragma: no cover - types only
    from ..readings import Readings
    from ..verdicts import StepVerdict

#: check: reads only; session: sets up session state (imports, connection, variables),
#: safe to run again; change: changes persistent state (server, Entra ID, CRM database).
StepKind = Literal["check", "session", "change"]

#: Secret inputs a step may take as a PowerShell parameter, by the name psbridge knows them.
#: pfx_password -> [securestring]; o365_credential -> [pscredential]; graph_token -> [securestring].
SecretKind = Literal["pfx_password", "o365_credential", "graph_token"]

#: The profiles a package can be rendered for; every unit has a Step for each.
PROFILES: tuple[str, ...] = ("msonline", "graph")

#: A package's parameters (`parameters.Parameters`), typed loosely: the bottom floor imports nothing.
Parameters = Any


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
    #: True: one template for every profile (`steps/<id>/step.ps1.j2`); False: `steps/<id>/<profile>.ps1.j2`.
    one_template: bool = False
    #: Package files the step takes as parameters in a package that carries them (the app trust:
    #: `payload/Microsoft.Identity.Client.dll`, ...): each goes as base64 text with its sha256
    #: (`remote.inputs.payload_parameters`; setup.ps1 reads them from the package folder). In a
    #: package of the ACS trust (no payload) the step takes none, and plan.json does not list them.
    payload: tuple[str, ...] = ()

    @property
    def changes_state(self) -> bool:
        return self.kind == "change"

    @property
    def file(self) -> str:
        return f"steps/{self.index:02d}-{self.id}.ps1"

    def template(self, profile: str) -> str:
        """The template's name: by the step's id, so a renewal's renumbered step keeps its template."""
        return f"steps/{self.id}/{'step' if self.one_template else profile}.ps1.j2"


#: Modules each profile's steps import (the server probe reports which are installed).
PROFILE_MODULES: dict[str, tuple[str, ...]] = {
    "msonline": ("MSOnline",),
    "graph": ("Microsoft.Graph.Authentication", "Microsoft.Graph.Applications",
              "Microsoft.Graph.Identity.DirectoryManagement"),
}


class PackageFacts(Protocol):
    """What a back-out reads of its package (a `package.Package`): plan.json and its parameters."""

    @property
    def plan(self) -> Mapping[str, Any]: ...

    @property
    def parameters(self) -> Any: ...


@dataclass(frozen=True)
class RollbackContext:
    """What a scripted back-out's values are computed from: the package and the recorded readings."""

    package: PackageFacts
    #: The probe readings recorded right before and right after the step (probe name -> raw answer).
    before: Mapping[str, Any]
    after: Mapping[str, Any]
    #: The run record's name, for error messages.
    record: str


#: (the rollback script's parameters, whether the step changed anything), or None: the probes did not answer.
RollbackValues = Callable[[RollbackContext], "tuple[dict[str, Any], bool] | None"]
#: By-hand notes that go with a scripted back-out: what its script leaves alone, and how to do it by hand.
RollbackNotes = Callable[[RollbackContext], "list[str]"]


@dataclass(frozen=True)
class Backout:
    """How a state-changing step is undone: a reviewed script with parameters, or by hand.

    `captures` are the read-only probes `run` sends right before the step (and, for a
    scripted back-out, right after it), so the run record holds what the step changed.
    A scripted back-out's `values` computes the script's parameters from those readings.
    """

    step_id: str
    captures: tuple[str, ...]
    script: str | None = None  # rollback/NN-id.ps1 in the package, or None: a manual procedure
    needs: tuple[str, ...] = ()  # session steps the script needs first (imports, the connection)
    manual: str = ""
    #: True: `steps/<id>/rollback-<profile>.ps1.j2`; False: one `steps/<id>/rollback.ps1.j2`.
    profile_templates: bool = False
    values: RollbackValues | None = field(default=None, compare=False, repr=False)
    notes: RollbackNotes | None = field(default=None, compare=False, repr=False)

    def template(self, profile: str) -> str:
        return f"steps/{self.step_id}/rollback{f'-{profile}' if self.profile_templates else ''}.ps1.j2"


#: A step's verdict on the main server's readings (`check`'s evaluate).
Verdict = Callable[["Readings"], "StepVerdict"]


@dataclass(frozen=True)
class ServerVerdictContext:
    """A step that runs on each additional server: its number, the server, that server's readings."""

    plan: Mapping[str, Any]
    index: int
    host: str
    #: Probe name -> raw answer (server, certificate), or None when the server could not be reached.
    answers: Mapping[str, dict[str, Any] | None] | None
    now: _dt.datetime | None = None


@dataclass(frozen=True)
class StepUnit:
    """One step, defined in one place: catalogue facts, verdict, back-out, template folder.

    - `steps`: its Step for each profile (the index is assigned by the registry from the order).
    - `included`: "always" (every package, in `UNITS` order), "app" (after those, in a package of
      the app trust, `trust = "app"`), "farm" (after those, when the
      parameters name additional servers) or "renewal" (only in a renewal).
    - `renewal_rank`: its place in a renewal's run order (lower first); None: not in a renewal.
    - `renewal_title`/`renewal_changes`/`renewal_needs`: a renewal's facts where they differ.
    - `verdict`: check's verdict on the main server's readings; None: a session step ("session").
    - `server_verdict`: for a step that runs on each additional server, the verdict for one server.
    - `backout`/`renewal_backout`: how a state-changing step is undone (first setup / renewal).
    - `template_dir`: where its templates are, when not `templates/steps/<id>/` of the package.
    """

    id: str
    steps: Mapping[str, Step]
    included: Literal["always", "app", "farm", "renewal"] = "always"
    renewal_rank: int | None = None
    renewal_title: str | None = None
    renewal_changes: str | None = None
    renewal_needs: tuple[str, ...] | None = None
    verdict: Verdict | None = None
    server_verdict: Callable[[ServerVerdictContext], StepVerdict] | None = None
    backout: Backout | None = None
    renewal_backout: Backout | None = None
    template_dir: Path | None = None

    def step(self, profile: str) -> Step:
        return self.steps[profile]


def every_profile(step: Step) -> dict[str, Step]:
    """The same Step for every profile (a step whose facts do not depend on the profile)."""
    return {profile: step for profile in PROFILES}
