"""The package gate: everything decided before a secret is read or a connection opened.

The package is read once (`package.read_package`) and judged: intact (every file as plan.json
records, the steps as psbridge's catalogue computes them), reproducible (byte for byte what
this psbridge renders) for `run`, and approved by enough people with `--require-approval`.
The steps to send, the host and the additional servers are chosen from that one object; only
its bytes are ever sent.
"""

from __future__ import annotations

import shlex

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..catalogue import resume_selection, session_steps_for
from ..errors import UserError
from ..package import Package, PackageStep, read_package
from ..fields import normalize_host

if TYPE_CHECKING:
    from ..approvals import ApprovalPolicy, Verification


def select_steps(steps: Sequence[PackageStep], from_step: int | None) -> list[PackageStep]:
    """The steps to run, in order: all of them, or a continuation at `from_step`.

    `steps` come from the catalogue (through the verified package), so the order, the
    selection and each step's kind can't be changed by editing plan.json.
    """
    if from_step is None:
        return list(steps)
    indexes = [s.index for s in steps]
    if from_step not in indexes:
        raise UserError(f"--from-step: {from_step} is not a step of this package (steps {indexes[0]}..{indexes[-1]})")
    chosen = set(resume_selection([s.spec for s in steps], from_step))
    return [s for s in steps if s.index in chosen]


def session_steps(steps: Sequence[PackageStep], step_id: str) -> list[PackageStep]:
    """The session steps `step_id` needs, itself included (what `check` may send); never a changing step."""
    wanted = {s.id for s in session_steps_for([s.spec for s in steps], step_id)}
    chosen = [s for s in steps if s.id in wanted]
    assert not any(s.changes_state for s in chosen), "the catalogue's session steps never change state"
    return chosen


@dataclass(frozen=True)
class PreparedRun:
    """Everything decided before a secret is read or a connection opened, from one package read."""

    package: Package
    selected: list[PackageStep]
    host: str
    approval: Verification | None
    #: The additional servers the selected additional-server step runs on, in order.
    additional: list[str] = field(default_factory=list)


def additional_servers(package: Package, selected: Sequence[PackageStep], from_step: int | None,
                       from_server: str | None) -> list[str]:
    """The additional servers to run on: all of them, or from `--from-server` on (with its step)."""
    servers = list(package.parameters.crm.additional_servers or [])
    if from_server is None:
        return servers if any(s.spec.runs_on != "main" for s in selected) else []
    farm = [s.index for s in package.steps if s.spec.runs_on != "main"]
    if not farm:
        raise UserError("--from-server: the package names no [crm] additional_servers")
    if from_step != farm[0]:
        raise UserError(f"--from-server: give it with --from-step {farm[0]} (the step that runs on each server)")
    keys = [normalize_host(h) for h in servers]
    if normalize_host(from_server) not in keys:
        raise UserError(f"--from-server {from_server}: not one of the package's additional servers "
                        f"({', '.join(servers)})")
    return servers[keys.index(normalize_host(from_server)):]


def resolve_host(option: str | None, package: Package, *, require_server: bool) -> str:
    """The host to connect to: the package's approved `[crm] server`, or `--host` when it names none.

    A package that names its server can't be sent anywhere else, so a change approved for a
    test server is never run on production by a typo or a copied command.
    """
    server = package.parameters.crm.server
    if server is None:
        if require_server:
            raise UserError(f"{package.label}: names no [crm] server; --require-approval runs only a package "
                            "approved for one server (add `server = \"…\"` to [crm], render and approve again)")
        if not option:
            raise UserError("--host: required (the package names no [crm] server)")
        return option
    if option and normalize_host(option) != normalize_host(server):
        raise UserError(f"--host {option}: the package is for crm.server = {server}; refusing another host. To run "
                        f"it on {option}: set [crm] server = \"{option}\" in the parameters file, then "
                        f"psbridge render FILE.toml and psbridge approve {shlex.quote(str(package.path))} --key KEY")
    return server


@dataclass(frozen=True)
class GateRequest:
    """What the operator asked the gate for."""

    package_dir: Path
    host_option: str | None = None
    from_step: int | None = None
    policy: ApprovalPolicy | None = None
    from_server: str | None = None
    #: `check`: read a package of another version or a hand-edited one, but send psbridge's own texts.
    for_check: bool = False


def approvals_lapsed(package: Package, policy: ApprovalPolicy, what: str, then: str) -> list[str] | None:
    """The approvals judged again, at the clock's time now, right before `what` (a state-changing
    step or back-out) is sent: None while enough valid approvals remain, else the refusal's lines
    (which approval no longer counts, how to get a new one, `then`: how to go on after it).

    Why again: the gate judged them before any prompt; an approval may expire while the operator
    waits at one (`--step`, rollback's question). `run` and `rollback` share this one judgement.
    """
    from .. import clock
    from ..approvals import verify_package

    result = verify_package(package, policy, now=clock.utc_now())
    if result.ok:
        return None
    return ([f"Not sent: {what} changes state, and the package's approvals, judged again right before it, no "
             "longer suffice:"] + [f"  {reason}" for reason in result.reasons]
            + [f"Get a new approval (psbridge approve {shlex.quote(str(package.path))} --key KEY), then {then}"])


def prepare(request: GateRequest) -> PreparedRun:
    """Read the package once, check it and (with a policy) its approvals; choose steps and host.

    With a policy (`--require-approval`) the package must be approved by enough people.
    Without one, `run` still sends only a package that is exactly what psbridge renders from
    its plan.json (a hand edit with updated hashes never runs, approved or not). `check`
    reads a package of another psbridge version or a hand-edited one too, but sends only the
    probes and session steps psbridge renders itself from the package's parameters. A graph
    package's signout.ps1 is judged with the rest and taken from this object at the session's end.
    """
    package = read_package(request.package_dir).require_intact()
    if request.for_check and request.policy is None:
        package = package.as_rendered()
    elif request.policy is None:
        package.require_reproducible()
    approval = None
    if request.policy is not None:
        from ..approvals import require_approved

        approval = require_approved(package, request.policy)
    # Judged here: a graph package without its sign-out is refused before any connection.
    package.signout_script  # noqa: B018
    host = resolve_host(request.host_option, package, require_server=request.policy is not None)
    selected = select_steps(package.steps, request.from_step)
    additional = additional_servers(package, selected, request.from_step, request.from_server)
    return PreparedRun(package, selected, host, approval, additional)
