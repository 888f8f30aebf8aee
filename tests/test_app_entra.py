"""The app trust's Entra side: steps app-registration and app-certificate, probe app, their verdicts and back-out.

The scripts are rendered from app-trust parameters (profile graph, trust app) and parsed with the
PowerShell grammar: no syntax error, every command documented (tests/data/commands.json), and the
order facts the steps promise are asserted on the parsed script, not on its text. The verdicts are
computed from fabricated probe answers, as `psbridge check` computes them.
"""

from __future__ import annotations

import copy
import datetime as _dt
from typing import Any

import pytest

from psbridge import catalogue
from psbridge.catalogue import backouts_for, constants_for, steps_for
from psbridge.errors import UserError
from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.readings import AppReading, Readings
from psbridge.render import _environments, _numbers, render_steps
from psbridge.steps import RollbackContext, app_certificate, app_registration, retire_previous

from support.app_entra import CLIENT_ID, REPLACED, TENANT, app_data
from support.pwsh_grammar import code_only, command_invocations, syntax_errors
from support.signatures import check_script

ROLE_ID = "678536fe-1083-478a-9c59-b99265e6b0d3"
CERT = "C" * 40
OTHER = "D" * 40
NOW = _dt.datetime(2026, 12, 1, tzinfo=_dt.timezone.utc)
NOT_AFTER = "2028-01-01T00:00:00Z"
WRITES = {"update-mgapplication", "new-mgserviceprincipal", "new-mgserviceprincipalapproleassignment"}


def scripts(adopt: bool = False, renewal: bool = False) -> dict[str, str]:
    """The package's step scripts by step id, the app probe and the app-certificate back-out."""
    params = parse_parameters(app_data(adopt, renewal))
    out = {r.step.id: r.text for r in render_steps(params)}
    env, _ = _environments()
    out["probe:app"] = env.get_template("probes/app.ps1.j2").render(p=params, c=constants_for(params))
    for backout in backouts_for(params):
        if backout.script:
            out[backout.script] = env.get_template(backout.template("graph")).render(
                p=params, c=constants_for(params), n=_numbers(steps_for(params)))
    return out


VARIANTS = [(adopt, renewal) for adopt in (False, True) for renewal in (False, True)]


# --------------------------------------------------------------------------- the catalogue


def test_app_steps_follow_the_article_and_rank_in_a_renewal() -> None:
    first = [s.id for s in steps_for(parse_parameters(app_data()))]
    assert first[8:10] == ["app-registration", "app-certificate"] and first[7] == "tenant-id"
    farm = [s.id for s in steps_for(parse_parameters(app_data(renewal=True, farm=True)))]
    assert farm.index("spn") < farm.index("app-registration") < farm.index("app-certificate") \
        < farm.index("additional-servers") < farm.index("certificate")
    single = [s.id for s in steps_for(parse_parameters(app_data(renewal=True)))]
    assert single.index("spn") < single.index("app-certificate") < single.index("certificate")
    # An ACS package has neither.
    acs = copy.deepcopy(EXAMPLE)
    assert not {"app-registration", "app-certificate"} & {s.id for s in steps_for(parse_parameters(acs))}


def test_app_constants_only_in_app_packages() -> None:
    acs = constants_for(parse_parameters(copy.deepcopy(EXAMPLE)))
    assert "sharepoint_app_id" not in acs and "sites_full_control_role_id" not in acs
    app = constants_for(parse_parameters(app_data()))
    assert app["sharepoint_app_id"] == "00000003-0000-0ff1-ce00-000000000000"
    assert app["sites_full_control_role_id"] == ROLE_ID


def test_backouts_manual_registration_scripted_certificate_manual_in_renewal() -> None:
    first = {b.step_id: b for b in backouts_for(parse_parameters(app_data()))}
    assert first["app-registration"].script is None and "Remove-MgApplication" in first["app-registration"].manual
    assert first["app-certificate"].script == "rollback/10-app-certificate.ps1"
    assert first["app-certificate"].captures == ("app",) and first["app-certificate"].needs == ("session", "connect")
    renewal = {b.step_id: b for b in backouts_for(parse_parameters(app_data(renewal=True)))}
    assert renewal["app-certificate"].script is None


# --------------------------------------------------------------------------- the scripts


@pytest.mark.parametrize(("adopt", "renewal"), VARIANTS)
def test_scripts_parse_and_use_documented_commands(adopt: bool, renewal: bool) -> None:
    rendered = scripts(adopt, renewal)
    wanted = ["app-registration", "app-certificate", "connect", "probe:app"] + (
        ["retire-previous"] if renewal else ["rollback/10-app-certificate.ps1"])
    for name in wanted:
        text = rendered[name]
        assert syntax_errors(text) == [], name
        assert [str(f) for f in check_script(text, name)] == [], name


def _lines(text: str, command: str) -> list[int]:
    return [i.line for i in command_invocations(text) if i.name.lower() == command.lower() and not i.deferred]


def _line_of(text: str, fragment: str) -> int:
    """The line of the first occurrence of `fragment` in the code (strings and comments blanked)."""
    code = code_only(text)
    at = code.index(fragment)
    return code.count("\n", 0, at) + 1


def _first_write(text: str) -> int:
    writes = [i.line for i in command_invocations(text) if i.name.lower() in WRITES]
    patch = [i.line for i in command_invocations(text) if i.name.lower() == "invoke-mggraphrequest"
             and any(e.text.upper() == "PATCH" for e in i.elements)]
    return min(writes + patch)


@pytest.mark.parametrize("adopt", [False, True])
def test_role_id_is_confirmed_before_any_write(adopt: bool) -> None:
    text = scripts(adopt)["app-registration"]
    sharepoint = _lines(text, "Get-MgServicePrincipal")[0]
    check = _line_of(text, "[string]$Roles[0].Id -ne $RoleId")
    assert sharepoint < check < _first_write(text)
    assert "'678536fe-1083-478a-9c59-b99265e6b0d3'" in text  # the catalogue's constant, quoted


def test_consent_is_never_granted_for_an_adopted_app() -> None:
    adopted = scripts(adopt=True)["app-registration"]
    assert _lines(adopted, "New-MgServicePrincipalAppRoleAssignment") == []
    assert _lines(adopted, "New-MgServicePrincipal") == [] and _lines(adopted, "Invoke-MgGraphRequest") == []
    # The missing consent stops the step before its only write (the required permission).
    consent_read = _lines(adopted, "Get-MgServicePrincipalAppRoleAssignment")[0]
    refusal = _line_of(adopted, "if ($Consent.Count -eq 0)")
    assert consent_read < refusal < min(_lines(adopted, "Update-MgApplication"))
    created = scripts()["app-registration"]
    grant = _lines(created, "New-MgServicePrincipalAppRoleAssignment")
    upsert = [i.line for i in command_invocations(created) if i.name == "Invoke-MgGraphRequest"
              and any(e.text == "PATCH" for e in i.elements)]
    assert len(grant) == 1 and len(upsert) == 1 and upsert[0] < _lines(created, "New-MgServicePrincipal")[0] < grant[0]


def test_created_app_is_upserted_by_unique_name_with_create_if_missing() -> None:
    text = scripts()["app-registration"]
    patch = next(i for i in command_invocations(text) if i.name == "Invoke-MgGraphRequest"
                 and any(e.text == "PATCH" for e in i.elements))
    names = [e.text for e in patch.elements if e.kind == "parameter"]
    assert {"Headers", "Body", "ContentType", "StatusCodeVariable"} <= set(names)
    assert "Prefer = 'create-if-missing'" in text and "$UniqueName = 'psbridge-contoso'" in text
    assert "uniqueName='" in text


def test_app_certificate_sends_back_by_key_id_and_reads_back_six_times() -> None:
    text = scripts()["app-certificate"]
    # The kept credentials carry no key; only the new certificate's entry has Key = $CERCertificateBin.
    keep = _line_of(text, "$Keep.Add(@{ KeyId")
    new = _line_of(text, "Key = $CERCertificateBin")
    update = _lines(text, "Update-MgApplication")
    assert keep < new < update[0] and len(update) == 1
    assert "Key = $Key.Key" not in code_only(text)
    reads = _lines(text, "Get-MgApplication")
    assert len(reads) == 2 and reads[1] > update[0]  # one read before, the read-back after
    assert "$Attempt -le 6" in text and "Sleep(5000)" in text
    # A shortened credential is never reported as success: the throw comes before the last output.
    assert _line_of(text, "if ($ShownEnd -lt $NotAfter.AddSeconds(-1))") < _lines(text, "Write-Output")[-1]
    # Another certificate's valid credential stops the step before the write.
    assert _line_of(text, "if ($Others.Count -gt 0)") < update[0]


def test_retire_previous_removes_the_app_credential_only_in_app_packages() -> None:
    app = scripts(renewal=True)["retire-previous"]
    assert _lines(app, "Update-MgApplication") and _lines(app, "Update-MgServicePrincipal")
    # The app's credential is removed after the principal's checks and before the principal's removal.
    assert _line_of(app, "if ($Unknown.Count -gt 0)") < _lines(app, "Update-MgApplication")[0] \
        < _lines(app, "Update-MgServicePrincipal")[0]
    acs = copy.deepcopy(EXAMPLE)
    acs["profile"] = "graph"
    acs["certificate"]["replaces"] = REPLACED
    plain = next(r.text for r in render_steps(parse_parameters(acs)) if r.step.id == "retire-previous")
    assert _lines(plain, "Update-MgApplication") == [] and "app" not in code_only(plain).lower().replace("appid", "")


def test_connect_asks_for_app_role_assignment_only_in_app_packages() -> None:
    assert "'AppRoleAssignment.ReadWrite.All'" in scripts()["connect"]
    acs = copy.deepcopy(EXAMPLE)
    acs["profile"] = "graph"
    plain = next(r.text for r in render_steps(parse_parameters(acs)) if r.step.id == "connect")
    assert "AppRoleAssignment" not in plain


# --------------------------------------------------------------------------- verdicts


def plan_for(data: dict[str, Any]) -> dict[str, Any]:
    params = parse_parameters(data)
    return {"profile": "graph", "parameters": params.model_dump(mode="json", exclude_none=True),
            "constants": constants_for(params), "certificate": {"thumbprint": CERT, "not_after": NOT_AFTER},
            "steps": [catalogue.step_entry(s, params) for s in steps_for(params)]}


def key(thumbprint: str, end: str = NOT_AFTER, key_id: str = "aaaaaaaa-0000-0000-0000-000000000001") -> dict[str, Any]:
    return {"key_id": key_id, "type": "AsymmetricX509Cert", "usage": "Verify", "thumbprint": thumbprint,
            "matches_certificate": thumbprint == CERT, "start": "2026-01-01T00:00:00Z", "end": end}


def app_answer(**changes: Any) -> dict[str, Any]:
    """The app probe's answer for an app that is fully in place; `changes` override fields."""
    answer = {"probe": "app", "mode": "create", "app_found": True, "app_count": 1, "app_id": CLIENT_ID,
              "object_id": "99999999-0000-0000-0000-000000000000", "display_name": "psbridge-contoso",
              "sign_in_audience": "AzureADMyOrg", "unique_name": "psbridge-contoso", "service_principal_found": True,
              "sharepoint_found": True, "sharepoint_role_id": ROLE_ID, "role_required": True, "consent_granted": True,
              "owners": [{"display_name": "Admin", "user_principal_name": "admin@contoso.com"}],
              "key_credentials": [key(CERT)]}
    answer.update(changes)
    return answer


def readings(answer: dict[str, Any] | None, adopt: bool = False, renewal: bool = False) -> Readings:
    return Readings.of(plan_for(app_data(adopt, renewal)), {"app": answer}, NOW)


def test_reading_is_lenient_and_typed() -> None:
    reading = AppReading.of({"probe": "app", "app_found": "yes", "app_count": True, "owners": {"display_name": "A"},
                             "key_credentials": [key(CERT), "junk"]})
    assert reading.app_found is None and reading.app_count is None and reading.malformed_keys
    assert reading.owner_text() == "A" and reading.key_credentials[0].thumbprint == CERT
    assert Readings.of({}, {"app": None}, NOW).app is None


@pytest.mark.parametrize(("answer", "adopt", "word", "fragment"), [
    (app_answer(), False, "in place", "admin@contoso.com"),
    (app_answer(mode="adopt"), True, "in place", "single tenant"),
    (app_answer(app_found=False, app_count=0, app_id=None), False, "will change", "create"),
    (app_answer(consent_granted=False), False, "will change", "admin consent"),
    (app_answer(service_principal_found=False, consent_granted=False), False, "will change", "service principal"),
    (app_answer(role_required=False), True, "will change", "requiredResourceAccess"),
    (app_answer(mode="adopt", consent_granted=False), True, "blocked", "New-MgServicePrincipalAppRoleAssignment"),
    (app_answer(mode="adopt", app_found=False, app_count=0), True, "blocked", "not in this tenant"),
    (app_answer(sign_in_audience="AzureADMultipleOrgs"), True, "blocked", "AzureADMultipleOrgs"),
    (app_answer(sign_in_audience="AzureADMultipleOrgs"), False, "blocked", "single tenant"),
    (app_answer(sharepoint_role_id="00000000-0000-0000-0000-000000000001"), False, "blocked", "not 678536fe"),
    (app_answer(app_count=2), True, "blocked", "exactly one"),
    (app_answer(consent_granted=None), False, "cannot tell", "consent"),
    (None, False, "cannot tell", "did not"),
])
def test_registration_verdict(answer: dict[str, Any] | None, adopt: bool, word: str, fragment: str) -> None:
    v = app_registration.verdict(readings(answer, adopt))
    assert v.verdict == word
    assert fragment in " ".join(filter(None, (v.detail, v.fix, v.before, v.after))), v


@pytest.mark.parametrize(("answer", "renewal", "word", "fragment"), [
    (app_answer(), False, "in place", CERT),
    (app_answer(key_credentials=[]), False, "will change", "add credential"),
    (app_answer(key_credentials=[key(CERT, end="2026-06-01T00:00:00Z")]), False, "will change", "add credential"),
    (app_answer(key_credentials=[key(OTHER, key_id="bbbbbbbb-0000-0000-0000-000000000002")]), False, "blocked",
     OTHER),
    (app_answer(key_credentials=[key(OTHER, end="2026-01-01T00:00:00Z"), key(CERT)]), False, "in place", CERT),
    (app_answer(key_credentials=[key(REPLACED)]), True, "will change", "add credential"),
    (app_answer(key_credentials=[key(REPLACED), key(OTHER)]), True, "blocked", OTHER),
    (app_answer(key_credentials=[key(CERT, end="2027-06-01T00:00:00Z")]), False, "blocked", "ends"),
    (app_answer(app_found=False, app_count=0), False, "will change", "app-registration creates"),
    (None, False, "cannot tell", "did not"),
])
def test_certificate_verdict(answer: dict[str, Any] | None, renewal: bool, word: str, fragment: str) -> None:
    v = app_certificate.verdict(readings(answer, renewal=renewal))
    assert v.verdict == word
    assert fragment in " ".join(filter(None, (v.detail, v.fix, v.cause))), v


def test_certificate_verdict_blocked_on_another_certificate_names_both_thumbprints() -> None:
    v = app_certificate.verdict(readings(app_answer(key_credentials=[key(OTHER), key(CERT)])))
    assert v.verdict == "blocked" and OTHER in v.detail and CERT in v.detail


def _entra(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"probe": "entra", "service_principal_found": True, "service_principal_names": [],
            "key_credentials": list(keys), "tenant_id": TENANT}


def test_retire_previous_verdict_also_judges_the_app() -> None:
    """In an app package retire-previous also removes the replaced certificate's credential from the app."""
    plan = plan_for(app_data(renewal=True))
    old = key(REPLACED, key_id="cccccccc-0000-0000-0000-000000000003")
    both = retire_previous.verdict(Readings.of(plan, {"entra": _entra(key(CERT)),
                                                      "app": app_answer(key_credentials=[key(CERT), old])}, NOW))
    assert both.verdict == "will change" and "app: " + REPLACED in both.detail
    done = retire_previous.verdict(Readings.of(plan, {"entra": _entra(key(CERT)), "app": app_answer()}, NOW))
    assert done.verdict == "in place"
    no_new = retire_previous.verdict(Readings.of(plan, {"entra": _entra(key(CERT)),
                                                        "app": app_answer(key_credentials=[old])}, NOW))
    assert no_new.verdict == "blocked" and "new certificate" in no_new.detail
    unread = retire_previous.verdict(Readings.of(plan, {"entra": _entra(key(CERT))}, NOW))
    assert unread.verdict == "cannot tell"
    # An ACS renewal never reads the app.
    acs = copy.deepcopy(EXAMPLE)
    acs.update(profile="graph")
    acs["certificate"]["replaces"] = REPLACED
    plain = retire_previous.verdict(Readings.of(plan_for(acs), {"entra": _entra(key(CERT))}, NOW))
    assert plain.verdict == "in place"


# --------------------------------------------------------------------------- rollback values


def ctx(before: Any, after: Any) -> RollbackContext:
    return RollbackContext(None, {"app": before}, {"app": after}, "runs/x.jsonl")  # type: ignore[arg-type]


def test_rollback_values_are_the_added_key_ids() -> None:
    first = key(OTHER, key_id="aaaaaaaa-0000-0000-0000-000000000001")
    added = key(CERT, key_id="bbbbbbbb-0000-0000-0000-000000000002")
    assert app_certificate.rollback_values(ctx(app_answer(key_credentials=[first]),
                                               app_answer(key_credentials=[first, added]))) == (
        {"KeyIds": ["bbbbbbbb-0000-0000-0000-000000000002"]}, True)
    assert app_certificate.rollback_values(ctx(app_answer(), app_answer())) == ({"KeyIds": []}, False)
    # The app did not exist before the step (created by app-registration in the same run).
    assert app_certificate.rollback_values(ctx(app_answer(app_found=False, key_credentials=[]),
                                               app_answer(key_credentials=[added]))) == (
        {"KeyIds": ["bbbbbbbb-0000-0000-0000-000000000002"]}, True)
    assert app_certificate.rollback_values(ctx(None, app_answer())) is None


def test_rollback_values_refuse_a_key_id_that_is_not_a_guid() -> None:
    forged = key(CERT, key_id="x'; Remove-Item C:\\ -Recurse; '")
    with pytest.raises(UserError, match="not a GUID"):
        app_certificate.rollback_values(ctx(app_answer(key_credentials=[]), app_answer(key_credentials=[forged])))


# --------------------------------------------------------------------------- the probe


@pytest.mark.parametrize("adopt", [False, True])
def test_probe_prints_what_the_reading_reads(adopt: bool) -> None:
    """The probe's JSON keys are the ones AppReading reads (a renamed key would read as "cannot tell")."""
    import re

    text = scripts(adopt)["probe:app"]
    last = text[text.rindex("[pscustomobject]@{"):]
    printed = set(re.findall(r"^    (\w+)\s+=", last, re.M))
    assert printed == set(app_answer()) and "# psbridge probe: app " in text
    assert ("'adopt'" in text) == adopt and ("create-if-missing" not in text)
    writes = [i.name for i in command_invocations(text) if i.name.lower().startswith(
        ("new-mg", "update-", "remove-", "set-"))]
    patch = [i for i in command_invocations(text) if any(e.text.upper() in ("PATCH", "POST") for e in i.elements)]
    assert writes == [] and patch == [], "a probe changes nothing"


def test_check_evaluate_dispatches_the_app_verdicts() -> None:
    """`check`'s evaluate gives each app step its unit's verdict, numbered as the plan numbers it."""
    from psbridge.check import evaluate

    plan = plan_for(app_data(adopt=True))
    plan["probes"] = [{"id": name} for name in catalogue.probes_for(parse_parameters(app_data(adopt=True)))]
    report = evaluate(plan, {"app": app_answer(mode="adopt", consent_granted=False)}, now=NOW)
    by_id = {v.id: v for v in report.verdicts}
    assert (by_id["app-registration"].index, by_id["app-registration"].verdict) == (9, "blocked")
    assert (by_id["app-certificate"].index, by_id["app-certificate"].verdict) == (10, "in place")
    assert "probe app did not answer" not in report.notes and "probe entra did not answer" in report.notes
    missing = evaluate(plan, {}, now=NOW)
    assert {v.id: v.verdict for v in missing.verdicts}["app-registration"] == "cannot tell"
    assert "probe app did not answer" in missing.notes
