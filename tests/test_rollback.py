"""`psbridge rollback`: undo what one recorded run changed, with the package's reviewed scripts.

The loopback peer answers the state probes differently before and after steps 06 and 07, as
a server would: the run record then holds what the steps added, and rollback sends exactly
that back, in reverse step order, as parameters. A record the audit log does not vouch for is
refused before anything is sent.
"""

from __future__ import annotations

import json
from pathlib import Path

from psbridge.cli import main

from support.lab import O365_PASSWORD, O365_USER
from support.rollback_runs import ADDED_KEY, SPN, _rollback_args, _run
from support.winrm_peer import CredentialValue, Engine, WinRMPeer


def test_rollback_sends_exactly_what_the_run_added_in_reverse_order(tmp_path, http_peer, engine, secrets_env,
                                                                    capsys, keys):
    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys)
    before = len(engine.pipelines)
    assert main(_rollback_args(pkg, http_peer, record, log)) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "step 02 certificate: by hand:" in out and "private key is not in the package" in out
    sent = engine.pipelines[before:]
    scripts = [p.script for p in sent]
    undo = [p for p in sent if p.script.startswith("# psbridge back-out of step")]
    # Step 07's ServerSettings were not set before it (issue 19 item 11): no script writes '' for them; the
    # procedure is printed instead, one note per value.
    assert [p.script.split(" (")[0] for p in undo] == ["# psbridge back-out of step 06"]
    assert undo[0].parameters == {"KeyIds": [ADDED_KEY], "ServicePrincipalName": SPN}
    assert out.count("step 07 crm-settings: by hand: ServerSettings ") == 2
    connect = next(p for p in sent if p.script.startswith("# psbridge step 04/"))
    assert connect.parameters["Credential"] == CredentialValue(O365_USER, O365_PASSWORD)
    assert scripts.index(connect.script) < scripts.index(undo[0].script)  # the session it needs comes first
    assert not any(p.script.startswith("# psbridge step 02/") for p in sent)  # no step is run again
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(l["action"], l["outcome"]) for l in lines[-2:]] == [("rollback", "rollback-started"), ("rollback", "ok")]


def test_a_record_the_audit_log_does_not_vouch_for_is_refused(tmp_path, http_peer, engine, secrets_env, capsys, keys):
    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys)
    record.write_bytes(record.read_bytes().replace(ADDED_KEY.encode(), b"99999999-2222-4333-8444-555555555555"))
    before = len(engine.pipelines)
    assert main(_rollback_args(pkg, http_peer, record, log)) == 2
    assert "is in no `run` line of the audit log" in capsys.readouterr().err
    assert len(engine.pipelines) == before


def test_a_value_that_is_not_what_it_must_be_is_refused(tmp_path, http_peer, engine, secrets_env, capsys, keys):
    """Even a vouched-for record: a key id that is not a GUID never becomes a parameter."""
    from psbridge import audit
    from psbridge.files import sha256_hex

    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys)
    forged = record.read_bytes().replace(ADDED_KEY.encode(), b"'; Remove-Item C:\\\\ -Recurse; '")
    record.write_bytes(forged)
    from psbridge.package import read_package

    audit.record(log, "run", read_package(pkg), "ok", record=str(record), record_sha256=sha256_hex(forged))
    before = len(engine.pipelines)
    assert main(_rollback_args(pkg, http_peer, record, log)) == 2
    assert "is not a GUID; refusing to use the record" in capsys.readouterr().err
    assert len(engine.pipelines) == before


# --------------------------------------------------------------------------- issue 20, item 1: what rollback believes

FORGED_PRINCIPAL = "99999999-0000-0000-c000-000000000000"
FORGED_URL = "https://evil.example/metadata/json/1"


def _forge_before_settings(data: bytes) -> bytes:
    """The record with the ServerSettings read before step 07 replaced by values an attacker wants back."""
    lines = []
    for raw in data.decode("utf-8").splitlines():
        event = json.loads(raw)
        if event.get("event") == "state" and event.get("when") == "before" and "crm" in event.get("readings", {}):
            event["readings"]["crm"]["server_settings"] = {"S2SDefaultAuthorizationServerPrincipalId": FORGED_PRINCIPAL,
                                                           "S2SDefaultAuthorizationServerMetadataUrl": FORGED_URL}
        lines.append(json.dumps(event, ensure_ascii=False) + "\n")
    return "".join(lines).encode("utf-8")


def _swap_record_at_run_end(monkeypatch) -> None:
    """Whoever can write runs/ replaces the record (os.replace) while the run is still writing it:
    right after its run-end event, before the audit log's end line is written."""
    import os

    from psbridge.run_record import RunRecord

    original = RunRecord.write

    def write(self, event):  # noqa: ANN001, ANN202 - the patched method
        original(self, event)
        if event.get("event") == "run-end":
            forged = _forge_before_settings(self.path.read_bytes())
            swap = self.path.with_name("swap.tmp")
            swap.write_bytes(forged)
            os.replace(swap, self.path)

    monkeypatch.setattr(RunRecord, "write", write)


def test_a_record_swapped_during_the_run_is_refused(tmp_path, http_peer, engine, secrets_env, capsys, keys, monkeypatch):
    log = tmp_path / "audit.jsonl"
    with monkeypatch.context() as patched:
        _swap_record_at_run_end(patched)
        pkg, record = _run(tmp_path, http_peer, engine, log, keys)
    assert FORGED_PRINCIPAL.encode() in record.read_bytes()  # the swap happened
    before = len(engine.pipelines)
    code = main(_rollback_args(pkg, http_peer, record, log))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "is in no `run` line of the audit log" in err
    assert len(engine.pipelines) == before  # nothing sent, FORGED_PRINCIPAL never a parameter


def test_rollback_asks_even_when_the_package_is_approved(tmp_path, http_peer, engine, secrets_env, capsys,
                                                         keys):
    """The values come from evidence, not from approved bytes: an approved package does not skip the question."""
    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys)
    capsys.readouterr()
    before = len(engine.pipelines)
    args = [a for a in _rollback_args(pkg, http_peer, record, log) if a != "--yes"]
    code = main([*args, "--require-approval", "--trusted-keys", str(keys["trusted"])])
    captured = capsys.readouterr()
    assert code == 2 and "no terminal to confirm on" in captured.err, captured
    words = " ".join(captured.out.split())  # the line wraps at 100 columns: its words, in order
    assert f"step 06 spn: rollback/06-spn.ps1 with KeyIds=['{ADDED_KEY}'], ServicePrincipalName='{SPN}'" in words
    assert len(engine.pipelines) == before


def _head(log: Path) -> str:
    from psbridge import audit

    check = audit.verify(log)
    assert check.ok and check.head
    return check.head


def test_rollback_head_believes_no_line_after_it(tmp_path, http_peer, engine, secrets_env, capsys, keys):
    """A forged record vouched for by a chained `run` line appended after the ticket's head is refused with --head."""
    from psbridge import audit
    from psbridge.files import sha256_hex
    from psbridge.package import read_package

    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys)
    head = _head(log)
    forged = _forge_before_settings(record.read_bytes())
    record.write_bytes(forged)
    audit.record(log, "run", read_package(pkg), "ok", record=str(record), record_sha256=sha256_hex(forged))
    before = len(engine.pipelines)
    code = main([*_rollback_args(pkg, http_peer, record, log), "--head", head])
    err = capsys.readouterr().err
    assert code == 2 and "is in no `run` line of the audit log" in err and head[:16] in err, err
    assert len(engine.pipelines) == before


def test_rollback_head_not_in_the_log_is_refused(tmp_path, http_peer, engine, secrets_env, capsys, keys):
    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys)
    before = len(engine.pipelines)
    code = main([*_rollback_args(pkg, http_peer, record, log), "--head", "ab" * 32])
    err = capsys.readouterr().err
    assert code == 1 and "is not in the log" in err, err
    assert main([*_rollback_args(pkg, http_peer, record, log), "--head", "xyz"]) == 2
    assert "--head" in capsys.readouterr().err
    assert len(engine.pipelines) == before


def test_rollback_refuses_an_audit_log_that_never_saw_the_package(tmp_path, http_peer, engine, secrets_env, capsys, keys):
    """A fresh log holding only a forged `run` line is not the package's log: no render or approve line for its digest."""
    from psbridge import audit
    from psbridge.files import sha256_hex
    from psbridge.package import read_package

    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys)
    forged = _forge_before_settings(record.read_bytes())
    record.write_bytes(forged)
    other = tmp_path / "other.jsonl"
    audit.record(other, "run", read_package(pkg), "ok", record=str(record), record_sha256=sha256_hex(forged))
    before = len(engine.pipelines)
    code = main(_rollback_args(pkg, http_peer, record, other))
    err = capsys.readouterr().err
    assert code == 2 and "no render or approve line" in err and str(other) in err, err
    assert len(engine.pipelines) == before


# --------------------------------------------------------------------------- issue 19, item 11: "not set" is not ''

PRINCIPAL, URL = "S2SDefaultAuthorizationServerPrincipalId", "S2SDefaultAuthorizationServerMetadataUrl"
OLD_PRINCIPAL = "11111111-0000-4000-8000-000000000001"
OLD_URL = "https://accounts.accesscontrol.windows.net/metadata/json/2"


def _rollback(tmp_path: Path, peer: WinRMPeer, engine: Engine, keys: dict[str, Path], capsys,
              settings_before: dict[str, str | None]) -> tuple[list, str]:
    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, peer, engine, log, keys, settings_before)
    capsys.readouterr()
    before = len(engine.pipelines)
    assert main(_rollback_args(pkg, peer, record, log)) == 0, capsys.readouterr()
    undo = [p for p in engine.pipelines[before:] if p.script.startswith("# psbridge back-out of step 07")]
    return undo, capsys.readouterr().out


def test_rollback_restores_both_settings_that_were_there_before(tmp_path, http_peer, engine, secrets_env, capsys,
                                                                keys):
    undo, out = _rollback(tmp_path, http_peer, engine, keys, capsys, {PRINCIPAL: OLD_PRINCIPAL, URL: OLD_URL})
    assert [p.parameters for p in undo] == [{"PrincipalId": OLD_PRINCIPAL, "MetadataUrl": OLD_URL}]
    assert "step 07 crm-settings: by hand" not in out


def test_rollback_restores_the_setting_that_was_there_and_leaves_the_absent_one(tmp_path, http_peer, engine,
                                                                                 secrets_env, capsys, keys):
    undo, out = _rollback(tmp_path, http_peer, engine, keys, capsys, {PRINCIPAL: OLD_PRINCIPAL, URL: None})
    assert [p.parameters for p in undo] == [{"PrincipalId": OLD_PRINCIPAL}]  # no MetadataUrl='' is sent
    [note] = [line for line in out.replace("\n    ", " ").splitlines()  # the note wraps at 100 columns (issue 21)
              if line.startswith("step 07 crm-settings: by hand:")]
    assert note.startswith(f"step 07 crm-settings: by hand: ServerSettings {URL} was not set before this step")
    assert "Set-CrmAdvancedSetting -Entity $setting" in out and f"('{URL}', '<value>')" in out


def test_rollback_prints_one_note_per_absent_value_and_no_script(tmp_path, http_peer, engine, secrets_env, capsys,
                                                                  keys):
    from psbridge.backout import plan_rollback
    from psbridge.package import read_package
    from psbridge.run_record import read_events

    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys, {PRINCIPAL: None, URL: None})
    plan = plan_rollback(read_package(pkg), read_events(record.read_bytes(), "record"), str(record), "0" * 64)
    notes = [text for step, text in plan.manual if step.id == "crm-settings"]
    assert [n.split(" was not set")[0] for n in notes] == [f"ServerSettings {PRINCIPAL}", f"ServerSettings {URL}"]
    assert not any(item.step.id == "crm-settings" for item in plan.scripted)
    assert not any(step.id == "crm-settings" for step, _ in plan.nothing)  # it did change something


def test_rollback_prints_the_procedure_escaped(tmp_path, http_peer, engine, secrets_env, capsys, keys):
    """The value the note shows comes from the run record: control characters and line breaks in it are escaped."""
    from psbridge import audit
    from psbridge.files import sha256_hex
    from psbridge.package import read_package

    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys, {PRINCIPAL: OLD_PRINCIPAL, URL: None})
    lines = []
    for raw in record.read_bytes().decode("utf-8").splitlines():
        event = json.loads(raw)
        if event.get("event") == "state" and event.get("when") == "after" and "crm" in event.get("readings", {}):
            event["readings"]["crm"]["server_settings"][URL] = "https://x\x1b[2J\nstep 08 tenant-id: forged"
        lines.append(json.dumps(event) + "\n")
    forged = "".join(lines).encode("utf-8")
    record.write_bytes(forged)
    audit.record(log, "run", read_package(pkg), "ok", record=str(record), record_sha256=sha256_hex(forged))
    capsys.readouterr()
    assert main(_rollback_args(pkg, http_peer, record, log)) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and not any(line.startswith("step 08 tenant-id: forged") for line in out.splitlines())
    assert "'https://x\\x1b[2J\\nstep 08 tenant-id: forged'" in out


def test_crm_settings_back_out_script_writes_only_the_values_it_was_given() -> None:
    """On the parsed script: each attribute is added only under its own non-empty test, and the write comes after
    the guard that returns when no attribute was added."""
    from psbridge.parameters import EXAMPLE, parse_parameters
    from psbridge.render import render_package

    from support.pwsh_grammar import command_invocations, parse, syntax_errors, walk

    text = render_package(parse_parameters(EXAMPLE)).files["rollback/07-crm-settings.ps1"].decode("utf-8-sig")
    assert syntax_errors(text) == []
    nodes = list(walk(parse(text).root_node))
    adds = [n for n in nodes if n.type == "invokation_expression" and n.text.decode().startswith("$setting.Attributes.Add(")]
    assert len(adds) == 2
    for add, variable in zip(adds, ("$PrincipalId", "$MetadataUrl")):
        guards = [n for n in nodes if n.type == "if_statement" and n.start_byte < add.start_byte < n.end_byte]
        conditions = [next(c for c in g.children if c.type == "pipeline").text.decode() for g in guards]
        assert conditions == [variable]
        branch = next(c for c in guards[0].children if c.type == "statement_block")
        assert branch.start_byte < add.start_byte < branch.end_byte  # in the "then" block, not the else
    [write] = [c for c in command_invocations(text) if c.name == "Set-CrmAdvancedSetting"]
    guard = next(n for n in nodes if n.type == "if_statement"
                 and next(c for c in n.children if c.type == "pipeline").text.decode() == "$setting.Attributes.Count -eq 0")
    assert guard.end_byte < write.start_byte and "return" in guard.text.decode()
