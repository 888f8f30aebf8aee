"""Profile graph: step 06 and the entra probe recognise the CRM certificate by its key.

Graph's keyCredential.customKeyIdentifier is binary whose bytes are the TEXT of the hex
thumbprint, so BitConverter.ToString of it is 60 hex characters (with dashes removed) and
never equals X509Certificate2.Thumbprint. Microsoft's ConfigureCrmServerSideSync.ps1 compares
the key itself (the base64 of the certificate's raw data); `key` is returned only when one
service principal is read with $select=keyCredentials (keyCredential resource type,
https://learn.microsoft.com/graph/api/resources/keycredential).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from psbridge.check import evaluate
from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.render import render_package

from support.probe_states import THUMB, state
from support.pwsh_grammar import syntax_errors


def graph_files() -> dict[str, str]:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = "graph"
    files = render_package(parse_parameters(data)).files
    return {k: v[3:].decode("utf-8").replace("\r\n", "\n") for k, v in files.items() if k.endswith(".ps1")}


def code(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def test_step_06_matches_the_key_not_the_custom_key_identifier() -> None:
    spn = code(graph_files()["steps/06-spn.ps1"])
    assert "BitConverter" not in spn
    assert "CustomKeyIdentifier) -replace" not in spn
    assert "[System.Convert]::ToBase64String($Key.Key) -eq $CredentialValue" in spn
    # key is returned only for one service principal read with $select (-Property)
    assert "Get-MgServicePrincipal -ServicePrincipalId $Found[0].Id -Property 'id', 'appId', 'keyCredentials', 'servicePrincipalNames'" in spn
    # a key credential without its key cannot be compared: kept by its key id (issue 19 item 7), tested first
    assert "if ($null -eq $Key.Key -or $Key.Key.Length -eq 0) {" in spn
    # the SDK returns $null for an empty collection: @($null) has one element
    assert "@($CRM.KeyCredentials | Where-Object { $null -ne $_ })" in spn
    assert syntax_errors(graph_files()["steps/06-spn.ps1"]) == []


def test_graph_entra_probe_reports_the_key_per_credential() -> None:
    probe = code(graph_files()["probes/entra.ps1"])
    assert "BitConverter]::ToString($_.CustomKeyIdentifier)" not in probe
    assert "[System.Convert]::ToBase64String($Key.Key) -eq $CredentialValue" in probe
    for field in ("key_sha256", "matches_certificate", "thumbprint", "start", "end"):
        assert f"{field} " in probe or f"{field}=" in probe, field
    assert ".ToString('o')" in probe
    assert "ToString('yyyy-MM-ddTHH:mm:ssZ')" not in probe
    assert "$Cer.Import($CerPath)" in probe
    assert syntax_errors(graph_files()["probes/entra.ps1"]) == []


def _plan() -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = "graph"
    plan = json.loads(render_package(parse_parameters(data)).files["plan.json"])
    plan["certificate"] = {"thumbprint": THUMB, "not_after": "2036-01-01T00:00:00Z"}
    return plan


def _spn(answers: dict[str, Any]) -> Any:
    return next(v for v in evaluate(_plan(), answers).verdicts if v.id == "spn")


def test_check_uses_matches_certificate_from_the_probe() -> None:
    answers = state("fully configured")
    # What the old probe reported for the right key: BitConverter of the thumbprint's text.
    text_hex = THUMB.encode("ascii").hex().upper()
    answers["entra"]["key_credentials"] = [
        {"thumbprint": None, "custom_key_identifier": text_hex, "key_sha256": "ab" * 32, "matches_certificate": True,
         "start": "2026-01-01T00:00:00.0000000Z", "end": "2036-01-01T00:00:00.0000000Z"}]
    assert _spn(answers).verdict == "in place"
    answers["entra"]["key_credentials"][0]["matches_certificate"] = False
    assert _spn(answers).verdict == "will change"


def test_check_reads_the_thumbprint_derived_from_the_key() -> None:
    answers = state("fully configured")
    answers["entra"]["key_credentials"] = [
        {"thumbprint": THUMB.lower(), "key_sha256": "cd" * 32, "matches_certificate": None,
         "start": "2026-01-01T00:00:00.0000000Z", "end": "2036-01-01T00:00:00.0000000Z"}]
    assert _spn(answers).verdict == "in place"


# -- defect: an expired matching credential counted as in place ------------------------------


def test_step_06_counts_a_matching_credential_only_while_valid_through_not_after() -> None:
    spn = code(graph_files()["steps/06-spn.ps1"])
    assert "$NotAfter = $Certificate.NotAfter.ToUniversalTime()" in spn
    assert ("if ($null -ne $Key.EndDateTime -and $Key.EndDateTime.ToUniversalTime() -ge $NotAfter.AddSeconds(-1)) {\n"
            "            $HasCertificate = $true\n"
            "        }\n"
            "        else {\n"
            "            $Replaced++\n"
            "            continue\n"
            "        }") in spn
    assert "if (-not $HasCertificate -or $Replaced -gt 0) {" in spn
    assert "EndDateTime = $NotAfter" in spn
    assert "$Removed" not in spn and "expired credentials removed" not in spn


def test_check_replaces_a_matching_credential_that_ends_before_the_certificate() -> None:
    answers = state("fully configured")
    answers["entra"]["key_credentials"] = [
        {"thumbprint": THUMB, "matches_certificate": True,
         "start": "2025-01-01T00:00:00.0000000Z", "end": "2026-01-01T00:00:00.0000000Z"}]
    spn = _spn(answers)
    assert spn.verdict == "will change"
    assert "replace credential" in spn.detail and "2026-01-01" in spn.detail
    # valid through the certificate's NotAfter (2036-01-01, plan): in place
    answers["entra"]["key_credentials"][0]["end"] = "2036-01-01T00:00:00.0000000Z"
    assert _spn(answers).verdict == "in place"


def test_check_takes_not_after_from_the_certificate_probe_without_a_plan_certificate() -> None:
    plan = _plan()
    del plan["certificate"]
    answers = state("fully configured")
    answers["certificate"]["cer_not_after"] = "2028-06-01T00:00:00.0000000Z"
    answers["entra"]["key_credentials"] = [
        {"thumbprint": THUMB, "matches_certificate": True, "start": "2026-01-01T00:00:00Z", "end": "2027-06-01T00:00:00Z"}]
    spn = next(v for v in evaluate(plan, answers).verdicts if v.id == "spn")
    assert spn.verdict == "will change"


def test_certificate_probe_reports_the_cer_not_after_round_trip() -> None:
    probe = code(graph_files()["probes/certificate.ps1"])
    assert "$Result.cer_not_after = $Cer.NotAfter.ToUniversalTime().ToString('o')" in probe


# -- issue 19 item 7: existing credentials go back by key id only; a credential without its key never blocks --
# Microsoft's ConfigureCrmServerSideSync.ps1 (servicePrincipals PATCH of keyCredentials) keeps the existing
# credentials with `Select-Object * -ExcludeProperty key, displayName` and sends the key only for the new one;
# keyCredential.key is "Returned only on $select for a single object ... otherwise, it is always null"
# (keyCredential resource type). Read on the parsed script: which hashtables go into the collection, and
# whether anything in the loop over the credentials can stop the step.

from support.pwsh_grammar import command_invocations, parse, walk  # noqa: E402

OTHER_THUMB = "B" * 40


def _files_of(replaces: str | None = None) -> dict[str, str]:
    data = copy.deepcopy(EXAMPLE)
    data["profile"] = "graph"
    if replaces:
        data["certificate"]["replaces"] = replaces
    files = render_package(parse_parameters(data)).files
    return {k: v.decode("utf-8-sig").replace("\r\n", "\n") for k, v in files.items() if k.endswith(".ps1")}


def _step(files: dict[str, str], step_id: str) -> str:
    [name] = [k for k in files if k.startswith("steps/") and k.endswith(f"-{step_id}.ps1")]
    assert syntax_errors(files[name]) == [], name
    return files[name]


def _nodes(text: str, kind: str) -> list[Any]:
    return [n for n in walk(parse(text).root_node) if n.type == kind]


def _inside(node: Any, outer: Any) -> bool:
    return outer.start_byte <= node.start_byte and node.end_byte <= outer.end_byte


def _hash_keys(table: Any) -> dict[str, str]:
    """The literal's own entries: key -> value text."""
    body = next(c for c in table.children if c.type == "hash_literal_body")
    out = {}
    for entry in (c for c in body.children if c.type == "hash_entry"):
        parts = [c for c in entry.children if c.type not in ("=", ";")]
        out[parts[0].text.decode().strip()] = parts[1].text.decode().strip()
    return out


def _added_to(text: str, variable: str) -> list[dict[str, str]]:
    """The hashtable literals passed to `$variable.Add(...)`, in script order."""
    out = []
    for call in _nodes(text, "invokation_expression"):
        head = call.children[0].text.decode()
        member = next((c for c in call.children if c.type == "member_name"), None)
        if head.lower() == "$" + variable.lower() and member is not None and member.text.decode() == "Add":
            tables = [n for n in walk(call) if n.type == "hash_literal_expression"]
            out += [_hash_keys(t) for t in tables[:1]]
    return out


def _foreach_over(text: str, needle: str) -> Any:
    [loop] = [n for n in _nodes(text, "foreach_statement")
              if needle in next(c for c in n.children if c.type == "pipeline").text.decode()]
    return loop


def _throws(node: Any) -> list[Any]:
    return [n for n in walk(node) if n.type == "flow_control_statement" and n.children[0].type == "throw"]


KEPT_FIELDS = {"KeyId", "Type", "Usage", "StartDateTime", "EndDateTime"}


@pytest.mark.parametrize("replaces", [None, OTHER_THUMB])
def test_spn_step_sends_existing_credentials_by_key_id_and_the_key_only_for_the_new_one(replaces: str | None) -> None:
    spn = _step(_files_of(replaces), "spn")
    added = _added_to(spn, "KeyCredentials")
    assert len(added) == 2
    kept, new = added
    assert set(kept) == KEPT_FIELDS and kept["KeyId"] == "[string]$Key.KeyId"
    assert new["Key"] == "$CERCertificateBin" and new["EndDateTime"] == "$NotAfter"
    assert "KeyId" not in new


@pytest.mark.parametrize("replaces", [None, OTHER_THUMB])
def test_spn_step_never_stops_for_a_credential_without_its_key(replaces: str | None) -> None:
    spn = _step(_files_of(replaces), "spn")
    loop = _foreach_over(spn, "$CRM.KeyCredentials")
    assert _throws(loop) == []
    # the keyless branch comes first: no ToBase64String of a $null key
    first = next(n for n in walk(loop) if n.type == "if_statement")
    condition = next(c for c in first.children if c.type == "pipeline").text.decode()
    assert condition == "$null -eq $Key.Key -or $Key.Key.Length -eq 0"


def test_shared_graph_credentials_return_a_keyless_credential_and_entries_without_key() -> None:
    verify = _step(_files_of(OTHER_THUMB), "verify")
    [function] = [n for n in _nodes(verify, "function_statement") if "Get-PSBridgeCrmKeyCredentials" in n.text.decode()]
    throws = _throws(function)
    assert len(throws) == 1 and "Expected one Dynamics CRM service principal" in throws[0].text.decode()
    tables = [_hash_keys(t) for t in walk(function) if t.type == "hash_literal_expression"]
    entry = next(t for t in tables if set(t) == KEPT_FIELDS)  # Entry: what Update-MgServicePrincipal gets back
    assert entry["KeyId"] == "[string]$Key.KeyId"
    assert not any("Key" in t for t in tables)


def test_retire_previous_keeps_a_keyless_credential_before_judging_unknown_ones() -> None:
    retire = _step(_files_of(OTHER_THUMB), "retire-previous")
    loop = _foreach_over(retire, "Get-PSBridgeCrmKeyCredentials")
    branch = next(n for n in walk(loop) if n.type == "if_statement")
    clauses = [c for c in walk(branch) if c.type in ("elseif_clause", "else_clause")]
    texts = [next((x for x in c.children if x.type == "pipeline"), c).text.decode() if c.type == "elseif_clause"
             else "else" for c in clauses]
    keyless = texts.index("$null -eq $Key.Value")
    assert texts[-1] == "else" and keyless < len(texts) - 1
    body = clauses[keyless].text.decode()
    assert "$Keep.Add($Key)" in body and "$Unknown" not in body
    assert _throws(loop) == []


def test_retire_previous_app_part_keeps_a_keyless_app_credential() -> None:
    from support.app_render import app_data, render_app

    data = app_data()
    data["certificate"]["replaces"] = OTHER_THUMB
    files = {k: v.decode("utf-8-sig").replace("\r\n", "\n") for k, v in render_app(data).files.items()
             if k.endswith(".ps1")}
    retire = _step(files, "retire-previous")
    loop = _foreach_over(retire, "$App.KeyCredentials")
    assert _throws(loop) == []
    appended = _added_to(retire, "AppKeep")
    assert appended and all(set(t) == KEPT_FIELDS for t in appended)


def _retire_verdict(answers: dict[str, Any]) -> Any:
    import datetime as _dt

    from psbridge.readings import Readings
    from psbridge.steps.retire_previous import verdict

    plan = _plan()
    plan["parameters"]["certificate"]["replaces"] = OTHER_THUMB
    return verdict(Readings.of(plan, answers, _dt.datetime(2026, 6, 1, tzinfo=_dt.timezone.utc)))


def test_check_does_not_block_retire_previous_for_a_keyless_credential() -> None:
    answers = state("fully configured")
    answers["entra"]["key_credentials"] = [
        {"key_id": "aaaaaaaa-0000-4000-8000-000000000001", "thumbprint": THUMB, "matches_certificate": True,
         "key_sha256": "ab" * 32, "start": "2026-01-01T00:00:00Z", "end": "2036-01-01T00:00:00Z"},
        {"key_id": "aaaaaaaa-0000-4000-8000-000000000002", "thumbprint": None, "matches_certificate": None,
         "key_sha256": None, "start": "2025-01-01T00:00:00Z", "end": "2035-01-01T00:00:00Z"}]
    got = _retire_verdict(answers)
    assert (got.verdict, got.detail) == ("in place", f"no key credential of {OTHER_THUMB} and none expired")
    # an older probe that printed no key_sha256 at all is judged as before: an unknown credential blocks
    del answers["entra"]["key_credentials"][1]["key_sha256"]
    assert _retire_verdict(answers).verdict == "blocked"


# -- issue 19 item 9: Graph may cap a key credential's lifetime ------------------------------------------------
# "The endDateTime can be a maximum of one year from the startDateTime" (Microsoft Graph, "Add a certificate to
# an app using Microsoft Graph"); an app management policy's keyCredentials restriction asymmetricKeyLifetime
# sets a maxLifetime (keyCredentialConfiguration resource). Step 06 must neither loop nor report success when
# Graph refuses or shortens the credential: read on the parsed script, in the order it runs.


def _invocations(text: str, name: str) -> list[Any]:
    return [c for c in command_invocations(text) if c.name == name]


def _enclosing(text: str, start_byte: int, kind: str) -> list[Any]:
    return [n for n in _nodes(text, kind) if n.start_byte <= start_byte < n.end_byte]


@pytest.mark.parametrize("replaces", [None, OTHER_THUMB])
def test_spn_step_reads_back_after_the_write_and_stops_on_a_shortened_credential(replaces: str | None) -> None:
    spn = _step(_files_of(replaces), "spn")
    [write] = _invocations(spn, "Update-MgServicePrincipal")
    reads = [c for c in _invocations(spn, "Get-MgServicePrincipal") if c.start_byte > write.start_byte]
    assert len(reads) == 1, "one read-back after the write, in a first setup as in a renewal"
    [loop] = _enclosing(spn, reads[0].start_byte, "for_statement")
    condition = next(c for c in loop.children if c.type == "for_condition").text.decode()
    assert condition.strip() == "$Attempt -le 6"  # bounded: six reads
    assert not any(loop.start_byte <= c.start_byte < loop.end_byte for c in command_invocations(spn)
                   if c.name.startswith(("Update-Mg", "New-Mg", "Add-Mg")))  # nothing is written again
    # after the loop: the stored end is compared with the requested one, and a shorter one throws
    after = [n for n in _nodes(spn, "if_statement") if n.start_byte > loop.end_byte]
    shortened = next(n for n in after if next(c for c in n.children if c.type == "pipeline").text.decode()
                     == "$ShownEnd -lt $NotAfter.AddSeconds(-1)")
    [throw] = _throws(shortened)
    message = throw.text.decode()
    for part in ("requested endDateTime ", "$NotAfter.ToString('o')", "stored ", "$ShownEnd.ToString('o')",
                 "psbridge cert new --days 365", "app management policy"):
        assert part in message, part
    # the success line is the script's last statement, after every check
    lines = [line for line in spn.splitlines() if line.strip()]
    assert lines[-1].startswith("Write-Output ('Read back: the key credential of ")
    assert spn.index("$ShownEnd -lt $NotAfter.AddSeconds(-1)") < spn.rindex("Write-Output ('Read back:")


@pytest.mark.parametrize("replaces", [None, OTHER_THUMB])
def test_spn_step_says_what_graph_refused_and_what_to_do(replaces: str | None) -> None:
    spn = _step(_files_of(replaces), "spn")
    [write] = _invocations(spn, "Update-MgServicePrincipal")
    [attempt] = _enclosing(spn, write.start_byte, "try_statement")
    catch = next(n for n in walk(attempt) if n.type == "catch_clause")
    [throw] = _throws(catch)
    message = throw.text.decode()
    for part in ("$_.Exception.Message", "$NotAfter.ToString('o')", "psbridge cert new --days 365",
                 "app management policy"):
        assert part in message, part


def test_the_advice_names_an_option_cert_new_has() -> None:
    from psbridge.cli.cert import cert_new

    assert "--days" in [opt for p in cert_new.params for opt in p.opts]
    assert "--like" in [opt for p in cert_new.params for opt in p.opts]


def test_step_06_back_out_sends_the_kept_credentials_by_key_id_and_never_stops_for_a_keyless_one() -> None:
    """The back-out writes the collection back like step 06 does (issue 19 item 7): a credential Graph returns
    without its key is kept by KeyId, so a tenant whose step 06 ran can also roll it back."""
    files = _files_of()
    [name] = [k for k in files if k.startswith("rollback/") and k.endswith("-spn.ps1")]
    backout = files[name]
    assert syntax_errors(backout) == []
    loop = _foreach_over(backout, "$CRM.KeyCredentials")
    assert _throws(loop) == []
    [kept] = _added_to(backout, "KeyCredentials")
    assert set(kept) == KEPT_FIELDS and kept["KeyId"] == "[string]$Key.KeyId"
