"""`rollback --last` and `psbridge runs` (issue 21): a run that changed nothing is not "the last run that
changed something".

Run A changes steps 06 and 07 (the loopback peer answers the state probes differently before and after
them); run B, sent again with everything already in place, reads the same state before and after every
state-changing step. `--last` must pick A (named in the output, with one line saying B was skipped), not B,
whose back-out would be "nothing to undo" while A's change is live.
"""

from __future__ import annotations

import json
from pathlib import Path

from psbridge.cli import main

from support.cli import check_args
from support.rollback_runs import ADDED_KEY, _run


def _last_args(pkg: Path, peer, log: Path) -> list[str]:  # noqa: ANN001 - the peer fixture
    return ["rollback", *check_args(pkg, peer)[1:], "--last", "--yes", "--audit-log", str(log)]


def _run_again(pkg: Path, peer, log: Path) -> Path:  # noqa: ANN001 - the peer fixture
    """The same package run again (the peer keeps answering the state after run A): its new record."""
    known = set((pkg / "runs").glob("*.jsonl"))
    assert main(["run", *check_args(pkg, peer)[1:], "--yes", "--audit-log", str(log)]) == 0
    [record] = set((pkg / "runs").glob("*.jsonl")) - known
    return record


def _runs(pkg: Path, log: Path, capsys) -> list[dict]:  # noqa: ANN001 - capsys
    capsys.readouterr()
    assert main(["runs", str(pkg), "--json", "--audit-log", str(log)]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_last_skips_a_rerun_that_changed_nothing_while_the_change_is_live(tmp_path, http_peer, engine, secrets_env,
                                                                         capsys, keys) -> None:
    log = tmp_path / "audit.jsonl"
    pkg, first = _run(tmp_path, http_peer, engine, log, keys)
    again = _run_again(pkg, http_peer, log)
    a, b = _runs(pkg, log, capsys)
    assert (a["record"], b["record"]) == (str(first), str(again))
    assert a["changed"] and not a["no_change"]
    assert not b["changed"] and b["no_change"] and b["outcome"] == "ok"
    capsys.readouterr()
    assert main(["runs", str(pkg), "--audit-log", str(log)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [("changed nothing" in line) for line in listed] == [False, True]

    before = len(engine.pipelines)
    assert main(_last_args(pkg, http_peer, log)) == 0
    out = " ".join(capsys.readouterr().out.split())  # lines wrap at 100 columns: the words, in order
    assert f"rollback: the last run that changed something: {first}" in out
    assert f"rollback: skipped 1 later run that changed nothing ({again.name})" in out
    undo = [p for p in engine.pipelines[before:] if p.script.startswith("# psbridge back-out of step 06")]
    assert [p.parameters["KeyIds"] for p in undo] == [[ADDED_KEY]]  # run A's key, not "nothing to undo"


def test_last_after_rollback_and_a_noop_rerun_says_the_change_is_already_backed_out(
        tmp_path, http_peer, engine, secrets_env, capsys, keys) -> None:
    log = tmp_path / "audit.jsonl"
    pkg, first = _run(tmp_path, http_peer, engine, log, keys)
    assert main(_last_args(pkg, http_peer, log)) == 0
    again = _run_again(pkg, http_peer, log)  # the peer answers as before: the same readings around each step
    capsys.readouterr()
    sent = len(engine.pipelines)
    assert main(_last_args(pkg, http_peer, log)) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"rollback: the last run that changed something: {first}" in out
    assert f"skipped 1 later run that changed nothing ({again.name})" in out
    assert f"{first} was already backed out by " in out and "nothing sent" in out
    assert len(engine.pipelines) == sent


# --------------------------------------------------------------------------- what a record says the run changed

from psbridge.run_record import StateEvent, StepEnd, StepStart  # noqa: E402

from support.packages import write_check_package  # noqa: E402
from support.probe_states import state  # noqa: E402

CERTIFICATE = {"certificate": state("fully configured")["certificate"], "crm": state("fully configured")["crm"]}


def _step(step_id: str, index: int, outcome: str = "ok", host: str | None = None) -> StepEnd:
    return StepEnd(total=8, title=step_id, index=index, id=step_id, state=outcome, host=host)  # type: ignore[arg-type]


def _state(when: str, readings: dict, notes: tuple[str, ...] = (), step_id: str = "certificate",
           host: str | None = None) -> StateEvent:
    return StateEvent(when=when, index=2, id=step_id, readings=readings, notes=list(notes), host=host)  # type: ignore[arg-type]


def _judge(tmp_path: Path, *events) -> str:  # noqa: ANN002 - run events
    from psbridge.package import read_package
    from psbridge.runs import what_changed

    return what_changed(read_package(write_check_package(tmp_path)), list(events))


def test_equal_answered_readings_around_each_change_are_a_run_that_changed_nothing(tmp_path) -> None:
    same = json.loads(json.dumps(CERTIFICATE))
    assert _judge(tmp_path, _state("before", CERTIFICATE), _step("certificate", 2), _state("after", same)) == "nothing"


def test_anything_short_of_equal_answered_readings_counts_as_a_change(tmp_path) -> None:
    """A false "changed nothing" would hide a live change from rollback --last: each doubt counts as a change."""
    moved = json.loads(json.dumps(CERTIFICATE))
    moved["crm"]["thumbprints"] = []
    redacted = json.loads(json.dumps(CERTIFICATE))
    redacted["crm"]["server_settings"]["S2SDefaultAuthorizationServerMetadataUrl"] = "https://x/[redacted]"
    withheld = json.loads(json.dumps(CERTIFICATE))
    withheld["certificate"]["cer_subject"] = "[line withheld: it contained a secret]"
    cases = {
        "differs": (_state("before", CERTIFICATE), _step("certificate", 2), _state("after", moved)),
        "no after": (_state("before", CERTIFICATE), _step("certificate", 2)),
        "no before": (_step("certificate", 2), _state("after", CERTIFICATE)),
        "a probe did not answer": (_state("before", {**CERTIFICATE, "crm": None}), _step("certificate", 2),
                                   _state("after", {**CERTIFICATE, "crm": None})),
        "a capture missing": (_state("before", {"crm": CERTIFICATE["crm"]}), _step("certificate", 2),
                              _state("after", {"crm": CERTIFICATE["crm"]})),
        "a note": (_state("before", CERTIFICATE, ("a secret was redacted from these readings",)),
                   _step("certificate", 2), _state("after", CERTIFICATE)),
        "redacted alike": (_state("before", redacted), _step("certificate", 2), _state("after", redacted)),
        "withheld alike": (_state("before", withheld), _step("certificate", 2), _state("after", withheld)),
        "read twice": (_state("before", CERTIFICATE), _state("before", CERTIFICATE), _step("certificate", 2),
                       _state("after", CERTIFICATE)),
        "on an additional server": (_state("before", CERTIFICATE, host="crm02"), _step("certificate", 2, host="crm02"),
                                    _state("after", CERTIFICATE, host="crm02")),
        "one equal, one without readings": (_state("before", CERTIFICATE), _step("certificate", 2),
                                            _state("after", CERTIFICATE), _step("spn", 6)),
    }
    for name, events in cases.items():
        assert _judge(tmp_path / name.replace(" ", "-"), *events) == "changed", name


def test_a_run_whose_changing_steps_did_not_end_ok_is_no_change_to_undo_and_no_proof_of_none(tmp_path) -> None:
    """As before: only a step that ended ok is backed out, so only it makes a run "changed"; but a step that failed or
    ended unknown may have changed something, so such a run is not "changed nothing" either."""
    equal = (_state("before", CERTIFICATE), _step("certificate", 2), _state("after", CERTIFICATE))
    assert _judge(tmp_path / "a", *equal, _step("spn", 6, "unknown")) == "unsure"
    assert _judge(tmp_path / "b", _step("certificate", 2, "failed")) == "unsure"
    assert _judge(tmp_path / "c", _step("prerequisites", 1)) == "unsure"  # no state-changing step was sent
    assert _judge(tmp_path / "d", *equal, _step("spn", 6, "skipped")) == "nothing"
    # killed while step 06 ran: it was sent and never ended
    sent = StepStart(index=6, total=8, id="spn", title="spn", started="2026-12-07T00:00:00.000Z")
    assert _judge(tmp_path / "e", *equal, sent) == "unsure"


def test_every_marker_the_redactor_writes_is_one_that_hides_equality() -> None:
    """The redactor's markers (remote/redact.py) are what runs.REDACTION_MARKS must recognise; the empty last
    resort cannot be seen in text, which is why the observer also notes every redaction in the readings."""
    from psbridge.remote.redact import Redactor
    from psbridge.runs import REDACTION_MARKS

    markers = [m for m in (*Redactor._MARKERS, *Redactor._WITHHELDS) if m]
    assert all(any(mark in m for mark in REDACTION_MARKS) for m in markers), markers


def test_a_reading_that_only_differs_in_a_secret_is_a_change(tmp_path, http_peer, engine, secrets_env,
                                                            capsys) -> None:
    """The server's ServerSettings URL holds the Office 365 password before step 07 and the WinRM password
    after it: the record holds both as `[redacted]`, equal, so the observer notes the redaction and the
    run counts as changed, while the same run without a secret in its readings changed nothing."""
    from support.lab import O365_PASSWORD, WINRM_PASSWORD
    from support.packages import answer_probes
    from support.winrm_peer import Reply

    def server(url_before: str, url_after: str) -> None:
        engine.reset_rules()
        answers = state("fully configured")
        answer_probes(engine, {k: v for k, v in answers.items() if k != "crm"})
        for url, times in ((url_before, 3), (url_after, None)):  # 02 before/after and 07 before; then after 07
            crm = json.loads(json.dumps(answers["crm"]))
            crm["server_settings"]["S2SDefaultAuthorizationServerMetadataUrl"] = url
            engine.when("# psbridge probe: crm ", Reply(output=[json.dumps(crm)]), times=times)

    log = tmp_path / "audit.jsonl"
    pkg = write_check_package(tmp_path)
    server(f"https://x/{O365_PASSWORD}", f"https://x/{WINRM_PASSWORD}")
    first = _run_again(pkg, http_peer, log)
    server("https://x/same", "https://x/same")
    second = _run_again(pkg, http_peer, log)
    events = [json.loads(line) for line in first.read_text().splitlines()]
    settings = [e for e in events if e["event"] == "state" and e["id"] == "crm-settings"]
    assert [e["readings"]["crm"]["server_settings"]["S2SDefaultAuthorizationServerMetadataUrl"]
            for e in settings] == ["https://x/[redacted]"] * 2
    assert all("a secret was redacted from these readings" in e["notes"] for e in settings)
    listed = {Path(r["record"]).name: (r["changed"], r["no_change"]) for r in _runs(pkg, log, capsys)}
    assert listed == {first.name: (True, False), second.name: (False, True)}


# --------------------------------------------------------------------------- lines within 100 columns (not a terminal)

import re  # noqa: E402


def _too_wide(text: str) -> list[str]:
    """The lines over 100 columns that are not one unbreakable word (a path), nor the audit head line the
    operator copies whole (tests/test_width_colour.py's rule)."""
    return [line for line in text.splitlines() if len(line) > 100 and " " in line.strip()
            and not re.fullmatch(r"audit: \S+ head [0-9a-f]{64}", line)]


def test_run_header_and_rollback_values_wrap_at_100_columns(tmp_path, http_peer, engine, secrets_env, capsys,
                                                            keys) -> None:
    from support.lab import USER

    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys)
    out = capsys.readouterr().out
    header = f"psbridge run: contoso on 127.0.0.1:{http_peer.port} (http, ntlm as {USER}); record: {record}"
    assert len(header) > 100 and header in " ".join(out.split())  # it was one line of this length
    assert not _too_wide(out), _too_wide(out)

    assert main([*_last_args(pkg, http_peer, log)[:-3], "--audit-log", str(log)]) == 2  # no --yes: asked, refused
    out = capsys.readouterr().out
    values = f"step 06 spn: rollback/06-spn.ps1 with KeyIds=['{ADDED_KEY}'], ServicePrincipalName="
    assert values in " ".join(out.split()), out
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("step 06 spn: rollback/06-spn.ps1 with "))
    block = [lines[at], *(line for line in lines[at + 1:at + 3] if line.startswith("    "))]
    assert len(block) > 1 and max(map(len, block)) <= 100, block  # it wrapped, its continuation hanging under it


def test_runs_rows_fit_100_columns_and_a_refusal_stays_one_line(tmp_path, http_peer, engine, secrets_env, capsys,
                                                                 keys) -> None:
    log = tmp_path / "audit.jsonl"
    pkg, first = _run(tmp_path, http_peer, engine, log, keys)
    assert main(_last_args(pkg, http_peer, log)) == 0
    again = _run_again(pkg, http_peer, log)
    (pkg / "runs" / "20991231T235959.999999Z.jsonl").write_text("not json\n")  # a record that cannot be read
    start = json.loads(first.read_text().splitlines()[0])
    (pkg / "runs" / "20991231T235959.999998Z.jsonl").write_text(  # a run no audit line vouches for
        json.dumps({**start, "started": "2099-12-31T23:59:59.998Z"}) + "\n")
    capsys.readouterr()
    assert main(["runs", str(pkg), "--audit-log", str(log)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[1]: line for line in lines if not line.startswith("     ")}
    assert [line[:5] for line in lines if not line.startswith("     ")] == ["  1  ", "  2  ", "  3  ", "  4  ", "  5  "]
    # the unreadable record has no start time: it sorts first, its problem on lines of its own under it
    assert lines[0].split() == ["1", "20991231T235959.999999Z.jsonl", "unreadable"] and lines[1].startswith("     ")
    assert rows[first.name].split() == ["2", first.name, "ok", "run", "changed", "rolled", "back", "by", "3"]
    assert rows[first.name].index(" run ") > 0 and "not rolled back" in rows[again.name]
    [back] = [name for name in rows if name not in (first.name, again.name) and not name.startswith("2099")]
    assert rows[back].split() == ["3", back, "ok", "rollback", "of", "2"]
    assert rows[again.name].split() == ["4", again.name, "ok", "run", "changed", "nothing", "not", "rolled", "back"]
    assert rows["20991231T235959.999998Z.jsonl"].split() == [
        "5", "20991231T235959.999998Z.jsonl", "no", "run-end", "run", "not", "vouched", "for", "by", "the", "audit", "log"]
    assert max(len(row) for row in rows.values()) <= 100 and not _too_wide("\n".join(lines)), lines

    # A refusal (exit 2) stays one line, however long: the operator greps logs for it.
    capsys.readouterr()
    assert main([*_last_args(pkg, http_peer, log), "--host", "crm-somewhere-else.contoso.com"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("psbridge: "), err


# --------------------------------------------------------------------------- a farm: step 09 runs on the additional servers


def test_a_run_that_only_changed_additional_servers_is_picked_and_its_manual_back_out_listed(tmp_path) -> None:
    """A `--from-step 9` run changes only the additional servers: it changed something (its capture does not see
    all it writes there), and its back-out lists step 09's procedure (it used to list nothing at all)."""
    from psbridge.backout import plan_rollback
    from psbridge.package import read_package
    from psbridge.runs import what_changed

    from support.lab import FARM
    from support.winrm_peer.package import make_package

    package = read_package(make_package(tmp_path / "output", server="127.0.0.1", crm={"additional_servers": FARM}))
    reading = {"certificate": CERTIFICATE["certificate"]}
    events = [e for host in FARM for e in (
        StateEvent(when="before", index=9, id="additional-servers", readings=reading, host=host),
        _step("additional-servers", 9, host=host),
        StateEvent(when="after", index=9, id="additional-servers", readings=reading, host=host))]
    assert what_changed(package, events) == "changed"
    plan = plan_rollback(package, events, "r.jsonl", "0" * 64)
    assert [(step.id, text[:40]) for step, text in plan.manual] == [
        ("additional-servers", "On each additional server, remove the ce")]
    assert plan.scripted == [] and plan.nothing == []
