"""The protocol-free half of `psbridge run` (generator/runner.py): no network, no pypsrp."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generator.errors import UserError
from generator.runner import (
    ContinueCommand,
    Executor,
    HumanReporter,
    Outcome,
    PipelineReport,
    Redactor,
    RemoteError,
    classify,
    load_plan,
    read_step_texts,
    secrets_needed,
    select_steps,
)
from generator.steps import MSONLINE_STEPS, resume_selection
from winrm_peer.package import make_package


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    return make_package(tmp_path)


@pytest.mark.parametrize(
    ("report", "outcome"),
    [
        (PipelineReport("Completed"), Outcome.OK),
        (PipelineReport("Completed", output=["x"], warnings=["w"]), Outcome.OK),
        (PipelineReport("Completed", errors=[RemoteError("non-terminating")]), Outcome.FAILED),
        (PipelineReport("Failed", errors=[RemoteError("terminating")]), Outcome.FAILED),
        (PipelineReport("Failed"), Outcome.FAILED),
        (PipelineReport("Stopped"), Outcome.UNKNOWN),
        (PipelineReport("Running", timed_out=True), Outcome.UNKNOWN),
        (PipelineReport("Completed", timed_out=True), Outcome.UNKNOWN),
        (PipelineReport("Running", transport_error="ConnectionError"), Outcome.UNKNOWN),
        (PipelineReport("Completed", transport_error="lost after completion"), Outcome.UNKNOWN),
    ],
)
def test_classify(report, outcome):
    assert classify(report) is outcome


def test_load_plan_and_selection(pkg):
    plan = load_plan(pkg)
    assert [s.id for s in plan.steps] == [s.id for s in MSONLINE_STEPS]
    assert [s.index for s in select_steps(plan, None)] == list(range(1, 9))
    for k in range(1, 9):
        assert [s.index for s in select_steps(plan, k)] == resume_selection(MSONLINE_STEPS, k)
    with pytest.raises(UserError, match="--from-step: 0 is not a step"):
        select_steps(plan, 0)
    assert secrets_needed(select_steps(plan, 7)) == {"o365_credential"}
    assert secrets_needed(select_steps(plan, None)) == {"pfx_password", "o365_credential"}


def test_read_step_texts_names_every_changed_or_missing_file(pkg):
    plan = load_plan(pkg)
    texts = read_step_texts(pkg, plan)
    assert texts[2][0].startswith("# psbridge-step 02") and "\r\n" in texts[2][0]
    (pkg / "steps/03-session.ps1").write_bytes(b"\xef\xbb\xbfWrite-Output 'evil'\r\n")
    (pkg / "steps/07-crm-settings.ps1").unlink()
    with pytest.raises(UserError) as info:
        read_step_texts(pkg, plan)
    assert info.value.problems == (
        f"{pkg}/steps/03-session.ps1: changed since it was rendered (sha256 differs from plan.json); refusing to run it",
        f"{pkg}/steps/07-crm-settings.ps1: missing or unreadable",
    )


def test_load_plan_refuses_bad_plans(pkg):
    plan = json.loads((pkg / "plan.json").read_text())
    plan["steps"][1]["inputs"] = {"PfxPassword": "api_key"}
    plan["steps"][2]["file"] = "../outside.ps1"
    plan["steps"][3]["needs"] = ["nope"]
    (pkg / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(UserError) as info:
        load_plan(pkg)
    text = "\n".join(info.value.problems)
    assert "unknown secret kind api_key" in text and "path inside the package" in text and "unknown step nope" in text
    with pytest.raises(UserError, match="no plan.json; not a psbridge package"):
        load_plan(pkg / "steps")


NO_STAR = st.characters(blacklist_characters="*")


@given(st.lists(st.text(NO_STAR, min_size=1, max_size=12), min_size=1, max_size=4), st.text(NO_STAR, max_size=60))
def test_redactor_removes_every_secret(secrets, text):
    # Overlapping secrets (one inside another) are the case to get right: longest first.
    mixed = text + "".join(f"<{s}>" for s in secrets) + text
    cleaned = Redactor(secrets)(mixed)
    for secret in secrets:
        assert secret not in cleaned


def test_continue_command_quotes_for_the_shell():
    cmd = ContinueCommand("/srv/pkg dir", ("--host", "crm01", "--username", "CONTOSO\\crm admin"))
    line = cmd.at(6)
    assert shlex.split(line) == ["psbridge", "run", "/srv/pkg dir", "--host", "crm01", "--username",
                                 "CONTOSO\\crm admin", "--from-step", "6"]


class FakeSession:
    """Answers each step from a table; records what was sent."""

    def __init__(self, answers: dict[int, PipelineReport]) -> None:
        self.answers = answers
        self.sent: list[str] = []

    def run_step(self, script, parameters, timeout):
        self.sent.append(script)
        index = int(script[16:18])
        return self.answers.get(index, PipelineReport("Completed"))


def executor(pkg: Path, events: list, from_step=None, confirm=None) -> Executor:
    plan = load_plan(pkg)
    return Executor(
        plan, select_steps(plan, from_step), read_step_texts(pkg, plan), lambda s: {}, events.append,
        Redactor(["hunter2"]), ContinueCommand(str(pkg), ("--host", "h")), step_timeout=5, confirm=confirm,
    )


@pytest.mark.parametrize(("state", "code"), [(PipelineReport("Failed"), 1),
                                             (PipelineReport("Running", timed_out=True), 4)])
def test_executor_stops_at_the_first_step_that_is_not_ok(pkg, state, code):
    events: list = []
    session = FakeSession({5: state})
    result = executor(pkg, events).run(session)
    assert result.exit_code == code
    assert [int(s[16:18]) for s in session.sent] == [1, 2, 3, 4, 5]
    assert [r.outcome for r in result.results][-1] is (Outcome.FAILED if code == 1 else Outcome.UNKNOWN)
    assert result.summary[-1].endswith("--from-step 6" if code == 4 else "--from-step 5")
    assert events[-1]["event"] == "run-end" and events[-1]["stopped_at"] == 5


def test_executor_redacts_remote_text_and_reports(pkg):
    events: list = []
    bad = PipelineReport("Completed", output=["pw=hunter2"], errors=[RemoteError("hunter2 rejected", "Auth", 4, "")])
    result = executor(pkg, events).run(FakeSession({1: bad}))
    assert result.exit_code == 1
    end = [e for e in events if e["event"] == "step-end"][0]
    assert end["output"] == ["pw=********"] and end["errors"][0]["message"] == "******** rejected"
    lines: list[str] = []
    report = HumanReporter(lambda text="", nl=True: lines.append(text + ("\n" if nl else "")))
    for event in events:
        report(event)
    screen = "".join(lines)
    assert "[01/08] prerequisites … FAILED" in screen and "error: ******** rejected" in screen
    assert "script line: 4" in screen and "hunter2" not in screen


def test_executor_step_mode_skip_and_quit(pkg):
    answers = iter(["y", "n", "y", "q"])
    events: list = []
    session = FakeSession({})
    result = executor(pkg, events, confirm=lambda step: next(answers)).run(session)
    assert [int(s[16:18]) for s in session.sent] == [1, 3]
    assert [r.outcome for r in result.results] == [Outcome.OK, Outcome.SKIPPED, Outcome.OK]
    assert result.exit_code == 1 and result.summary[-1].endswith("--from-step 4")


def test_executor_skips_then_finishes_is_not_a_clean_success(pkg):
    answers = iter(["y", "n", "y", "y", "y", "y", "y", "y"])
    result = executor(pkg, [], confirm=lambda step: next(answers)).run(FakeSession({}))
    assert result.exit_code == 1
    assert "Skipped at the operator's request: 02 certificate" in result.summary[1]


def test_cli_offers_exactly_the_auth_methods_the_connection_accepts():
    from generator import cli, remote

    assert cli._AUTHS == remote.AUTHS
