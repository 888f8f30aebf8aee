"""`psbridge check`'s verdicts from probe answers, without a server (psbridge.check)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from psbridge.check import evaluate, parse_probe_output, ProbeError
from psbridge.parameters import example
from psbridge.render import render_package

from support.probe_states import OTHER, THUMB, state


def plan(approved: str | None = THUMB) -> dict[str, Any]:
    data = json.loads(render_package(example()).files["plan.json"])
    if approved:
        data["certificate"] = {"thumbprint": approved}
    return data


def verdicts(answers: dict[str, Any], approved: str | None = THUMB) -> dict[str, str]:
    return {v.id: v.verdict for v in evaluate(plan(approved), answers).verdicts}


def test_fresh_server_would_change_every_changing_step() -> None:
    report = evaluate(plan(), state("fresh server"))
    assert {v.id: v.verdict for v in report.verdicts} == {
        "prerequisites": "ok", "certificate": "will change", "session": "session", "connect": "session",
        "set-certificate": "session", "spn": "will change", "crm-settings": "will change", "tenant-id": "ok"}
    assert report.exit_code == 5
    spn = next(v for v in report.verdicts if v.id == "spn")
    assert spn.before == "0 credential(s), 1 SPN(s)" and spn.after == "1 credential(s), 2 SPN(s)"


def test_half_configured_after_a_failure_at_step_06() -> None:
    got = verdicts(state("half configured"))
    assert got["certificate"] == "in place"
    assert got["spn"] == "will change" and got["crm-settings"] == "will change"
    assert evaluate(plan(), state("half configured")).exit_code == 5


def test_fully_configured_changes_nothing() -> None:
    report = evaluate(plan(), state("fully configured"))
    assert {v.verdict for v in report.verdicts} <= {"in place", "ok", "session"}
    assert report.exit_code == 0


def test_wrong_certificate_on_the_server_is_blocked() -> None:
    report = evaluate(plan(), state("wrong certificate on server"))
    cert = next(v for v in report.verdicts if v.id == "certificate")
    assert cert.verdict == "blocked" and OTHER in cert.detail and THUMB in cert.detail
    assert report.exit_code == 1


def test_without_an_approved_certificate_the_server_cer_is_expected() -> None:
    assert verdicts(state("wrong certificate on server"), approved=None)["certificate"] == "in place"


def test_missing_probe_is_cannot_tell_and_exit_1() -> None:
    answers = state("fully configured")
    answers["entra"] = None
    report = evaluate(plan(), answers)
    assert {v.id: v.verdict for v in report.verdicts}["spn"] == "cannot tell"
    assert report.exit_code == 1


def test_silent_server_probe_is_exit_1_even_when_everything_else_is_in_place() -> None:
    """README: exit 1 when "a probe failed"; prerequisites changes nothing, yet unread it is no 'all well'."""
    answers = state("fully configured")
    answers["server"] = None
    report = evaluate(plan(), answers)
    got = {v.id: v.verdict for v in report.verdicts}
    assert got["prerequisites"] == "cannot tell" and got["certificate"] == "in place"
    assert report.exit_code == 1


@pytest.mark.parametrize("key,value,fragment", [
    ("elevated", False, "not elevated"),
    ("edition", "Core", "Windows PowerShell 5.1 required"),
    ("snapin", False, "snap-in not registered"),
    ("tools_script", False, "CertificateReconfiguration.ps1 not found"),
    ("modules", {"MSOnline": False}, "module MSOnline not installed"),
])
def test_unmet_prerequisites_block(key: str, value: Any, fragment: str) -> None:
    answers = state("fully configured")
    answers["server"][key] = value
    pre = next(v for v in evaluate(plan(), answers).verdicts if v.id == "prerequisites")
    assert pre.verdict == "blocked" and fragment in pre.detail


def test_two_certificates_with_one_subject_block() -> None:
    answers = state("fully configured")
    answers["certificate"]["store"].append(dict(answers["certificate"]["store"][0], thumbprint=OTHER))
    assert verdicts(answers)["certificate"] == "blocked"


def test_convertto_json_single_element_arrays_are_read_as_lists() -> None:
    answers = state("fully configured")
    answers["certificate"]["store"] = answers["certificate"]["store"][0]
    answers["crm"]["thumbprints"] = THUMB
    assert verdicts(answers)["certificate"] == "in place"


def test_wrong_tenant_blocks() -> None:
    data = plan()
    data["parameters"]["sharepoint"]["tenant_id"] = "00000000-0000-0000-0000-000000000001"
    tenant = next(v for v in evaluate(data, state("fully configured")).verdicts if v.id == "tenant-id")
    assert tenant.verdict == "blocked"


def test_probe_output_must_be_its_json_object() -> None:
    assert parse_probe_output("crm", ["noise", '{"probe": "crm", "x": 1}', ""])["x"] == 1
    with pytest.raises(ProbeError):
        parse_probe_output("crm", ["not json"])
    with pytest.raises(ProbeError):
        parse_probe_output("crm", ['{"probe": "server"}'])
