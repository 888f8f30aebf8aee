"""Issue 19, second round of corrections from a real server.

Where psbridge decides, the tests call the verdict logic (psbridge.check.evaluate); where the behaviour
is PowerShell's, they read the rendered script with the PowerShell grammar (tests/support/pwsh_grammar.py)
and assert the order in which it does things.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import re
from typing import Any

import pytest

from psbridge.check import evaluate
from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.render import render_package

from support.probe_states import OTHER, THUMB, state
from support.pwsh_grammar import command_invocations, syntax_errors

NOW = _dt.datetime(2026, 6, 1, tzinfo=_dt.timezone.utc)  # inside the test certificate's 2026..2036 validity


def _data(profile: str, replaces: str | None = None) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = profile
    if replaces:
        data["certificate"]["replaces"] = replaces
    return data


def _files(profile: str, replaces: str | None = None) -> dict[str, bytes]:
    return render_package(parse_parameters(_data(profile, replaces))).files


def _script(profile: str, name: str, replaces: str | None = None) -> str:
    text = _files(profile, replaces)[name].decode("utf-8-sig")
    assert syntax_errors(text) == []
    return text


def _verdicts(answers: dict[str, Any], replaces: str | None = None, profile: str = "msonline") -> dict[str, Any]:
    plan = json.loads(_files(profile, replaces)["plan.json"])
    plan["certificate"] = {"thumbprint": THUMB}
    return {v.id: v for v in evaluate(plan, answers, now=NOW).verdicts}


# --------------------------------------------------------------------------- item 1: CRM's certificate in use

IN_USE = (f"CRM already uses the valid S2STokenIssuer certificate {OTHER}, not this package's {THUMB}: a first "
          "setup would replace it (server-side synchronization with Exchange Online shares it). Render a renewal "
          f"with [certificate] replaces = '{OTHER}'.")


@pytest.mark.parametrize("profile", ["msonline", "graph"])
def test_check_blocks_a_first_setup_over_another_valid_certificate(profile: str) -> None:
    got = _verdicts(state("crm holds another certificate"), profile=profile)
    assert got["prerequisites"].verdict == "blocked"
    assert got["prerequisites"].detail == IN_USE


def test_check_does_not_block_a_renewal_of_that_certificate() -> None:
    got = _verdicts(state("crm holds another certificate"), replaces=OTHER)
    assert got["prerequisites"].verdict == "ok"


def test_check_does_not_block_over_an_expired_certificate() -> None:
    got = _verdicts(state("crm certificate expired"))
    assert got["prerequisites"].verdict == "ok"


def test_crm_holding_the_packages_own_certificate_is_in_place() -> None:
    got = _verdicts(state("fully configured"))
    assert got["prerequisites"].verdict == "ok"
    assert got["certificate"].verdict == "in place"


def _positions(text: str, name: str) -> list[int]:
    return [i.start_byte for i in command_invocations(text) if i.name.lower() == name.lower()]


def _throw_of_problems(text: str) -> int:
    """Where step 01 throws its list of problems (the last statement that can stop it)."""
    return text.encode("utf-8").rindex(b"throw ('Prerequisites are not met:'")


@pytest.mark.parametrize("profile", ["msonline", "graph"])
def test_step_01_of_a_first_setup_reads_crms_certificates_before_it_judges(profile: str) -> None:
    text = _script(profile, "steps/01-prerequisites.ps1")
    reads = _positions(text, "Get-CrmCertificate")
    assert reads and max(reads) < _throw_of_problems(text)
    body = text.encode("utf-8")
    refusal = body.index(b"CRM already uses the valid S2STokenIssuer certificate ")
    assert min(reads) < refusal < _throw_of_problems(text)
    assert b"Render a renewal with [certificate] replaces = " in body[refusal:_throw_of_problems(text)]


@pytest.mark.parametrize("profile", ["msonline", "graph"])
def test_step_01_of_a_renewal_has_no_first_setup_refusal(profile: str) -> None:
    text = _script(profile, "steps/01-prerequisites.ps1", replaces=OTHER)
    assert "CRM already uses the valid S2STokenIssuer certificate" not in text


# --------------------------------------------------------------------------- item 3: the Graph SDK's parameters

from support.pwsh_grammar import hashtable_keys, string_values, variable_assignments  # noqa: E402


def _listed(text: str, variable: str) -> set[str]:
    [value] = variable_assignments(text, variable)
    return set(string_values(value))


def _parameters_passed(files: dict[str, bytes], command: str) -> set[str]:
    """Every named parameter any rendered script passes to `command` (splatted literal keys included)."""
    out: set[str] = set()
    for rel, body in files.items():
        if not rel.endswith(".ps1"):
            continue
        text = body.decode("utf-8-sig")
        for call in command_invocations(text):
            if call.name.lower() != command.lower():
                continue
            out |= {e.text for e in call.elements if e.kind == "parameter"}
            for splat in (e.text for e in call.elements if e.kind == "splat"):
                out |= set(hashtable_keys(text, splat) or [])
    return out


@pytest.mark.parametrize("variant", ["delegated", "app-only", "renewal"])
def test_step_01_tests_every_graph_parameter_the_steps_pass(variant: str) -> None:
    data = _data("graph", "B" * 40 if variant == "renewal" else None)
    if variant == "app-only":
        data["graph"] = {"client_id": "11111111-1111-1111-1111-111111111111",
                         "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47", "certificate_thumbprint": "C" * 40}
    files = render_package(parse_parameters(data)).files
    text = files["steps/01-prerequisites.ps1"].decode("utf-8-sig")
    assert syntax_errors(text) == []
    connect, update = _parameters_passed(files, "Connect-MgGraph"), _parameters_passed(files, "Update-MgServicePrincipal")
    assert {"NoWelcome", "Environment"} <= connect and "KeyCredentials" in update
    assert connect <= _listed(text, "ConnectParameters")
    assert update <= _listed(text, "UpdateParameters")
    # Order: the modules are imported, then Get-Command reads the cmdlets, before the refusal.
    imports, reads = _positions(text, "Import-Module"), _positions(text, "Get-Command")
    assert imports and reads and max(imports) < min(reads) and max(reads) < _throw_of_problems(text)



def test_step_01_refuses_the_applications_module_2_26_and_2_27() -> None:
    text = _script("graph", "steps/01-prerequisites.ps1")
    body = text.encode("utf-8")
    loaded = [i for i in command_invocations(text) if i.name == "Get-Module"
              and not any(e.kind == "parameter" and e.text == "ListAvailable" for e in i.elements)
              and "'Microsoft.Graph.Applications'" in [e.text for e in i.elements]]
    assert loaded, "the loaded module's version is read"
    check = body.index(b"-eq 26 -or $Applications.Version.Minor -eq 27")
    refusal = body.index(b"Update-MgServicePrincipal -KeyCredentials fails in 2.26.x and 2.27.x")
    assert max(_positions(text, "Import-Module")) < loaded[0].start_byte < check < refusal < _throw_of_problems(text)
    assert b"#3170, #3305" in body[refusal:_throw_of_problems(text)]
    assert b"-MinimumVersion 2.28.0" in body[refusal:_throw_of_problems(text)]


# --------------------------------------------------------------------------- item 12: step 02 proves, then judges

from support.pwsh_grammar import parse, walk  # noqa: E402

PROOF = {"get-childitem", "get-psbridgekeyaccess", "get-crmcertificate"}


def _exit_code_reads(node: Any) -> bool:
    return any(n.type == "variable" and n.text.decode().lower() in ("$global:lastexitcode", "$lastexitcode", "$exitcode")
               for n in walk(node))


@pytest.mark.parametrize("profile", ["msonline", "graph"])
@pytest.mark.parametrize("replaces", [None, OTHER])
def test_step_02_runs_its_proof_before_it_judges_the_exit_code(profile: str, replaces: str | None) -> None:
    [name] = [n for n in _files(profile, replaces) if re.fullmatch(r"steps/\d\d-certificate\.ps1", n)]
    text = _script(profile, name, replaces)
    calls = command_invocations(text)
    [call] = [i for i in calls if i.operator == "&" and i.name_kind == "variable" and i.name == "CertificateScript"]
    proof = [i.start_byte for i in calls if i.start_byte > call.start_byte and i.name.lower() in PROOF]
    assert {i.name.lower() for i in calls if i.start_byte in proof} == PROOF
    root = parse(text).root_node
    after = [n for n in walk(root) if n.start_byte > call.start_byte]
    judged = [n for n in after if n.type == "if_statement" and _exit_code_reads(next(c for c in n.children if c.type == "pipeline"))]
    throws = [n for n in after if n.type == "flow_control_statement" and n.text.decode().startswith("throw")]
    assert judged and throws
    assert max(proof) < min(n.start_byte for n in judged + throws)
    # The exit code is read once, into $ExitCode, before the proof runs anything.
    reads = [n for n in after if n.type == "variable" and n.text.decode().lower().endswith("lastexitcode")]
    assert len(reads) == 1 and reads[0].start_byte < min(proof)
    assert reads[0].parent is not None and [a for a in after if a.type == "assignment_expression"
                                            and a.start_byte < reads[0].start_byte < a.end_byte
                                            and a.text.decode().startswith("$ExitCode")]


# --------------------------------------------------------------------------- item 2: the tenant before any write

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
WRITES = ("update-mgserviceprincipal", "new-mgserviceprincipal", "new-mgapplication", "update-mgapplication",
          "new-mgserviceprincipalapproleassignment", "invoke-mggraphrequest", "set-crmadvancedsetting")


def _graph_data(variant: str) -> dict[str, Any]:
    data = _data("graph")
    if variant in ("delegated", "app-only"):
        data["sharepoint"]["tenant_id"] = TENANT
    if variant == "app-only":
        data["graph"] = {"client_id": "11111111-1111-1111-1111-111111111111", "tenant_id": TENANT,
                         "certificate_thumbprint": "C" * 40}
    return data


def _connects(text: str) -> list[Any]:
    return [i for i in command_invocations(text) if i.name.lower() == "connect-mggraph"]


def _argument_of(call: Any, parameter: str) -> str | None:
    elements = list(call.elements)
    for k, e in enumerate(elements):
        if e.kind == "parameter" and e.text.lower() == parameter.lower():
            return elements[k + 1].text if k + 1 < len(elements) and elements[k + 1].kind == "argument" else ""
    return None


@pytest.mark.parametrize("variant", ["delegated", "app-only", "no tenant"])
def test_connect_scopes_the_sign_in_to_the_process_and_names_the_tenant(variant: str) -> None:
    text = render_package(parse_parameters(_graph_data(variant))).files["steps/04-connect.ps1"].decode("utf-8-sig")
    assert syntax_errors(text) == []
    calls = _connects(text)
    token = [c for c in calls if _argument_of(c, "AccessToken") is not None]
    others = [c for c in calls if _argument_of(c, "AccessToken") is None]
    assert len(token) == 1 and others
    assert _argument_of(token[0], "TenantId") is None and _argument_of(token[0], "ContextScope") is None
    for call in others:
        assert _argument_of(call, "ContextScope") == "Process"
        assert _argument_of(call, "TenantId") == (None if variant == "no tenant" else f"'{TENANT}'")


@pytest.mark.parametrize("variant", ["delegated", "app-only"])
def test_the_tenant_is_compared_after_every_connect_and_before_the_first_write(variant: str) -> None:
    text = render_package(parse_parameters(_graph_data(variant))).files["setup.ps1"].decode("utf-8-sig")
    assert syntax_errors(text) == []
    calls = command_invocations(text)
    connects = [c.start_byte for c in calls if c.name.lower() == "connect-mggraph"]
    context = [c.start_byte for c in calls if c.name.lower() == "get-mgcontext"]
    writes = [c.start_byte for c in calls if c.name.lower() in WRITES]
    root = parse(text).root_node
    compared = [n for n in walk(root) if n.type == "if_statement"
                and b"$Context.TenantId" in next(c for c in n.children if c.type == "pipeline").text
                and b"$ExpectedTenantId" in next(c for c in n.children if c.type == "pipeline").text
                and any(t.type == "flow_control_statement" and t.text.startswith(b"throw") for t in walk(n))]
    assert connects and context and writes and len(compared) == 1
    assert max(connects) < min(context) < compared[0].start_byte < compared[0].end_byte < min(writes)


@pytest.mark.parametrize("profile", ["graph", "msonline"])
def test_setup_disconnects_graph_in_a_finally(profile: str) -> None:
    text = _script(profile, "setup.ps1")
    root = parse(text).root_node
    finals = [n for n in walk(root) if n.type == "finally_clause"]
    inside = [c for c in command_invocations(text) if c.name.lower() == "disconnect-mggraph"
              and any(f.start_byte <= c.start_byte < f.end_byte for f in finals)]
    everywhere = [c for c in command_invocations(text) if c.name.lower() == "disconnect-mggraph"]
    if profile == "msonline":
        assert everywhere == []
        return
    assert len(inside) == 1 and everywhere == inside
    # the finally belongs to the try that runs the steps: every step's Connect-MgGraph is inside that try
    [outer] = [f.parent for f in finals if f.start_byte <= inside[0].start_byte < f.end_byte
               and f.parent is not None and f.parent.type == "try_statement"]
    assert all(outer.start_byte <= c.start_byte < outer.end_byte for c in _connects(text))


# --------------------------------------------------------------------------- item 4: the execution policy

POLICY_CASES = [  # (policy, signature status, trusted publisher, downloaded) -> blocked?
    ("Restricted", "NotSigned", False, False, True),
    ("Undefined", "NotSigned", False, False, True),
    ("AllSigned", "NotSigned", False, False, True),
    ("AllSigned", "HashMismatch", False, False, True),
    ("AllSigned", "Valid", False, False, True),  # an untrusted publisher is asked about: no one answers remotely
    ("AllSigned", "Valid", True, True, False),
    ("RemoteSigned", "NotSigned", False, True, True),
    ("RemoteSigned", "NotSigned", False, False, False),
    ("RemoteSigned", "Valid", True, True, False),
    ("Unrestricted", "NotSigned", False, True, True),
    ("Unrestricted", "NotSigned", False, False, False),
    ("Bypass", "NotSigned", False, True, False),
]


def _server_with(policy: str, status: str, trusted: bool, downloaded: bool) -> dict[str, Any]:
    answers = state("fresh server")
    answers["server"] = dict(answers["server"], execution_policy=policy, script_signature=status,
                             script_trusted=trusted, script_downloaded=downloaded)
    return answers


@pytest.mark.parametrize("policy,status,trusted,downloaded,blocked", POLICY_CASES)
def test_check_judges_the_execution_policy_against_certificate_reconfiguration(
        policy: str, status: str, trusted: bool, downloaded: bool, blocked: bool) -> None:
    got = _verdicts(_server_with(policy, status, trusted, downloaded))["prerequisites"]
    assert got.verdict == ("blocked" if blocked else "ok"), got.detail
    if not blocked:
        return
    assert got.detail.startswith("step 02 runs CertificateReconfiguration.ps1 as a file, and PowerShell would refuse "
                                 f"it: the execution policy is {policy}")
    if downloaded and policy in ("RemoteSigned", "Unrestricted"):
        assert got.detail.endswith("marked as downloaded from the internet (its Zone.Identifier stream): check the "
                                   "file, then unblock it on the server with Unblock-File")
    else:
        assert "Set-ExecutionPolicy RemoteSigned -Scope LocalMachine" in got.detail


def test_check_without_the_new_readings_does_not_guess() -> None:
    """A server probe of an older package reports no signature: the policy alone blocks only Restricted."""
    answers = state("fresh server")
    answers["server"] = dict(answers["server"], execution_policy="AllSigned")
    assert _verdicts(answers)["prerequisites"].verdict == "ok"


def test_the_server_probe_reads_the_signature_and_the_downloaded_mark() -> None:
    text = _files("msonline")["probes/server.ps1"].decode("utf-8-sig")
    assert syntax_errors(text) == []
    calls = command_invocations(text)
    [signature] = [c for c in calls if c.name == "Get-AuthenticodeSignature"]
    [mark] = [c for c in calls if c.name == "Get-Item"]
    assert _argument_of(signature, "LiteralPath") == "$ScriptPath" == _argument_of(mark, "LiteralPath")
    assert _argument_of(mark, "Stream") == "'Zone.Identifier'"
    assert _argument_of(mark, "ErrorAction") == "SilentlyContinue"


@pytest.mark.parametrize("profile", ["msonline", "graph"])
@pytest.mark.parametrize("replaces", [None, OTHER])
def test_step_01_reads_the_policy_the_signature_and_the_mark_before_it_judges(profile: str,
                                                                           replaces: str | None) -> None:
    text = _script(profile, "steps/01-prerequisites.ps1", replaces)
    calls = command_invocations(text)
    body = text.encode("utf-8")
    [policy] = [c for c in calls if c.name == "Get-ExecutionPolicy"]
    [signature] = [c for c in calls if c.name == "Get-AuthenticodeSignature"]
    [mark] = [c for c in calls if c.name == "Get-Item" and _argument_of(c, "Stream") is not None]
    assert _argument_of(signature, "LiteralPath") == "$CertificateScript" == _argument_of(mark, "LiteralPath")
    assert _argument_of(mark, "Stream") == "'Zone.Identifier'" and _argument_of(mark, "ErrorAction") == "SilentlyContinue"
    # The file is located, then read, then judged; every refusal is added before step 01 throws.
    located = body.index(b"$CertificateScript = [System.IO.Path]::Combine($ToolsDir, 'CertificateReconfiguration.ps1')")
    refusals = [body.index(b"$ExecutionPolicy -eq 'AllSigned' -and -not $Trusted"),
                body.index(b"$ExecutionPolicy -eq 'RemoteSigned' -and $Downloaded -and -not $Trusted"),
                body.index(b"@('AllSigned', 'RemoteSigned', 'Unrestricted') -notcontains $ExecutionPolicy")]
    plan = json.loads(_files(profile, replaces)["plan.json"])
    [number] = [s["index"] for s in plan["steps"] if s["id"] == "certificate"]
    added = body.index(f"$Problems.Add('Step {number:02d} runs ' + $CertificateScript".encode() + b" + ' as a file, and PowerShell would refuse it: '")
    assert located < policy.start_byte < signature.start_byte < mark.start_byte < min(refusals)
    assert max(refusals) < added < _throw_of_problems(text)
    assert b"Unblock-File -LiteralPath ''' + $CertificateScript + '''." in body[min(refusals):added]
    # The publisher must be trusted, not only the signature valid (AllSigned asks about others).
    trust = body.index(b"Cert:\\LocalMachine\\TrustedPublisher")
    assert signature.start_byte < trust < min(refusals)


# --------------------------------------------------------------------------- item 8: UNC certificate paths

UNC_PFX, UNC_CER = "\\\\files01\\certs\\crm.pfx", "\\\\files01\\certs\\crm.cer"


def test_check_names_the_second_hop_for_a_unc_certificate_path_it_cannot_read() -> None:
    data = _data("msonline")
    data["certificate"].update(pfx_path=UNC_PFX, cer_path=UNC_CER)
    plan = json.loads(render_package(parse_parameters(data)).files["plan.json"])
    plan["certificate"] = {"thumbprint": THUMB}
    answers = state("fresh server")
    answers["server"] = dict(answers["server"], pfx_file=False, cer_file=False)
    got = {v.id: v for v in evaluate(plan, answers, now=NOW).verdicts}["prerequisites"]
    assert got.verdict == "blocked"
    for what in ("the PFX file", "the .cer file"):
        assert f"{what} not found (a UNC path: over a remote session the server cannot pass your credentials on to " \
               "the share - the second hop - so a file that exists looks missing. Copy the file to a local folder " \
               "on the server and set that path in the parameters, or connect with CredSSP: psbridge run --auth " \
               "credssp.)" in got.detail
    # a local path that is missing is only missing
    answers_local = _verdicts(answers)["prerequisites"]
    assert "the PFX file not found;" in answers_local.detail and "second hop" not in answers_local.detail


@pytest.mark.parametrize("profile", ["msonline", "graph"])
def test_step_01_says_second_hop_only_for_a_unc_path_it_cannot_read(profile: str) -> None:
    text = _script(profile, "steps/01-prerequisites.ps1")
    root = parse(text).root_node
    body = text.encode("utf-8")
    hop = body.index(b"$SecondHop = ' (a UNC path: over a remote session")
    for variable in (b"$PfxPath", b"$CerPath"):
        [missing] = [n for n in walk(root) if n.type == "if_statement"
                     and next(c for c in n.children if c.type == "pipeline").text.startswith(b"-not (Test-Path -LiteralPath " + variable)]
        inner = missing.text
        assert variable + b".StartsWith('\\\\')) { $SecondHop }" in inner
        assert hop < missing.start_byte < _throw_of_problems(text)


@pytest.mark.parametrize("command", ["validate", "render"])
def test_validate_and_render_warn_of_a_unc_certificate_path_and_do_not_refuse(
        command: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from psbridge.cli import main
    from support.app_trust import write_parameters

    data = _data("msonline")
    data["certificate"].update(pfx_path=UNC_PFX)
    params = write_parameters(tmp_path / "p.toml", data)
    args = [command, str(params)] + (["--out", str(tmp_path / "out")] if command == "render" else [])
    assert main(args) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "UNC path" in line]
    assert warnings == [f"psbridge: warning: certificate.pfx_path: {UNC_PFX} is a UNC path: over a remote session "
                        "(psbridge run, check) the server cannot pass your credentials on to the share (the second "
                        "hop), so the file looks missing. Copy it to a local folder on the server and set that path, "
                        "or connect with --auth credssp; setup.ps1 run at the server's console can read it"]
    data["certificate"].update(pfx_path="C:\\certs\\crm.pfx")
    write_parameters(tmp_path / "p.toml", data)
    assert main(["validate", str(params)]) == 0
    assert "UNC path" not in capsys.readouterr().err


# --------------------------------------------------------------------------- item 2 (c): one tenant in the parameters

def test_validate_refuses_a_graph_tenant_other_than_the_sharepoint_tenant(tmp_path: Any,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from psbridge.cli import main
    from support.app_trust import write_parameters

    data = _graph_data("app-only")
    data["graph"]["tenant_id"] = "22222222-2222-2222-2222-222222222222"
    params = write_parameters(tmp_path / "p.toml", data)
    assert main(["validate", str(params)]) == 2
    out, err = capsys.readouterr()
    [line] = [l for l in err.splitlines() if l.strip()]
    assert line.endswith(f"graph.tenant_id (22222222-2222-2222-2222-222222222222) differs from sharepoint.tenant_id "
                         f"({TENANT}): both name the tenant of the SharePoint site; give the same tenant ID")
    assert "Traceback" not in out + err


@pytest.mark.parametrize("variant", ["app-only", "graph tenant only", "upper case"])
def test_a_graph_tenant_equal_to_the_sharepoint_tenant_or_alone_is_valid(variant: str) -> None:
    data = _graph_data("app-only")
    if variant == "graph tenant only":
        del data["sharepoint"]["tenant_id"]
    if variant == "upper case":
        data["graph"]["tenant_id"] = TENANT.upper()
    assert parse_parameters(data).graph is not None


# --------------------------------------------------------------------------- item 2 (b): msonline's tenant before step 06

MSOL_WRITES = ("new-msolserviceprincipalcredential", "set-msolserviceprincipal", "remove-msolserviceprincipalcredential")


@pytest.mark.parametrize("replaces", [None, OTHER])
def test_msonline_compares_the_company_with_the_packages_tenant_before_any_office_365_write(
        replaces: str | None) -> None:
    data = _data("msonline", replaces)
    data["sharepoint"]["tenant_id"] = TENANT
    text = render_package(parse_parameters(data)).files["setup.ps1"].decode("utf-8-sig")
    assert syntax_errors(text) == []
    calls = command_invocations(text)
    connects = [c.start_byte for c in calls if c.name.lower() == "connect-msolservice"]
    company = [c.start_byte for c in calls if c.name.lower() == "get-msolcompanyinformation"]
    writes = [c.start_byte for c in calls if c.name.lower() in MSOL_WRITES]
    root = parse(text).root_node
    compared = [n for n in walk(root) if n.type == "if_statement"
                and b"$Company.ObjectId" in next(c for c in n.children if c.type == "pipeline").text
                and b"$ExpectedTenantId" in next(c for c in n.children if c.type == "pipeline").text
                and any(t.type == "flow_control_statement" and t.text.startswith(b"throw") for t in walk(n))]
    assert connects and company and writes and len(compared) == 1
    assert max(connects) < min(company) < compared[0].start_byte < compared[0].end_byte < min(writes)
    assert {e.text.decode() for e in variable_assignments(text, "ExpectedTenantId")} == {f"'{TENANT}'"}


def test_msonline_without_a_tenant_shows_the_company_and_compares_nothing() -> None:
    text = _script("msonline", "steps/04-connect.ps1")
    assert [c.name for c in command_invocations(text) if c.name.lower().endswith("msolcompanyinformation")] == \
        ["Get-MsolCompanyInformation"]
    assert "$ExpectedTenantId" not in text and "Write-Output ('Connected to tenant ' + $Company.ObjectId" in text


@pytest.mark.parametrize("profile", ["msonline", "graph"])
def test_review_says_to_unblock_a_copied_setup_ps1_after_its_hash_check(profile: str) -> None:
    review = " ".join(_files(profile)["REVIEW.md"].decode("utf-8").split())
    hashes = review.index("check it with `Get-FileHash` before running")
    unblock = review.index("A setup.ps1 copied from a workstation carries the downloaded mark, and the RemoteSigned "
                           "execution policy refuses it: once its hash matches, `Unblock-File -LiteralPath .\\setup.ps1`.")
    assert hashes < unblock


def test_readme_says_to_unblock_a_copied_setup_ps1_and_lists_items_4_and_8() -> None:
    from pathlib import Path

    readme = " ".join((Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8").split())
    assert "once its hash matches, `Unblock-File -LiteralPath .\\setup.ps1`" in readme
    confirm = readme.index("## What only a real Windows host can confirm")
    assert readme.index("* issue 19, the execution policy:", confirm) > confirm
    assert readme.index("* issue 19, UNC certificate paths:", confirm) > confirm


def test_psbridge_check_over_the_peer_shows_a_blocked_vendor_script(tmp_path: Any, engine: Any, http_peer: Any,
                                                                     secrets_env: None,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The real CLI: the server probe's readings (RemoteSigned, a downloaded unsigned file) make check exit 1."""
    from psbridge.cli import main
    from support.cli import check_args
    from support.packages import answer_probes, write_check_package

    pkg = write_check_package(tmp_path)
    answer_probes(engine, _server_with("RemoteSigned", "NotSigned", False, True))
    assert main(check_args(pkg, http_peer, "--json")) == 1
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    [verdict] = [v for v in report["verdicts"] if v["id"] == "prerequisites"]
    assert verdict["verdict"] == "blocked"
    assert "unblock it on the server with Unblock-File" in verdict["detail"]
