"""Profile graph: the article's change with Microsoft Graph PowerShell (MSOnline is retired)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.render import render_package

from support.pwsh_grammar import syntax_errors, typographic_quotes_outside_literals

GOLDEN = Path(__file__).parent / "golden" / "graph"
APP = {"client_id": "11111111-2222-3333-4444-555555555555", "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
       "certificate_thumbprint": "0123456789ABCDEF0123456789ABCDEF01234567"}


def graph_params(**graph: Any) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = "graph"
    if graph:
        data["graph"] = graph
    return data


def scripts(data: dict[str, Any]) -> dict[str, str]:
    files = render_package(parse_parameters(data)).files
    return {k: v[3:].decode("utf-8") for k, v in files.items() if k.endswith(".ps1")}


@pytest.fixture(scope="module")
def default() -> dict[str, str]:
    return scripts(graph_params())


@pytest.mark.parametrize("name", ["01-prerequisites", "02-certificate", "03-session", "04-connect",
                                  "05-set-certificate", "06-spn", "07-crm-settings", "08-tenant-id"])
def test_graph_steps_match_golden_files(name: str) -> None:
    data = render_package(parse_parameters(graph_params())).files[f"steps/{name}.ps1"]
    golden = GOLDEN / f"{name}.ps1"
    if os.environ.get("PSBRIDGE_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(data)
    assert data == golden.read_bytes()


@pytest.mark.parametrize("graph", [{}, APP])
def test_every_graph_script_parses(graph: dict[str, Any]) -> None:
    for name, text in scripts(graph_params(**graph)).items():
        assert syntax_errors(text) == [], name
        assert typographic_quotes_outside_literals(text) == [], name


def test_spn_step_reads_modifies_and_writes_key_credentials(default: dict[str, str]) -> None:
    spn = default["steps/06-spn.ps1"]
    code = "\n".join(line for line in spn.splitlines() if not line.lstrip().startswith("#"))
    assert "Get-MgServicePrincipal -Filter ('appId eq ''{0}''' -f $CRMAppId)" in code
    assert "$CRMAppId = '00000007-0000-0000-c000-000000000000'" in code
    assert "-Property 'id', 'appId', 'keyCredentials', 'servicePrincipalNames'" in code
    assert "Add-MgServicePrincipalKey" not in code
    assert "Update-MgServicePrincipal -ServicePrincipalId $CRM.Id @Update" in code
    assert "Type = 'AsymmetricX509Cert'; Usage = 'Verify'; Key = $CERCertificateBin" in code
    assert "StartDateTime = $Certificate.NotBefore.ToUniversalTime(); EndDateTime = $NotAfter" in code
    assert "$NotAfter = $Certificate.NotAfter.ToUniversalTime()" in code
    # SPNs are merged into a copy of the existing names, never replaced by one name
    assert "foreach ($Name in @($CRM.ServicePrincipalNames)) {" in code
    assert "$Update['ServicePrincipalNames'] = $Names.ToArray()" in code
    assert "Already configured:" in code
    assert "$Removed++" not in code


def test_remove_expired_credentials_option_is_gone() -> None:
    """The templates no longer read it (step 06 replaces only its own short credential): the key is refused."""
    from psbridge.errors import UserError

    spn = scripts(graph_params())["steps/06-spn.ps1"]
    assert "$Removed" not in spn and "expired credentials removed" not in spn
    with pytest.raises(UserError, match="graph.remove_expired_credentials: unknown key"):
        parse_parameters(graph_params(remove_expired_credentials=True))


def test_connect_interactive_token_and_app_only(default: dict[str, str]) -> None:
    connect = default["steps/04-connect.ps1"]
    assert "$Environment = 'Global'" in connect
    assert ("Connect-MgGraph -Scopes 'Application.ReadWrite.All', 'Organization.Read.All' "
            "-Environment $Environment -NoWelcome") in connect
    assert "Connect-MgGraph -AccessToken $AccessToken -Environment $Environment -NoWelcome" in connect
    app = scripts(graph_params(**APP))["steps/04-connect.ps1"]
    assert (f"Connect-MgGraph -ClientId '{APP['client_id']}' -TenantId '{APP['tenant_id']}' "
            f"-CertificateThumbprint '{APP['certificate_thumbprint']}' -Environment $Environment -NoWelcome") in app
    assert "-Scopes" not in app


def test_plan_inputs_follow_the_sign_in(default: dict[str, str]) -> None:
    token = json.loads(render_package(parse_parameters(graph_params())).files["plan.json"])
    assert token["steps"][3]["inputs"] == {"AccessToken": "graph_token"}
    app = json.loads(render_package(parse_parameters(graph_params(**APP))).files["plan.json"])
    assert app["steps"][3]["inputs"] == {}
    assert app["parameters"]["graph"]["client_id"] == APP["client_id"]


def test_changing_steps_are_idempotent_and_say_so(default: dict[str, str]) -> None:
    for step in ("02-certificate", "06-spn", "07-crm-settings"):
        text = default[f"steps/{step}.ps1"]
        assert "Write-Output ('Already configured:" in text or "Write-Output 'Already configured:" in text, step
        assert "    return\r\n" in text, step


def test_tenant_and_prerequisites_use_graph(default: dict[str, str]) -> None:
    assert "$CRMContextId = (Get-MgOrganization).Id" in default["steps/08-tenant-id.ps1"]
    pre = default["steps/01-prerequisites.ps1"]
    for module in ("Microsoft.Graph.Authentication", "Microsoft.Graph.Applications",
                   "Microsoft.Graph.Identity.DirectoryManagement"):
        assert f"'{module}'" in pre
    assert "MSOnline" not in "\n".join(l for l in pre.splitlines() if not l.startswith("#"))


def test_review_explains_the_differences() -> None:
    review = render_package(parse_parameters(graph_params())).files["REVIEW.md"].decode()
    assert "## Profile graph: differences from the article" in review
    assert "MSOnline module in 2025" in review
    assert "Microsoft.Graph.Authentication, .Applications and" in review
    assert "(MSOnline, 64-bit)" not in review and "Enable-PSRemoting configures" not in review


@pytest.mark.parametrize("graph,expected", [
    ({"client_id": APP["client_id"]}, "graph: app-only sign-in needs client_id, tenant_id and certificate_thumbprint together"),
    ({"certificate_thumbprint": "xyz", "client_id": APP["client_id"], "tenant_id": APP["tenant_id"]}, "graph.certificate_thumbprint: must be a certificate thumbprint"),
    ({"client": "x"}, "graph.client: unknown key"),
])
def test_bad_graph_tables(graph: dict[str, Any], expected: str) -> None:
    from psbridge.errors import UserError

    with pytest.raises(UserError) as info:
        parse_parameters(graph_params(**graph))
    assert expected in "\n".join(info.value.problems)


def test_graph_table_needs_profile_graph() -> None:
    from psbridge.errors import UserError

    data = copy.deepcopy(EXAMPLE)
    data["graph"] = {"client_id": APP["client_id"], "tenant_id": APP["tenant_id"],
                     "certificate_thumbprint": APP["certificate_thumbprint"]}
    with pytest.raises(UserError, match='graph: the \\[graph\\] table belongs to profile = "graph"'):
        parse_parameters(data)
