"""crm.tools_dir: optional. Left out, the steps read the install folder from the registry."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from psbridge.check import evaluate
from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.render import render_package

from support.probe_states import state
from support.pwsh_grammar import syntax_errors

REGISTRY = "Get-ItemProperty -LiteralPath 'HKLM:\\SOFTWARE\\Microsoft\\MSCRM' -Name 'CRM_Server_InstallDir'"
USES_TOOLS = ("steps/01-prerequisites.ps1", "steps/02-certificate.ps1", "probes/server.ps1")


def params(profile: str, tools_dir: str | None) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = profile
    if tools_dir is None:
        del data["crm"]["tools_dir"]
    else:
        data["crm"]["tools_dir"] = tools_dir
    return data


def texts(data: dict[str, Any]) -> dict[str, str]:
    return {k: v.decode("utf-8-sig") for k, v in render_package(parse_parameters(data)).files.items()
            if k.endswith(".ps1")}


@pytest.mark.parametrize("profile", ["msonline", "graph"])
def test_left_out_tools_dir_is_read_from_the_registry(profile: str) -> None:
    data = params(profile, None)
    assert parse_parameters(data).crm.tools_dir is None
    scripts = texts(data)
    for name in USES_TOOLS:
        text = scripts[name]
        assert REGISTRY in text, name
        assert "[System.IO.Path]::Combine($InstallDir, 'Tools')" in text, name
        assert "Program Files" not in text.replace("# ", ""), name
        assert syntax_errors(text) == [], name
    assert "CRM_Server_InstallDir" in scripts["steps/02-certificate.ps1"]
    assert "throw (" in scripts["steps/02-certificate.ps1"].split("CRM_Server_InstallDir", 2)[2][:400]
    plan = json.loads(render_package(parse_parameters(data)).files["plan.json"])
    assert "tools_dir" not in plan["parameters"]["crm"]


@pytest.mark.parametrize("profile", ["msonline", "graph"])
def test_explicit_tools_dir_is_used_as_given(profile: str) -> None:
    data = params(profile, "D:\\CRM\\Tools")
    scripts = texts(data)
    for name in USES_TOOLS:
        assert "$ToolsDir = 'D:\\CRM\\Tools'" in scripts[name], name
        assert "CRM_Server_InstallDir" not in scripts[name], name
    plan = json.loads(render_package(parse_parameters(data)).files["plan.json"])
    assert plan["parameters"]["crm"]["tools_dir"] == "D:\\CRM\\Tools"


def test_check_reports_a_missing_install_folder() -> None:
    data = params("msonline", None)
    plan = json.loads(render_package(parse_parameters(data)).files["plan.json"])
    answers = state("fully configured")
    answers["server"].update(tools_dir=None, tools_script=False)
    pre = next(v for v in evaluate(plan, answers).verdicts if v.id == "prerequisites")
    assert pre.verdict == "blocked" and "CRM_Server_InstallDir" in pre.detail
