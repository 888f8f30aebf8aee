"""Sovereign clouds: the S2S metadata URL and the Microsoft Graph environment follow the site's host.

Only values Microsoft documents are used:
- commercial (and GCC, which shares the commercial hosts): the article's
  https://accounts.accesscontrol.windows.net/metadata/json/1 and Connect-MgGraph's default Global;
- GCC High (SharePoint Online on *.sharepoint.us, per "Office 365 U.S. Government GCC High
  endpoints"): https://login.microsoftonline.us/metadata/json/1 ("Connect Dynamics 365
  on-premises to Exchange Online": S2SDefaultAuthorizationServerMetadataUrl for GCC High) and
  Get-MgEnvironment's USGov (graph.microsoft.us, the GCC High endpoint list);
- 21Vianet (*.sharepoint.cn) and DoD (*.sharepoint-mil.us): no documented metadata URL for the
  CRM's S2S setting, so validation refuses them (exit 2, naming sharepoint.sites).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from psbridge.check import evaluate
from psbridge.errors import UserError
from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.render import render_package

from support.probe_states import state
from support.pwsh_grammar import syntax_errors

GCC_HIGH_URL = "https://login.microsoftonline.us/metadata/json/1"
COMMERCIAL_URL = "https://accounts.accesscontrol.windows.net/metadata/json/1"


def params(site: str, profile: str = "msonline") -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = profile
    data["sharepoint"]["sites"] = [site]
    return data


def files(data: dict[str, Any]) -> dict[str, bytes]:
    return render_package(parse_parameters(data)).files


def text(data: dict[str, Any], name: str) -> str:
    return files(data)[name][3:].decode("utf-8")


@pytest.mark.parametrize("profile", ["msonline", "graph"])
def test_gcc_high_site_gets_the_gcc_high_metadata_url(profile: str) -> None:
    data = params("https://contoso.sharepoint.us/sites/sales", profile)
    step = text(data, "steps/07-crm-settings.ps1")
    assert f"'{GCC_HIGH_URL}'" in step and COMMERCIAL_URL not in step
    assert syntax_errors(step) == []
    plan = json.loads(files(data)["plan.json"])
    assert plan["constants"]["metadata_url"] == GCC_HIGH_URL


def test_gcc_high_graph_connects_to_usgov() -> None:
    data = params("https://contoso.sharepoint.us/sites/sales", "graph")
    connect = text(data, "steps/04-connect.ps1")
    assert "$Environment = 'USGov'" in connect and "'Global'" not in connect
    assert syntax_errors(connect) == []
    plan = json.loads(files(data)["plan.json"])
    assert plan["constants"]["graph_environment"] == "USGov"
    # the probes sign in with the package's own step 04: nothing else connects


def test_commercial_graph_connects_to_global_explicitly() -> None:
    data = params("https://contoso.sharepoint.com/sites/sales", "graph")
    connect = text(data, "steps/04-connect.ps1")
    code = [line for line in connect.splitlines() if "Connect-MgGraph" in line and not line.lstrip().startswith("#")]
    assert "$Environment = 'Global'" in connect
    assert len(code) == 2 and all("-Environment $Environment" in line for line in code)
    assert json.loads(files(data)["plan.json"])["constants"]["graph_environment"] == "Global"


def test_gcc_high_msonline_connects_to_usgovernment() -> None:
    data = params("https://contoso.sharepoint.us/sites/sales")
    connect = text(data, "steps/04-connect.ps1")
    assert "Connect-MsolService -Credential $msolcred -AzureEnvironment 'USGovernment'" in connect
    assert json.loads(files(data)["plan.json"])["constants"]["azure_environment"] == "USGovernment"


def test_commercial_msonline_keeps_the_article_text() -> None:
    connect = text(params("https://contoso.sharepoint.com/sites/sales"), "steps/04-connect.ps1")
    assert "Connect-MsolService -Credential $msolcred\r\n" in connect or connect.rstrip().endswith(
        "Connect-MsolService -Credential $msolcred")


@pytest.mark.parametrize("site,cloud", [
    ("https://contoso.sharepoint.cn/sites/sales", "21Vianet"),
    ("https://contoso.sharepoint-mil.us/sites/sales", "DoD"),
])
def test_clouds_without_documented_values_are_refused(site: str, cloud: str) -> None:
    with pytest.raises(UserError) as info:
        parse_parameters(params(site))
    problems = "\n".join(info.value.problems)
    assert problems.startswith("sharepoint.sites[1]: ") and cloud in problems and "metadata URL" in problems


def test_refused_cloud_exits_2_naming_the_field(psbridge, tmp_path: Path) -> None:
    from psbridge.parameters import EXAMPLE as example_data

    lines = ['name = "contoso"', "[certificate]",
             *(f"{k} = {json.dumps(v)}" for k, v in example_data["certificate"].items()),
             "[crm]", *(f"{k} = {json.dumps(v)}" for k, v in example_data["crm"].items()),
             "[sharepoint]", 'sites = ["https://contoso.sharepoint.cn/sites/sales"]']
    (tmp_path / "p.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = psbridge("validate", "p.toml", cwd=tmp_path)
    assert result.exit_code == 2 and "sharepoint.sites[1]:" in result.stderr


def test_check_compares_step_07_with_the_derived_url() -> None:
    data = params("https://contoso.sharepoint.us/sites/sales")
    plan = json.loads(files(data)["plan.json"])
    answers = state("fully configured")  # commercial URL on the server
    verdict = next(v for v in evaluate(plan, answers).verdicts if v.id == "crm-settings")
    assert verdict.verdict == "will change" and GCC_HIGH_URL in (verdict.after or "")
    answers["crm"]["server_settings"]["S2SDefaultAuthorizationServerMetadataUrl"] = GCC_HIGH_URL
    verdict = next(v for v in evaluate(plan, answers).verdicts if v.id == "crm-settings")
    assert verdict.verdict == "in place"
