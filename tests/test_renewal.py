"""Renewing the S2S certificate without an outage (`[certificate] replaces`).

A renewal package runs the article's steps in another order, so that CRM never signs a token
with a key Entra ID does not know: the new key credential is added next to the one in use and
read back, the certificate is installed on every additional server, CRM is switched, the
result is verified, and only then `retire-previous` removes the replaced certificate's
credential. These tests render real packages, run them against the loopback WinRM peer (one
peer per server of a farm) and judge the probes' answers with `check`.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest

from psbridge.cli import main
from psbridge.package import read_package

from support import certfactory as cf
from support.cli import check_args, run_args
from support.lab import FARM
from support.probe_states import CRM_APP, IN_STORE, SERVER, SPN, THUMB, _cert, _crm, _entra
from support.pwsh_grammar import syntax_errors
from support.renewals import OLD, _later, _proof, _proven_at, graph_env, renewal, sent  # noqa: F401 - graph_env is a fixture
from support.winrm_peer import Engine, ErrorSpec, Reply, WinRMPeer
from support.winrm_peer.package import make_package, parameters_for


def farm_ready(engine: Engine, farm: list) -> None:  # type: ignore[type-arg]
    """Every additional server holds the new certificate, and the main server's .cer is it (THUMB)."""
    engine.when("# psbridge probe: certificate ", Reply(output=[json.dumps(_cert([IN_STORE]))]))
    for _, farm_engine in farm:
        holds_new_certificate(farm_engine)


def holds_new_certificate(farm_engine: Engine) -> None:
    """The additional server answers the probes with the new certificate in place (run asks before the switch)."""
    for name in ("server", "certificate"):
        farm_engine.when(f"# psbridge probe: {name} ", Reply(output=[json.dumps(
            SERVER if name == "server" else _cert([IN_STORE]))]))


@pytest.mark.parametrize("profile", ["graph", "msonline"])
def test_a_renewal_package_orders_add_new_before_install_before_switch_before_verify_before_retire(tmp_path,
                                                                                                   profile):
    package = read_package(renewal(tmp_path, profile))
    assert [(s.index, s.id, s.spec.runs_on) for s in package.steps] == [
        (1, "prerequisites", "main"), (2, "session", "main"), (3, "connect", "main"), (4, "set-certificate", "main"),
        (5, "spn", "main"), (6, "additional-servers", "additional"), (7, "certificate", "main"),
        (8, "crm-settings", "main"), (9, "tenant-id", "main"), (10, "verify", "main"),
        (11, "retire-previous", "main"),
    ]
    kinds = {s.id: s.spec.kind for s in package.steps}
    assert kinds["verify"] == "check" and kinds["retire-previous"] == "change"
    for step in package.steps:
        assert syntax_errors(step.text) == [], step.file
        assert step.text.startswith(f"\ufeff# psbridge step {step.index:02d}") or \
            step.text.startswith(f"# psbridge step {step.index:02d}"), step.file
    assert syntax_errors(package.text("setup.ps1")) == []


def test_a_first_setup_is_unchanged_by_the_renewal_machinery(tmp_path):
    """Without `replaces` the package has the article's order and no renewal step."""
    package = read_package(make_package(tmp_path / "output", server="127.0.0.1", crm={"additional_servers": FARM}))
    assert [s.id for s in package.steps][-3:] == ["crm-settings", "tenant-id", "additional-servers"]
    assert "retire-previous" not in package.text("REVIEW.md") and "## Renewal" not in package.text("REVIEW.md")


@pytest.mark.parametrize("profile", ["graph", "msonline"])
def test_retire_previous_removes_only_after_verification_and_never_the_new_credential(tmp_path, profile):
    text = read_package(renewal(tmp_path, profile)).text("steps/11-retire-previous.ps1")
    removal = ("Update-MgServicePrincipal -ServicePrincipalId" if profile == "graph"
               else "Remove-MsolServicePrincipalCredential -AppPrincipalId")
    guard = text.index("if ($PSBridgeVerified -ne $Renewed.Thumbprint)")
    unknown = text.index("if ($Unknown.Count -gt 0)")
    own = text.index("if (-not $HasOwn)")
    assert guard < own < unknown < text.index(removal)  # every stop comes before the one removal
    assert text.count(removal) == 1
    # The new certificate's credential is kept; only the replaced one and expired ones are retired.
    assert "if ($Key.Value -ceq $RenewedValue) {\n        $HasOwn = $true\n        $Keep.Add($Key)" in \
        text.replace("\r\n", "\n")
    assert "$Key.Thumbprint -eq $Replaces -or ($null -ne $Key.EndDate -and $Key.EndDate -lt $Now)" in text
    assert f"$Replaces = '{OLD}'" in text
    verify = read_package(renewal(tmp_path / "again", profile)).text("steps/10-verify.ps1")
    assert "$PSBridgeVerified = ''" in verify and verify.rstrip().splitlines()[-2] == \
        "$PSBridgeVerified = $Renewed.Thumbprint"


@pytest.mark.parametrize("profile", ["graph", "msonline"])
def test_the_switch_checks_entra_for_the_new_credential_before_calling_certificate_reconfiguration(tmp_path,
                                                                                                   profile):
    text = read_package(renewal(tmp_path, profile)).text("steps/07-certificate.ps1")
    assert text.index("Get-PSBridgeCrmKeyCredentials '00000007") < text.index("& $CertificateScript")
    assert "CRM is not switched to it" in text
    spn = read_package(renewal(tmp_path / "b", profile)).text("steps/05-spn.ps1")
    assert "Read back:" in spn  # the new credential is read back before the switch


def test_setup_ps1_of_a_farm_renewal_pauses_for_the_additional_servers_before_the_switch(tmp_path):
    setup = read_package(renewal(tmp_path)).text("setup.ps1").replace("\r\n", "\n")
    pause = setup.index("if ($FromStep -le 6) {\n        Write-Host 'Now run steps/06-additional-servers.ps1")
    assert setup.index("# psbridge step 05/11: spn") < pause < setup.index("# psbridge step 07/11: certificate")
    assert "continue with:  .\\setup.ps1 -FromStep 7" in setup
    assert "[ValidateRange(1, 11)]" in setup
    assert "# psbridge step 06: additional-servers" not in setup  # it runs on the other servers


def test_review_md_says_what_is_replaced_until_when_and_the_order(tmp_path, psbridge):
    old = cf.cert(subject=cf.name(CN="crm.contoso.com"), not_before=cf.NOW - timedelta(days=340),
                  not_after=cf.NOW + timedelta(days=25))
    new = cf.cert(subject=cf.name(CN="crm.contoso.com S2S 2027"), not_before=cf.NOW - timedelta(days=1),
                  not_after=cf.NOW + timedelta(days=730))
    cf.write(tmp_path / "old.cer", cf.der(old))
    cf.write(tmp_path / "new.cer", cf.der(new))
    thumb = thumbprint_of(old)
    params = _write_params(tmp_path, replaces=thumb, local_replaced="old.cer", local_cer="new.cer")
    result = psbridge("render", params, "--out", "out")
    assert result.exit_code == 0, result.stderr
    review = (tmp_path / "out" / "contoso" / "REVIEW.md").read_text()
    section = review.split("## Renewal: the certificate it replaces, and the order", 1)[1].split("\n## ", 1)[0]
    flat = " ".join(section.split())
    assert f"It replaces the certificate `{thumb}` (`CN=crm.contoso.com`), which expires on `" in flat
    assert (cf.NOW + timedelta(days=25)).strftime("%Y-%m-%d") in flat
    assert f"The new certificate `{thumbprint_of(new)}`" in flat
    order = [flat.index(f"Step `{n}") for n in ("05 spn", "06 certificate", "09 verify", "10 retire-previous")]
    assert order == sorted(order)
    assert "## Manual step: the Enable Server-Based SharePoint Integration wizard" not in review


def thumbprint_of(certificate) -> str:  # type: ignore[no-untyped-def]
    """SHA-1 of the DER, as Windows shows a thumbprint."""
    import hashlib

    return hashlib.sha1(cf.der(certificate)).hexdigest().upper()  # noqa: S324 - a thumbprint is SHA-1


def _write_params(tmp_path: Path, **certificate: str) -> Path:
    data = parameters_for(server="crm01.contoso.local", certificate=certificate)
    lines = [f"name = {json.dumps(data['name'])}", "[certificate]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in data["certificate"].items()]
    lines += ["[crm]"] + [f"{k} = {json.dumps(v)}" for k, v in data["crm"].items()]
    lines += ["[sharepoint]", f"sites = {json.dumps(data['sharepoint']['sites'])}"]
    path = tmp_path / "renew.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("certificate,message", [
    ({"replaces": "0123"}, "certificate.replaces: must be a certificate thumbprint: 40 hexadecimal digits"),
    ({"replaces": "01 23 45 67 89 AB CD EF 01 23 45 67 89 AB CD EF 01 23 45 67"},
     "certificate.replaces: must be a certificate thumbprint"),
    ({"local_replaced": "old.cer"}, "local_replaced is a copy of the certificate a renewal replaces: give replaces"),
])
def test_bad_renewal_parameters_are_one_line_exit_2(tmp_path, psbridge, certificate, message):
    result = psbridge("validate", _write_params(tmp_path, **certificate))
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_local_copy_of_the_replaced_certificate_must_be_it_and_have_another_subject(tmp_path, psbridge):
    old = cf.cert(cf.name(CN="crm.contoso.com"))
    same = cf.cert(cf.name(CN="crm.contoso.com"), serial=0x5678)
    cf.write(tmp_path / "old.cer", cf.der(old))
    cf.write(tmp_path / "same.cer", cf.der(same))
    wrong = psbridge("validate", _write_params(tmp_path, replaces="A" * 40, local_replaced="old.cer"))
    assert wrong.exit_code == 2
    assert f"certificate.local_replaced: {tmp_path / 'old.cer'} has thumbprint {thumbprint_of(old)}, not " \
           f"certificate.replaces {'A' * 40}" in wrong.stderr
    clash = psbridge("validate", _write_params(tmp_path, replaces=thumbprint_of(old), local_replaced="old.cer",
                                               local_cer="same.cer"))
    assert clash.exit_code == 2 and "has the subject of the one it replaces" in clash.stderr
    own = psbridge("validate", _write_params(tmp_path, replaces=thumbprint_of(same), local_cer="same.cer"))
    assert own.exit_code == 2 and "certificate.replaces: " in own.stderr and "the package's own" in own.stderr
    assert not (tmp_path / "output").exists()


# --------------------------------------------------------------------------- runs on the loopback peer


def test_a_renewal_run_sends_add_new_then_install_then_switch_then_verify_then_retire(tmp_path, http_peer, engine,
                                                                                      farm, graph_env, capsys):
    pkg = renewal(tmp_path)
    farm_ready(engine, farm)
    assert main(run_args(pkg, http_peer)) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert sent(engine) == ["01 prerequisites", "02 session", "03 connect", "04 set-certificate", "05 spn",
                            "07 certificate", "08 crm-settings", "09 tenant-id", "10 verify", "11 retire-previous"]
    for _, farm_engine in farm:
        assert sent(farm_engine) == ["06 additional-servers"]
    # One timeline over all servers, from the run record: the order the issue asks for.
    events = [json.loads(line) for line in next((pkg / "runs").glob("*.jsonl")).read_text().splitlines()]
    ends = [(e["id"], e.get("host")) for e in events if e["event"] == "step-end"]
    order = [i for i, _ in ends]
    assert order.index("spn") < order.index("additional-servers") < order.index("certificate") \
        < order.index("verify") < order.index("retire-previous")
    assert [h for i, h in ends if i == "additional-servers"] == FARM
    gate = [e for e in events if e["event"] == "farm-gate"]  # asked right before the switch
    assert [g["ready"] for g in gate] == [True]
    assert events.index(gate[0]) < next(i for i, e in enumerate(events) if e.get("id") == "certificate")
    # The main server keeps one session and one lock across the additional servers (the session
    # steps' variables, such as the Graph connection, are what verify and retire-previous use).
    assert len({p.shell_id for p in engine.pipelines}) == 1
    assert sum(p.script.startswith("# psbridge lock:") and "ShellId" in p.parameters for p in engine.pipelines) == 1
    assert "Renewal done" in out and f"remove the replaced certificate {OLD}" in out
    assert "Enable Server-Based SharePoint Integration wizard (manual" not in out


def test_the_state_probes_between_steps_cannot_change_what_verify_sees(tmp_path, http_peer, engine, graph_env,
                                                                         capsys):
    """A probe's variables ($Certificate in the crm probe) must not outlive it in the run's session.

    Steps run dot-sourced, so that step 04's $Certificate reaches the later steps; the read-only
    probes `run` sends around each change ran the same way, and the crm probe's $Certificate (CRM's
    own certificate) replaced the package's before verify. Probes now run in a scope of their own.
    """
    pkg = renewal(tmp_path, farm=False)
    assert main(run_args(pkg, http_peer)) == 0, capsys.readouterr()
    probes = [p for p in engine.pipelines if p.script.startswith("# psbridge probe: ")]
    steps = [p for p in engine.pipelines if p.script.startswith("# psbridge step ")]
    assert probes and all(p.local_scope == [True] for p in probes)
    assert steps and all(p.local_scope == [False] for p in steps)
    verify = read_package(pkg).text("steps/09-verify.ps1")
    assert "$Renewed.Import('C:\\certs\\s2s.cer')" in verify  # it reads the .cer itself, too


@pytest.mark.parametrize("failing", ["05 spn", "07 certificate", "10 verify"])
def test_retire_previous_never_runs_after_a_failure_or_a_failed_verification(tmp_path, http_peer, engine, farm,
                                                                             graph_env, capsys, failing):
    pkg = renewal(tmp_path)
    farm_ready(engine, farm)
    number, step_id = failing.split()
    engine.when(f"# psbridge step {number}/11: {step_id} -",
                Reply(terminating=ErrorSpec("Verification failed; nothing is retired")))
    assert main(run_args(pkg, http_peer)) == 1
    main_sent = sent(engine)
    assert main_sent[-1] == failing and "11 retire-previous" not in main_sent
    if failing == "05 spn":  # nothing reached the other servers, and CRM was not switched
        assert all(sent(e) == [] for _, e in farm) and "07 certificate" not in main_sent
    assert "no later step was sent" in capsys.readouterr().out


def test_a_failure_on_an_additional_server_keeps_crm_on_the_old_certificate(tmp_path, http_peer, engine, farm,
                                                                            graph_env, capsys):
    pkg = renewal(tmp_path)
    farm[1][1].when("# psbridge step 06: additional-servers", Reply(terminating=ErrorSpec("Private key not found")))
    assert main(run_args(pkg, http_peer)) == 1
    assert sent(engine)[-1] == "05 spn"  # the switch was never sent
    out = capsys.readouterr().out
    line = next(l.strip() for l in out.splitlines() if l.strip().startswith("psbridge run "))
    assert line.endswith(f"--from-step 6 --from-server {FARM[1]}")


def test_a_resumed_run_does_not_switch_crm_before_every_additional_server_holds_the_certificate(
        tmp_path, http_peer, engine, farm, graph_env, capsys):
    """`--from-step 7` (or a --from-server resume) skips step 06: run asks each additional server first."""
    pkg = renewal(tmp_path)
    farm_ready(engine, farm[:1])  # 127.0.0.3 never got step 06: its store is empty
    farm[1][1].when("# psbridge probe: server ", Reply(output=[json.dumps(SERVER)]))
    farm[1][1].when("# psbridge probe: certificate ", Reply(output=[json.dumps(_cert([]))]))
    assert main(run_args(pkg, http_peer, "--from-step", "7")) == 1
    assert "07 certificate" not in sent(engine) and "11 retire-previous" not in sent(engine)
    out = capsys.readouterr().out
    assert "Not sent: step 07 (certificate) would switch CRM to the new certificate" in out
    assert f"{FARM[1]}: the new certificate {THUMB} is not in LocalMachine\\My" in out
    assert out.rstrip().splitlines()[-2].strip().endswith("--from-step 6")  # the command that installs it
    events = [json.loads(line) for line in next((pkg / "runs").glob("*.jsonl")).read_text().splitlines()]
    assert events[-1]["reason"] == "not-ready" and events[-1]["stopped_at"] == 7


def test_an_unknown_outcome_on_an_additional_server_never_advises_an_invalid_resume(tmp_path, http_peer, engine,
                                                                                   farm, graph_env, capsys):
    pkg = renewal(tmp_path)
    farm[0][1].when("# psbridge step 06: additional-servers", Reply(hang=True))
    assert main(run_args(pkg, http_peer, "--step-timeout", "1")) == 4
    out = capsys.readouterr().out
    commands = [line.strip() for line in out.splitlines() if line.strip().startswith("psbridge run ")]
    assert commands and all("--from-server" not in c or c.endswith(("--from-server 127.0.0.2",
                                                                        "--from-server 127.0.0.3")) for c in commands)
    assert all(" --from-step 6" in c for c in commands if "--from-server" in c)
    assert "07 certificate" not in sent(engine)


def test_skipping_verify_with_step_never_sends_retire_previous(tmp_path, http_peer, engine, graph_env,
                                                              monkeypatch, capsys):
    import io
    import sys

    pkg = renewal(tmp_path, farm=False)  # without a farm: 09 verify, 10 retire-previous
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 8 + "n\ny\n"))  # skip 09 (verify); yes to the rest
    code = main(run_args(pkg, http_peer, "--step"))
    sent_steps = sent(engine)
    assert sent_steps[-1] == "08 tenant-id", sent_steps  # neither verify nor retire-previous was sent
    assert code == 1
    out = capsys.readouterr().out
    assert "retire-previous … skipped (not sent: it needs step 09 (verify), which was skipped)" in out


# --------------------------------------------------------------------------- check: before, after, and again


def _renewed(entra_keys: list[dict]) -> dict:
    """The farm's main server after the renewal: CRM signs with THUMB (the new certificate)."""
    entra = _entra([], [CRM_APP, SPN])
    entra["key_credentials"] = entra_keys
    return {"server": SERVER, "certificate": _cert([IN_STORE]), "crm": _crm([THUMB], settings=True),
            "entra": entra}


def _key(thumbprint: str, end: str = "2036-01-01T00:00:00Z", **extra) -> dict:
    return {"thumbprint": thumbprint, "start": "2026-01-01T00:00:00Z", "end": end, **extra}


def _check(pkg: Path, peer: WinRMPeer, engine: Engine, answers: dict, capsys) -> tuple[int, dict]:
    for name, answer in answers.items():
        engine.when(f"# psbridge probe: {name} ", Reply(output=[json.dumps(answer)]))
    code = main([*check_args(pkg, peer), "--json"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return code, {v["id"]: v for v in report["verdicts"]}


def test_a_completed_renewal_run_again_changes_nothing(tmp_path, http_peer, engine, graph_env, capsys):
    """After the renewal every state-changing step of the package is in place: a re-run changes nothing."""
    pkg = renewal(tmp_path, farm=False)
    code, verdicts = _check(pkg, http_peer, engine, _renewed([_key(THUMB, matches_certificate=True)]), capsys)
    package = read_package(pkg)
    changing = [s.id for s in package.steps if s.changes_state]
    assert {i: verdicts[i]["verdict"] for i in changing} == {i: "in place" for i in changing}
    # ... and each of those steps, finding its state in place, says so and returns before changing anything.
    for step in (s for s in package.steps if s.changes_state):
        text = step.text.replace("\r\n", "\n")
        assert re.search(r"Write-Output \(?'Already (configured|retired)[^\n]*\n\s*return\n", text), step.id
    assert verdicts["retire-previous"]["index"] == 10 and verdicts["spn"]["index"] == 5  # the renewal's order
    assert code == 0


def test_check_before_retirement_says_which_credential_retire_previous_removes(tmp_path, http_peer, engine,
                                                                                graph_env, capsys):
    pkg = renewal(tmp_path, farm=False)
    expired = _key("C" * 40, end="2024-01-01T00:00:00Z", key_id="7d1f5a36-0000-4000-8000-000000000001")
    keys = [_key(THUMB, matches_certificate=True), _key(OLD), expired]
    code, verdicts = _check(pkg, http_peer, engine, _renewed(keys), capsys)
    retire = verdicts["retire-previous"]
    assert retire["verdict"] == "will change" and OLD in retire["detail"] and "C" * 40 in retire["detail"]
    assert code == 5


def test_check_says_retire_previous_would_stop_on_a_credential_it_was_not_told_about(tmp_path, http_peer, engine,
                                                                                    graph_env, capsys):
    pkg = renewal(tmp_path, farm=False)
    keys = [_key(THUMB, matches_certificate=True), _key(OLD), _key("D" * 40)]
    code, verdicts = _check(pkg, http_peer, engine, _renewed(keys), capsys)
    retire = verdicts["retire-previous"]
    assert retire["verdict"] == "blocked" and "D" * 40 in retire["detail"] and "would stop" in retire["detail"]
    assert code == 1



def test_the_readme_renewal_section_is_what_psbridge_renders(tmp_path, psbridge):
    """The README's renewal parameters validate as written, and its order table is the farm package's."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### Renewing the certificate", 1)[1].split("\n## ", 1)[0]
    block = section.split("```toml\n", 1)[1].split("```", 1)[0]
    kept = [line for line in block.splitlines() if not line.startswith("local_")]  # no local files here
    text = "\n".join(['name = "renewal"', *kept, "[crm]", 'root_domain = "*.contoso.com"',
                      'server = "crm01.contoso.local"', 'additional_servers = ["crmfe2.contoso.local"]',
                      "[sharepoint]", 'sites = ["https://contoso.sharepoint.com/sites/salesteam"]', ""])
    (tmp_path / "renew.toml").write_text(text)
    assert psbridge("validate", "renew.toml").exit_code == 0
    result = psbridge("render", "renew.toml", "--out", "out")
    assert result.exit_code == 0, result.stderr
    steps = [(s.index, s.id) for s in read_package(tmp_path / "out" / "renewal").steps]
    table = []
    for row in re.findall(r"^\| (\d\d)(?:[–,] ?(\d\d))? \| ([a-z, -]+) \|", section, re.M):
        first, last, names = int(row[0]), int(row[1] or row[0]), [n.strip() for n in row[2].split(",")]
        table += list(zip(range(first, last + 1), names, strict=True))
    assert table == steps


def test_a_connection_lost_by_a_state_probe_sends_no_further_step(tmp_path, http_peer, engine, graph_env, capsys):
    """The probe after spn loses the connection: the switch is not sent over it (it was, reported UNKNOWN)."""
    pkg = renewal(tmp_path, farm=False)
    engine.when(lambda p: p.script.startswith("# psbridge probe: entra ")
                and any(q.script.startswith("# psbridge step 05/10: spn") for q in engine.pipelines[:-1]),
                Reply(drop=True))
    assert main(run_args(pkg, http_peer)) == 1
    assert sent(engine)[-1] == "05 spn"
    out = capsys.readouterr().out
    assert "Stopped: the connection was lost before step 06 (certificate); nothing of it was sent." in out
    assert out.rstrip().splitlines()[-2].strip().endswith("--from-step 6")


def test_a_plan_json_whose_replaced_certificate_is_another_one_fails_the_package_gate(tmp_path, psbridge):
    """REVIEW.md is rendered from plan.json's facts: facts that contradict `replaces` are refused, not shown."""
    old = cf.cert(cf.name(CN="crm.contoso.com"), not_after=cf.NOW + timedelta(days=20))
    cf.write(tmp_path / "old.cer", cf.der(old))
    params = _write_params(tmp_path, replaces=thumbprint_of(old), local_replaced="old.cer")
    assert psbridge("render", params, "--out", "out").exit_code == 0
    pkg = tmp_path / "out" / "contoso"
    assert "files match plan.json and psbridge's render" in psbridge("show", pkg).stdout
    plan = json.loads((pkg / "plan.json").read_text())
    plan["replaced_certificate"].update(thumbprint="C" * 40, not_after="2099-12-31T00:00:00Z")
    (pkg / "plan.json").write_text(json.dumps(plan))
    result = psbridge("show", pkg)
    assert "psbridge cannot render these recorded facts" in result.stdout + result.stderr


def test_render_refuses_facts_that_contradict_replaces():
    from psbridge.parameters import parse_parameters
    from psbridge.render import render_package

    data = parameters_for(server="crm01.contoso.local")
    data["certificate"]["replaces"] = OLD
    params = parse_parameters(data)
    with pytest.raises(ValueError, match="not of certificate.replaces"):
        render_package(params, None, {"thumbprint": "C" * 40, "subject": "CN=x", "not_after": "2099-01-01T00:00:00Z"})
    with pytest.raises(ValueError, match="own certificate is the one certificate.replaces names"):
        render_package(params, {"thumbprint": OLD.lower(), "subject": "CN=x"})


def test_ctrl_c_between_servers_still_ends_the_audit_line_with_the_record(tmp_path, http_peer, engine, farm,
                                                                           graph_env, monkeypatch, capsys):
    """Ctrl-C while connecting to an additional server, after spn changed Entra ID: exit 130, and the
    audit log's end line carries the run record's sha256 (rollback believes only such a record)."""
    from psbridge.remote import transport as remote
    from psbridge.files import sha256_hex

    pkg = renewal(tmp_path)
    real_open = remote.PSRPSession.open

    def open_or_interrupt(self, *, exchange_keys):  # type: ignore[no-untyped-def]
        if self.conn.host == FARM[0]:
            raise KeyboardInterrupt
        return real_open(self, exchange_keys=exchange_keys)

    monkeypatch.setattr(remote.PSRPSession, "open", open_or_interrupt)
    assert main(run_args(pkg, http_peer)) == 130
    assert sent(engine)[-1] == "05 spn"
    record = next((pkg / "runs").glob("*.jsonl"))
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    runs = [(line["outcome"], line["details"]) for line in lines if line["action"] == "run"]
    assert [o for o, _ in runs] == ["started", "interrupted"]
    assert runs[-1][1]["record_sha256"] == sha256_hex(record.read_bytes())
    assert json.loads(record.read_text().splitlines()[-1])["exit_code"] == 130


def test_a_farm_server_locked_by_another_run_gets_a_continue_command_not_run_again(tmp_path, http_peer, engine, farm,
                                                                                 graph_env, capsys):
    """Steps 01-05 ran on the main server: "run this command again" would send spn again."""
    pkg = renewal(tmp_path)
    farm[0][1].when("# psbridge lock:", Reply(terminating=ErrorSpec("the run lock is held by another run")))
    assert main(run_args(pkg, http_peer)) == 1
    out = capsys.readouterr().out
    assert sent(engine)[-1] == "05 spn" and sent(farm[0][1]) == []
    assert "run this command again" not in out
    assert f"--from-step 6 --from-server {FARM[0]}" in out
    events = [json.loads(line) for line in next((pkg / "runs").glob("*.jsonl")).read_text().splitlines()]
    assert events[-1]["stopped_at"] == 6


def test_rollback_of_a_renewal_run_lists_the_manual_back_outs_and_never_removes_the_new_credential(
        tmp_path, http_peer, engine, graph_env, capsys):
    pkg = renewal(tmp_path, farm=False)
    new_key = "11111111-2222-4333-8444-555555555555"
    before_entra = _renewed([_key(OLD)])["entra"]
    after_entra = _renewed([_key(OLD), _key(THUMB, matches_certificate=True, key_id=new_key)])["entra"]
    engine.when("# psbridge probe: entra ", Reply(output=[json.dumps(before_entra)]), times=1)
    engine.when("# psbridge probe: entra ", Reply(output=[json.dumps(after_entra)]))
    assert main(run_args(pkg, http_peer)) == 0
    [record] = list((pkg / "runs").glob("*.jsonl"))
    capsys.readouterr()
    sent_before = len(engine.pipelines)
    code = main(["rollback", *check_args(pkg, http_peer)[1:], "--run", str(record), "--yes"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and code in (0, 1), err
    assert "step 05 spn: by hand:" in out and "Only once CRM signs with the replaced certificate again" in out
    assert "step 10 retire-previous: by hand:" in out and "step 06 certificate: by hand:" in out
    assert not any(p.parameters.get("KeyIds") for p in engine.pipelines[sent_before:])  # nothing removes a key



@pytest.mark.parametrize("store_entry,cer,reason", [
    (dict(IN_STORE, has_private_key=False, key_readable=None), THUMB, "without its private key"),
    (dict(IN_STORE, key_readable=None), THUMB, "cannot be shown to read"),
    (dict(IN_STORE, thumbprint=OLD), OLD, f"its .cer is {OLD}, not the new certificate {THUMB}"),
    (dict(IN_STORE, thumbprint=OLD), THUMB, f"the new certificate {THUMB} is not in LocalMachine"),
])
def test_the_switch_waits_for_the_new_certificate_with_a_readable_key_not_for_a_look_alike(
        tmp_path, http_peer, engine, farm, graph_env, capsys, store_entry, cer, reason):
    """check calls a server whose key access cannot be told 'in place'; the switch asks for more."""
    pkg = renewal(tmp_path)
    farm_ready(engine, farm)
    farm[1][1].reset_rules()
    farm[1][1].when("# psbridge probe: server ", Reply(output=[json.dumps(SERVER)]))
    farm[1][1].when("# psbridge probe: certificate ", Reply(output=[json.dumps(_cert([store_entry], cer=cer))]))
    assert main(run_args(pkg, http_peer, "--from-step", "7")) == 1
    assert "07 certificate" not in sent(engine)
    out = capsys.readouterr().out
    assert any(line.strip().startswith(f"{FARM[1]}: ") and reason in line for line in out.splitlines()), out


def test_ctrl_c_during_the_probe_before_the_switch_stops_the_run_there(tmp_path, http_peer, engine, graph_env,
                                                                      capsys):
    """The operator's Ctrl-C lands in a state probe (they fill the time between steps): the switch is not sent."""
    import os
    import signal
    import threading

    pkg = renewal(tmp_path, farm=False)
    seen = []

    def crm_probe_before_the_switch(p) -> bool:  # type: ignore[no-untyped-def]
        if not p.script.startswith("# psbridge probe: crm ") or not any(
                q.script.startswith("# psbridge step 05/10: spn") for q in engine.pipelines[:-1]):
            return False
        if not seen:
            seen.append(p)
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        return True

    engine.when(crm_probe_before_the_switch, Reply(hang=True))
    assert main(run_args(pkg, http_peer)) == 130
    assert "06 certificate" not in sent(engine)
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1].strip().endswith("--from-step 6")
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [l["outcome"] for l in lines if l["action"] == "run"] == ["started", "interrupted"]


def test_end_of_input_at_the_step_prompt_is_an_interruption_with_a_way_on(tmp_path, http_peer, engine, graph_env,
                                                                          monkeypatch, capsys):
    import io
    import sys

    pkg = renewal(tmp_path, farm=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 5))  # 01-05 (spn changed Entra ID), then nothing
    assert main(run_args(pkg, http_peer, "--step")) == 130
    assert sent(engine)[-1] == "05 spn"
    record = next((pkg / "runs").glob("*.jsonl"))
    end = json.loads(record.read_text().splitlines()[-1])
    assert end["reason"] == "interrupted" and end["stopped_at"] == 6 and end["summary"][-1].endswith("--from-step 6")
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [l["outcome"] for l in lines if l["action"] == "run"] == ["started", "interrupted"]


def test_a_second_ctrl_c_while_a_step_is_stopped_keeps_it_unknown(tmp_path, http_peer, engine, graph_env,
                                                                  monkeypatch, capsys):
    """Ctrl-C during a step is UNKNOWN (exit 4), even when another Ctrl-C lands while psbridge stops it."""
    import os
    import signal
    import threading
    import time

    from pypsrp.powershell import PowerShell

    def interrupted_again(self):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(PowerShell, "stop", interrupted_again)
    pkg = renewal(tmp_path, farm=False)
    engine.when("# psbridge step 05/10: spn", Reply(hang=True))
    def interrupt_once_the_step_hangs() -> None:
        # Ctrl-C once step 05 is sent and psbridge waits for it (a fixed timer raced the earlier steps under load)
        deadline = time.monotonic() + 60
        while not any("# psbridge step 05/10: spn" in p.script for p in engine.pipelines):
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_the_step_hangs, daemon=True).start()
    assert main(run_args(pkg, http_peer)) == 4
    events = [json.loads(line) for line in next((pkg / "runs").glob("*.jsonl")).read_text().splitlines()]
    spn = [e for e in events if e["event"] == "step-end" and e["id"] == "spn"]
    assert [e["state"] for e in spn] == ["unknown"] and events[-1]["exit_code"] == 4
    assert "Not sent: step 05" not in capsys.readouterr().out


@pytest.mark.parametrize("how", ["ctrl-c while connecting", "a session step fails"])
def test_a_resumed_run_never_advises_a_command_that_starts_before_its_own_from_step(
        tmp_path, http_peer, engine, farm, graph_env, monkeypatch, capsys, how):
    """`--from-step 7` also sends the session steps 01-04 that step 7 needs; continuing at one of
    them would send 05 spn and 06 again, which succeeded in the earlier run."""
    from psbridge.remote import transport as remote

    pkg = renewal(tmp_path)
    if how == "ctrl-c while connecting":
        def interrupt(self, *, exchange_keys):  # type: ignore[no-untyped-def]
            raise KeyboardInterrupt

        monkeypatch.setattr(remote.PSRPSession, "open", interrupt)
        expected = 130
    else:
        engine.when("# psbridge step 03/11: connect", Reply(terminating=ErrorSpec("token expired")))
        expected = 1
    assert main(run_args(pkg, http_peer, "--from-step", "7")) == expected
    out = capsys.readouterr().out
    commands = [line.strip() for line in out.splitlines() if line.strip().startswith("psbridge run ")]
    assert commands and all(c.endswith("--from-step 7") for c in commands), commands


def test_ctrl_c_after_a_step_skip_prints_no_command_that_sends_a_finished_change_again(
        tmp_path, http_peer, engine, graph_env, monkeypatch, capsys):
    import io
    import sys

    pkg = renewal(tmp_path, farm=False)
    # 01-05 yes, 06 certificate no, 07 crm-settings yes (it changes state), then end of input at 08.
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 5 + "n\ny\n"))
    assert main(run_args(pkg, http_peer, "--step")) == 130
    out = capsys.readouterr().out
    assert "No command to continue is printed: --from-step 6 would send 07 crm-settings again" in out
    assert not any(line.strip().startswith("psbridge run ") for line in out.splitlines())


# --------------------------------------------------------------------------- the wait before the switch (issue 19 item 6)


def _commands(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.strip().startswith("psbridge run ")]


def test_a_renewal_run_stops_after_adding_the_key_and_says_when_to_continue(tmp_path, http_peer, engine, farm,
                                                                             graph_env, capsys):
    """The default (24 hours): steps up to the switch run, the switch is not sent, the run says when and how."""
    from psbridge.clock import format_time

    pkg = renewal(tmp_path, wait=None)
    assert read_package(pkg).parameters.certificate.switch_after_hours == 24
    assert json.loads((pkg / "plan.json").read_text())["parameters"]["certificate"]["switch_after_hours"] == 24
    farm_ready(engine, farm)
    assert main(run_args(pkg, http_peer)) == 1
    out = capsys.readouterr().out
    assert sent(engine) == ["01 prerequisites", "02 session", "03 connect", "04 set-certificate", "05 spn"]
    assert all(sent(e) == ["06 additional-servers"] for _, e in farm)  # installed before the wait, as before
    proof = _proof(tmp_path)
    assert proof["digest"] == read_package(pkg).digest and proof["outcome"] == "ok"
    assert proof["details"]["step"]["id"] == "spn" and proof["details"]["read_back"] is True
    until = format_time(_proven_at(proof) + timedelta(hours=24))
    refusal = next(line for line in out.splitlines() if line.startswith("Not sent: step 07 (certificate)"))
    assert f"only after {until} (UTC)" in refusal and "switch_after_hours is 24" in refusal
    assert _commands(out)[-1].endswith("--from-step 7") and f"Continue after {until} with:" in out
    end = json.loads(next((pkg / "runs").glob("*.jsonl")).read_text().splitlines()[-1])
    assert end["reason"] == "not-ready" and end["stopped_at"] == 7 and end["exit_code"] == 1


def test_a_second_run_before_the_wait_refuses_and_one_after_it_switches(tmp_path, http_peer, engine, farm,
                                                                         graph_env, monkeypatch, capsys):
    pkg = renewal(tmp_path, wait=6)
    farm_ready(engine, farm)
    assert main(run_args(pkg, http_peer)) == 1
    proven = _proven_at(_proof(tmp_path))
    capsys.readouterr()
    engine.pipelines.clear()
    _later(monkeypatch, proven + timedelta(hours=5, minutes=59))
    assert main(run_args(pkg, http_peer, "--from-step", "7")) == 1
    out = capsys.readouterr().out
    assert "07 certificate" not in sent(engine) and "Not sent: step 07 (certificate)" in out
    assert _commands(out)[-1].endswith("--from-step 7")
    # --from-step 8 would skip the switch: the steps after it wait too.
    assert main(run_args(pkg, http_peer, "--from-step", "8")) == 1
    out = capsys.readouterr().out
    assert "08 crm-settings" not in sent(engine) and "Not sent: step 08 (crm-settings) comes after the switch" in out
    engine.pipelines.clear()
    _later(monkeypatch, proven + timedelta(hours=6, seconds=1))
    assert main(run_args(pkg, http_peer, "--from-step", "7")) == 0, capsys.readouterr()
    assert sent(engine) == ["01 prerequisites", "02 session", "03 connect", "04 set-certificate", "07 certificate",
                            "08 crm-settings", "09 tenant-id", "10 verify", "11 retire-previous"]


def test_a_wait_of_0_runs_through_as_before(tmp_path, http_peer, engine, graph_env, capsys):
    pkg = renewal(tmp_path, farm=False, wait=0)
    assert main(run_args(pkg, http_peer)) == 0
    assert "Not sent" not in capsys.readouterr().out
    assert sent(engine)[4:] == ["05 spn", "06 certificate", "07 crm-settings", "08 tenant-id", "09 verify",
                                "10 retire-previous"]


@pytest.mark.parametrize("forgery", ["time edited", "line inserted", "another package's line", "log removed"])
def test_a_forged_or_unverified_proof_does_not_count(tmp_path, http_peer, engine, graph_env, monkeypatch, capsys,
                                                     forgery):
    """The wait counts only from a proof line the log's hash chain vouches for, of this package's digest."""
    from psbridge import audit

    pkg = renewal(tmp_path, farm=False, wait=24)
    assert main(run_args(pkg, http_peer)) == 1
    capsys.readouterr()
    log = tmp_path / "audit.jsonl"
    lines = log.read_text().splitlines()
    number = next(i for i, l in enumerate(lines) if json.loads(l)["action"] == "step-end")
    proof = json.loads(lines[number])
    proven = _proven_at(proof)
    if forgery == "time edited":  # moved two days back: the line's sha256 no longer matches it
        proof["time"] = (proven - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lines[number] = json.dumps(proof, separators=(",", ":"))
        log.write_text("\n".join(lines) + "\n")
        problem = f"line {number + 1}: content does not match its sha256"
    elif forgery == "line inserted":  # an older proof, hashed right, slipped in before the real one
        early = dict(proof, time=(proven - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        early.pop("sha256")
        early["sha256"] = audit.sha256_hex(audit.canonical(early))
        lines[number + 1:number + 1] = [json.dumps(early, separators=(",", ":"))]
        lines = [l for i, l in enumerate(lines) if i != number]  # and the real one taken out
        log.write_text("\n".join(lines) + "\n")
        problem = f"line {number + 2}: prev does not match line {number + 1}"  # the next line still names the real one
    elif forgery == "another package's line":  # a correctly chained proof, but of another digest
        log.write_text("")  # the same log rebuilt without the real proof, and a proof of another digest added
        for l in (json.loads(x) for i, x in enumerate(lines) if i != number):
            audit.append(log, audit.Head(l["action"], l["package"], l["digest"], l["actor"], l["outcome"]),
                         **l["details"])
        audit.append(log, audit.Head("step-end", proof["package"], "0" * 64, None, "ok"), **proof["details"])
        problem = "no line of step 05 (spn) ending OK for this package digest"
    else:
        log.unlink()  # the run starts a new log: it holds no proof
        problem = "no line of step 05 (spn) ending OK for this package digest"
    _later(monkeypatch, proven + timedelta(hours=25))
    engine.pipelines.clear()
    assert main(run_args(pkg, http_peer, "--from-step", "6")) == 1
    out = capsys.readouterr().out
    assert "06 certificate" not in sent(engine)
    refusal = next(line for line in out.splitlines() if line.startswith("Not sent: step 06 (certificate)"))
    assert "holds no such proof that its hash chain vouches for" in refusal and problem in refusal, refusal
    assert _commands(out)[-1].endswith("--from-step 5")  # proving the key again starts the wait again


def _before_the_switch() -> dict:
    """The main server after spn, before the switch: CRM signs with OLD, Entra ID holds both credentials."""
    entra = _entra([], [CRM_APP, SPN])
    entra["key_credentials"] = [_key(OLD), _key(THUMB, matches_certificate=True)]
    return {"server": SERVER, "certificate": _cert([IN_STORE]), "crm": _crm([OLD], settings=True), "entra": entra}


def test_check_shows_the_waiting_switch_as_will_change_after_its_time(tmp_path, http_peer, engine, graph_env,
                                                                     monkeypatch, capsys):
    from psbridge.clock import format_time

    pkg = renewal(tmp_path, farm=False, wait=None)
    assert main(run_args(pkg, http_peer)) == 1  # stops before the switch
    proven = _proven_at(_proof(tmp_path))
    until = format_time(proven + timedelta(hours=24))
    capsys.readouterr()
    _later(monkeypatch, proven + timedelta(hours=1))
    code, verdicts = _check(pkg, http_peer, engine, _before_the_switch(), capsys)
    switch = verdicts["certificate"]
    assert code == 5 and switch["verdict"] == "will change" and switch["not_before"] == until
    assert f"the switch waits until {until}" in switch["detail"]
    assert "not_before" not in verdicts["spn"]  # no other verdict carries it
    # As people read it:
    assert main(check_args(pkg, http_peer)) == 5
    line = next(l for l in capsys.readouterr().out.splitlines() if " certificate " in l and l.startswith("[06/"))
    assert f"will change (after {until})" in line
    # After the wait: `will change` as before.
    _later(monkeypatch, proven + timedelta(hours=24, seconds=1))
    code, verdicts = _check(pkg, http_peer, engine, _before_the_switch(), capsys)
    assert code == 5 and verdicts["certificate"]["verdict"] == "will change"
    assert "not_before" not in verdicts["certificate"] and "waits" not in verdicts["certificate"]["detail"]


def test_check_without_a_proof_says_the_switch_waits_for_one(tmp_path, http_peer, engine, graph_env, capsys):
    pkg = renewal(tmp_path, farm=False, wait=12)
    code, verdicts = _check(pkg, http_peer, engine, _before_the_switch(), capsys)
    switch = verdicts["certificate"]
    assert code == 5 and switch["verdict"] == "will change" and "not_before" not in switch
    assert "the switch waits 12 hours after step 05 (spn) proves the new key credential" in switch["detail"]


@pytest.mark.parametrize("certificate,message", [
    ({"switch_after_hours": 24}, "certificate.switch_after_hours: only a renewal waits before its switch: give "
                                 "replaces too"),
    ({"replaces": OLD, "switch_after_hours": 169}, "certificate.switch_after_hours: must be from 0 to 168 hours"),
    ({"replaces": OLD, "switch_after_hours": -1}, "certificate.switch_after_hours: must be from 0 to 168 hours"),
    ({"replaces": OLD, "switch_after_hours": "24"}, "certificate.switch_after_hours: must be a whole number of hours"),
    ({"replaces": OLD, "switch_after_hours": 1.5}, "certificate.switch_after_hours: must be a whole number of hours"),
    ({"replaces": OLD, "switch_after_hours": True}, "certificate.switch_after_hours: must be a whole number of hours"),
])
def test_bad_switch_after_hours_is_one_line_exit_2(tmp_path, psbridge, certificate, message):
    result = psbridge("validate", _write_params(tmp_path, **certificate))
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_the_wait_is_approved_with_the_package(tmp_path):
    """plan.json records the wait (the default too), so it is in the digest approvals sign; a first setup's
    plan.json has no such key."""
    waits = {}
    for wait in (None, 0, 48):
        pkg = read_package(renewal(tmp_path / str(wait), farm=False, wait=wait))
        waits[wait] = (pkg.plan["parameters"]["certificate"]["switch_after_hours"], pkg.digest)
    assert [w for w, _ in waits.values()] == [24, 0, 48] and len({d for _, d in waits.values()}) == 3
    first = read_package(make_package(tmp_path / "first", server="127.0.0.1"))
    assert "switch_after_hours" not in first.plan["parameters"]["certificate"]


@pytest.mark.parametrize("farm", [False, True])
def test_setup_ps1_stops_after_the_key_is_added_and_says_when_to_continue(tmp_path, farm):
    package = read_package(renewal(tmp_path, farm=farm, wait=None))
    setup = package.text("setup.ps1").replace("\r\n", "\n")
    assert syntax_errors(setup) == []
    switch = 7 if farm else 6
    spn_step = setup.index("# psbridge step 05/")
    marker = setup.index("[System.IO.File]::WriteAllText($PSBridgeKeyProven, [DateTime]::UtcNow.ToString('o') + ' ' + ")
    wait = setup.index("# ==== Wait: the switch runs 24 hours after step 05 read the new key credential back")
    switch_step = setup.index(f"# psbridge step {switch:02d}/")
    assert spn_step < marker < wait < switch_step
    # The marker is written inside step 05's block (only when it ran and ended), the wait is judged outside
    # every -FromStep block (a later -FromStep waits too), with the approved hours.
    assert setup.rindex("if ($FromStep -le ", 0, marker) > setup.rindex("# ==== Step 5 of", 0, marker)
    block = setup[wait:setup.index(f"# ==== Step {switch} of", wait)]
    assert "$PSBridgeWaitHours = [int] '24'" in setup and "AddHours($PSBridgeWaitHours)" in block
    assert "if ($FromStep" not in block  # (a farm's pause comes before the wait, not around it)
    assert f"Then continue with:  .\\setup.ps1 -FromStep {switch}')" in block
    assert "and wait:  .\\setup.ps1 -FromStep 5')" in block  # no marker: run step 05 first
    steps_digest = re.search(r"steps digest ([0-9a-f]{64})", setup).group(1)
    assert block.count(f"$PSBridgeMarker[1] -eq '{steps_digest}'") == 1  # another package's marker does not count
    assert block.count("return") == 2
    if farm:
        assert setup.index("Write-Host 'Now run steps/06-additional-servers.ps1") < wait


def test_setup_ps1_with_a_wait_of_0_has_no_wait(tmp_path):
    setup = read_package(renewal(tmp_path, farm=False, wait=0)).text("setup.ps1")
    assert "PSBridgeKeyProven" not in setup and "# ==== Wait" not in setup


def test_review_md_says_how_long_the_switch_waits_and_warns_at_0(tmp_path):
    review = read_package(renewal(tmp_path / "a", farm=False, wait=None)).text("REVIEW.md")
    section = " ".join(review.split("## Renewal: the certificate it replaces, and the order", 1)[1]
                       .split("\n## ", 1)[0].split())
    assert "The wait: `[certificate] switch_after_hours = 24`." in section
    assert "wait 24 hours after step `05 spn` read the new key credential back" in section
    assert "`psbridge run PACKAGE --from-step 6`" in section and "`.\\setup.ps1 -FromStep 6`" in section
    assert section.index("The wait:") < section.index("Step `06 certificate`: switches CRM")
    assert "Warning: `[certificate] switch_after_hours = 0`" not in section
    zero = read_package(renewal(tmp_path / "b", farm=False, wait=0)).text("REVIEW.md")
    section = " ".join(zero.split("## Renewal: the certificate it replaces", 1)[1].split("\n## ", 1)[0].split())
    assert "**Warning: `[certificate] switch_after_hours = 0`.** The switch follows step `05 spn` within minutes" \
        in section and "The wait:" not in section
