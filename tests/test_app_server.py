"""The app trust's server side: steps partner-applications and msal-assembly, the web and org probes,
the app checks of step 01 and the MSAL files on the additional servers.

The scripts are rendered through the project's Jinja environment (support/app_render.py: a whole
app package does not render on this branch yet, its Entra steps' templates come from another) and
parsed with the PowerShell grammar: the order facts are read from the syntax tree. The verdicts
are `check.evaluate`'s on probe answers (support/probe_states.py), the back-out values those of
`rollback_values` on fabricated readings.
"""

from __future__ import annotations

import copy
import datetime as _dt
import re
from functools import cache
from types import SimpleNamespace
from typing import Any

import pytest

from psbridge.catalogue import constants_for, step_entry, steps_for
from psbridge.check import evaluate
from psbridge.errors import UserError
from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.render import render_package
from psbridge.steps import RollbackContext, ServerVerdictContext, unit
from psbridge.steps import partner_applications as pa

from support import probe_states as ps
from support.app_render import CLIENT, TENANT, app_data, texts
from support.pwsh_grammar import code_only, command_invocations, parse, syntax_errors, variable_assignments, walk

NOW = _dt.datetime(2026, 6, 1, tzinfo=_dt.timezone.utc)
OTHER_TENANT = "0b8c5b8e-1111-4c2d-9e3f-aaaaaaaaaaaa"


@cache
def _texts(adopt: bool = False, farm: bool = False) -> dict[str, str]:
    return texts(app_data(adopt=adopt, farm=farm))


def _script(name: str, adopt: bool = False, farm: bool = False) -> str:
    found = [text for path, text in _texts(adopt, farm).items()
             if path == name or re.fullmatch(r"steps/\d\d-" + re.escape(name), path)]
    assert len(found) == 1, name
    return found[0]


def _calls(text: str, command: str, argument: str | None = None) -> list[int]:
    """Byte offsets of the invocations of `command` (with `argument` among its elements, if given)."""
    return [inv.start_byte for inv in command_invocations(text) if inv.name.lower() == command.lower()
            and (argument is None or any(e.text == argument for e in inv.elements))]


def _method_calls(text: str, method: str) -> list[int]:
    """Byte offsets of the .NET method calls `X::method(` / `$x.method(` in the code (not in strings or comments)."""
    code = code_only(text).encode("utf-8")
    return [m.start() for m in re.finditer(re.escape(method.encode()) + rb"\(", code)]


def _function_body(text: str, name: str) -> str:
    """The text of the function `name` (the installer is one function, so its statements are in order)."""
    for node in walk(parse(text).root_node):
        if node.type == "function_statement" and name.encode() in (node.text or b"").split(b"{", 1)[0]:
            return (node.text or b"").decode("utf-8")
    raise AssertionError(f"no function {name}")


# --------------------------------------------------------------------------- the scripts parse, PowerShell 5.1


@pytest.mark.parametrize("variant", [{}, {"adopt": True}, {"farm": True}], ids=["created", "adopted", "farm"])
def test_every_rendered_script_parses(variant: dict[str, bool]) -> None:
    for path, text in _texts(**variant).items():
        assert syntax_errors(text) == [], path


def test_app_units_come_after_the_articles_steps_and_before_the_farm_step() -> None:
    ids = [s.id for s in steps_for(parse_parameters(app_data(farm=True)))]
    assert ids.index("tenant-id") < ids.index("partner-applications") < ids.index("msal-assembly") \
        < ids.index("additional-servers")
    acs = [s.id for s in steps_for(parse_parameters(_acs_farm()))]
    assert "partner-applications" not in acs and "msal-assembly" not in acs


def _acs_farm() -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = "graph"
    data["crm"].update(server="crm01.contoso.local", additional_servers=["crmfe2.contoso.local"])
    return data


def test_an_acs_package_has_none_of_the_app_checks_or_the_msal_copy() -> None:
    files = render_package(parse_parameters(_acs_farm())).files
    for path in ("steps/01-prerequisites.ps1", "steps/09-additional-servers.ps1"):
        text = files[path].decode("utf-8-sig")
        assert "Msal" not in text and "Get-CrmOrganization" not in text and "CRMWeb\\bin" not in text, path


# --------------------------------------------------------------------------- msal-assembly: the order of the copy


def test_msal_hashes_are_checked_in_memory_and_on_disk_before_anything_moves_into_bin() -> None:
    body = _function_body(_script("msal-assembly.ps1"), "Install-PSBridgeMsal")
    computed = _method_calls(body, "ComputeHash")
    written = _method_calls(body, "WriteAllBytes")
    staged_hash = _calls(body, "Get-FileHash", "$File.Staged")
    moves = _calls(body, "Move-Item")
    assert len(computed) == 1 and len(written) == 1 and len(staged_hash) == 1 and len(moves) == 1
    assert computed[0] < written[0] < staged_hash[0] < moves[0]
    move = next(i for i in command_invocations(body) if i.name == "Move-Item")
    elements = [e.text for e in move.elements]
    assert elements[elements.index("LiteralPath") + 1] == "$File.Staged"
    assert elements[elements.index("Destination") + 1] == "$File.Target"
    # The file in bin is hashed again after the move.
    assert _calls(body, "Get-FileHash", "$File.Target")[-1] > moves[0]


def test_msal_backup_and_version_check_come_before_the_overwrite() -> None:
    body = _function_body(_script("msal-assembly.ps1"), "Install-PSBridgeMsal")
    copies = _calls(body, "Copy-Item")
    backup_hash = _calls(body, "Get-FileHash", "$File.Backup")
    versions = _method_calls(body, "GetAssemblyName")
    move = _calls(body, "Move-Item")[0]
    assert len(copies) == 1 and len(backup_hash) == 1 and len(versions) == 2
    assert max(versions) < copies[0] < backup_hash[0] < move
    copy_call = next(i for i in command_invocations(body) if i.name == "Copy-Item")
    elements = [e.text for e in copy_call.elements]
    assert elements[elements.index("LiteralPath") + 1] == "$File.Target"
    assert elements[elements.index("Destination") + 1] == "$File.Backup"


def test_msal_staging_and_backup_folders_are_outside_bin() -> None:
    body = _function_body(_script("msal-assembly.ps1"), "Install-PSBridgeMsal")
    (work,) = variable_assignments(body, "Work")
    assert (work.text or b"").decode() == \
        "[System.IO.Path]::Combine([System.IO.Path]::GetDirectoryName($CrmWeb), 'psbridge-msal')"
    for name in ("Staging", "Backup"):
        (value,) = variable_assignments(body, name)
        assert b"$Work" in (value.text or b"") and b"CrmBin" not in (value.text or b""), name
    (target,) = variable_assignments(body, "File.Target")
    assert (target.text or b"").decode() == "[System.IO.Path]::Combine($CrmBin, $File.Name)"


def test_msal_in_place_returns_before_anything_is_written() -> None:
    body = _function_body(_script("msal-assembly.ps1"), "Install-PSBridgeMsal")
    code = code_only(body)
    returned = code.index("return")
    assert returned < min(_method_calls(body, "CreateDirectory")) and returned < min(_method_calls(body, "WriteAllBytes"))
    assert "nothing written" in body[:body.index("return")]


def test_msal_step_takes_the_payload_as_parameters() -> None:
    text = _script("msal-assembly.ps1")
    param = re.search(r"^param\((.*?)^\)", text, re.S | re.M)
    assert param is not None
    assert re.findall(r"\[string\] \$(\w+)", param.group(1)) == ["MsalDll", "MsalXml", "MsalDllSha256", "MsalXmlSha256"]


def test_the_farm_step_installs_msal_with_the_same_partial_before_the_certificate_early_return() -> None:
    farm = _script("additional-servers.ps1", farm=True)
    main = _script("msal-assembly.ps1", farm=True)
    assert _function_body(farm, "Install-PSBridgeMsal") == _function_body(main, "Install-PSBridgeMsal")
    call = _calls(farm, "Install-PSBridgeMsal")
    assert len(call) == 1
    assert call[0] < code_only(farm).index("if ((Test-PSBridgeInstalled) -eq")
    assert "[string] $MsalDll" in farm


def test_crmweb_is_found_from_iis_and_a_registry_mismatch_stops() -> None:
    text = _script("msal-assembly.ps1")
    assert "Get-Website | Where-Object { $_.Name -eq $CrmWebSiteName }" in text
    assert "$CrmWebSiteName = 'Microsoft Dynamics CRM'" in text
    # A disagreement clears CRMWeb, and the installer throws when bin is unknown.
    mismatch = text.index("if (-not $CrmWebAgree) {")
    assert text.index("$CrmWeb = $null", mismatch) < text.index("function Install-PSBridgeMsal")
    body = _function_body(text, "Install-PSBridgeMsal")
    assert code_only(body).index("throw") < code_only(body).index("ComputeHash")


# --------------------------------------------------------------------------- partner-applications


def _here_strings(text: str) -> list[str]:
    return [(n.text or b"").decode() for n in walk(parse(text).root_node)
            if n.type == "string_literal" and (n.text or b"").startswith(b"@'")]


@pytest.mark.parametrize("adopt", [False, True], ids=["created", "adopted"])
def test_the_sql_is_a_here_string_and_every_value_a_parameter(adopt: bool) -> None:
    text = _script("partner-applications.ps1", adopt=adopt)
    sql = _here_strings(text)
    assert len(sql) == 2 and "INSERT INTO dbo.PartnerApplicationBase" in sql[0] and "row_kind" in sql[1]
    for block in sql:
        assert TENANT not in block.lower() and CLIENT not in block.lower()
        assert "38616d01" not in block and "{{" not in block
    for name in ("TenantId", "ClientId", "SharePointAppId", "SharePointPrincipalId"):
        assert f"$SqlCommand.Parameters.Add('@{name}', [System.Data.SqlDbType]::UniqueIdentifier)" in text
    assert f"$TenantId = '{TENANT}'" in text


def test_partner_applications_reads_back_after_the_change_and_prints_one_json_line() -> None:
    text = _script("partner-applications.ps1")
    readers = _method_calls(text, "ExecuteReader")
    assert len(readers) == 2
    sql = [v for v in variable_assignments(text, "SqlText")]
    assert [b"INSERT INTO" in (v.text or b"") for v in sql] == [True, False]
    assert sql[0].start_byte < readers[0] < sql[1].start_byte < readers[1]
    convert = _calls(text, "ConvertTo-Json")
    assert len(convert) == 1 and convert[0] > readers[1]
    tail = text[text.index("[pscustomobject][ordered]@{"):]
    assert re.findall(r"^\s+(\w+)\s+=", tail, re.M)[:3] == ["step", "microsoft_row", "old_tenant_id"]
    assert "customer_row" in tail and "-Compress" in tail


def test_a_created_app_is_found_by_its_unique_name_and_an_adopted_one_is_not_looked_up() -> None:
    created = _script("partner-applications.ps1")
    assert "\"uniqueName eq '\" + $AppUniqueName.Replace(\"'\", \"''\") + \"'\"" in created
    assert "$AppUniqueName = 'psbridge-contoso-sharepoint'" in created
    adopted = _script("partner-applications.ps1", adopt=True)
    assert _calls(adopted, "Get-MgApplication") == [] and f"$ClientId = '{CLIENT}'" in adopted
    assert unit("partner-applications").step("graph").needs == ("prerequisites", "connect")


def test_the_constants_in_the_templates_are_the_units() -> None:
    text = _script("partner-applications.ps1")
    assert f"$SharePointAppId = '{pa.SHAREPOINT_APP_ID}'" in text
    assert f"$SharePointPrincipalId = '{pa.SHAREPOINT_PRINCIPAL_ID}'" in text
    assert f"$ApplicationName = '{pa.APPLICATION_NAME}'" in text


def test_the_org_probe_never_lets_a_sql_error_out() -> None:
    text = _script("probes/org.ps1")
    opens = _method_calls(text, "Open")
    assert len(opens) == 2
    tries = [n for n in walk(parse(text).root_node) if n.type == "try_statement"
             and b"$Result.sql_error = $_.Exception.Message" in (n.text or b"")]
    assert len(tries) == 1
    assert all(tries[0].start_byte < o < tries[0].end_byte for o in opens)
    assert _calls(text, "ConvertTo-Json")[-1] > tries[0].end_byte


def test_the_probes_print_one_json_line_of_their_name() -> None:
    for name in ("web", "org"):
        text = _script(f"probes/{name}.ps1")
        assert f"probe         = '{name}'" in text
        assert code_only(text).rstrip().endswith("ConvertTo-Json -Compress -Depth 4")


def test_the_rollback_keeps_null_as_null() -> None:
    text = _script("rollback/11-partner-applications.ps1")
    param = re.search(r"^param\((.*?)^\)", text, re.S | re.M)
    assert param is not None and "$OldTenantId = $null" in param.group(1)
    assert not re.search(r"\[string\]\s*\$OldTenantId", code_only(param.group(1)))
    block = text[text.index("Get-Variable -Name 'OldTenantId'"):]
    assert block.index("if ($null -eq $SqlValue)") < block.index("[System.DBNull]::Value") < block.index("[string]$SqlValue")


# --------------------------------------------------------------------------- verdicts


def _plan(adopt: bool = True, farm: bool = False, payload: bool = True) -> dict[str, Any]:
    params = parse_parameters(app_data(adopt=adopt, farm=farm))
    steps = []
    for step in steps_for(params):
        entry = step_entry(step, params)
        steps.append({"index": step.index, "id": step.id, **entry})
    plan = {"profile": "graph", "parameters": params.model_dump(mode="json", exclude_none=True),
            "constants": constants_for(params), "certificate": {"thumbprint": ps.THUMB,
                                                               "not_after": "2036-01-01T00:00:00Z"},
            "steps": steps, "probes": [{"id": n} for n in ("server", "certificate", "crm", "entra", "web", "org")]}
    if payload:
        plan["payload"] = copy.deepcopy(ps.MSAL_PAYLOAD)
    return plan


def _verdicts(answers: dict[str, Any], plan: dict[str, Any] | None = None) -> dict[str, Any]:
    report = evaluate(plan or _plan(), answers, now=NOW)
    return {v.id: v for v in report.verdicts}


def test_an_acs_only_server_will_change_both_app_units() -> None:
    found = _verdicts(ps.state("acs-only server"))
    assert found["prerequisites"].verdict == "ok"
    assert found["partner-applications"].verdict == "will change"
    assert found["partner-applications"].before == "Microsoft row: absent; app row: absent"
    assert found["msal-assembly"].verdict == "will change"
    assert "write Microsoft.Identity.Client.dll" in found["msal-assembly"].detail


def test_a_migrated_server_is_in_place() -> None:
    found = _verdicts(ps.state("migrated and configured"))
    assert found["partner-applications"].verdict == "in place"
    assert found["msal-assembly"].verdict == "in place"
    assert found["prerequisites"].verdict == "ok"


def test_a_null_tenant_on_microsofts_row_will_change_from_null() -> None:
    answers = ps.state("migrated and configured")
    answers["org"] = ps.org_answer([ps.partner_row(ps.SHAREPOINT_APP, None), ps.partner_row(CLIENT, TENANT)])
    verdict = _verdicts(answers)["partner-applications"]
    assert verdict.verdict == "will change"
    assert verdict.before == "Microsoft row: TenantId NULL" and verdict.after == f"Microsoft row: TenantId {TENANT}"


def test_another_msal_version_in_bin_is_blocked() -> None:
    answers = ps.state("acs-only server")
    answers["web"] = ps.web_answer("f" * 64, None, version="4.61.3.0")
    found = _verdicts(answers)
    assert found["msal-assembly"].verdict == "blocked" and "4.61.3.0" in found["msal-assembly"].detail
    assert found["prerequisites"].verdict == "blocked" and "4.61.3.0" in found["prerequisites"].detail


def test_the_same_version_with_other_bytes_is_replaced_after_a_backup() -> None:
    answers = ps.state("acs-only server")
    answers["web"] = ps.web_answer("f" * 64, ps.MSAL_XML_SHA256)
    verdict = _verdicts(answers)["msal-assembly"]
    assert verdict.verdict == "will change" and "replace Microsoft.Identity.Client.dll (backed up first)" in verdict.detail


def test_registry_and_iis_disagreeing_is_blocked() -> None:
    answers = ps.state("acs-only server")
    answers["web"] = ps.web_answer(paths_agree=False, crmweb=None, bin=None, registry_path="D:\\CRM\\CRMWeb",
                                   problem="The registry and IIS disagree on where CRMWeb is")
    found = _verdicts(answers)
    assert found["msal-assembly"].verdict == "blocked" and "D:\\CRM\\CRMWeb" in found["msal-assembly"].detail
    assert found["prerequisites"].verdict == "blocked" and "disagree" in found["prerequisites"].detail


def test_no_iis_site_is_blocked() -> None:
    answers = ps.state("acs-only server")
    answers["web"] = ps.web_answer(site_found=False, site_path=None, crmweb=None, bin=None, paths_agree=None,
                                   problem="IIS has no site named Microsoft Dynamics CRM")
    assert _verdicts(answers)["msal-assembly"].verdict == "blocked"


@pytest.mark.parametrize("right", ["can_insert", "can_update", "can_select"])
def test_missing_sql_rights_are_blocked(right: str) -> None:
    answers = ps.state("acs-only server")
    answers["org"]["rights"][right] = 0
    found = _verdicts(answers)
    assert found["partner-applications"].verdict == "blocked"
    assert right.split("_")[1].upper() in found["partner-applications"].detail
    assert found["prerequisites"].verdict == "blocked"


def test_no_delete_right_blocks_the_prerequisites_only() -> None:
    answers = ps.state("acs-only server")
    answers["org"]["rights"]["can_delete"] = 0
    found = _verdicts(answers)
    assert found["partner-applications"].verdict == "will change"
    assert found["prerequisites"].verdict == "blocked" and "DELETE" in found["prerequisites"].detail


@pytest.mark.parametrize("count", [0, 2])
def test_organization_base_not_one_row_is_blocked(count: int) -> None:
    answers = ps.state("acs-only server")
    answers["org"]["rights"]["organization_count"] = count
    verdict = _verdicts(answers)["partner-applications"]
    assert verdict.verdict == "blocked" and f"OrganizationBase holds {count} rows" in verdict.detail


def test_sql_not_reachable_names_the_second_hop() -> None:
    answers = ps.state("acs-only server")
    answers["org"] = ps.org_answer([], sql_reachable=False, rights=None, rows_read=False,
                                   sql_error="Cannot connect to SQL Server sql01 ... ANONYMOUS LOGON")
    verdict = _verdicts(answers)["partner-applications"]
    assert verdict.verdict == "blocked"
    assert "second hop" in (verdict.cause or "") and "CredSSP" in (verdict.fix or "")


def test_organization_not_found_is_blocked() -> None:
    answers = ps.state("acs-only server")
    answers["org"] = ps.org_answer([], found=False, error="no such organization", sql_reachable=None, rights=None,
                                   rows_read=False)
    assert _verdicts(answers)["partner-applications"].verdict == "blocked"


def test_a_customer_row_with_another_tenant_is_blocked() -> None:
    answers = ps.state("migrated and configured")
    answers["org"] = ps.org_answer([ps.partner_row(ps.SHAREPOINT_APP, TENANT), ps.partner_row(CLIENT, OTHER_TENANT)])
    assert _verdicts(answers)["partner-applications"].verdict == "blocked"


def test_a_created_app_not_yet_there_will_change_and_an_unknown_one_cannot_be_told() -> None:
    plan = _plan(adopt=False)
    answers = ps.state("migrated and configured")
    answers["org"] = ps.org_answer([ps.partner_row(ps.SHAREPOINT_APP, TENANT)], client_id=None, app_count=0)
    assert _verdicts(answers, plan)["partner-applications"].verdict == "will change"
    answers["org"] = ps.org_answer([ps.partner_row(ps.SHAREPOINT_APP, TENANT)], client_id=None, app_count=None)
    assert _verdicts(answers, plan)["partner-applications"].verdict == "cannot tell"


def test_no_answers_cannot_tell() -> None:
    answers = ps.state("acs-only server")
    del answers["web"], answers["org"]
    found = _verdicts(answers)
    assert found["partner-applications"].verdict == "cannot tell"
    assert found["msal-assembly"].verdict == "cannot tell"
    assert found["prerequisites"].verdict == "cannot tell"


def test_no_payload_in_the_plan_cannot_tell_the_msal_files() -> None:
    assert _verdicts(ps.state("migrated and configured"), _plan(payload=False))["msal-assembly"].verdict == "cannot tell"


def test_an_additional_server_is_judged_on_its_certificate_and_its_msal_files() -> None:
    from psbridge.steps.additional_servers import on_server

    plan = _plan(farm=True)
    index = next(s["index"] for s in plan["steps"] if s["id"] == "additional-servers")
    base = {"server": ps.SERVER, "certificate": ps.state("fully configured")["certificate"]}

    def judge(web: dict[str, Any] | None) -> Any:
        return on_server(ServerVerdictContext(plan, index, "crmfe2", {**base, "web": web}, NOW))

    assert judge(ps.web_answer(ps.MSAL_DLL_SHA256, ps.MSAL_XML_SHA256)).verdict == "in place"
    missing = judge(ps.web_answer())
    assert missing.verdict == "will change" and "MSAL: write Microsoft.Identity.Client.dll" in missing.detail
    assert judge(ps.web_answer("f" * 64, None, version="5.0.0.0")).verdict == "blocked"
    assert judge(None).verdict == "cannot tell"
    acs = copy.deepcopy(plan)
    acs["parameters"].pop("trust")
    assert on_server(ServerVerdictContext(acs, index, "crmfe2", {**base, "web": None}, NOW)).verdict == "in place"


# --------------------------------------------------------------------------- the back-out's values


def _context(before: list[dict[str, Any]], after: list[dict[str, Any]], **changes: Any) -> RollbackContext:
    package = SimpleNamespace(parameters=parse_parameters(app_data(adopt=True)), plan=_plan())
    return RollbackContext(package, {"org": ps.org_answer(before, **changes)}, {"org": ps.org_answer(after, **changes)},
                           "runs/run.jsonl")


def test_rollback_values_when_the_run_inserted_both_rows() -> None:
    values, changed = pa.rollback_values(_context([], [ps.partner_row(ps.SHAREPOINT_APP, TENANT),
                                                       ps.partner_row(CLIENT, TENANT)]))
    assert changed
    assert values == {"ClientId": CLIENT, "TenantId": TENANT, "MicrosoftRow": "inserted", "OldTenantId": None,
                      "CustomerRow": "inserted"}


def test_rollback_values_when_the_run_updated_microsofts_row() -> None:
    values, changed = pa.rollback_values(_context(
        [ps.partner_row(ps.SHAREPOINT_APP, OTHER_TENANT)],
        [ps.partner_row(ps.SHAREPOINT_APP, TENANT), ps.partner_row(CLIENT, TENANT)]))
    assert changed and values["MicrosoftRow"] == "updated" and values["OldTenantId"] == OTHER_TENANT.upper()
    assert values["CustomerRow"] == "inserted"


def test_rollback_values_keep_a_null_old_tenant() -> None:
    values, changed = pa.rollback_values(_context(
        [ps.partner_row(ps.SHAREPOINT_APP, None), ps.partner_row(CLIENT, TENANT)],
        [ps.partner_row(ps.SHAREPOINT_APP, TENANT), ps.partner_row(CLIENT, TENANT)]))
    assert changed and values["MicrosoftRow"] == "updated" and values["OldTenantId"] is None
    assert values["CustomerRow"] == "unchanged"


def test_rollback_values_when_nothing_changed() -> None:
    rows = [ps.partner_row(ps.SHAREPOINT_APP, TENANT), ps.partner_row(CLIENT, TENANT)]
    values, changed = pa.rollback_values(_context(rows, rows))
    assert not changed and values["MicrosoftRow"] == "unchanged" and values["CustomerRow"] == "unchanged"


def test_rollback_values_refuse_what_is_no_guid() -> None:
    with pytest.raises(UserError, match="not a GUID"):
        pa.rollback_values(_context([], [ps.partner_row(ps.SHAREPOINT_APP, TENANT)], client_id="1; DROP TABLE x"))
    with pytest.raises(UserError, match="previous TenantId is not a GUID"):
        pa.rollback_values(_context([ps.partner_row(ps.SHAREPOINT_APP, "not-a-guid")],
                                    [ps.partner_row(ps.SHAREPOINT_APP, TENANT)]))


def test_rollback_values_need_the_rows() -> None:
    assert pa.rollback_values(_context([], [], rows_read=False)) is None
    ctx = _context([], [])
    assert pa.rollback_values(RollbackContext(ctx.package, {}, ctx.after, ctx.record)) is None


def test_the_readings_are_lenient_like_the_others() -> None:
    from psbridge.readings import OrgReading, WebReading

    web = WebReading.of({"files": {"name": "Microsoft.Identity.Client.dll", "present": True, "sha256": "XYZ"}})
    assert web.file("microsoft.identity.client.dll") is not None and web.files[0].sha256 is None
    org = OrgReading.of({"rows_read": True, "rows": None, "rights": {"can_insert": None, "can_update": True}})
    assert org.rows == () and org.rights is not None
    assert org.rights.can_insert is None and org.rights.can_update is True


def test_step_01s_msal_version_is_the_payloads() -> None:
    from psbridge.payload import PACKAGE_VERSION

    text = _script("prerequisites.ps1")
    major, minor, build = (int(x) for x in PACKAGE_VERSION.split("."))
    assert (f"$MsalVersion.Major -ne {major} -or $MsalVersion.Minor -ne {minor} -or $MsalVersion.Build -ne {build}"
            in text)
    for check in ("Get-CrmOrganization -Name $OrganizationName", "HAS_PERMS_BY_NAME", "Test-PSBridgeCanWrite $CrmBin",
                  "'Get-MgApplication', 'New-MgApplication'", "[System.Version]'9.1.36'", "[System.Version]'9.1.0'"):
        assert check in text, check
