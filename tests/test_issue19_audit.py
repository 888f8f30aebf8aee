"""Issue 19, audited item by item: the gaps the audit found, each with a test that failed on main.

Where the behaviour is PowerShell's, the tests read the rendered script with the PowerShell grammar
(tests/support/pwsh_grammar.py) and assert what the script does and in which order, not its text.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tree_sitter import Node

from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.render import render_package

from support.app_render import app_data, render_app
from support.probe_states import THUMB, state
from support.pwsh_grammar import (command_invocations, hashtable_keys, parse, string_values, syntax_errors,
                                  variable_assignments, walk)

# ------------------------------------------------------------------ item 3: every Graph parameter the steps pass

#: PowerShell's common parameters: every cmdlet has them (about_CommonParameters), nothing to test.
COMMON = {"erroraction", "warningaction", "informationaction", "errorvariable", "warningvariable",
          "informationvariable", "outvariable", "outbuffer", "pipelinevariable", "verbose", "debug"}

#: What the ACS scripts pass that step 01 does not test. The ACS scripts are pinned byte-identical
#: (tests/data/acs-script-hashes.json); these are read-only calls whose parameters are not among the
#: ones issue 19 names (-NoWelcome, -ContextScope, -TenantId, -KeyCredentials).
ACS_NOT_TESTED = {("Get-MgServicePrincipal", "Filter"), ("Get-MgServicePrincipal", "Property"),
                  ("Get-MgServicePrincipal", "ServicePrincipalId")}


def _passed(files: dict[str, bytes]) -> set[tuple[str, str]]:
    """(cmdlet, parameter) for every Microsoft Graph cmdlet a step passes a named parameter to (splats too)."""
    out: set[tuple[str, str]] = set()
    for rel, body in files.items():
        if not (rel.startswith("steps/") and rel.endswith(".ps1")):
            continue
        text = body.decode("utf-8-sig")
        for call in command_invocations(text):
            if "-Mg" not in call.name:
                continue
            names = {e.text for e in call.elements if e.kind == "parameter"}
            for splat in (e.text for e in call.elements if e.kind == "splat"):
                names |= set(hashtable_keys(text, splat) or [])
            out |= {(call.name, n) for n in names if n.lower() not in COMMON}
    return out


def _value(text: str, node: Node) -> list[str]:
    """The strings a hashtable entry's value holds: an array literal, or a variable assigned one."""
    variables = [n for n in walk(node) if n.type == "variable"]
    if variables:
        [variable] = variables
        [assigned] = variable_assignments(text, variable.text.decode()[1:])
        return string_values(assigned)
    return string_values(node)


def _entries(text: str, table: Node) -> dict[str, list[str]]:
    out = {}
    for entry in (n for n in walk(table) if n.type == "hash_entry"):
        key = next(c for c in entry.named_children if c.type == "key_expression").text.decode()
        out[key] = _value(text, next(c for c in entry.named_children if c.type == "pipeline"))
    return out


def _tested(text: str) -> tuple[set[tuple[str, str]], list[int]]:
    """(cmdlet, parameter) pairs step 01 tests with (Get-Command $Check.Command).Parameters.ContainsKey, and
    where each testing loop starts. A loop's list is a literal array of @{ Command; Parameters } tables, or a
    variable assigned one."""
    pairs: set[tuple[str, str]] = set()
    starts: list[int] = []
    for loop in (n for n in walk(parse(text).root_node) if n.type == "foreach_statement"):
        body = loop.text.decode()
        if "Get-Command -Name $Check.Command" not in body or ".Parameters.ContainsKey($Name)" not in body:
            continue
        starts.append(loop.start_byte)
        collection = next(c for c in loop.named_children if c.type == "pipeline")
        tables = [n for n in walk(collection) if n.type == "hash_literal_expression"]
        if not tables:
            [variable] = [n for n in walk(collection) if n.type == "variable"]
            [assigned] = variable_assignments(text, variable.text.decode()[1:])
            tables = [n for n in walk(assigned) if n.type == "hash_literal_expression"]
        for table in tables:
            entries = _entries(text, table)
            [command] = entries["Command"]
            pairs |= {(command, p) for p in entries["Parameters"]}
    return pairs, starts


def _acs_graph(variant: str) -> dict[str, bytes]:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = "graph"
    if variant == "renewal":
        data["certificate"]["replaces"] = "B" * 40
    if variant == "app-only":
        data["graph"] = {"client_id": "11111111-1111-1111-1111-111111111111",
                         "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47", "certificate_thumbprint": "C" * 40}
    return render_package(parse_parameters(data)).files


def _app_trust(variant: str) -> dict[str, bytes]:
    data = app_data(adopt=variant == "adopted", farm=variant == "farm renewal")
    if variant.endswith("renewal"):
        data["certificate"]["replaces"] = "B" * 40
    return render_app(data).files


VARIANTS = [("acs", v) for v in ("delegated", "app-only", "renewal")] + \
           [("app", v) for v in ("created", "adopted", "renewal", "farm renewal")]


@pytest.mark.parametrize("trust,variant", VARIANTS)
def test_step_01_tests_every_graph_parameter_any_step_passes(trust: str, variant: str) -> None:
    """Issue 19 item 3: "Step 01 tests the parameters the steps use". On main the app trust's step 01 only
    looked for its cmdlets (ExportedCommands): Invoke-MgGraphRequest -SkipHttpErrorCheck/-StatusCodeVariable,
    Update-MgApplication -KeyCredentials/-RequiredResourceAccess and the rest went untested, so an SDK
    without one failed in step 09/10, after step 02 had changed CRM."""
    files = _acs_graph(variant) if trust == "acs" else _app_trust(variant)
    text = files["steps/01-prerequisites.ps1"].decode("utf-8-sig")
    assert syntax_errors(text) == []
    passed = _passed(files)
    tested, loops = _tested(text)
    assert ("Connect-MgGraph", "NoWelcome") in passed and loops
    missing = passed - tested - (ACS_NOT_TESTED if trust == "acs" else set())
    assert missing == set(), sorted(missing)
    # The cmdlets are read after the Graph modules are imported (Import-Module $Module, in the loop over
    # them), and every loop adds its problems before the throw.
    calls = command_invocations(text)
    imports = [c.start_byte for c in calls if c.name == "Import-Module" and "$Module" in [e.text for e in c.elements]]
    throw = text.encode("utf-8").rindex(b"throw ('Prerequisites are not met:'")
    assert imports and max(imports) < min(loops) and max(loops) < throw


def test_the_app_parameter_check_reads_only_loaded_modules_and_names_the_fix() -> None:
    """Get-Command on a cmdlet of a module that failed to import would import it (or find nothing): the
    app trust's loop tests a cmdlet only when its module is loaded, and a missing parameter names the
    release to install."""
    text = _app_trust("created")["steps/01-prerequisites.ps1"].decode("utf-8-sig")
    [loop] = [n for n in walk(parse(text).root_node) if n.type == "foreach_statement"
              and "$AppParameters" in next(c for c in n.named_children if c.type == "pipeline").text.decode()]
    body = loop.text.decode()
    loaded = body.index("Get-Module -Name $Check.Module")
    assert loaded < body.index("Get-Command -Name $Check.Command") < body.index(".Parameters.ContainsKey($Name)")
    assert "Install-Module Microsoft.Graph -MinimumVersion 2.28.0 -Scope AllUsers" in body
    [assigned] = variable_assignments(text, "AppParameters")
    modules = {_entries(text, t)["Module"][0] for t in walk(assigned) if t.type == "hash_literal_expression"}
    assert modules == {"Microsoft.Graph.Applications", "Microsoft.Graph.Authentication",
                       "Microsoft.Graph.Identity.DirectoryManagement"}


# --------------------------------------------------------------------------- item 1: what step 01 counts as "in use"

def _first_setup(profile: str) -> str:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = profile
    text = render_package(parse_parameters(data)).files["steps/01-prerequisites.ps1"].decode("utf-8-sig")
    assert syntax_errors(text) == []
    return text


def _within(calls: list[Any], node: Node) -> list[Any]:
    return [c for c in calls if node.start_byte <= c.start_byte < node.end_byte]


@pytest.mark.parametrize("profile", ["msonline", "graph"])
def test_step_01_counts_only_crms_valid_s2stokenissuer_certificates_other_than_its_own(profile: str) -> None:
    """Issue 19 item 1: step 01 refuses when CRM holds a *valid* S2STokenIssuer certificate with a thumbprint
    *other than the package's own*. On main the tests only found the refusal's text after Get-CrmCertificate:
    dropping the NotAfter filter (an expired certificate refused) or the own-thumbprint exemption (a re-run
    refused) failed no test but the byte pins."""
    text = _first_setup(profile)
    calls = command_invocations(text)
    # $Own: the thumbprint of the package's own .cer, read from $CerPath.
    [own] = variable_assignments(text, "Own")
    assert "X509Certificate2($CerPath)).Thumbprint" in own.text.decode()
    # $Valid: CRM's S2STokenIssuer records, decoded, then only those whose NotAfter is still ahead.
    [valid] = variable_assignments(text, "Valid")
    pipeline = _within(calls, valid)
    assert [c.name for c in pipeline] == ["Get-CrmCertificate", "Where-Object", "ForEach-Object", "Where-Object"]
    kind, decode, alive = (c.elements[0].text for c in pipeline[1:])
    assert kind == "{ $_.CertificateType -eq 'S2STokenIssuer' }"
    assert "FromBase64String($_.Data)" in decode and "X509Certificate2]::new(" in decode
    assert alive == "{ $_.NotAfter.ToUniversalTime() -gt [System.DateTime]::UtcNow }"
    # The refusal is added only inside an if whose condition needs a valid one and no valid one being $Own.
    root = parse(text).root_node
    refusal = text.encode("utf-8").index(b"$Problems.Add('CRM already uses the valid S2STokenIssuer certificate ")
    [guard] = [n for n in walk(root) if n.type == "if_statement" and n.start_byte < refusal < n.end_byte
               and n.start_byte > valid.start_byte]
    condition = next(c for c in guard.children if c.type == "pipeline").text.decode()
    assert condition == "$Valid.Count -gt 0 -and -not (@($Valid | ForEach-Object { $_.Thumbprint }) -contains $Own)"
    assert own.start_byte < valid.start_byte < guard.start_byte


# ----------------------------------------------------------- items 4 and 12 on a farm's additional servers

FARM = ["crm02", "crm03.contoso.local"]
OTHER = "B" * 40


def _farm_files(profile: str, replaces: str | None) -> dict[str, bytes]:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = profile
    data["crm"].update(server="crm01.contoso.local", additional_servers=list(FARM))
    if replaces:
        data["certificate"].update(replaces=replaces, switch_after_hours=0)
    return render_package(parse_parameters(data)).files


def _additional(profile: str, replaces: str | None) -> tuple[str, int]:
    files = _farm_files(profile, replaces)
    [name] = [n for n in files if n.startswith("steps/") and n.endswith("-additional-servers.ps1")]
    text = files[name].decode("utf-8-sig")
    assert syntax_errors(text) == []
    return text, int(name[len("steps/"):][:2])


def _exit_code_read(node: Node) -> bool:
    return any(n.type == "variable" and n.text.decode().lower() in ("$global:lastexitcode", "$lastexitcode",
                                                                     "$exitcode") for n in walk(node))


@pytest.mark.parametrize("profile", ["msonline", "graph"])
@pytest.mark.parametrize("replaces", [None, OTHER])
def test_the_additional_servers_step_proves_its_work_before_it_judges_the_exit_code(profile: str,
                                                                                     replaces: str | None) -> None:
    """Issue 19 item 12 on every variant: a farm's additional servers run CertificateReconfiguration.ps1 too.
    On main their step threw on $LASTEXITCODE before Test-PSBridgeInstalled looked at the store, so a leftover
    exit code of a program the vendor script ran failed a server whose certificate was installed."""
    text, _ = _additional(profile, replaces)
    calls = command_invocations(text)
    [call] = [i for i in calls if i.operator == "&" and i.name_kind == "variable" and i.name == "CertificateScript"]
    proof = [i.start_byte for i in calls if i.start_byte > call.start_byte and i.name == "Test-PSBridgeInstalled"]
    root = parse(text).root_node
    after = [n for n in walk(root) if n.start_byte > call.start_byte]
    judged = [n for n in after if n.type == "if_statement"
              and _exit_code_read(next(c for c in n.children if c.type == "pipeline"))]
    throws = [n for n in after if n.type == "flow_control_statement" and n.text.decode().startswith("throw")]
    assert proof and judged and throws
    assert min(proof) < min(n.start_byte for n in judged + throws)
    # The exit code is read once, into $ExitCode, before the proof runs.
    reads = [n for n in after if n.type == "variable" and n.text.decode().lower().endswith("lastexitcode")]
    assert len(reads) == 1 and reads[0].start_byte < min(proof)
    [kept] = [a for a in after if a.type == "assignment_expression"
              and a.start_byte <= reads[0].start_byte < a.end_byte]
    assert kept.text.decode().startswith("$ExitCode")
    # A failed proof still throws naming the code; a passed one with a non-zero code is said, not fatal.
    [failed] = [n for n in throws if "CertificateReconfiguration.ps1 returned on " in n.text.decode()]
    assert "$ExitCode" in failed.text.decode()
    [said] = [n for n in judged if not any(t.type == "flow_control_statement" and t.text.decode().startswith("throw")
                                           for t in walk(n))]
    assert said.start_byte > failed.start_byte


@pytest.mark.parametrize("profile", ["msonline", "graph"])
@pytest.mark.parametrize("replaces", [None, OTHER])
def test_the_additional_servers_step_judges_the_execution_policy_before_it_changes_that_server(
        profile: str, replaces: str | None) -> None:
    """Issue 19 item 4 on a farm: each additional server runs CertificateReconfiguration.ps1 as a file as well.
    On main nothing there read the execution policy: under AllSigned/Restricted the step failed on that
    server (after the main sequence had run) with PowerShell's own error instead of the fix."""
    text, number = _additional(profile, replaces)
    calls = command_invocations(text)
    body = text.encode("utf-8")
    [policy] = [c for c in calls if c.name == "Get-ExecutionPolicy"]
    [signature] = [c for c in calls if c.name == "Get-AuthenticodeSignature"]
    [mark] = [c for c in calls if c.name == "Get-Item" and any(e.text == "Stream" for e in c.elements)]
    [run] = [i for i in calls if i.operator == "&" and i.name == "CertificateScript"]
    prerequisites = body.index(b"throw ('Prerequisites on ' + $env:COMPUTERNAME")
    added = body.index(f"$Problems.Add('Step {number:02d} runs ' + $CertificateScript".encode())
    located = body.index(b"$CertificateScript = if ($ToolsDir)")
    assert located < policy.start_byte < signature.start_byte < mark.start_byte < added < prerequisites < run.start_byte


def _farm_plan() -> dict[str, Any]:
    import json

    plan = json.loads(_farm_files("msonline", None)["plan.json"])
    plan["certificate"] = {"thumbprint": THUMB}
    return plan


POLICIES = [  # (policy, signature, trusted, downloaded) -> blocked on that server
    ("Restricted", "NotSigned", False, False, True),
    ("AllSigned", "NotSigned", False, False, True),
    ("RemoteSigned", "NotSigned", False, True, True),
    ("RemoteSigned", "NotSigned", False, False, False),
    ("RemoteSigned", "Valid", True, True, False),
    ("Bypass", "NotSigned", False, True, False),
]


@pytest.mark.parametrize("policy,status,trusted,downloaded,blocked", POLICIES)
def test_check_judges_the_execution_policy_on_each_additional_server(policy: str, status: str, trusted: bool,
                                                                     downloaded: bool, blocked: bool) -> None:
    """The server probe already reads the policy, the signature and the mark on every additional server;
    on main check's verdict there ignored them ("will change" for a server whose step would fail)."""
    import datetime as _dt

    from psbridge.check import evaluate

    fresh = {k: v for k, v in state("fresh server").items() if k in ("server", "certificate")}
    fresh["server"] = dict(fresh["server"], execution_policy=policy, script_signature=status,
                           script_trusted=trusted, script_downloaded=downloaded)
    report = evaluate(_farm_plan(), state("fully configured"), {FARM[0]: fresh, FARM[1]: copy.deepcopy(fresh)},
                      now=_dt.datetime(2026, 6, 1, tzinfo=_dt.timezone.utc))
    there = [v for v in report.verdicts if v.id == "additional-servers"]
    assert [v.host for v in there] == FARM
    for v in there:
        assert v.verdict == ("blocked" if blocked else "will change"), v.detail
        if blocked:
            assert v.detail.startswith(f"{v.host}: step {v.index:02d} runs CertificateReconfiguration.ps1 as a "
                                       f"file, and PowerShell would refuse it: the execution policy is {policy}")


def test_an_additional_server_that_holds_the_certificate_is_in_place_whatever_its_policy() -> None:
    """Nothing runs there: the policy does not matter."""
    import datetime as _dt

    from psbridge.check import evaluate

    done = {k: v for k, v in state("fully configured").items() if k in ("server", "certificate")}
    done["server"] = dict(done["server"], execution_policy="Restricted", script_signature="NotSigned",
                          script_trusted=False, script_downloaded=False)
    report = evaluate(_farm_plan(), state("fully configured"), {FARM[0]: done, FARM[1]: done},
                      now=_dt.datetime(2026, 6, 1, tzinfo=_dt.timezone.utc))
    assert {v.verdict for v in report.verdicts if v.id == "additional-servers"} == {"in place"}


# ------------------------------------------------------- item 6: setup.ps1's wait, read as PowerShell runs it

def _renewal_setup(farm: bool) -> str:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = "graph"
    data["certificate"]["replaces"] = OTHER
    if farm:
        data["crm"].update(server="crm01.contoso.local", additional_servers=list(FARM))
    text = render_package(parse_parameters(data)).files["setup.ps1"].decode("utf-8-sig")
    assert syntax_errors(text) == []
    return text


def _condition(node: Node) -> str:
    return next(c for c in node.children if c.type == "pipeline").text.decode()


def _returns(node: Node) -> bool:
    return any(n.type == "flow_control_statement" and n.text.decode().startswith("return") for n in walk(node))


@pytest.mark.parametrize("farm", [False, True])
def test_setup_ps1_refuses_the_switch_until_the_wait_has_passed_and_runs_it_after(farm: bool) -> None:
    """Issue 19 item 6 in setup.ps1: the switch step's block is reached only when the marker step 05 wrote is
    this package's and [DateTime]::UtcNow is no longer before proven + switch_after_hours. On main the test
    found these lines by their text; reversing the comparison (-lt to -gt: the switch at once, a refusal after
    the wait) failed no test (the ACS pins render renewals with a wait of 0)."""
    text = _renewal_setup(farm)
    root = parse(text).root_node
    switch = 7 if farm else 6
    ifs = [n for n in walk(root) if n.type == "if_statement"]
    [hours] = variable_assignments(text, "PSBridgeWaitHours")
    assert hours.text.decode() == "[int] '24'"
    [after] = variable_assignments(text, "PSBridgeSwitchAfter")
    assert after.text.decode() == "$PSBridgeProvenAt.AddHours($PSBridgeWaitHours)"
    [early] = [n for n in ifs if _condition(n) == "[DateTime]::UtcNow -lt $PSBridgeSwitchAfter"]
    [unknown] = [n for n in ifs if _condition(n) == "$null -eq $PSBridgeProvenAt"]
    assert _returns(early) and _returns(unknown) and unknown.end_byte < after.start_byte < early.start_byte
    # Proven-at comes only from a marker of this package's steps digest, parsed as a round-trip time.
    [proven] = variable_assignments(text, "PSBridgeProvenAt")[1:]
    [marker] = [n for n in ifs if n.start_byte < proven.start_byte < n.end_byte
                and "$PSBridgeMarker[1] -eq '" in _condition(n)]
    assert "[DateTime]::TryParse($PSBridgeMarker[0]" in _condition(marker) and "RoundtripKind" in _condition(marker)
    # Order: step 05 writes the marker inside its own block; the wait sits between it and the switch's block,
    # outside every -FromStep block, so a later -FromStep waits too.
    blocks = {int(_condition(n).rsplit(" ", 1)[1]): n for n in ifs if _condition(n).startswith("$FromStep -le ")}
    [write] = [n for n in walk(root) if n.type == "invokation_expression"
               and n.text.decode().startswith("[System.IO.File]::WriteAllText($PSBridgeKeyProven")]
    assert blocks[5].start_byte < write.start_byte < blocks[5].end_byte
    assert blocks[5].end_byte < unknown.start_byte and early.end_byte < blocks[switch].start_byte
    assert not any(b.start_byte < early.start_byte < b.end_byte for b in blocks.values())


# ------------------------------------------------------------------ item 2: the tenant comparison itself

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def _connect(profile: str, variant: str) -> str:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = profile
    data["sharepoint"]["tenant_id"] = TENANT.upper() if variant == "upper case" else TENANT
    if variant == "app-only":
        data["graph"] = {"client_id": "11111111-1111-1111-1111-111111111111", "tenant_id": TENANT,
                         "certificate_thumbprint": "C" * 40}
    text = render_package(parse_parameters(data)).files["steps/04-connect.ps1"].decode("utf-8-sig")
    assert syntax_errors(text) == []
    return text


@pytest.mark.parametrize("profile,variant,read", [
    ("graph", "delegated", "[string]$Context.TenantId"), ("graph", "app-only", "[string]$Context.TenantId"),
    ("graph", "upper case", "[string]$Context.TenantId"), ("msonline", "delegated", "[string]$Company.ObjectId")])
def test_step_04_throws_exactly_when_the_connected_tenant_differs(profile: str, variant: str, read: str) -> None:
    """Issue 19 item 2: step 04 stops when the connected tenant is not the package's. On main the tests found
    an if naming both values before the first write; turning its -ne into -eq (stop on the right tenant, go on
    with the wrong one) failed no test, for graph and for msonline."""
    text = _connect(profile, variant)
    [expected] = variable_assignments(text, "ExpectedTenantId")
    assert string_values(expected) == [TENANT.upper() if variant == "upper case" else TENANT]
    root = parse(text).root_node
    [guard] = [n for n in walk(root) if n.type == "if_statement" and "$ExpectedTenantId" in _condition(n)]
    comparison = next(n for n in walk(next(c for c in guard.children if c.type == "pipeline"))
                      if n.type == "comparison_expression")
    left, operator, right = comparison.children
    # -ne: PowerShell compares strings case-insensitively (a GUID in upper case is the same tenant).
    assert (left.text.decode(), operator.text.decode(), right.text.decode()) == (read, "-ne", "$ExpectedTenantId")
    # The throw is the if's own block: there is no else, and nothing else in it.
    assert [c.type for c in guard.children if c.type in ("elseif_clauses", "elseif_clause", "else_clause")] == []
    [block] = [c for c in guard.children if c.type == "statement_block"]
    statements = [n for n in walk(block) if n.type == "flow_control_statement"]
    assert [s.text.decode().split(" ", 1)[0] for s in statements] == ["throw"]
    assert "nothing was changed in " in statements[0].text.decode()


# ------------------------------------------------------------------ item 3: the conditions that refuse

def _adds_a_problem(node: Node) -> bool:
    return "$Problems.Add(" in node.text.decode()


@pytest.mark.parametrize("trust,variant", [("acs", "delegated"), ("app", "created")])
def test_step_01_adds_a_problem_for_a_missing_parameter_and_a_2_26_or_2_27_module(trust: str, variant: str) -> None:
    """Issue 19 item 3: on main the tests found the parameter lists and the 2.26/2.27 refusal by their text;
    dropping the -not before ContainsKey (a problem for every parameter that IS there, none for a missing one)
    or testing Version.Major -eq 3 failed no test."""
    files = _acs_graph(variant) if trust == "acs" else _app_trust(variant)
    text = files["steps/01-prerequisites.ps1"].decode("utf-8-sig")
    root = parse(text).root_node
    ifs = [n for n in walk(root) if n.type == "if_statement"]
    _, loops = _tested(text)
    for start in loops:
        [loop] = [n for n in walk(root) if n.type == "foreach_statement" and n.start_byte == start]
        inner = [n for n in ifs if loop.start_byte < n.start_byte < loop.end_byte]
        missing = [n for n in inner if _condition(n) == "-not $Found.Parameters.ContainsKey($Name)"]
        absent = [n for n in inner if _condition(n) == "$null -eq $Found"]
        assert len(missing) == 1 and _adds_a_problem(missing[0]) and "has no -' + $Name" in missing[0].text.decode()
        assert len(absent) == 1 and _adds_a_problem(absent[0])
        assert not [n for n in inner if "ContainsKey" in _condition(n) and n not in missing]
    [refusal] = [n for n in ifs if "$Applications.Version" in _condition(n)]
    assert _condition(refusal) == ("$Applications -and $Applications.Version.Major -eq 2 -and "
                                   "($Applications.Version.Minor -eq 26 -or $Applications.Version.Minor -eq 27)")
    assert _adds_a_problem(refusal) and not [c for c in refusal.children if c.type in ("elseif_clauses", "else_clause")]
