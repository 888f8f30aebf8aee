"""A step is one unit: added in one place (the registry), it is in every place that knows steps.

A dummy state-changing step is registered through `psbridge.steps.UNITS` (monkeypatched, so
nothing leaks), with its templates in a temporary folder the unit names. It must then be in
the catalogue (`steps_for`), the rendered package (its step file and plan.json entry, its
rollback script), check's verdicts (`evaluate`) and rollback's plan (`plan_rollback`). Any of
those that kept its own list of steps would miss it and fail here.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import psbridge.steps as registry
from psbridge.backout import plan_rollback
from psbridge.run_record import parse_event
from psbridge import catalogue
from psbridge.catalogue import backouts_for, steps_for
from psbridge.check import evaluate
from psbridge.package import read_package
from psbridge.parameters import EXAMPLE, example, parse_parameters
from psbridge.readings import Readings
from psbridge.render import render_package
from psbridge.steps import Backout, RollbackContext, Step, StepUnit, every_profile
from psbridge.verdicts import StepVerdict
from psbridge.writer import write_package
from support.probe_states import state

STEP_TEXT = "{{ header }}\nWrite-Output {{ ('dummy step of ' ~ p.profile) | ps }}\n"
ROLLBACK_TEXT = "# back-out of the dummy step\nparam([string] $Previous)\nWrite-Output $Previous\n"


def _verdict(readings: Readings) -> StepVerdict:
    """The dummy's own verdict: it reads the typed crm answer, so a wrong dispatch shows."""
    kind = readings.crm.certificate_type if readings.crm is not None else None
    return StepVerdict(0, "dummy", "will change", f"dummy judged {kind}")


def _values(ctx: RollbackContext) -> tuple[dict[str, Any], bool] | None:
    return {"Previous": ctx.before["crm"]["certificate_type"]}, ctx.before != ctx.after


@pytest.fixture
def dummy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StepUnit:
    """A change step registered after tenant-id, its templates in a folder of its own."""
    folder = tmp_path / "dummy-templates"
    folder.mkdir()
    (folder / "step.ps1.j2").write_text(STEP_TEXT, encoding="utf-8")
    (folder / "rollback.ps1.j2").write_text(ROLLBACK_TEXT, encoding="utf-8")
    step = Step(0, "dummy", "A dummy change", "change", needs=("prerequisites",), changes="CRM server: nothing real",
                one_template=True)
    unit = StepUnit("dummy", every_profile(step), renewal_rank=95, verdict=_verdict,
                    backout=Backout("dummy", ("crm",), script="rollback/09-dummy.ps1", values=_values),
                    template_dir=folder)
    units = list(registry.UNITS)
    units.insert([u.id for u in units].index("tenant-id") + 1, unit)
    monkeypatch.setattr(registry, "UNITS", tuple(units))
    return unit


def test_a_registered_step_is_in_the_catalogue(dummy: StepUnit) -> None:
    steps = steps_for(example())
    assert [s.id for s in steps][-2:] == ["tenant-id", "dummy"]
    assert steps[-1].index == 9 and steps[-1].file == "steps/09-dummy.ps1"
    assert catalogue.BACKOUTS["dummy"] is dummy.backout
    assert [b.step_id for b in backouts_for(example())] == ["certificate", "spn", "crm-settings", "dummy"]
    renewal = dict(EXAMPLE, certificate=dict(EXAMPLE["certificate"], replaces="B" * 40))
    in_renewal = [s.id for s in steps_for(parse_parameters(renewal))]
    assert in_renewal[in_renewal.index("tenant-id"):] == ["tenant-id", "dummy", "verify", "retire-previous"]


def test_a_registered_step_is_rendered_into_the_package(dummy: StepUnit) -> None:
    files = render_package(example()).files
    assert files["steps/09-dummy.ps1"].decode("utf-8-sig").splitlines() == [
        "# psbridge step 09/09: dummy - A dummy change", "Write-Output 'dummy step of msonline'"]
    entry = json.loads(files["plan.json"])["steps"][-1]
    assert {k: entry[k] for k in ("index", "id", "file", "changes_state")} == {
        "index": 9, "id": "dummy", "file": "steps/09-dummy.ps1", "changes_state": True}
    assert files["rollback/09-dummy.ps1"].decode("utf-8-sig").startswith("# back-out of the dummy step")


def test_check_asks_the_registered_step_for_its_verdict(dummy: StepUnit) -> None:
    plan = json.loads(render_package(example()).files["plan.json"])
    report = evaluate(plan, state("fresh server"))
    verdict = next(v for v in report.verdicts if v.id == "dummy")
    assert (verdict.index, verdict.verdict, verdict.detail) == (9, "will change", "dummy judged S2STokenIssuer")


def test_rollback_plans_the_registered_steps_back_out(dummy: StepUnit, tmp_path: Path) -> None:
    package = read_package(write_package(render_package(example()), tmp_path / "out"))
    assert package.rollback_scripts["dummy"].startswith("# back-out of the dummy step")
    crm = state("fresh server")["crm"]
    events = [parse_event(e) for e in (
        {"event": "run-start", "started": "t", "tool_version": "v", "package": "contoso",
         "package_digest": package.digest},
        {"event": "state", "when": "before", "index": 9, "id": "dummy", "readings": {"crm": crm}},
        {"event": "step-end", "total": 9, "title": "Dummy", "index": 9, "id": "dummy", "state": "ok"},
        {"event": "state", "when": "after", "index": 9, "id": "dummy",
         "readings": {"crm": dict(crm, certificate_type="X")}},
    )]
    plan = plan_rollback(package, events, "record.jsonl", "0" * 64)
    assert [(s.step.id, s.file, s.parameters) for s in plan.scripted] == [
        ("dummy", "rollback/09-dummy.ps1", {"Previous": "S2STokenIssuer"})]


def test_without_the_registration_the_dummy_is_nowhere() -> None:
    """The same checks without the fixture: the registry, not the test, put the dummy there."""
    assert "dummy" not in [s.id for s in steps_for(example())]
    assert "steps/09-dummy.ps1" not in render_package(example()).files
    assert "dummy" not in catalogue.BACKOUTS


def test_a_unit_without_a_verdict_is_a_session_step(dummy: StepUnit, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step whose unit has no verdict function is reported as setting up the session."""
    units = tuple(replace(u, verdict=None) if u.id == "dummy" else u for u in registry.UNITS)
    monkeypatch.setattr(registry, "UNITS", units)
    plan = json.loads(render_package(example()).files["plan.json"])
    verdict = next(v for v in evaluate(plan, state("fresh server")).verdicts if v.id == "dummy")
    assert verdict.verdict == "session"


def test_every_unit_finds_its_templates_by_convention() -> None:
    """Each unit's step (per profile) and scripted back-out templates are in templates/steps/<id>/, and every
    folder there belongs to a unit: a step's PowerShell is found where its module says."""
    from importlib.resources import files

    from psbridge.render import _environments

    env, _ = _environments()
    root = Path(str(files("psbridge.templates"))) / "steps"
    for unit in registry.UNITS:
        for profile in registry.PROFILES:
            name = unit.step(profile).template(profile)
            assert name.startswith(f"steps/{unit.id}/") and env.get_template(name)
            for backout in (unit.backout, unit.renewal_backout):
                if backout is not None and backout.script:
                    assert env.get_template(backout.template(profile)).filename.startswith(str(root / unit.id))
    assert sorted(p.name for p in root.iterdir()) == sorted(u.id for u in registry.UNITS)
