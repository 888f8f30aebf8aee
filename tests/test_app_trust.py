"""The app trust (`trust = "app"`, issue 18) end to end: render, check, run, rollback, renewal, report.

The real CLI and the unmodified pypsrp client talk to the loopback peer (tests/support/winrm_peer: a
protocol peer, not PowerShell). It answers the probes with the states of tests/support/probe_states.py
(`app_trust_state`, against the package's own payload sha256) and each step as the test scripts it,
and records every pipeline: these tests prove what psbridge sends, in which order and with which
parameters, and what it concludes; not what the scripts would do on a Windows server.

The MSAL payload is a minimal DLL signed by the tests' own CA (support/msal.py); psbridge trusts that
CA only through `payload.TEST_ROOTS`, set for each test here. That every script of an ACS package is
byte for byte what it was is tests/test_app_package.py's (every variant of the baseline render matrix).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from psbridge.cli import main
from psbridge.package import read_package
from psbridge.parameters import ACS_RETIRED_ON
from psbridge.render import signout_bytes

from support.app_trust import APP_NAME, app_parameters, payload_digests, write_app_package, write_parameters
from support.cli import check_args, run_args
from support.lab import FARM, PFX_PASSWORD, SECRETS, assert_no_secrets
from support.msal import NUPKG_NAME, SignedMsal, make_signed_msal, trust_test_root, write_nupkg
from support.packages import CHECK_THUMB, answer_probes
from support.probe_states import (
    APP_CLIENT,
    IN_STORE,
    SERVER,
    APP_TENANT,
    OTHER,
    OTHER_KEY_ID,
    SHAREPOINT_APP,
    app_answer,
    app_key,
    app_trust_state,
    org_answer,
    partner_row,
    web_answer,
    _cert,
)
from support.pwsh_grammar import code_only, command_invocations, syntax_errors
from support.winrm_peer import Engine, RecordedPipeline, Reply, SecureValue

GRAPH_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.app-trust-test-token"
DLL = "payload/Microsoft.Identity.Client.dll"
XML = "payload/Microsoft.Identity.Client.xml"
ARTICLE = ["prerequisites", "certificate", "session", "connect", "set-certificate", "spn", "crm-settings", "tenant-id"]
APP_STEPS = ["app-registration", "app-certificate", "partner-applications", "msal-assembly"]
PAYLOAD_PARAMETERS = {"MsalDll", "MsalDllSha256", "MsalXml", "MsalXmlSha256"}
EAP = "$ErrorActionPreference = 'Stop'"
#: The key credential app-certificate adds in the rollback test (K).
ADDED_KEY = "6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d"


@pytest.fixture(scope="module")
def msal(tmp_path_factory: pytest.TempPathFactory) -> SignedMsal:
    return make_signed_msal(tmp_path_factory.mktemp("msal"))


@pytest.fixture
def trusted(msal: SignedMsal, monkeypatch: pytest.MonkeyPatch) -> SignedMsal:
    """psbridge trusts the test CA for this test (render, the package gates of check/run/rollback/report)."""
    trust_test_root(monkeypatch, msal)
    return msal


@pytest.fixture
def graph_env(secrets_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The secrets of an app package (profile graph): WinRM, the PFX password and the Graph token."""
    monkeypatch.setenv("PSBRIDGE_GRAPH_TOKEN", GRAPH_TOKEN)


def state_of(pkg: Path, name: str, *, adopt: bool) -> dict[str, dict[str, Any]]:
    """The named state (support/probe_states.py) against this package's payload sha256."""
    digests = payload_digests(pkg)
    return app_trust_state(name, digests["Microsoft.Identity.Client.dll"], digests["Microsoft.Identity.Client.xml"],
                           adopt=adopt)


def step_pipelines(engine: Engine) -> list[RecordedPipeline]:
    return [p for p in engine.pipelines if p.script.startswith("# psbridge step ")]


def step_id(pipe: RecordedPipeline) -> str:
    """`# psbridge step 09/12: app-registration - ...` -> app-registration."""
    match = re.match(r"# psbridge step \d\d(?:/\d\d)?: ([a-z-]+) -", pipe.script)
    assert match, pipe.script[:80]
    return match.group(1)


def events_of(record: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]


def plan_of(pkg: Path) -> dict[str, Any]:
    return json.loads((pkg / "plan.json").read_text(encoding="utf-8"))


def approve(pkg: Path, keys: dict[str, Path], log: Path) -> None:
    """Jane approves the package, so `log` is the package's own audit log (rollback believes only that)."""
    assert main(["approve", str(pkg), "--key", str(keys["jane"]), "--audit-log", str(log)]) == 0


# --------------------------------------------------------------------------- 1. validate and render


@pytest.mark.parametrize("adopt", [False, True], ids=["created app", "adopted app"])
def test_an_operator_validates_and_renders_an_app_package_from_a_parameters_file(psbridge, tmp_path, trusted,
                                                                                 adopt) -> None:
    params = write_parameters(tmp_path / "configs" / "contoso.toml", app_parameters(adopt=adopt))
    write_nupkg(params, trusted)  # downloaded next to the parameters file, as app.msal_package says
    validated = psbridge("validate", "configs/contoso.toml")
    assert validated.exit_code == 0, validated.stderr
    rendered = psbridge("render", "configs/contoso.toml", "--out", "out")
    assert rendered.exit_code == 0, rendered.stderr
    pkg = tmp_path / "out" / "contoso"
    plan = plan_of(pkg)
    assert [s["id"] for s in plan["steps"]] == ARTICLE + APP_STEPS
    assert [s["index"] for s in plan["steps"]] == list(range(1, 13))
    # payload/ holds the .nupkg's two files as they are; plan.json records each one's facts.
    assert sorted(str(p.relative_to(pkg)) for p in (pkg / "payload").iterdir()) == [DLL, XML]
    for name in (DLL, XML):
        data = (pkg / name).read_bytes()
        assert data == trusted.payload.files[name]
        entry = next(e for e in plan["payload"] if e["file"] == name)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["size"] == len(data)
    assert plan["payload"] == trusted.payload.facts()
    assert next(s for s in plan["steps"] if s["id"] == "msal-assembly")["payload"] == [DLL, XML]
    assert plan["parameters"]["trust"] == "app" and plan["parameters"]["app"] == app_parameters(adopt=adopt)["app"]
    package = read_package(pkg)
    assert package.problems == [] and package.reproduction_problems == []
    assert ACS_RETIRED_ON not in rendered.stderr + validated.stderr  # the retirement warning is for ACS only


def test_validate_refuses_an_app_package_without_its_nupkg_in_one_line(psbridge, tmp_path, trusted) -> None:
    write_parameters(tmp_path / "contoso.toml", app_parameters())
    result = psbridge("validate", "contoso.toml")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "app.msal_package" in result.stderr and NUPKG_NAME in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- 2. check


@pytest.mark.parametrize("name,adopt,code,expected", [
    ("migrated and configured", True, 0, {**dict.fromkeys(["certificate", "spn", "crm-settings"], "in place"),
                                          **dict.fromkeys(APP_STEPS, "in place")}),
    ("migrated and configured", False, 0, dict.fromkeys(APP_STEPS, "in place")),
    ("acs-only server", False, 5, {**dict.fromkeys(["certificate", "spn", "crm-settings"], "in place"),
                                   **dict.fromkeys(APP_STEPS, "will change")}),
    ("adopted app without consent", True, 1, {"app-registration": "blocked"}),
    ("app holds another certificate", True, 1, {"app-certificate": "blocked", "app-registration": "in place"}),
    ("other msal version in bin", False, 1, {"msal-assembly": "blocked", "prerequisites": "blocked"}),
])
def test_check_judges_the_app_steps_and_sends_nothing_that_changes_state(
        tmp_path, engine, http_peer, graph_env, trusted, capsys, name, adopt, code, expected) -> None:
    pkg = write_app_package(tmp_path, trusted, adopt=adopt)
    answer_probes(engine, state_of(pkg, name, adopt=adopt))
    assert main(check_args(pkg, http_peer, "--json")) == code
    out, err = capsys.readouterr()
    report = json.loads(out.strip().splitlines()[-1])
    verdicts = {v["id"]: v["verdict"] for v in report["verdicts"]}
    for step, verdict in expected.items():
        assert verdicts[step] == verdict, (step, report)
    if code == 5:  # the migration: only the app steps would change anything
        assert {s for s, v in verdicts.items() if v == "will change"} == set(APP_STEPS)
    if name == "app holds another certificate":
        detail = next(v["detail"] for v in report["verdicts"] if v["id"] == "app-certificate")
        assert OTHER in detail and CHECK_THUMB in detail
    # Read-only: the EAP line, the probes and the session steps 03 and 04, nothing else.
    assert [step_id(p) for p in step_pipelines(engine)] == ["session", "connect"]
    # Then, last, the Graph sign-out (issue 19 item 2), exactly its text.
    assert engine.scripts()[-1] == signout_bytes().decode("utf-8-sig")
    for script in engine.scripts()[:-1]:
        assert script == EAP or script.startswith(("# psbridge probe: ", "# psbridge step 03/12: session",
                                                   "# psbridge step 04/12: connect")), script[:80]
    probes = [s.split()[3] for s in engine.scripts() if s.startswith("# psbridge probe: ")]
    assert sorted(probes) == sorted(["server", "certificate", "crm", "web", "entra", "org", "app"])
    scripts = engine.scripts()
    connected = next(i for i, s in enumerate(scripts) if s.startswith("# psbridge step 04/12"))
    graph_probes = [i for i, s in enumerate(scripts) if s.startswith(("# psbridge probe: app ", "# psbridge probe: entra "))]
    assert len(graph_probes) == 2 and min(graph_probes) > connected  # the Graph probes after the connection
    assert all(not PAYLOAD_PARAMETERS & set(p.parameters) for p in engine.pipelines)  # no payload sent by check
    connect = next(p for p in engine.pipelines if p.script.startswith("# psbridge step 04/12"))
    assert connect.parameters == {"AccessToken": SecureValue(GRAPH_TOKEN)}
    assert_no_secrets(out, err)
    assert GRAPH_TOKEN not in out + err


def test_check_on_a_farm_judges_the_msal_files_on_each_additional_server(
        tmp_path, engine, http_peer, farm, graph_env, trusted, capsys) -> None:
    pkg = write_app_package(tmp_path, trusted, farm=FARM)
    answer_probes(engine, state_of(pkg, "migrated and configured", adopt=False))
    digests = payload_digests(pkg)
    (_, done), (_, bare) = farm
    answer_probes(done, {"server": SERVER, "certificate": _cert([IN_STORE]),
                         "web": web_answer(digests["Microsoft.Identity.Client.dll"],
                                           digests["Microsoft.Identity.Client.xml"])})
    answer_probes(bare, {"server": SERVER, "certificate": _cert([IN_STORE]), "web": web_answer()})  # no MSAL
    assert main(check_args(pkg, http_peer, "--json")) == 5
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    step13 = [(v["host"], v["verdict"]) for v in report["verdicts"] if v["id"] == "additional-servers"]
    assert step13 == [(FARM[0], "in place"), (FARM[1], "will change")]
    assert "Microsoft.Identity.Client" in next(v["detail"] for v in report["verdicts"]
                                               if v["id"] == "additional-servers" and v["host"] == FARM[1])
    for _, farm_engine in farm:  # read-only there: the server probes only
        assert [s.split()[3] for s in farm_engine.scripts() if s.startswith("# psbridge probe: ")] == [
            "server", "certificate", "web"]
        assert step_pipelines(farm_engine) == []
    # The human output numbers the steps of the package (13), one line per server for step 13.
    assert main(check_args(pkg, http_peer)) == 5
    heads = [line[:7] for line in capsys.readouterr().out.splitlines() if re.match(r"\[\d\d/\d\d\] ", line)]
    assert heads == [f"[{i:02d}/13]" for i in range(1, 14)] + ["[13/13]"]


# --------------------------------------------------------------------------- 3. run


def _payload_received(pipe: RecordedPipeline, pkg: Path) -> None:
    """The step got the package's payload as plain strings: base64 of the files' bytes, and plan.json's sha256."""
    plan = {e["file"]: e["sha256"] for e in plan_of(pkg)["payload"]}
    received = {k: v for k, v in pipe.parameters.items() if k in PAYLOAD_PARAMETERS}
    assert set(received) == PAYLOAD_PARAMETERS
    assert all(isinstance(v, str) and not isinstance(v, SecureValue) for v in received.values())
    for name, parameter in ((DLL, "MsalDll"), (XML, "MsalXml")):
        assert base64.b64decode(received[parameter], validate=True) == (pkg / name).read_bytes()
        assert received[f"{parameter}Sha256"] == plan[name] == hashlib.sha256((pkg / name).read_bytes()).hexdigest()


def test_run_sends_every_step_in_order_with_the_payload_to_msal_assembly_and_secrets_as_securestring(
        tmp_path, engine, http_peer, graph_env, trusted, capsys) -> None:
    log = tmp_path / "audit.jsonl"
    pkg = write_app_package(tmp_path, trusted)
    answer_probes(engine, state_of(pkg, "acs-only server", adopt=False))
    assert main([*run_args(pkg, http_peer), "--audit-log", str(log)]) == 0
    out, err = capsys.readouterr()
    plan = plan_of(pkg)
    received = step_pipelines(engine)
    assert [step_id(p) for p in received] == ARTICLE + APP_STEPS
    for step, pipe in zip(plan["steps"], received):
        assert pipe.script == (pkg / step["file"]).read_bytes().decode("utf-8-sig")  # the reviewed text, exactly
    by_id = {step_id(p): p for p in received}
    _payload_received(by_id["msal-assembly"], pkg)
    assert by_id["certificate"].parameters == {"PfxPassword": SecureValue(PFX_PASSWORD)}
    assert by_id["connect"].parameters == {"AccessToken": SecureValue(GRAPH_TOKEN)}
    for sid, pipe in by_id.items():
        if sid not in ("certificate", "connect", "msal-assembly"):
            assert pipe.parameters == {}, sid
    for pipe in engine.pipelines:
        assert all(secret not in pipe.script for secret in (*SECRETS, GRAPH_TOKEN))
        assert all(v not in (*SECRETS, GRAPH_TOKEN) for v in pipe.parameters.values() if isinstance(v, str))
    # The run record: each step's sha256 and state, the state around each app change, the end.
    [record] = list((pkg / "runs").glob("*.jsonl"))
    events = events_of(record)
    assert [(e["index"], e["sha256"], e["state"]) for e in events if e["event"] == "step-end"] == [
        (s["index"], s["sha256"], "ok") for s in plan["steps"]]
    states = [(e["id"], e["when"], sorted(e["readings"])) for e in events
              if e["event"] == "state" and e["id"] in APP_STEPS]
    assert states == [("app-registration", "before", ["app"]), ("app-registration", "after", ["app"]),
                      ("app-certificate", "before", ["app"]), ("app-certificate", "after", ["app"]),
                      ("partner-applications", "before", ["org"]), ("partner-applications", "after", ["org"]),
                      ("msal-assembly", "before", ["web"]), ("msal-assembly", "after", ["web"])]
    assert events[-1]["event"] == "run-end" and events[-1]["exit_code"] == 0
    # The payload travels to the server; it is not copied into the record or the audit log.
    dll_b64 = base64.b64encode((pkg / DLL).read_bytes())[:64]
    assert dll_b64 not in record.read_bytes() and dll_b64 not in log.read_bytes()
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [(line["action"], line["outcome"]) for line in lines] == [("run", "started"), ("run", "ok")]
    assert main(["audit", "verify", str(log)]) == 0
    assert_no_secrets(out, err, record.read_bytes(), log.read_bytes())
    assert GRAPH_TOKEN.encode() not in record.read_bytes() + log.read_bytes()


#: What each state-changing step prints when it finds its change already in place (its template's words).
ALREADY = {
    "certificate": "Already configured: S2STokenIssuer is " + CHECK_THUMB + ".",
    "spn": "Already configured: the credential " + CHECK_THUMB + " and the SPN 00000007-0000-0000-c000-000000000000/"
           "*.contoso.com are in place.",
    "crm-settings": "Already configured: ServerSettings S2SDefaultAuthorizationServerPrincipalId and "
                    "S2SDefaultAuthorizationServerMetadataUrl are set.",
    "app-registration": f"App: client id {APP_CLIENT}, object id 0d9c8b7a-6f5e-4d3c-8b2a-1f0e9d8c7b6a, created by "
                        "this run: False, service principal 1e2d3c4b-5a69-4788-9a0b-c1d2e3f4a5b6.",
    "app-certificate": f"Already configured: app {APP_NAME} holds the key credential of {CHECK_THUMB} valid through "
                       "2036-01-01T00:00:00.0000000Z.",
    "partner-applications": "PartnerApplicationBase: Microsoft's SharePoint Online row unchanged, the app's row "
                            f"unchanged; both read back with TenantId {APP_TENANT}.",
    "msal-assembly": "Microsoft.Identity.Client.dll: already in C:\\Program Files\\Microsoft Dynamics CRM\\CRMWeb\\bin "
                     "on CRM01; nothing written.",
}


def test_a_second_run_on_a_migrated_server_changes_nothing_and_leaves_nothing_to_roll_back(
        tmp_path, engine, http_peer, graph_env, trusted, capsys, keys) -> None:
    log = tmp_path / "audit.jsonl"
    pkg = write_app_package(tmp_path, trusted)
    approve(pkg, keys, log)
    answer_probes(engine, state_of(pkg, "acs-only server", adopt=False))
    assert main([*run_args(pkg, http_peer), "--audit-log", str(log)]) == 0  # the migration
    # The second run: the server is migrated, and every changing step answers as it does when in place.
    engine.reset_rules()
    answer_probes(engine, state_of(pkg, "migrated and configured", adopt=False))
    changing = [s for s in plan_of(pkg)["steps"] if s["changes_state"]]
    assert [s["id"] for s in changing] == list(ALREADY)
    for step in changing:
        engine.when(f"# psbridge step {step['index']:02d}/12: {step['id']} -", Reply(output=[ALREADY[step["id"]]]))
    first = set((pkg / "runs").glob("*.jsonl"))
    before = len(engine.pipelines)
    assert main([*run_args(pkg, http_peer), "--audit-log", str(log)]) == 0
    capsys.readouterr()
    [record] = set((pkg / "runs").glob("*.jsonl")) - first
    events = events_of(record)
    ends = {e["id"]: e for e in events if e["event"] == "step-end"}
    assert all(ends[sid]["output"] == [text] for sid, text in ALREADY.items())
    states: dict[str, dict[str, Any]] = {}
    for event in (e for e in events if e["event"] == "state"):
        states.setdefault(event["id"], {})[event["when"]] = event["readings"]
    assert set(states) == set(ALREADY)  # each change was read around
    for sid, around in states.items():
        if "after" in around:
            assert around["after"] == around["before"], sid
    second = [p for p in engine.pipelines[before:] if p.script.startswith("# psbridge step ")]
    assert [step_id(p) for p in second] == ARTICLE + APP_STEPS  # every step sent again, in order
    _payload_received(next(p for p in second if step_id(p) == "msal-assembly"), pkg)
    # Rolling that run back sends no back-out script: it changed nothing.
    sent = len(engine.pipelines)
    assert main(["rollback", *check_args(pkg, http_peer)[1:], "--run", str(record), "--yes",
                 "--audit-log", str(log)]) == 0
    out = capsys.readouterr().out
    assert not any(p.script.startswith("# psbridge back-out of step") for p in engine.pipelines[sent:])
    for sid in ("app-certificate", "partner-applications"):
        assert re.search(rf"step \d\d {sid}: .*changed nothing", out), out
    # And check agrees: nothing would change.
    assert main(check_args(pkg, http_peer)) == 0


def test_a_farm_gets_the_payload_with_the_additional_servers_step_on_each_server(
        tmp_path, engine, http_peer, farm, graph_env, trusted, capsys) -> None:
    pkg = write_app_package(tmp_path, trusted, farm=FARM)
    answer_probes(engine, state_of(pkg, "acs-only server", adopt=False))
    assert main(run_args(pkg, http_peer)) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert [step_id(p) for p in step_pipelines(engine)] == ARTICLE + APP_STEPS
    _payload_received(next(p for p in step_pipelines(engine) if step_id(p) == "msal-assembly"), pkg)
    for (_, farm_engine), host in zip(farm, FARM):
        [step] = step_pipelines(farm_engine)
        assert step_id(step) == "additional-servers", host
        assert step.script == (pkg / "steps" / "13-additional-servers.ps1").read_bytes().decode("utf-8-sig")
        _payload_received(step, pkg)
        assert step.parameters["PfxPassword"] == SecureValue(PFX_PASSWORD)
        assert set(step.parameters) == PAYLOAD_PARAMETERS | {"PfxPassword"}
        assert f"[13/13] additional-servers on {host} … ok" in out


def test_run_verify_judges_the_app_steps_after_the_last_step(tmp_path, engine, http_peer, graph_env, trusted,
                                                             capsys) -> None:
    pkg = write_app_package(tmp_path, trusted)
    answer_probes(engine, state_of(pkg, "migrated and configured", adopt=False))
    assert main(run_args(pkg, http_peer, "--verify")) == 0, capsys.readouterr()
    [record] = list((pkg / "runs").glob("*.jsonl"))
    [verify] = [e for e in events_of(record) if e["event"] == "verify"]
    verdicts = {v["id"]: v["verdict"] for v in verify["verdicts"]}
    assert [verdicts[s] for s in APP_STEPS] == ["in place"] * 4 and verify["exit_code"] == 0
    scripts = engine.scripts()
    last_step = max(i for i, s in enumerate(scripts) if s.startswith("# psbridge step 12/12: msal-assembly"))
    assert any(s.startswith("# psbridge probe: app ") for s in scripts[last_step + 1:])


def test_a_run_resumed_at_partner_applications_sends_what_it_needs_and_the_payload(
        tmp_path, engine, http_peer, graph_env, trusted, capsys, monkeypatch) -> None:
    monkeypatch.delenv("PSBRIDGE_PFX_PASSWORD")  # step 02 is not selected: its secret is not asked for
    pkg = write_app_package(tmp_path, trusted)
    answer_probes(engine, state_of(pkg, "acs-only server", adopt=False))
    assert main(run_args(pkg, http_peer, "--from-step", "11")) == 0, capsys.readouterr()
    received = step_pipelines(engine)
    assert [step_id(p) for p in received] == ["prerequisites", "session", "connect", "partner-applications",
                                              "msal-assembly"]
    _payload_received(received[-1], pkg)


# --------------------------------------------------------------------------- 4. rollback


def _migration_seen_by_the_probes(engine: Engine, pkg: Path) -> None:
    """The adopted app without the certificate, then with key K; Microsoft's row with TenantId NULL and no
    app row, then both rows with the tenant. The ACS side is in place throughout (nothing to undo there)."""
    answers = state_of(pkg, "migrated and configured", adopt=True)
    for name in ("server", "certificate", "crm", "entra", "web"):
        engine.when(f"# psbridge probe: {name} ", Reply(output=[json.dumps(answers[name])]))
    without = app_answer(True, [])
    with_key = app_answer(True, [app_key(key_id=ADDED_KEY)])
    engine.when("# psbridge probe: app ", Reply(output=[json.dumps(without)]), times=3)  # 09 before/after, 10 before
    engine.when("# psbridge probe: app ", Reply(output=[json.dumps(with_key)]))
    null_tenant = org_answer([partner_row(SHAREPOINT_APP, None)])
    both = org_answer([partner_row(SHAREPOINT_APP, APP_TENANT), partner_row(APP_CLIENT, APP_TENANT)])
    engine.when("# psbridge probe: org ", Reply(output=[json.dumps(null_tenant)]), times=1)
    engine.when("# psbridge probe: org ", Reply(output=[json.dumps(both)]))


def test_rollback_sends_the_two_app_back_outs_with_the_recorded_values_in_reverse_order(
        tmp_path, engine, http_peer, graph_env, trusted, capsys, keys) -> None:
    log = tmp_path / "audit.jsonl"
    pkg = write_app_package(tmp_path, trusted, adopt=True)
    approve(pkg, keys, log)
    _migration_seen_by_the_probes(engine, pkg)
    assert main([*run_args(pkg, http_peer), "--audit-log", str(log)]) == 0
    [record] = list((pkg / "runs").glob("*.jsonl"))
    capsys.readouterr()
    before = len(engine.pipelines)
    assert main(["rollback", *check_args(pkg, http_peer)[1:], "--run", str(record), "--yes",
                 "--audit-log", str(log)]) == 0
    out = capsys.readouterr().out
    sent = engine.pipelines[before:]
    undo = [p for p in sent if p.script.startswith("# psbridge back-out of step")]
    assert [p.script.split(" (")[0] for p in undo] == ["# psbridge back-out of step 11",
                                                       "# psbridge back-out of step 10"]
    assert undo[0].script == (pkg / "rollback" / "11-partner-applications.ps1").read_bytes().decode("utf-8-sig")
    assert undo[1].script == (pkg / "rollback" / "10-app-certificate.ps1").read_bytes().decode("utf-8-sig")
    assert undo[0].parameters == {"ClientId": APP_CLIENT, "TenantId": APP_TENANT, "MicrosoftRow": "updated",
                                  "OldTenantId": None, "CustomerRow": "inserted"}
    assert undo[1].parameters == {"KeyIds": [ADDED_KEY]}
    # app-certificate's script needs the Graph session: sent before it, with the token as a SecureString.
    connect = next(p for p in sent if p.script.startswith("# psbridge step 04/12"))
    assert connect.parameters == {"AccessToken": SecureValue(GRAPH_TOKEN)}
    assert sent.index(connect) < sent.index(undo[1])
    assert not any(p.script.startswith("# psbridge step ") and step_id(p) in APP_STEPS for p in sent)
    for sid, index in (("app-registration", 9), ("msal-assembly", 12)):
        assert f"step {index:02d} {sid}: by hand:" in out, out
    # app-registration's procedure is a list: the operator reads it as lines, not as escaped "\n".
    assert "- the service principal: `Remove-MgServicePrincipal -ServicePrincipalId $Sp.Id`;" in out.splitlines()
    assert "\\n" not in out
    # The NULL came from the run record as JSON null, and went out as no value (not '' or 'NULL').
    around = {e["when"]: e["readings"]["org"] for e in events_of(record)
              if e["event"] == "state" and e["id"] == "partner-applications"}
    assert around["before"]["rows"][0]["tenant_id"] is None
    assert "OldTenantId=None" in out
    [rollback_record] = set((pkg / "runs").glob("*.jsonl")) - {record}
    assert [e.get("for_step") for e in events_of(rollback_record) if e["event"] == "step-end"] == [None, None, 11, 10]
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [(line["action"], line["outcome"]) for line in lines[-2:]] == [("rollback", "rollback-started"),
                                                                           ("rollback", "ok")]
    assert_no_secrets(out, rollback_record.read_bytes(), log.read_bytes())


# --------------------------------------------------------------------------- 5. renewal


def test_a_renewal_on_the_app_trust_adds_the_app_key_before_the_switch_and_retires_it_from_the_app_last(
        psbridge, tmp_path, trusted) -> None:
    params = write_parameters(tmp_path / "contoso.toml", app_parameters(replaces=OTHER))
    write_nupkg(params, trusted)
    result = psbridge("render", "contoso.toml", "--out", "out")
    assert result.exit_code == 0, result.stderr
    package = read_package(tmp_path / "out" / "contoso")
    order = [s.id for s in package.steps]
    assert order.index("app-registration") < order.index("app-certificate") < order.index("certificate")
    assert order[-1] == "retire-previous" and order.index("verify") == len(order) - 2
    assert set(APP_STEPS) <= set(order)
    retire = next(s for s in package.steps if s.id == "retire-previous")
    text = retire.text.lstrip("\ufeff")
    assert syntax_errors(text) == []
    assert f"$Replaces = '{OTHER}'" in text
    code = code_only(text)
    # The app's credential of the replaced certificate is dropped from the collection sent back ...
    assert "elseif ($AppThumbprint -eq $Replaces) {" in code and "$AppRetired.Add([string]$Key.KeyId)" in code
    updates = [i for i in command_invocations(text) if i.name == "Update-MgApplication"]
    assert len(updates) == 1
    assert [e.text for e in updates[0].elements if e.kind == "parameter"] == ["ApplicationId", "KeyCredentials"]
    # ... after the checks that stop the step, and before the Dynamics CRM service principal's removal.
    line = updates[0].line
    principal = min(i.line for i in command_invocations(text) if i.name == "Update-MgServicePrincipal")
    assert code.count("\n", 0, code.index("if ($Unknown.Count -gt 0)")) + 1 < line < principal


def test_check_of_an_app_renewal_before_retirement_says_retire_previous_also_removes_the_apps_old_key(
        tmp_path, engine, http_peer, graph_env, trusted, capsys) -> None:
    pkg = write_app_package(tmp_path, trusted, replaces=OTHER)
    answers = state_of(pkg, "migrated and configured", adopt=False)  # CRM signs with the new one (THUMB)
    answers["app"] = app_answer(False, [app_key(OTHER, OTHER_KEY_ID), app_key()])  # the old key is still there
    answer_probes(engine, answers)
    assert main(check_args(pkg, http_peer, "--json")) == 5
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    retire = next(v for v in report["verdicts"] if v["id"] == "retire-previous")
    assert retire["verdict"] == "will change" and "app: " + OTHER in retire["detail"]
    assert retire["index"] == len(report["verdicts"])  # the last step
    assert [step_id(p) for p in step_pipelines(engine)] == ["session", "connect"]


# --------------------------------------------------------------------------- 7. report


def test_report_of_a_run_app_package_names_the_app_trust_on_page_one(
        psbridge, tmp_path, engine, http_peer, graph_env, trusted, capsys) -> None:
    pkg = write_app_package(tmp_path, trusted)
    answer_probes(engine, state_of(pkg, "acs-only server", adopt=False))
    assert main(run_args(pkg, http_peer)) == 0
    capsys.readouterr()
    result = psbridge("report", pkg, "-o", tmp_path / "report.html")
    assert result.exit_code == 0, result.stderr
    assert "not intact or not reproducible" not in result.stderr  # the payload passed the gates again
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    summary = html.split('<section class="summary"', 1)[1].split("</section>", 1)[0]
    assert "The app trust" in summary and "Sites.FullControl.All" in summary
    payload = html.split('<section id="payload">', 1)[1].split("</section>", 1)[0]  # after page one (issue 21)
    for fact in trusted.payload.facts():
        assert fact["file"] in payload and fact["sha256"] in payload
    for step in read_package(pkg).steps:
        assert step.sha256 in html
