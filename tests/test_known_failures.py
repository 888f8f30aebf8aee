"""Known failures from Microsoft's "Troubleshoot server-based authentication" that step 01 and check name.

https://learn.microsoft.com/dynamics365/customerengagement/on-premises/admin/troubleshooting-server-based-authentication
"Private key not found" from CertificateReconfiguration.ps1: two certificates with the same subject
in the local certificate store; fix: remove the ones not needed (Certificate Manager MMC snap-in).
"""

from __future__ import annotations

import copy
import json

import pytest

from generator.check import evaluate
from generator.parameters import EXAMPLE, parse_parameters
from generator.render import render_package
from probe_states import OTHER, state
from pwsh_grammar import syntax_errors

ARTICLE = "troubleshooting-server-based-authentication"


@pytest.mark.parametrize("profile", ["msonline", "graph"])
def test_step_01_refuses_two_certificates_with_the_cer_subject(profile: str) -> None:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = profile
    text = render_package(parse_parameters(data)).files["steps/01-prerequisites.ps1"].decode("utf-8-sig")
    assert syntax_errors(text) == []
    assert "Where-Object { $_.Subject -eq $CerSubject }" in text
    assert "Private key not found" in text and "$Problems.Add(" in text
    assert ARTICLE in text


def test_check_names_the_cause_and_the_documented_fix() -> None:
    answers = state("fully configured")
    answers["certificate"]["store"].append(dict(answers["certificate"]["store"][0], thumbprint=OTHER))
    plan = json.loads(render_package(parse_parameters(EXAMPLE)).files["plan.json"])
    report = evaluate(plan, answers)
    cert = next(v for v in report.verdicts if v.id == "certificate")
    assert cert.verdict == "blocked"
    assert "Private key not found" in cert.cause and "same subject" in cert.cause
    assert "Certificate Manager" in cert.fix and ARTICLE in cert.fix
    assert report.as_json()["verdicts"][1]["cause"] == cert.cause
