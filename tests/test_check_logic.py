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


# --------------------------------------------------------------------------- typed probe answers


def test_thumbprint_is_forty_hex_digits_upper_case() -> None:
    from psbridge.thumbprint import Thumbprint

    assert Thumbprint.parse("ab" * 20) == "AB" * 20 and isinstance(Thumbprint.of("ab" * 20), Thumbprint)
    for bad in ("", "AB" * 19, "ZZ" * 20, None, 40, ["AB" * 20]):
        assert Thumbprint.of(bad) is None
    with pytest.raises(ValueError, match="40 hexadecimal digits"):
        Thumbprint.parse("AB" * 19)


def test_probe_answers_are_read_leniently_as_the_probes_print_them() -> None:
    """ConvertTo-Json: one element -> the element, none -> null; unknown keys ignored; wrong types read as missing."""
    from psbridge.readings import CertificateReading, CrmReading, EntraReading, ServerReading

    cert = CertificateReading.of({"cer_thumbprint": THUMB.lower(), "store": {"thumbprint": THUMB, "extra": 1,
                                                                             "has_private_key": "yes"}})
    assert cert.cer_thumbprint == THUMB and len(cert.store) == 1 and cert.store[0].thumbprint == THUMB
    assert cert.store[0].has_private_key is None and cert.store[0].key_access == {}
    assert CertificateReading.of({"store": None}).store == () and CertificateReading.of({}).cer_thumbprint is None
    crm = CrmReading.of({"thumbprints": THUMB.lower(), "server_settings": "not an object"})
    assert crm.thumbprints == [THUMB] and crm.server_settings == {} and crm.setting("x") == ""
    dated = CrmReading.of({"thumbprints": [OTHER],
                           "certificates": {"thumbprint": THUMB, "not_after": "2030-01-01T00:00:00Z"}})
    assert dated.thumbprints == [THUMB] and dated.certificates[0].not_after is not None
    entra = EntraReading.of({"service_principal_found": True, "service_principal_names": "A/b",
                             "key_credentials": [{"key_id": "k", "thumbprint": "not hex", "end": "2030-01-01"}, 7]})
    assert entra.service_principal_names == ("A/b",) and entra.has_name("a/B") and entra.malformed_keys
    assert entra.key_credentials[0].thumbprint is None and entra.key_credentials[0].end_text == "2030-01-01"
    server = ServerReading.of({"edition": "Desktop", "modules": {"MSOnline": 1}, "pfx_file": "True"})
    assert server.modules == {"MSOnline": True} and server.pfx_file and not server.reports_tools_dir
    assert ServerReading.of({"tools_dir": None}).reports_tools_dir
