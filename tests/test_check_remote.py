"""`psbridge check`, `run --verify`, `run --require-approval` and the graph token, end to end.

The real CLI and the unmodified pypsrp client talk to the loopback peer (a protocol
peer, not PowerShell): it answers the probe scripts with the JSON that tests/support/probe_states.py
describes for each server state, and records every pipeline, which proves what was sent.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
from pathlib import Path

import pytest

from psbridge import clock
from psbridge.check import EXCHANGE_ONLINE
from psbridge.cli import main

from support.cli import check_args
from support.lab import O365_PASSWORD, O365_USER, WINRM_PASSWORD, assert_no_secrets
from support.packages import answer_probes, write_check_package
from support.probe_states import KNOWN_FAILURES, THUMB, state
from support.winrm_peer import CredentialValue, Engine, SecureValue, WinRMPeer

GRAPH_TOKEN = "eyJ0eXAi.graph-T0ken$;'x"








def write_package(root: Path, profile: str = "msonline", approved: str | None = THUMB) -> Path:
    return write_check_package(root, profile, approved)


def sent_step_files(engine: Engine, pkg: Path) -> list[str]:
    """Which of the package's step files the peer received, by exact text."""
    plan = json.loads((pkg / "plan.json").read_text())
    by_text = {(pkg / s["file"]).read_bytes()[3:].decode(): s["file"] for s in plan["steps"]}
    return [by_text[s] for s in engine.scripts() if s in by_text]


def changing_files(pkg: Path) -> set[str]:
    return {s["file"] for s in json.loads((pkg / "plan.json").read_text())["steps"] if s["changes_state"]}


@pytest.mark.parametrize("name,expected,code", [
    ("fresh server", {"certificate": "will change", "spn": "will change", "crm-settings": "will change"}, 5),
    ("half configured", {"certificate": "in place", "spn": "will change", "crm-settings": "will change"}, 5),
    ("fully configured", {"certificate": "in place", "spn": "in place", "crm-settings": "in place"}, 0),
    ("wrong certificate on server", {"certificate": "blocked"}, 1),
])
def test_check_verdicts_per_state_and_nothing_changing_is_sent(
        tmp_path, engine, http_peer, secrets_env, capsys, name, expected, code) -> None:
    pkg = write_package(tmp_path)
    answer_probes(engine, state(name))
    assert main(check_args(pkg, http_peer, "--json")) == code
    out, err = capsys.readouterr()
    report = json.loads(out.strip().splitlines()[-1])
    verdicts = {v["id"]: v["verdict"] for v in report["verdicts"]}
    for step_id, verdict in expected.items():
        assert verdicts[step_id] == verdict, (step_id, report)
    sent = sent_step_files(engine, pkg)
    assert sent == ["steps/03-session.ps1", "steps/04-connect.ps1"]
    assert not set(sent) & changing_files(pkg)
    probes = [s for s in engine.scripts() if s.startswith("# psbridge probe: ")]
    assert [p.split()[3] for p in probes] == ["server", "certificate", "crm", "entra"]
    connect = next(p for p in engine.pipelines if "Connect-MsolService" in p.script)
    assert connect.parameters["Credential"] == CredentialValue(O365_USER, O365_PASSWORD)
    assert_no_secrets(out, err)


def test_check_human_output_names_before_and_after(tmp_path, engine, http_peer, secrets_env, capsys) -> None:
    pkg = write_package(tmp_path)
    answer_probes(engine, state("half configured"))
    assert main(check_args(pkg, http_peer)) == 5
    out = capsys.readouterr().out
    assert "[06/08] spn              will change  add credential " + THUMB in out
    assert "(0 credential(s), 1 SPN(s) -> 1 credential(s), 2 SPN(s))" in out
    assert "check: the package would change something (exit 5)" in out


def test_check_without_entra_sends_no_step_at_all(tmp_path, engine, http_peer, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PSBRIDGE_WINRM_PASSWORD", WINRM_PASSWORD)  # and no other secret: none is asked for
    pkg = write_package(tmp_path)
    answer_probes(engine, state("fully configured"))
    assert main(check_args(pkg, http_peer, "--no-entra")) == 1  # spn cannot be told without Entra ID
    assert sent_step_files(engine, pkg) == []
    assert "note: probe entra skipped (--no-entra)" in capsys.readouterr().out


def test_a_failing_probe_is_cannot_tell_and_exit_1(tmp_path, engine, http_peer, secrets_env, capsys) -> None:
    pkg = write_package(tmp_path)
    answers = state("fully configured")
    answers["crm"] = None  # the peer's default reply: completes with no output -> not JSON
    answer_probes(engine, answers)
    assert main(check_args(pkg, http_peer)) == 1
    out = capsys.readouterr().out
    assert "[07/08] crm-settings     cannot tell" in out and "note: probe crm: output is not JSON" in out


def test_check_refuses_a_changed_probe_before_connecting(tmp_path, engine, http_peer, secrets_env, capsys) -> None:
    pkg = write_package(tmp_path)
    probe = pkg / "probes" / "crm.ps1"
    probe.write_bytes(probe.read_bytes() + b"Set-CrmAdvancedSetting\r\n")
    assert main(check_args(pkg, http_peer)) == 2
    assert "changed file: probes/crm.ps1" in capsys.readouterr().err
    assert engine.pipelines == []


def test_graph_check_and_run_pass_the_token_as_securestring(tmp_path, engine, http_peer, secrets_env, capsys,
                                                           monkeypatch) -> None:
    monkeypatch.setenv("PSBRIDGE_GRAPH_TOKEN", GRAPH_TOKEN)
    pkg = write_package(tmp_path, profile="graph")
    answer_probes(engine, state("fully configured"))
    args = check_args(pkg, http_peer)
    args.remove("--o365-user"), args.remove(O365_USER)
    assert main(args) == 0
    connect = next(p for p in engine.pipelines if "Connect-MgGraph" in p.script)
    assert connect.parameters == {"AccessToken": SecureValue(GRAPH_TOKEN)}
    out, err = capsys.readouterr()
    assert GRAPH_TOKEN not in out + err


# --------------------------------------------------------------------------- run --verify


def test_run_verify_records_the_probes_after_the_last_step(tmp_path, engine, http_peer, secrets_env, capsys) -> None:
    pkg = write_package(tmp_path)
    answer_probes(engine, state("fully configured"))
    args = ["run", *check_args(pkg, http_peer)[1:], "--verify", "--yes"]
    assert main(args) == 0
    events = [json.loads(l) for l in next((pkg / "runs").glob("*.jsonl")).read_text().splitlines()]
    verify = [e for e in events if e["event"] == "verify"]
    assert len(verify) == 1 and verify[0]["exit_code"] == 0
    assert {v["id"]: v["verdict"] for v in verify[0]["verdicts"]}["spn"] == "in place"
    scripts = engine.scripts()
    assert scripts.index(next(s for s in scripts if "# psbridge step 08/08" in s)) < scripts.index(
        next(s for s in scripts if s.startswith("# psbridge probe: server ")))


# --------------------------------------------------------------------------- run --require-approval


@pytest.fixture
def approver(tmp_path: Path) -> tuple[Path, Path]:
    keys, trusted = tmp_path / "keys", tmp_path / "trusted"
    assert main(["keygen", "--out", str(keys), "--name", "Jane Doe <jane@contoso.com>", "--no-passphrase"]) == 0
    trusted.mkdir()
    for pub in keys.glob("*.pub.json"):
        shutil.copy(pub, trusted)
    return next(keys.glob("*.key")), trusted


def run_args(pkg: Path, peer: WinRMPeer, trusted: Path, log: Path, *extra: str) -> list[str]:
    return ["run", *check_args(pkg, peer)[1:], "--require-approval", "--trusted-keys", str(trusted),
            "--audit-log", str(log), *extra]


def test_approved_package_runs_and_the_record_names_the_approval(tmp_path, engine, http_peer, secrets_env,
                                                                 capsys, approver) -> None:
    key, trusted = approver
    pkg = write_package(tmp_path)
    log = tmp_path / "audit.jsonl"
    assert main(["approve", str(pkg), "--key", str(key), "--audit-log", str(log)]) == 0
    assert main(run_args(pkg, http_peer, trusted, log)) == 0
    events = [json.loads(l) for l in next((pkg / "runs").glob("*.jsonl")).read_text().splitlines()]
    approval = next(e for e in events if e["event"] == "approval")
    assert approval["approvals"][0]["approver"] == "Jane Doe <jane@contoso.com>"
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    assert [(l["action"], l["outcome"]) for l in lines] == [("approve", "approved"), ("run", "started"), ("run", "ok")]
    assert main(["audit", "verify", str(log)]) == 0
    assert_no_secrets(log.read_bytes(), *(p.read_bytes() for p in (pkg / "runs").iterdir()))


def test_a_byte_changed_after_approval_refuses_before_connecting(tmp_path, engine, http_peer, secrets_env,
                                                                 capsys, approver) -> None:
    key, trusted = approver
    pkg = write_package(tmp_path)
    log = tmp_path / "audit.jsonl"
    assert main(["approve", str(pkg), "--key", str(key), "--audit-log", str(log)]) == 0
    review = pkg / "REVIEW.md"
    review.write_bytes(review.read_bytes().replace(b"contoso", b"c0ntoso", 1))
    assert main(run_args(pkg, http_peer, trusted, log)) == 2
    err = capsys.readouterr().err
    assert "changed file: REVIEW.md" in err
    assert http_peer.connections == 0 and engine.pipelines == []
    assert json.loads(log.read_text().splitlines()[-1])["outcome"] == "refused"


def test_self_approval_can_be_forbidden(tmp_path, engine, http_peer, secrets_env, capsys, approver) -> None:
    key, trusted = approver
    pkg = write_package(tmp_path)
    assert main(["approve", str(pkg), "--key", str(key), "--audit-log", str(tmp_path / "a.jsonl")]) == 0
    args = run_args(pkg, http_peer, trusted, tmp_path / "a.jsonl", "--forbid-self-approval", "--key", str(key))
    assert main(args) == 1
    assert "too few approvals" in capsys.readouterr().err
    assert http_peer.connections == 0 and engine.pipelines == []


def test_run_verify_exits_5_when_the_server_does_not_show_the_change(tmp_path, engine, http_peer, secrets_env,
                                                                     capsys) -> None:
    pkg = write_package(tmp_path)
    answer_probes(engine, state("half configured"))  # after all steps "ran", spn still would change
    assert main(["run", *check_args(pkg, http_peer)[1:], "--verify", "--yes"]) == 5
    out = capsys.readouterr().out
    assert "Verification failed: after the run, step 06 spn is will change" in out
    events = [json.loads(l) for l in next((pkg / "runs").glob("*.jsonl")).read_text().splitlines()]
    assert events[-1]["event"] == "run-end" and events[-1]["exit_code"] == 5


def test_run_verify_counts_cannot_tell_as_not_verified(tmp_path, engine, http_peer, secrets_env, capsys) -> None:
    pkg = write_package(tmp_path)
    answers = state("fully configured")
    answers["entra"] = None  # the entra probe does not answer: spn cannot be told
    answer_probes(engine, answers)
    assert main(["run", *check_args(pkg, http_peer)[1:], "--verify", "--yes"]) == 5
    assert "step 06 spn is cannot tell" in capsys.readouterr().out


# --------------------------------------------------------------------------- known failures: cause and fix
# The peer answers the probes with tests/support/probe_states.py's KNOWN_FAILURES (sources there and in
# tests/test_known_failures.py). The human output prints `cause:` and `fix:` under the step,
# every line within 100 columns, outside text escaped; --json carries both fields.

KF_NOW = _dt.datetime(2026, 6, 1, tzinfo=_dt.timezone.utc)  # inside the test certificate's validity (2026..2036)


def _check_lines(out: str) -> list[str]:
    """What _print_check printed: the lines up to its `check:` summary (the audit line follows)."""
    lines = out.splitlines()
    return lines[:next(i for i, line in enumerate(lines) if line.startswith("check: ")) + 1]


@pytest.fixture
def frozen_clock(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(clock, "utc_now", lambda: KF_NOW)


@pytest.mark.parametrize("name", sorted(KNOWN_FAILURES))
def test_check_prints_cause_and_fix_within_100_columns(
        tmp_path, engine, http_peer, secrets_env, capsys, frozen_clock, name) -> None:
    pkg = write_package(tmp_path)
    answer_probes(engine, state(name))
    code = main(check_args(pkg, http_peer))
    out = capsys.readouterr().out
    lines = _check_lines(out)
    assert code in (1, 5), out
    assert all(len(line) <= 100 for line in lines), [line for line in lines if len(line) > 100]
    causes = [i for i, line in enumerate(lines) if line.startswith("        cause:  ")]
    assert causes, out
    for i in causes:
        # under a step line, and followed (after the cause's wrapped lines) by its fix
        assert any(lines[j].startswith("[0") for j in range(i)), out
        rest = lines[i + 1:]
        assert next(line for line in rest if not line.startswith(" " * 16)).startswith("        fix:    "), out


def test_check_json_carries_cause_and_fix(tmp_path, engine, http_peer, secrets_env, capsys, frozen_clock) -> None:
    pkg = write_package(tmp_path)
    answer_probes(engine, state("key not readable"))
    assert main(check_args(pkg, http_peer, "--json")) == 5
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cert = next(v for v in report["verdicts"] if v["id"] == "certificate")
    assert cert["verdict"] == "will change"
    assert "cannot read the private key" in cert["cause"] and cert["fix"].endswith(EXCHANGE_ONLINE)


def test_check_human_output_escapes_outside_text_in_causes(
        tmp_path, engine, http_peer, secrets_env, capsys, frozen_clock) -> None:
    pkg = write_package(tmp_path)
    answers = state("key not readable")
    answers["certificate"]["store"][0]["key_access"]["note"] = "no access\x1b[2J\u202e forged"
    answer_probes(engine, answers)
    assert main(check_args(pkg, http_peer)) == 5
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out
    assert "\\x1b[2J\\u202e forged" in out
    # the fix's URL is too long for its line: host/…/page (whole in --json)
    assert any(line.endswith("learn.microsoft.com/…/connect-dynamics-365-on-premises-exchange-online")
               for line in _check_lines(out))


def test_long_before_and_after_go_on_their_own_lines(
        tmp_path, engine, http_peer, secrets_env, capsys, frozen_clock) -> None:
    pkg = write_package(tmp_path)
    answers = state("fresh server")
    answer_probes(engine, answers)
    main(check_args(pkg, http_peer))
    lines = _check_lines(capsys.readouterr().out)
    settings = lines.index(next(line for line in lines if line.startswith("[07/08] crm-settings")))
    assert lines[settings + 1:settings + 7] == [
        "        before: S2SDefaultAuthorizationServerPrincipalId=(unset)",
        "                S2SDefaultAuthorizationServerMetadataUrl=(unset)",
        "        after:  S2SDefaultAuthorizationServerPrincipalId=00000001-0000-0000-c000-000000000000",
        "                S2SDefaultAuthorizationServerMetadataUrl=",
        "                  https://accounts.accesscontrol.windows.net/metadata/json/1",
        "[08/08] tenant-id        ok           tenant ID 72f988bf-86f1-41af-91ab-2d7cd011db47"]
    assert all(len(line) <= 100 for line in lines)


# --------------------------------------------------------------------------- evidence: check --save


def test_check_out_saves_the_evidence_in_the_package_and_audits_it(tmp_path, engine, http_peer, secrets_env,
                                                                    capsys) -> None:
    pkg = write_package(tmp_path)
    answer_probes(engine, state("half configured"))
    log = tmp_path / "audit.jsonl"
    assert main([*check_args(pkg, http_peer), "--save", "--audit-log", str(log)]) == 5
    out = capsys.readouterr().out
    assert "probe server on 127.0.0.1 … ok" in out and "probe entra on 127.0.0.1 … ok" in out
    [saved] = list((pkg / "checks").glob("*.json"))
    data = json.loads(saved.read_text())
    assert data["format"] == "psbridge-check-v1" and data["exit_code"] == 5 and data["host"] == "127.0.0.1"
    from psbridge.package import read_package

    assert data["package_digest"] == read_package(pkg).digest
    assert {v["id"]: v["verdict"] for v in data["verdicts"]}["spn"] == "will change"
    assert data["readings"]["main"]["server"]["edition"] == "Desktop"
    line = json.loads(log.read_text().splitlines()[-1])
    assert line["action"] == "check" and line["details"]["saved"] == str(saved)
    assert read_package(pkg).problems == []  # checks/ is evidence, outside the digest


def test_check_out_to_a_file(tmp_path, engine, http_peer, secrets_env, capsys) -> None:
    pkg = write_package(tmp_path)
    answer_probes(engine, state("fully configured"))
    target = tmp_path / "evidence.json"
    assert main([*check_args(pkg, http_peer), "--json", "--save", str(target)]) == 0
    out, err = capsys.readouterr()
    json.loads(out.strip().splitlines()[-1])  # stdout is still JSON only
    assert f"saved: {target}" in err and json.loads(target.read_text())["exit_code"] == 0


def test_a_secret_the_server_echoes_in_a_reading_is_redacted_everywhere(tmp_path, engine, http_peer, secrets_env,
                                                                       capsys) -> None:
    pkg = write_package(tmp_path)
    answers = state("half configured")  # check knows the WinRM and Office 365 passwords it read
    answers["crm"]["server_settings"]["S2SDefaultAuthorizationServerMetadataUrl"] = f"https://x/{O365_PASSWORD}"
    answer_probes(engine, answers)
    target = tmp_path / "evidence.json"
    assert main([*check_args(pkg, http_peer), "--save", str(target)]) == 5
    out, err = capsys.readouterr()
    for blob in (out, err, target.read_text()):
        assert O365_PASSWORD not in blob and json.dumps(O365_PASSWORD)[1:-1] not in blob
    assert "[redacted]" in out


# --------------------------------------------------------------------------- the state around each change


def test_run_records_the_state_before_and_after_each_change(tmp_path, engine, http_peer, secrets_env,
                                                            capsys) -> None:
    pkg = write_package(tmp_path)
    answer_probes(engine, state("half configured"))
    assert main(["run", *check_args(pkg, http_peer)[1:], "--yes"]) == 0
    events = [json.loads(l) for l in next((pkg / "runs").glob("*.jsonl")).read_text().splitlines()]
    states = [(e["id"], e["when"], sorted(e["readings"])) for e in events if e["event"] == "state"]
    assert states == [("certificate", "before", ["certificate", "crm"]),
                      ("certificate", "after", ["certificate", "crm"]),
                      ("spn", "before", ["entra"]), ("spn", "after", ["entra"]), ("crm-settings", "before", ["crm"]),
                      ("crm-settings", "after", ["crm"])]
    order = [(e["event"], e.get("id")) for e in events if e["event"] in ("state", "step-start")]
    assert order.index(("state", "spn")) < order.index(("step-start", "spn"))  # read before it is sent
    before_06 = next(e for e in events if e["event"] == "state" and e["id"] == "spn")
    assert before_06["readings"]["entra"]["service_principal_names"] == state("half configured")["entra"][
        "service_principal_names"]
