"""Step 02 proves that CertificateReconfiguration.ps1 succeeded (both profiles).

An `exit N` in a script called with & ends that script and sets $LASTEXITCODE; nothing throws
(about_Automatic_Variables: $LASTEXITCODE; about_Scripts). Write-Host writes to the Information
stream (about_Output_Streams). So after the call the step fails on a non-zero exit code and
proves the result: the certificate with its private key in LocalMachine\\My, the service
account's read access to the key by SID (in the CNG or CSP machine key store) and the CRM's
certificate record (Get-CrmCertificate) of the configured type with the certificate's data.
"""

from __future__ import annotations

import copy

import pytest

from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.render import render_package

from support.pwsh_grammar import syntax_errors


def step(profile: str, name: str = "steps/02-certificate.ps1") -> str:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = profile
    return render_package(parse_parameters(data)).files[name][3:].decode("utf-8").replace("\r\n", "\n")


@pytest.mark.parametrize("profile", ["msonline", "graph"])
def test_step_02_fails_on_exit_code_and_proves_the_result(profile: str) -> None:
    text = step(profile)
    assert syntax_errors(text) == []
    call = text.index("& $CertificateScript")
    reset = text.index("$global:LASTEXITCODE = 0")
    # Issue 19 item 12: the exit code is kept right after the call and judged after the proof.
    check = text.index("$ExitCode = $global:LASTEXITCODE")
    assert reset < call < check < text.index("if ($Problems.Count -gt 0) {") < text.index("if ($ExitCode -ne 0) {")
    after = text[check:]
    assert "Get-ChildItem -LiteralPath 'Cert:\\LocalMachine\\My' | Where-Object { $_.Thumbprint -eq $Wanted.Thumbprint }" in after
    assert "-not $Installed[0].HasPrivateKey" in after
    assert "Get-PSBridgeKeyAccess $Installed[0] (Get-PSBridgeAccountSid $ServiceAccount)" in after
    assert ("Get-CrmCertificate | Where-Object { $_.CertificateType -eq $CertificateType -and "
            "($_.Data -replace '\\s', '') -eq $WantedData }") in after
    assert "$WantedData = [System.Convert]::ToBase64String($Wanted.RawData)" in after
    assert "$ServiceAccount = 'contoso\\CRMWebApplicationService'" in text
    assert "$CertificateType = 'S2STokenIssuer'" in text


@pytest.mark.parametrize("profile", ["msonline", "graph"])
def test_key_access_compares_sids_in_both_key_stores(profile: str) -> None:
    text = step(profile)
    assert "return 'S-1-5-20'" in text
    assert ".Translate([System.Security.Principal.SecurityIdentifier])" in text
    assert "GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier])" in text
    assert "'Microsoft\\Crypto\\Keys'" in text and "'Microsoft\\Crypto\\RSA\\MachineKeys'" in text
    assert "[int]::MinValue" in text  # GENERIC_READ shows as a number
    assert "IdentityReference.Value -eq $ServiceAccount" not in text


def test_graph_step_02_is_in_place_only_when_the_key_is_readable() -> None:
    text = step("graph")
    assert "if ($Readable -and $CurrentThumbprints -contains $Wanted.Thumbprint) {" in text
