"""Issue 20, items 6 and 10: files others can write never give a traceback, and the report shows look-alikes.

Item 6: every file psbridge reads that someone else may have written (run records, plan.json,
approvals, the audit log, runs/.lock) is read through a validated model: a hostile one gives
one `psbridge: error: ...` line naming the file and exit 2, or (for `report`) a problem shown
in the report for that record, never a traceback. Each test writes the hostile file and runs
the command in-process.

Item 10: the report's first page names each parameter value with characters outside ASCII
and their code points, as REVIEW.md does, so a Cyrillic look-alike is visible to the board.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from psbridge.package import read_package

from support.cli import run_args
from support.rollback_runs import ADDED_KEY, _rollback_args, _run

START = "2026-11-27T09:00:00.000Z"


def _secrets() -> dict[str, str]:
    """The passwords `secrets_env` set (the `psbridge` fixture runs the command without PSBRIDGE_ variables)."""
    return {k: v for k, v in os.environ.items() if k.startswith("PSBRIDGE_") and k != "PSBRIDGE_AUDIT_LOG"}


def one_error_line(result, name: str) -> None:  # noqa: ANN001 - a support.cli.Result
    """Exit 2, one `psbridge: error:` line naming `name`, and no traceback."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("psbridge: error:")]
    assert len(errors) == 1 and name in errors[0], result.stderr


def _events(digest: str) -> list[dict]:  # type: ignore[type-arg]
    """A short, well-formed run record: start, approval, step 01 ok, end."""
    return [
        {"event": "run-start", "started": START, "tool_version": "0.3.0", "package": "contoso",
         "package_digest": digest, "host": "crm01", "steps": [1], "record": "x"},
        {"event": "approval", "digest": digest, "approvals": [
            {"approver": "Jane Doe <jane@contoso.com>", "fingerprint": "ab" * 32, "expires_at": "2026-12-04T08:00:00Z"}]},
        {"event": "step-start", "index": 1, "total": 8, "id": "prerequisites", "title": "Check", "started": START},
        {"event": "step-end", "total": 8, "title": "Check", "index": 1, "id": "prerequisites", "started": START,
         "ended": "2026-11-27T09:00:01.000Z", "seconds": 1.0, "errors": [], "state": "ok"},
        {"event": "run-end", "exit_code": 0, "ended": "2026-11-27T09:00:02.000Z", "reason": "ok", "summary": []},
    ]


def _write_record(pkg: Path, events: list[dict]) -> None:  # type: ignore[type-arg]
    runs = pkg / "runs"
    runs.mkdir(exist_ok=True)
    # json.dumps writes Infinity and NaN as JSON's lenient readers (Python's among them) accept them
    (runs / "20261127T090000.000000Z.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


def _report_text(psbridge, pkg: Path) -> str:  # noqa: ANN001
    result = psbridge("report", pkg)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.exit_code == 0, result.stderr
    html = (pkg.parent / f"{pkg.name}-report.html").read_text(encoding="utf-8")
    import html as html_module

    return re.sub(r"\s+", " ", html_module.unescape(re.sub(r"<[^>]+>", " ", html)))


def _step_end(events: list[dict]) -> dict:  # type: ignore[type-arg]
    return next(e for e in events if e["event"] == "step-end")


#: What the report must say about the record (beside showing it), when it says more than the record.
SAID = {
    "seconds Infinity": "seconds Infinity is not a step's duration",
    "seconds NaN": "seconds NaN is not a step's duration",
    "seconds huge": "seconds 1e+300 is not a step's duration",
    "seconds negative": "seconds -1e+300 is not a step's duration",
    "started year 9999": "started 9999-12-31T23:59:59+00:00 is not a time",
    "started year 1 east of UTC": "started 0001-01-01T00:00:00+14:00 is not a time",
    "approvals a string": "line 2: not a run event (approval.approvals",
    "errors a string": "line 4: not a run event (step-end.errors",
}
HOSTILE_RECORDS = {
    "seconds Infinity": lambda ev: _step_end(ev).update(seconds=float("inf")),
    "seconds NaN": lambda ev: _step_end(ev).update(seconds=float("nan")),
    "seconds huge": lambda ev: _step_end(ev).update(seconds=1e300),
    "seconds negative": lambda ev: _step_end(ev).update(seconds=-1e300),
    "started year 9999": lambda ev: _step_end(ev).update(started="9999-12-31T23:59:59+00:00", seconds=86400.0),
    "started year 1 east of UTC": lambda ev: _step_end(ev).update(started="0001-01-01T00:00:00+14:00"),
    "ended year 1": lambda ev: ev[-1].update(ended="0001-01-01T00:00:00-14:00"),
    "exit code huge": lambda ev: ev[-1].update(exit_code=10 ** 400),
    "approvals a string": lambda ev: ev[1].update(approvals="jane"),
    "approvals of lists": lambda ev: ev[1].update(approvals=[["jane"]]),
    "errors a string": lambda ev: _step_end(ev).update(errors="denied"),
    "errors of numbers": lambda ev: _step_end(ev).update(errors=[1, None]),
    "error line Infinity": lambda ev: _step_end(ev).update(errors=[{"message": "x", "line": float("inf")}]),
    "index huge": lambda ev: _step_end(ev).update(index=10 ** 30),
    "index negative": lambda ev: _step_end(ev).update(index=-1),
}


@pytest.mark.parametrize("case", list(HOSTILE_RECORDS))
def test_report_of_a_hostile_run_record_shows_the_problem_without_a_traceback(psbridge, pkg: Path, case: str) -> None:
    events = _events(read_package(pkg).digest)
    HOSTILE_RECORDS[case](events)
    _write_record(pkg, events)
    text = _report_text(psbridge, pkg)
    assert "runs/20261127T090000.000000Z.jsonl" in text
    assert SAID.get(case, "") in text


def _edit_plan(pkg: Path, edit) -> None:  # noqa: ANN001
    plan = json.loads((pkg / "plan.json").read_text())
    edit(plan)
    (pkg / "plan.json").write_text(json.dumps(plan, indent=2))


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 10 ** 30, -1, "01", None, [1]])
def test_report_of_a_plan_with_a_hostile_step_index(psbridge, pkg: Path, value: object) -> None:
    _edit_plan(pkg, lambda plan: plan["steps"][0].update(index=value))
    text = _report_text(psbridge, pkg)
    assert "plan.json: steps[1] (step 01 prerequisites): index is" in text  # the changed index is named, the report written all the same


@pytest.mark.parametrize(("key", "value"), [("steps", None), ("steps", "x"), ("steps", [None]),
                                          ("steps", [{"index": float("inf")}]), ("steps", {"a": 1}),
                                          ("parameters", None), ("parameters", "x"), ("parameters", [1]),
                                          ("certificate", [1]), ("replaced_certificate", "x")])
@pytest.mark.parametrize("as_json", [False, True])
def test_show_of_a_plan_with_hostile_fields_names_the_problem(psbridge, pkg: Path, key: str, value: object,
                                                              as_json: bool) -> None:
    """`show` of a changed plan.json lists its problems (exit 0, as for any tampered package), never a traceback."""
    _edit_plan(pkg, lambda plan: plan.update({key: value}))
    result = psbridge("show", pkg, *(["--json"] if as_json else []))
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.exit_code == 0, result.stderr
    assert "plan.json" in result.stdout and "problem" in result.stdout or as_json
    if as_json:
        summary = json.loads(result.stdout)
        assert summary["integrity"] or summary["reproducible"]  # the changed plan.json is named among the problems


# --------------------------------------------------------------------------- rollback: a chain-valid log, a vouched record


def _append_raw(log: Path, **fields: object) -> None:
    """Append a chain-valid audit line whose fields are whatever the test wants (not what `audit.record` allows)."""
    from psbridge import audit
    from psbridge.files import sha256_hex

    prev = audit.head_of(log.read_bytes().splitlines()[-1])
    entry = {"time": "2026-11-27T09:00:00.000000Z", "action": "run", "package": "contoso", "digest": None,
             "actor": "mallory", "outcome": "ok", "details": {}, "prev": prev, **fields}
    entry["sha256"] = sha256_hex(audit.canonical(entry))
    with log.open("ab") as out:
        out.write(audit.line_of(entry) + b"\n")
    assert audit.verify(log).ok


@pytest.mark.parametrize("fields", [{"details": "x"}, {"details": ["record_sha256"]}, {"details": None},
                                    {"details": 1}, {"action": ["run"]}, {"digest": {"a": 1}},
                                    {"details": {"record_sha256": ["x"]}}])
def test_rollback_with_a_chain_valid_log_of_wrong_types_is_one_line(tmp_path, http_peer, engine, secrets_env, keys,
                                                                    psbridge, fields: dict) -> None:  # type: ignore[type-arg]
    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys)
    record.write_bytes(record.read_bytes() + b"\n")  # no longer the bytes the log vouches for
    _append_raw(log, **{"digest": read_package(pkg).digest, **fields})  # the package's digest: the line is read
    before = len(engine.pipelines)
    # a line of the wrong types: the log is named; a well-typed line that vouches for nothing: the record is
    named = str(record) if isinstance(fields.get("details"), dict) else f"{log}: line 4: "
    one_error_line(psbridge(*_rollback_args(pkg, http_peer, record, log), env=_secrets()), named)
    assert len(engine.pipelines) == before


def _forge_readings(record: Path, probe: str, when: str, change) -> bytes:  # noqa: ANN001
    lines = []
    for raw in record.read_text().splitlines():
        event = json.loads(raw)
        if event.get("event") == "state" and event.get("when") == when and probe in event.get("readings", {}):
            change(event["readings"])
        lines.append(json.dumps(event))
    return ("\n".join(lines) + "\n").encode()


FORGED_READINGS = {
    "readings a string": ("entra", "after", lambda r: r.clear() or r.update(entra="x")),
    "key credentials a string": ("entra", "after", lambda r: r["entra"].update(key_credentials="x")),
    "key id a list": ("entra", "after", lambda r: r["entra"].update(key_credentials=[{"key_id": [ADDED_KEY]}])),
    "key credential a list": ("entra", "after", lambda r: r["entra"].update(key_credentials=[[ADDED_KEY]])),
    "spns a string": ("entra", "after", lambda r: r["entra"].update(service_principal_names="x")),
    "spns of lists": ("entra", "after", lambda r: r["entra"].update(service_principal_names=[["x"]])),
    "server settings a list": ("crm", "before", lambda r: r["crm"].update(server_settings=["x"])),
    "server settings a string": ("crm", "before", lambda r: r["crm"].update(server_settings="x")),
    "server setting a list": ("crm", "before", lambda r: r["crm"].update(server_settings={
        "S2SDefaultAuthorizationServerPrincipalId": ["x"], "S2SDefaultAuthorizationServerMetadataUrl": {"a": 1}})),
    "crm a list": ("crm", "before", lambda r: r.update(crm=[1])),
}


@pytest.mark.parametrize("case", list(FORGED_READINGS))
def test_rollback_of_a_vouched_record_with_wrong_types_sends_nothing_wrong(tmp_path, http_peer, engine, secrets_env,
                                                                           keys, psbridge, case: str) -> None:
    """A record the log vouches for, with readings of the wrong type: one error line, or nothing from it is sent."""
    from psbridge import audit
    from psbridge.files import sha256_hex

    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys)
    forged = _forge_readings(record, *FORGED_READINGS[case])
    record.write_bytes(forged)
    audit.record(log, "run", read_package(pkg), "ok", record=str(record), record_sha256=sha256_hex(forged))
    before = len(engine.pipelines)
    result = psbridge(*_rollback_args(pkg, http_peer, record, log), env=_secrets())
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    if result.exit_code == 2:
        one_error_line(result, str(record))
        assert len(engine.pipelines) == before
    else:
        assert result.exit_code == 0, result.stderr
        sent = [p.parameters for p in engine.pipelines[before:] if p.script.startswith("# psbridge back-out")]
        for parameters in sent:  # whatever is sent is a GUID list or text, never the forged structure
            for value in parameters.values():
                assert isinstance(value, str) or all(isinstance(v, str) for v in value), parameters


# --------------------------------------------------------------------------- run: runs/.lock is a FIFO


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_run_with_a_fifo_as_the_lock_is_one_line(tmp_path, http_peer, engine, secrets_env, psbridge) -> None:
    from support.packages import write_check_package

    pkg = write_check_package(tmp_path)
    (pkg / "runs").mkdir()
    os.mkfifo(pkg / "runs" / ".lock")
    before = len(engine.pipelines)
    one_error_line(psbridge(*run_args(pkg, http_peer), env=_secrets()), ".lock")
    assert len(engine.pipelines) == before


# --------------------------------------------------------------------------- item 10: look-alikes on the report's first page

LOOK_ALIKE = "contoso\\CRMWebAppl\u0456cationService"  # a Cyrillic і (U+0456) for the Latin i


def test_report_names_look_alike_characters_on_its_first_page(psbridge, tmp_path: Path) -> None:
    """As REVIEW.md does: each parameter value with characters outside ASCII, its field and its code points,
    on the summary (before "What changes where"), and the page still runs no script and loads nothing."""
    from psbridge.parameters import parse_parameters
    from psbridge.render import render_package
    from psbridge.writer import write_package

    from support.winrm_peer.package import parameters_for

    params = parse_parameters(parameters_for(certificate={"service_account": LOOK_ALIKE}))
    pkg = write_package(render_package(params, None), tmp_path / "output")
    assert LOOK_ALIKE in (pkg / "REVIEW.md").read_text(encoding="utf-8")  # the package is what the test means
    text = _report_text(psbridge, pkg)
    raw = (pkg.parent / f"{pkg.name}-report.html").read_text(encoding="utf-8")
    summary = text[: text.index("What changes where")]
    assert "characters outside ASCII" in summary
    assert "certificate.service_account" in summary and LOOK_ALIKE in summary
    assert "U+0456 CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I" in summary
    # still inert and self-contained
    assert "<script" not in raw.lower() and "<link" not in raw.lower() and "<img" not in raw.lower()
    for attr, value in re.findall(r"\b(src|href|srcset|action|formaction|poster|data)\s*=\s*\"([^\"]*)\"", raw):
        assert value.startswith(("#", "data:")), (attr, value)
    assert not re.search(r"<[a-z]+[^>]*\son[a-z]+\s*=", raw)
    csp = re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', raw)
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'"]


def test_report_of_ascii_values_has_no_look_alike_box(psbridge, pkg: Path) -> None:
    assert "characters outside ASCII" not in _report_text(psbridge, pkg)
