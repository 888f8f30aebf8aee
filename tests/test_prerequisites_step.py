"""Step 01 proves, read-only, what later steps need.

- Microsoft Graph PowerShell: SDK v2+ (Connect-MgGraph -AccessToken takes a SecureString from
  v2; https://learn.microsoft.com/powershell/microsoftgraph/migration-steps) and, on Windows
  PowerShell 5.1, .NET Framework 4.7.2+ (https://learn.microsoft.com/powershell/microsoftgraph/installation;
  Release 461808: https://learn.microsoft.com/dotnet/framework/migration-guide/how-to-determine-which-versions-are-installed),
  and a trial Import-Module.
- The CRM cmdlets reach the Deployment Web Service (a read-only Get-CrmSetting); over PSRP
  this is a second hop (CredSSP or a RunAs session configuration).
"""

from __future__ import annotations

import copy

import pytest

from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.render import render_package

from support.pwsh_grammar import syntax_errors


def files(profile: str) -> dict[str, bytes]:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = profile
    return render_package(parse_parameters(data)).files


def step01(profile: str) -> str:
    return files(profile)["steps/01-prerequisites.ps1"][3:].decode("utf-8").replace("\r\n", "\n")


def test_graph_step_01_checks_sdk_version_dotnet_and_imports() -> None:
    text = step01("graph")
    assert syntax_errors(text) == []
    assert "$GraphAuthentication.Version.Major -lt 2" in text
    assert "Get-ItemProperty -LiteralPath 'HKLM:\\SOFTWARE\\Microsoft\\NET Framework Setup\\NDP\\v4\\Full'" in text
    assert "[int]$NetRelease -lt 461808" in text
    assert "Import-Module $Module -ErrorAction Stop" in text


@pytest.mark.parametrize("profile", ["msonline", "graph"])
def test_step_01_tries_the_deployment_web_service_and_names_the_second_hop(profile: str) -> None:
    text = step01(profile)
    assert syntax_errors(text) == []
    assert "$null = Get-CrmSetting -SettingType 'WebAddressSettings'" in text
    assert "--auth credssp" in text and "RunAs" in text
    assert text.index("Get-CrmSetting") < text.index("if ($Problems.Count -gt 0) {")
    review = files(profile)["REVIEW.md"].decode("utf-8")
    assert "`--auth credssp`" in review and "second hop" in review


@pytest.mark.parametrize("profile", ["msonline", "graph"])
def test_step_01_and_09_refuse_the_32_bit_powershell(profile: str) -> None:
    """In x86 Windows PowerShell the 64-bit snap-in registration and HKLM:\\SOFTWARE\\Microsoft\\MSCRM are
    invisible (WOW64 registry redirection), so the other checks would send the operator the wrong way."""
    from psbridge.parameters import parse_parameters
    from psbridge.render import render_package
    from support.winrm_peer.package import parameters_for

    files = render_package(parse_parameters(parameters_for(profile=profile, server="crm01",
                                                          crm={"additional_servers": ["crmfe2"]}))).files
    for rel in ("steps/01-prerequisites.ps1", "steps/09-additional-servers.ps1"):
        text = files[rel].decode("utf-8-sig")
        assert "if (-not [System.Environment]::Is64BitProcess) {" in text, rel
        assert "Run the 64-bit one (C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe)" in text
