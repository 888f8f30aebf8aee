"""Every command the rendered scripts invoke exists, with documented parameters, in Windows PowerShell 5.1.

tests/data/commands.json lists each command the templates use (core cmdlets from the 5.1 reference,
MSOnline, Microsoft Graph PowerShell, the Microsoft.Crm.PowerShell snap-in, CertificateReconfiguration.ps1)
with its parameter sets and the Microsoft page the facts come from. For every rendered script of every
variant (both profiles, the probes and setup.ps1) this test parses the script with the PowerShell grammar
and checks each command invocation:

- the command is listed, or is a function the script itself defines (an unknown command is an error, never
  a skip);
- each named parameter is a parameter of it, a documented alias, or a common parameter, written in full or
  as an unambiguous prefix (case-insensitive; PowerShell's rules, see `resolve`), and so are the keys of
  a splatted literal hashtable (`@Update` where `$Update = @{...}`);
- some parameter set holds every named parameter and has all its mandatory parameters supplied: by name,
  by position, by a splatted key, or by pipeline input when an earlier pipeline element feeds it;
- no syntax that Windows PowerShell 5.1 lacks (`a ? b : c`, `??`, `??=`, `?.`, `?[]`, `&&`, `||`,
  `ForEach-Object -Parallel`, `clean { }` blocks).

`& $CertificateScript ...` is resolved to CertificateReconfiguration.ps1 from the script's own assignment
`$CertificateScript = [System.IO.Path]::Combine($ToolsDir, 'CertificateReconfiguration.ps1')`.

A function the script defines (`function Name(<parameters>) { }` or `function Name { param(<parameters>) }`,
such as Get-PSBridgeKeyAccess from templates/probes/_key-access.ps1.j2) is a command of that script and is
checked the same way against its own declaration (`script_command`), ahead of a listed command of the same
name as PowerShell resolves functions before cmdlets. It is visible where its definition runs: in the
enclosing function or script block, or in the caller's scope for a dot-sourced `. { }` (each step of
setup.ps1). A call that runs before the definition has (at the same level, not from a function body or a
script block value) is an error too. A function called but defined nowhere in the script is unknown.

Findings in today's templates are listed in KNOWN_DEFECTS with the reason; each is also a strict xfail
test, so fixing a template without updating the table fails the suite.
"""

from __future__ import annotations

import copy
import tempfile
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from psbridge import certificates
from psbridge.parameters import EXAMPLE, example, parse_parameters
from psbridge.render import render_package

from support import certfactory as cf
from support.app_render import app_data, render_app
from support.pwsh_grammar import command_invocations, function_definitions
from support.signatures import DATA, Finding, check_script, command_name, normalized, script_function

APP = {"client_id": "11111111-2222-3333-4444-555555555555", "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
       "certificate_thumbprint": "0123456789ABCDEF0123456789ABCDEF01234567"}


# --------------------------------------------------------------------------- the rendered packages


def _graph(**graph: Any) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = "graph"
    if graph:
        data["graph"] = graph
    return data


def _farm(profile: str) -> dict[str, Any]:
    """A package for a farm: step 09 runs on the additional servers."""
    data = _graph() if profile == "graph" else copy.deepcopy(EXAMPLE)
    data["crm"].update(server="crm01.contoso.local", additional_servers=["crmfe2.contoso.local", "crmfe3"])
    data["crm"].pop("tools_dir", None)  # read from each server's registry
    return data


def _renewal(profile: str) -> dict[str, Any]:
    """A renewal of a farm's certificate: its own order, verify and retire-previous."""
    data = _farm(profile)
    data["certificate"]["replaces"] = "0123456789ABCDEF0123456789ABCDEF01234567"
    return data


def _gcc_high(profile: str) -> dict[str, Any]:
    """A GCC High tenant (.sharepoint.us): other metadata URL and sign-in environment."""
    data = _graph() if profile == "graph" else copy.deepcopy(EXAMPLE)
    data["sharepoint"]["sites"] = ["https://contoso.sharepoint.us/sites/salesteam"]
    return data


def _with_local_certificate() -> Any:
    """msonline with `local_cer`, checked and rendered the way `psbridge render` does (steps 05 and 06 change)."""
    data = copy.deepcopy(EXAMPLE)
    data["certificate"]["local_cer"] = "s2s.cer"
    params = parse_parameters(data)
    leaf = cf.cert(not_before=cf.NOW - timedelta(days=1), not_after=cf.NOW + timedelta(days=365))
    with tempfile.TemporaryDirectory() as tmp:
        cf.write(Path(tmp) / "s2s.cer", cf.der(leaf))
        plan = certificates.check_for_plan(params.certificate, tmp, lambda: None)
    assert plan is not None
    return render_package(params, plan.facts())


@cache
def rendered() -> dict[str, str]:
    """`variant/path` -> script text, for every .ps1 file of every variant."""
    variants = {
        "msonline": lambda: render_package(example()),
        "msonline-local-cert": _with_local_certificate,
        "graph-token": lambda: render_package(parse_parameters(_graph())),
        "graph-app": lambda: render_package(parse_parameters(_graph(**APP))),
        "msonline-farm": lambda: render_package(parse_parameters(_farm("msonline"))),
        "graph-farm": lambda: render_package(parse_parameters(_farm("graph"))),
        "msonline-gcchigh": lambda: render_package(parse_parameters(_gcc_high("msonline"))),
        "graph-gcchigh": lambda: render_package(parse_parameters(_gcc_high("graph"))),
        "msonline-renewal": lambda: render_package(parse_parameters(_renewal("msonline"))),
        "graph-renewal": lambda: render_package(parse_parameters(_renewal("graph"))),
        # The app trust's server-side scripts (steps, web and org probes, the partner-applications
        # back-out) until a whole app package renders (support/app_render.py says why).
        "graph-app-trust": lambda: render_app(app_data(adopt=True)),
        "graph-app-trust-farm": lambda: render_app(app_data(farm=True)),
    }
    out = {}
    for variant, make in variants.items():
        for path, data in make().files.items():
            if path.endswith(".ps1"):
                assert data.startswith(b"\xef\xbb\xbf"), path
                out[f"{variant}/{path}"] = data[3:].decode("utf-8")
    return out


# (variant/path, command, problem fragment) -> why it is listed. Each is a real finding against today's
# templates (or a command without a documented signature); test_known_defect_is_still_there xfails
# strictly on each, so fixing one without removing it here fails the suite.
SET_CRM = "no documented signature"
KNOWN_DEFECTS: dict[tuple[str, str, str], str] = {
    (f"{variant}/{path}", "Set-CrmAdvancedSetting", SET_CRM): (
        "Set-CrmAdvancedSetting has no reference page: only the article's call `Set-CrmAdvancedSetting -Entity $setting` "
        "documents it (commands.json: source null). Add its signature to commands.json when a Microsoft page is found.")
    for variant in ("msonline", "msonline-local-cert", "graph-token", "graph-app", "msonline-farm", "graph-farm",
                    "msonline-gcchigh", "graph-gcchigh")
    for path in ("steps/07-crm-settings.ps1", "setup.ps1", "rollback/07-crm-settings.ps1")
} | {
    (f"{variant}/{path}", "Set-CrmAdvancedSetting", SET_CRM): (
        "Set-CrmAdvancedSetting has no reference page (see above); a renewal runs the same step as 08.")
    for variant in ("msonline-renewal", "graph-renewal")
    for path in ("steps/08-crm-settings.ps1", "setup.ps1", "rollback/07-crm-settings.ps1")
} | {
    (f"{variant}/{path}", command, SET_CRM): (
        f"{command} has no reference page: Get-CrmOrganization's only page shows another cmdlet's syntax, its "
        "description and Microsoft's ConfigureCrmServerSideSync.ps1 document -Name (commands.json: source null)."
        if command == "Get-CrmOrganization" else "Set-CrmAdvancedSetting has no reference page (see above).")
    for variant in ("graph-app-trust", "graph-app-trust-farm")
    for path, command in (("steps/01-prerequisites.ps1", "Get-CrmOrganization"),
                          ("steps/07-crm-settings.ps1", "Set-CrmAdvancedSetting"),
                          ("steps/11-partner-applications.ps1", "Get-CrmOrganization"),
                          ("probes/org.ps1", "Get-CrmOrganization"),
                          ("rollback/11-partner-applications.ps1", "Get-CrmOrganization"))
}


def known(f: Finding, file: str) -> bool:
    return any(k[0] == file and k[1] == f.command and k[2] in f.problem for k in KNOWN_DEFECTS)


@pytest.mark.parametrize("file", sorted(rendered()))
def test_rendered_script_uses_documented_commands(file: str) -> None:
    findings = check_script(rendered()[file], file)
    unexpected = [str(f) for f in findings if not known(f, file)]
    assert unexpected == [], "\n".join(unexpected)


@pytest.mark.parametrize("key", sorted(KNOWN_DEFECTS), ids=lambda k: f"{k[0]}:{k[1]}")
@pytest.mark.xfail(strict=True, reason="known defect, see KNOWN_DEFECTS")
def test_known_defect_is_still_there(key: tuple[str, str, str]) -> None:
    file, command, fragment = key
    findings = check_script(rendered()[file], file)
    assert not any(f.command == command and fragment in f.problem for f in findings), KNOWN_DEFECTS[key]


def listed_commands_used() -> set[str]:
    """Lower-case names of the listed commands the rendered scripts invoke, resolved as the checker
    resolves them: a call of a function the script defines is not a use of a listed command."""
    used = set()
    for text in rendered().values():
        text = normalized(text)
        functions = function_definitions(text)
        for inv in command_invocations(text):
            name, _ = command_name(inv, text)
            if name and not (inv.name_kind in ("name", "string") and script_function(functions, name, inv)):
                used.add(name.lower())
    return used


def test_every_listed_command_is_used_and_cites_a_source() -> None:
    listed = {n.lower() for n in DATA["commands"]}
    assert sorted(listed - listed_commands_used()) == [], "listed but no rendered script uses them"
    undocumented_known = {k[1] for k in KNOWN_DEFECTS if k[2] == SET_CRM}
    for name, data in DATA["commands"].items():
        source = data.get("source")
        if source is None:
            # No documented signature: the entry says why, and every use is a known defect.
            assert data.get("note"), f"{name}: source null needs a note saying what was searched"
            assert name in undocumented_known, f"{name}: source null but not in KNOWN_DEFECTS"
            continue
        assert source.startswith("https://learn.microsoft.com/"), name
        sf = data.get("source_file")
        if sf and sf["repo"] == "MicrosoftDocs/PowerShell-Docs":
            # Core cmdlets cite the Windows PowerShell 5.1 reference: the page and the markdown behind it.
            assert sf["path"].startswith("reference/5.1/"), name
            module, page = sf["path"].removesuffix(".md").split("/")[-2:]
            assert page.lower() == name.lower() and data["module"] == module, name
            assert source == f"https://learn.microsoft.com/powershell/module/{module.lower()}/{page.lower()}?view=powershell-5.1", name


# --------------------------------------------------------------------------- the checker can fail

BAD_SCRIPT = """\
param()
Get-Widget -Name 'x'
Test-Path -LitralPath 'C:\\x'
Get-MsolServicePrincipalCredential -AppPrincipalId $id
Connect-MgGraph -C 'x'
$a = $b ?? 'default'
Write-Output 'one' && Write-Output 'two'
$c ??= 1
$d = $flag ? 'yes' : 'no'
$e = $obj?.Name
$f = $arr?[0]
1..3 | ForEach-Object -Parallel { $_ }
Get-ChildItem | Where-Object { $_ } | ? { $_ }
Write-Host 'fine' -EA SilentlyContinue -wa 0 -Verb -ForegroundColor Red
Write-Host 'x' -ProgressAction SilentlyContinue
& $Unknown -x 1
$Script = [System.IO.Path]::Combine($Dir, 'CertificateReconfiguration.ps1')
& $Script -certificateFile 'a.pfx' -password 'p' -certificateType 'S2STokenIssuer'
& $Script -certificateFile 'a.pfx' -password 'p' -certificateType 'S2STokenIssuer' -serviceAccount 'NETWORK SERVICE' -updateCrm -storeFind 'x'
$Params = @{ AppPrincipalId = $id; ReturnKeyValues = $true; Bogus = 1 }
Get-MsolServicePrincipalCredential @Params
$Ok = @{ ServicePrincipalId = 'x' }
$Ok['KeyCredentials'] = @()
Update-MgServicePrincipal @Ok
Update-MgServicePrincipal @Missing
Write-Host 'x' -ForegroundColor Red -fore Blue
"""


def test_checker_reports_each_rule() -> None:
    findings = [str(f) for f in check_script(BAD_SCRIPT, "bad.ps1")]
    text = "\n".join(findings)

    def has(line: int, fragment: str) -> bool:
        return any(f.startswith(f"bad.ps1:{line}:") and fragment in f for f in findings)

    assert has(2, "Get-Widget: unknown command"), text
    assert has(3, "Test-Path: -LitralPath: no such parameter"), text
    assert has(4, "Get-MsolServicePrincipalCredential: no parameter set fits") and has(4, "mandatory -ReturnKeyValues"), text
    assert has(5, "Connect-MgGraph: -C: ambiguous prefix"), text
    assert has(6, "'??' (null-coalescing operator"), text
    assert has(7, "'&&' (pipeline chain operator"), text
    assert has(8, "'??=' (null-coalescing assignment"), text
    assert has(9, "ternary operator"), text
    assert has(10, "'?.' (null-conditional member access"), text
    assert has(11, "'?[]' (null-conditional index"), text
    assert has(12, "ForEach-Object -Parallel is PowerShell 7 only"), text
    assert has(13, "?: unknown command") and not has(13, "ternary"), text  # the Where-Object alias, not listed
    assert not has(14, ""), text  # common parameters, their aliases and prefixes
    assert has(15, "-ProgressAction: not a parameter in Windows PowerShell 5.1"), text
    assert has(16, "cannot resolve '& $Unknown'"), text
    assert not has(17, ""), text
    assert has(18, "CertificateReconfiguration.ps1: no parameter set fits") and has(18, "-serviceAccount (the article calls it required)"), text
    assert not has(19, "") , text  # -storeFind is an unambiguous prefix of -storeFindType
    assert has(21, "@Params key 'Bogus': no such parameter"), text
    assert not has(24, ""), text
    assert has(25, "@Missing: no literal hashtable"), text
    assert has(26, "-fore: -ForegroundColor is given more than once"), text


def test_where_object_alias_is_a_command_not_a_ternary() -> None:
    """`?` standing where a command starts is the Where-Object alias: an unknown command (aliases are not
    listed), never a ternary operator."""
    findings = [str(f) for f in check_script("Get-ChildItem | ? { $_ }\n", "alias.ps1")]
    assert findings == ["alias.ps1:1: ?: unknown command: not in tests/data/commands.json nor defined in this script"], findings


def test_clean_block_and_or_chain_are_reported() -> None:
    findings = [str(f) for f in check_script("function f {\n    process { 1 }\n    clean { 2 }\n}\nGet-Date || Get-Date\n", "c.ps1")]
    assert any(f.startswith("c.ps1:3:") and "clean" in f for f in findings), findings
    assert any(f.startswith("c.ps1:5:") and "'||'" in f for f in findings), findings


def test_strings_and_comments_are_not_scanned() -> None:
    text = "# a ?? b && c\nWrite-Output 'x ?? y && z ? 1 : 2'\n"
    assert check_script(text, "s.ps1") == []


# --------------------------------------------------------------------------- script-defined functions

FUNCTION_SCRIPT = """\
function Get-Thing {
    [CmdletBinding(SupportsShouldProcess = $true)]
    param(
        [Parameter(Mandatory = $true, Position = 0)]
        [Alias('Acct')]
        [string] $Account,
        [Parameter(Mandatory)]
        [int] $Count,
        [Parameter()]
        [switch] $Force
    )
}
function Get-Simple([string] $Account, $Sid, [switch] $Quiet) { }
Get-Thing -Acount 'x' -Count 1
Get-Thing 'x'
Get-Thing -Acct 'x' -Count 1 -Force -ErrorAction Stop -WhatIf
Get-Thing 'x' -Co 1
Get-Simple 'a' 'b' -Quiet
Get-Simple 'a' 'b' 'c'
Get-Simple -Account 'a' -ErrorAction Stop
Get-Simple -Sd 'b'
Get-Missing -X 1
Get-Later -Name 'x'
function Get-Later { param([Parameter(Mandatory)] [string] $Name) }
Get-Later -Name 'y'
function Get-Sets {
    param(
        [Parameter(Mandatory, ParameterSetName = 'ById')] [guid] $Id,
        [Parameter(Mandatory, ParameterSetName = 'ByName', Position = 0)] [string] $Name,
        [string] $Filter
    )
}
Get-Sets -Id $g -Filter 'f'
Get-Sets 'n'
Get-Sets -Id $g -Name 'n'
$Later = { Get-Unwritten }
function Get-Unwritten { }
& $Later
"""


def test_script_defined_functions_are_checked_like_cmdlets() -> None:
    findings = [str(f) for f in check_script(FUNCTION_SCRIPT, "fn.ps1")]
    text = "\n".join(findings)

    def has(line: int, fragment: str) -> bool:
        return any(f.startswith(f"fn.ps1:{line}:") and fragment in f for f in findings)

    assert has(14, "Get-Thing: -Acount: no such parameter"), text  # misspelled
    assert has(15, "Get-Thing: no parameter set fits") and has(15, "mandatory -Count not supplied"), text
    assert not has(16, ""), text  # alias, switch, common parameter, -WhatIf from SupportsShouldProcess
    assert not has(17, ""), text  # -Co: unambiguous prefix of -Count; 'x' binds to Position 0
    assert not has(18, ""), text  # a simple function: positions 0, 1 in declaration order, switch not positional
    assert has(19, "Get-Simple: no parameter set fits") and has(19, "3 positional argument(s), 2 position(s) free"), text
    assert has(20, "Get-Simple: -ErrorAction: no such parameter: a simple function"), text
    assert has(21, "Get-Simple: -Sd: no such parameter"), text
    assert has(22, "Get-Missing: unknown command"), text  # called, defined nowhere
    assert has(23, "Get-Later: called before its definition on line 24 has run"), text
    assert not has(25, ""), text
    assert not has(33, ""), text  # set ById, -Filter in every set
    assert not has(34, ""), text  # set ByName by position
    assert has(35, "Get-Sets: no parameter set fits"), text  # -Id and -Name are in different sets
    assert not has(36, ""), text  # a script block value runs later, when its definition has run
    assert has(38, "cannot resolve '& $Later'"), text  # a script block in a variable is not a script
    assert len(findings) == 9, text


def test_script_function_shadows_listed_command_and_scope() -> None:
    """A script's own function wins over a listed command of the same name (functions come before cmdlets),
    a function defined in `& { }` is local to it, one defined in a dot-sourced `. { }` is not."""
    script = """\
function Test-Path([string] $Where) { }
Test-Path -Where 'x'
Test-Path -LiteralPath 'x'
& {
    function Get-Inner { }
    Get-Inner
}
Get-Inner
. {
    function Get-Dotted { }
}
Get-Dotted
"""
    findings = [str(f) for f in check_script(script, "s.ps1")]
    assert findings == [
        "s.ps1:3: Test-Path: -LiteralPath: no such parameter",
        "s.ps1:8: Get-Inner: unknown command: not in tests/data/commands.json nor defined in this script",
    ], findings


def test_unreadable_parameter_declaration_is_reported() -> None:
    script = "function Get-X { param([Parameter(Mandatory = $Required)] $A) }\nGet-X -A 1\n"
    findings = [str(f) for f in check_script(script, "u.ps1")]
    assert findings == ["u.ps1:1: Get-X: declaration: $A: Mandatory in [Parameter(Mandatory = $Required)] cannot be read statically"], findings
