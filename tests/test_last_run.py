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
    out = capsys.readouterr().out
    assert f"rollback: the last run that changed something: {first}" in out
    assert f"skipped 1 later run that changed nothing ({again.name})" in " ".join(out.split())
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
