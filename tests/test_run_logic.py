"""The protocol-free half of `psbridge run` (generator/runner.py): no network, no pypsrp."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from psbridge.errors import UserError
from psbridge.cli.output import HumanReporter
from psbridge.remote.advice import ContinueCommand, RunAdvice
from psbridge.remote.executor import Executor, Outcome, PipelineReport, RemoteError, StepPlan, Hooks, classify
from psbridge.remote.gate import select_steps
from psbridge.remote.inputs import secrets_needed
from psbridge.remote.redact import Redactor
from psbridge.catalogue import MSONLINE_STEPS, resume_selection
from psbridge.package import read_package


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


def test_selection_comes_from_the_catalogue(pkg):
    steps = read_package(pkg).steps
    assert [s.id for s in steps] == [s.id for s in MSONLINE_STEPS]
    assert [s.index for s in select_steps(steps, None)] == list(range(1, 9))
    for k in range(1, 9):
        assert [s.index for s in select_steps(steps, k)] == resume_selection(MSONLINE_STEPS, k)
    with pytest.raises(UserError, match="--from-step: 0 is not a step"):
        select_steps(steps, 0)
    assert secrets_needed(select_steps(steps, 7)) == {"o365_credential"}
    assert secrets_needed(select_steps(steps, None)) == {"pfx_password", "o365_credential"}


def test_package_names_every_changed_missing_or_added_file(pkg):
    assert read_package(pkg).steps[1].text.startswith("# psbridge step 02/08") and "\r\n" in read_package(pkg).steps[1].text
    (pkg / "steps/03-session.ps1").write_bytes(b"\xef\xbb\xbfWrite-Output 'evil'\r\n")
    (pkg / "steps/07-crm-settings.ps1").unlink()
    (pkg / "steps/09-extra.ps1").write_bytes(b"Write-Output 'more'\r\n")
    with pytest.raises(UserError) as info:
        read_package(pkg).require_intact()
    assert info.value.problems == (
        f"{pkg}: changed file: steps/03-session.ps1 (sha256 differs from plan.json)",
        f"{pkg}: missing file: steps/07-crm-settings.ps1",
        f"{pkg}: unexpected file: steps/09-extra.ps1",
    )


def test_plan_metadata_that_differs_from_the_catalogue_is_refused_naming_step_and_field(pkg):
    plan = json.loads((pkg / "plan.json").read_text())
    plan["steps"][1]["inputs"] = {"PfxPassword": "api_key"}
    plan["steps"][2]["file"] = "../outside.ps1"
    plan["steps"][3]["needs"] = ["nope"]
    (pkg / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(UserError) as info:
        read_package(pkg).require_intact()
    text = "\n".join(info.value.problems)
    assert 'steps[2] (step 02 certificate): inputs is {"PfxPassword": "api_key"}' in text
    assert 'steps[3] (step 03 session): file is "../outside.ps1"' in text
    assert 'steps[4] (step 04 connect): needs is ["nope"]' in text
    with pytest.raises(UserError, match="no plan.json; not a psbridge package"):
        read_package(pkg / "steps")


@given(st.lists(st.text(st.characters(blacklist_characters="\r\n"), min_size=1, max_size=12), min_size=1, max_size=4),
       st.text(max_size=60))
def test_redactor_removes_every_secret(secrets, text):
    # Overlapping secrets (one inside another) are the case to get right.
    mixed = text + "".join(f"<{s}>" for s in secrets) + text
    cleaned = Redactor(secrets)(mixed)
    for secret in secrets:
        assert secret not in cleaned


@pytest.mark.parametrize("secrets", [["abcdefghij", "ghijklmnop"], ["ghijklmnop", "abcdefghij"]])
def test_two_long_secrets_overlapping_in_the_text_leave_no_part_of_either(secrets):
    # Replacing one after the other destroyed the shared "ghij", so the second no longer
    # matched and its tail (or the first's head) was printed.
    cleaned = Redactor(secrets)("x abcdefghijklmnop y")
    assert cleaned == "x [redacted] y"


def test_a_short_secret_withholds_its_lines_instead_of_masking_its_letters():
    # Masking every "a" of a one-letter password would print `f********ke` and reveal it.
    redact = Redactor(["q", "long-secret-value"])
    text = "first line: q fake\nsecond: long-secret-value\nthird is fine"
    assert redact(text) == "[line withheld: it contained a secret]\nsecond: [redacted]\nthird is fine"
    # The case: PFX password "a". The usual marker text holds an "a" itself, so another is used.
    assert Redactor(["a"])("fake\nok: 1") == "<line withheld>\nok: 1"
    assert Redactor(["long-secret-value"])(text).splitlines()[1] == "second: [redacted]"


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
        index = int(script[len("# psbridge step "):][:2])
        return self.answers.get(index, PipelineReport("Completed"))


def sent_indexes(session: FakeSession) -> list[int]:
    return [int(s[len("# psbridge step "):][:2]) for s in session.sent]


def executor(pkg: Path, events: list, from_step=None, confirm=None) -> Executor:
    steps = read_package(pkg).steps
    selected = select_steps(steps, from_step)
    advice = RunAdvice(steps, selected, ContinueCommand(str(pkg), ("--host", "h")))
    return Executor(StepPlan(steps, selected, lambda s: {}, advice, step_timeout=5), events.append,
                    Redactor(["hunter2-long"]), Hooks(confirm=confirm))


@pytest.mark.parametrize(("state", "code"), [(PipelineReport("Failed"), 1),
                                             (PipelineReport("Running", timed_out=True), 4)])
def test_executor_stops_at_the_first_step_that_is_not_ok(pkg, state, code):
    events: list = []
    session = FakeSession({5: state})
    result = executor(pkg, events).run(session)
    assert result.exit_code == code
    assert sent_indexes(session) == [1, 2, 3, 4, 5]
    assert [r.outcome for r in result.results][-1] is (Outcome.FAILED if code == 1 else Outcome.UNKNOWN)
    assert result.summary[-1].endswith("--from-step 6" if code == 4 else "--from-step 5")
    assert events[-1]["event"] == "run-end" and events[-1]["stopped_at"] == 5


def test_executor_redacts_remote_text_and_reports(pkg):
    events: list = []
    bad = PipelineReport("Completed", output=["pw=hunter2-long"], errors=[RemoteError("hunter2-long rejected", "Auth", 4, "")])
    result = executor(pkg, events).run(FakeSession({1: bad}))
    assert result.exit_code == 1
    end = [e for e in events if e["event"] == "step-end"][0]
    assert end["output"] == ["pw=[redacted]"] and end["errors"][0]["message"] == "[redacted] rejected"
    lines: list[str] = []
    report = HumanReporter(lambda text="", nl=True: lines.append(text + ("\n" if nl else "")))
    for event in events:
        report(event)
    screen = "".join(lines)
    assert "[01/08] prerequisites … FAILED" in screen and "error: [redacted] rejected" in screen
    assert "script line: 4" in screen and "hunter2-long" not in screen


def test_executor_step_mode_skip_and_quit(pkg):
    answers = iter(["y", "n", "y", "q"])
    events: list = []
    session = FakeSession({})
    result = executor(pkg, events, confirm=lambda step: next(answers)).run(session)
    assert sent_indexes(session) == [1, 3]
    assert [r.outcome for r in result.results] == [Outcome.OK, Outcome.SKIPPED, Outcome.OK]
    assert result.exit_code == 1
    assert "Not run: 04 connect, 05 set-certificate, 06 spn, 07 crm-settings, 08 tenant-id." in result.summary
    assert "Skipped at the operator's request: 02 certificate." in result.summary
    assert result.summary[-1].endswith("--from-step 2")  # nothing that changed state would run again


def test_a_skipped_step_never_leads_to_a_command_that_changes_state_twice(pkg):
    # 02 is skipped, then 06 and 07 change state: --from-step 2 would send them again.
    answers = iter(["y", "n", "y", "y", "y", "y", "y", "y"])
    result = executor(pkg, [], confirm=lambda step: next(answers)).run(FakeSession({}))
    assert result.exit_code == 1
    assert "Skipped at the operator's request: 02 certificate." in result.summary
    assert not any("psbridge run" in line for line in result.summary)
    assert any("would send 06 spn, 07 crm-settings again" in line for line in result.summary)


def test_executor_skips_then_finishes_is_not_a_clean_success(pkg):
    answers = iter(["y", "y", "y", "y", "y", "y", "y", "n"])
    result = executor(pkg, [], confirm=lambda step: next(answers)).run(FakeSession({}))
    assert result.exit_code == 1
    assert "Skipped at the operator's request: 08 tenant-id." in result.summary
    assert result.summary[-1].endswith("--from-step 8")


def test_cli_offers_exactly_the_auth_methods_the_connection_accepts():
    from psbridge.cli import options as cli
    from psbridge.remote import transport

    assert cli._AUTHS == transport.AUTHS
