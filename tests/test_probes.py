"""The probe scripts `psbridge check` sends: what they read and how (text checks and the grammar)."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from psbridge import catalogue
from psbridge.check import evaluate
from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.render import render_package

from support.probe_states import state
from support.pwsh_grammar import syntax_errors


def probes(profile: str = "msonline", **crm: Any) -> dict[str, str]:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = profile
    data["crm"].update(crm)
    files = render_package(parse_parameters(data)).files
    return {k.removeprefix("probes/"): v[3:].decode("utf-8") for k, v in files.items() if k.startswith("probes/")}


def code(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


@pytest.mark.parametrize("profile", ["msonline", "graph"])
def test_every_probe_parses(profile: str) -> None:
    for name, text in probes(profile).items():
        assert syntax_errors(text) == [], name


def test_certificate_probe_compares_sids_in_both_key_stores() -> None:
    """Names are localized and come in several forms: the probe uses the SID include of step 02."""
    cert = code(probes()["certificate.ps1"])
    assert "function Get-PSBridgeKeyAccess(" in cert and "function Get-PSBridgeAccountSid(" in cert
    assert "Get-PSBridgeKeyAccess $_ $AccountSid" in cert
    assert "$AccountSid = Get-PSBridgeAccountSid $ServiceAccount" in cert
    assert "$ServiceAccount = 'contoso\\CRMWebApplicationService'" in cert
    # no comparison of account names as text, no rights matched as text
    assert "IdentityReference.Value -eq $ServiceAccount" not in cert
    assert "FileSystemRights.ToString()" not in cert
    assert not hasattr(catalogue, "service_account_identity")


def test_key_access_facts_reach_the_certificate_verdict() -> None:
    answers = state("fully configured")
    answers["certificate"]["store"][0].update(
        key_readable=None, key_access={"key_file": "C:\\ProgramData\\Microsoft\\Crypto\\Keys\\k", "key_store": "CNG",
                                       "readable": None, "via": None,
                                       "note": "read access is granted only to S-1-5-21-1-2-3-1001"})
    plan = json.loads(render_package(parse_parameters(EXAMPLE)).files["plan.json"])
    plan["certificate"] = {"thumbprint": answers["certificate"]["cer_thumbprint"]}
    cert = next(v for v in evaluate(plan, answers).verdicts if v.id == "certificate")
    assert cert.verdict == "in place" and "S-1-5-21-1-2-3-1001" in cert.detail
    answers["certificate"]["store"][0].update(key_readable=False)
    answers["certificate"]["store"][0]["key_access"].update(readable=False, via="denied", note=None)
    cert = next(v for v in evaluate(plan, answers).verdicts if v.id == "certificate")
    assert cert.verdict == "will change" and "cannot read the private key" in cert.detail
    assert re.search(r"denied", cert.detail)
