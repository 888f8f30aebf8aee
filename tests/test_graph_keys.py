"""Profile graph: step 06 and the entra probe recognise the CRM certificate by its key.

Graph's keyCredential.customKeyIdentifier is binary whose bytes are the TEXT of the hex
thumbprint, so BitConverter.ToString of it is 60 hex characters (with dashes removed) and
never equals X509Certificate2.Thumbprint. Microsoft's ConfigureCrmServerSideSync.ps1 compares
the key itself (the base64 of the certificate's raw data); `key` is returned only when one
service principal is read with $select=keyCredentials (keyCredential resource type,
https://learn.microsoft.com/graph/api/resources/keycredential).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from psbridge.check import evaluate
from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.render import render_package

from support.probe_states import THUMB, state
from support.pwsh_grammar import syntax_errors


def graph_files() -> dict[str, str]:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = "graph"
    files = render_package(parse_parameters(data)).files
    return {k: v[3:].decode("utf-8").replace("\r\n", "\n") for k, v in files.items() if k.endswith(".ps1")}


def code(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def test_step_06_matches_the_key_not_the_custom_key_identifier() -> None:
    spn = code(graph_files()["steps/06-spn.ps1"])
    assert "BitConverter" not in spn
    assert "CustomKeyIdentifier) -replace" not in spn
    assert "[System.Convert]::ToBase64String($Key.Key) -eq $CredentialValue" in spn
    # key is returned only for one service principal read with $select (-Property)
    assert "Get-MgServicePrincipal -ServicePrincipalId $Found[0].Id -Property 'id', 'appId', 'keyCredentials', 'servicePrincipalNames'" in spn
    # a key credential without its key cannot be compared nor written back: stop
    assert "if ($null -eq $Key.Key) {" in spn
    # the SDK returns $null for an empty collection: @($null) has one element
    assert "@($CRM.KeyCredentials | Where-Object { $null -ne $_ })" in spn
    assert syntax_errors(graph_files()["steps/06-spn.ps1"]) == []


def test_graph_entra_probe_reports_the_key_per_credential() -> None:
    probe = code(graph_files()["probes/entra.ps1"])
    assert "BitConverter]::ToString($_.CustomKeyIdentifier)" not in probe
    assert "[System.Convert]::ToBase64String($Key.Key) -eq $CredentialValue" in probe
    for field in ("key_sha256", "matches_certificate", "thumbprint", "start", "end"):
        assert f"{field} " in probe or f"{field}=" in probe, field
    assert ".ToString('o')" in probe
    assert "ToString('yyyy-MM-ddTHH:mm:ssZ')" not in probe
    assert "$Cer.Import($CerPath)" in probe
    assert syntax_errors(graph_files()["probes/entra.ps1"]) == []


def _plan() -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = "graph"
    plan = json.loads(render_package(parse_parameters(data)).files["plan.json"])
    plan["certificate"] = {"thumbprint": THUMB, "not_after": "2036-01-01T00:00:00Z"}
    return plan


def _spn(answers: dict[str, Any]) -> Any:
    return next(v for v in evaluate(_plan(), answers).verdicts if v.id == "spn")


def test_check_uses_matches_certificate_from_the_probe() -> None:
    answers = state("fully configured")
    # What the old probe reported for the right key: BitConverter of the thumbprint's text.
    text_hex = THUMB.encode("ascii").hex().upper()
    answers["entra"]["key_credentials"] = [
        {"thumbprint": None, "custom_key_identifier": text_hex, "key_sha256": "ab" * 32, "matches_certificate": True,
         "start": "2026-01-01T00:00:00.0000000Z", "end": "2036-01-01T00:00:00.0000000Z"}]
    assert _spn(answers).verdict == "in place"
    answers["entra"]["key_credentials"][0]["matches_certificate"] = False
    assert _spn(answers).verdict == "will change"


def test_check_reads_the_thumbprint_derived_from_the_key() -> None:
    answers = state("fully configured")
    answers["entra"]["key_credentials"] = [
        {"thumbprint": THUMB.lower(), "key_sha256": "cd" * 32, "matches_certificate": None,
         "start": "2026-01-01T00:00:00.0000000Z", "end": "2036-01-01T00:00:00.0000000Z"}]
    assert _spn(answers).verdict == "in place"


# -- defect: an expired matching credential counted as in place ------------------------------


def test_step_06_counts_a_matching_credential_only_while_valid_through_not_after() -> None:
    spn = code(graph_files()["steps/06-spn.ps1"])
    assert "$NotAfter = $Certificate.NotAfter.ToUniversalTime()" in spn
    assert ("if ($null -ne $Key.EndDateTime -and $Key.EndDateTime.ToUniversalTime() -ge $NotAfter.AddSeconds(-1)) {\n"
            "            $HasCertificate = $true\n"
            "        }\n"
            "        else {\n"
            "            $Replaced++\n"
            "            continue\n"
            "        }") in spn
    assert "if (-not $HasCertificate -or $Replaced -gt 0) {" in spn
    assert "EndDateTime = $NotAfter" in spn
    assert "$Removed" not in spn and "expired credentials removed" not in spn


def test_check_replaces_a_matching_credential_that_ends_before_the_certificate() -> None:
    answers = state("fully configured")
    answers["entra"]["key_credentials"] = [
        {"thumbprint": THUMB, "matches_certificate": True,
         "start": "2025-01-01T00:00:00.0000000Z", "end": "2026-01-01T00:00:00.0000000Z"}]
    spn = _spn(answers)
    assert spn.verdict == "will change"
    assert "replace credential" in spn.detail and "2026-01-01" in spn.detail
    # valid through the certificate's NotAfter (2036-01-01, plan): in place
    answers["entra"]["key_credentials"][0]["end"] = "2036-01-01T00:00:00.0000000Z"
    assert _spn(answers).verdict == "in place"


def test_check_takes_not_after_from_the_certificate_probe_without_a_plan_certificate() -> None:
    plan = _plan()
    del plan["certificate"]
    answers = state("fully configured")
    answers["certificate"]["cer_not_after"] = "2028-06-01T00:00:00.0000000Z"
    answers["entra"]["key_credentials"] = [
        {"thumbprint": THUMB, "matches_certificate": True, "start": "2026-01-01T00:00:00Z", "end": "2027-06-01T00:00:00Z"}]
    spn = next(v for v in evaluate(plan, answers).verdicts if v.id == "spn")
    assert spn.verdict == "will change"


def test_certificate_probe_reports_the_cer_not_after_round_trip() -> None:
    probe = code(graph_files()["probes/certificate.ps1"])
    assert "$Result.cer_not_after = $Cer.NotAfter.ToUniversalTime().ToString('o')" in probe
