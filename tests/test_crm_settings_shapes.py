"""Issue 19 item 10: what Get-CrmAdvancedSetting returns is not documented; one helper reads both shapes.

Microsoft's CRM 2015 reference page for Get-CrmAdvancedSetting names no output type; the Deployment
SDK's RetrieveAdvancedSettingsResponse.Entity is a ConfigurationEntity that "contains an collection of
attribute values". The crm probe, step 07 (crm-settings, graph) and verify read a ServerSettings value
only through `Get-PSBridgeCrmServerSetting` (templates/steps/crm-settings/_read-setting.ps1.j2): an
entity's `.Attributes` pair, or the value itself; any other shape throws, naming its type.

How a shape is read is PowerShell's: asserted on the parsed scripts (order and structure). What psbridge
decides from the probe's answer is asserted against the loopback peer, which is a protocol peer, not
PowerShell: it answers as the probe prints for each shape (the same JSON for an entity and for a value;
the helper's terminating error for a third shape).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from psbridge.cli import main
from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.render import render_package

from support.cli import check_args
from support.packages import answer_probes, write_check_package
from support.probe_states import OTHER, state
from support.pwsh_grammar import command_invocations, parse, syntax_errors, walk
from support.winrm_peer import ErrorSpec, Reply

HELPER = "Get-PSBridgeCrmServerSetting"


def _scripts(profile: str, replaces: str | None = None) -> dict[str, str]:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = profile
    if replaces:
        data["certificate"]["replaces"] = replaces
    files = render_package(parse_parameters(data)).files
    return {k: v.decode("utf-8-sig") for k, v in files.items() if k.endswith(".ps1")}


def _readers() -> list[tuple[str, str]]:
    """Every script that reads ServerSettings: (label, text)."""
    out = []
    for profile in ("msonline", "graph"):
        first, renewal = _scripts(profile), _scripts(profile, OTHER)
        out.append((f"{profile} probes/crm.ps1", first["probes/crm.ps1"]))
        [verify] = [k for k in renewal if k.startswith("steps/") and k.endswith("-verify.ps1")]
        out.append((f"{profile} renewal {verify}", renewal[verify]))
    out.append(("graph steps/07-crm-settings.ps1", _scripts("graph")["steps/07-crm-settings.ps1"]))
    return out


READERS = _readers()


def _function(text: str) -> Any:
    found = [n for n in walk(parse(text).root_node) if n.type == "function_statement"
             and next(c for c in n.children if c.type == "function_name").text.decode() == HELPER]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("label,text", READERS, ids=[r[0] for r in READERS])
def test_every_reader_calls_get_crmadvancedsetting_only_inside_the_helper(label: str, text: str) -> None:
    assert syntax_errors(text) == [], label
    helper = _function(text)
    calls = [c for c in command_invocations(text) if c.name == "Get-CrmAdvancedSetting"]
    assert calls and all(helper.start_byte <= c.start_byte < helper.end_byte for c in calls), label
    uses = [c for c in command_invocations(text) if c.name == HELPER]
    assert len(uses) >= 1 and all(u.start_byte > helper.end_byte for u in uses), label  # defined before use
    writes = [c for c in command_invocations(text) if c.name == "Set-CrmAdvancedSetting"]
    assert all(w.start_byte > max(u.start_byte for u in uses) for w in writes), label  # read before any write


def test_the_helper_is_one_text_in_every_script() -> None:
    texts = {_function(text).text.decode() for _, text in READERS}
    assert len(texts) == 1


def test_the_helper_reads_attributes_then_a_value_and_throws_naming_the_type_otherwise() -> None:
    helper = _function(READERS[0][1])
    body = next(c for c in helper.children if c.type == "script_block")
    statements = [c for c in next(c for c in walk(body) if c.type == "statement_list").children if c.is_named]
    ifs = [s for s in statements if s.type == "if_statement"]
    conditions = [next(c for c in s.children if c.type == "pipeline").text.decode() for s in ifs]
    assert conditions == ["$Read.Count -eq 0", "$Read.Count -gt 1", "$null -ne $Value.PSObject.Properties['Attributes']",
                          "$Value -is [string] -or $Value -is [guid]"]
    entity = ifs[2].text.decode()
    assert "$Value.Attributes | Where-Object { $null -ne $_ -and $_.Key -eq $Name }" in entity
    assert "return [string]$Pairs[0].Value" in entity
    assert "return [string]$Value" in ifs[3].text.decode()
    last = statements[-1]
    assert last.type == "flow_control_statement" and last.children[0].type == "throw"
    assert "$Value.GetType().FullName" in last.text.decode()
    assert "$Read[0].GetType().FullName" in ifs[1].text.decode()  # more than one object: named too


# --------------------------------------------------------------------------- what check decides, per shape


def test_check_reads_the_settings_the_probe_prints_for_either_shape(tmp_path, engine, http_peer, secrets_env,
                                                                    capsys) -> None:
    """The helper returns the value as a string for both shapes, so the probe prints the same JSON for an entity
    and for a value (one answer covers both): step 07 is in place, and the probe sent reads through the helper."""
    pkg = write_check_package(tmp_path)
    answer_probes(engine, state("fully configured"))
    assert main(check_args(pkg, http_peer)) == 0
    out = capsys.readouterr().out
    assert "[07/08] crm-settings     in place" in out
    [probe] = [p for p in engine.pipelines if p.script.startswith("# psbridge probe: crm ")]
    assert HELPER in probe.script


def test_check_says_cannot_tell_and_shows_the_type_for_a_third_shape(tmp_path, engine, http_peer, secrets_env,
                                                                     capsys) -> None:
    pkg = write_check_package(tmp_path)
    answers = state("fully configured")
    answers["crm"] = None
    answer_probes(engine, answers)
    message = ("Get-CrmAdvancedSetting -Setting S2SDefaultAuthorizationServerPrincipalId returned a "
               "System.Collections.Hashtable, neither an entity with Attributes nor a string or GUID value: psbridge "
               "does not read this shape; nothing was changed by this read.")
    engine.when("# psbridge probe: crm ", Reply(terminating=ErrorSpec(message)))
    assert main(check_args(pkg, http_peer)) == 1
    out = capsys.readouterr().out
    assert "[07/08] crm-settings     cannot tell" in out
    assert "System.Collections.Hashtable" in out
