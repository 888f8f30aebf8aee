"""Issue 20, item 9: an approval that expires during a run stops the run before the next changing step.

The gate judges the approvals once, before connecting; a run can then wait (at `--step`'s prompt,
or on a slow step) past an approval's expiry. The run re-judges the approvals, with the same
policy and the package object it already read, right before each state-changing step. The
clock is frozen (`psbridge.clock.utc_now` monkeypatched) and advanced between steps.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from psbridge import approvals, clock
from psbridge.cli import main
from psbridge.package import read_package

from support.lab import O365_USER, USER
from support.winrm_peer import WinRMPeer
from support.winrm_peer.package import make_package


class FrozenClock:
    """utc_now for psbridge.clock: a fixed moment, moved on by the test."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    frozen = FrozenClock(clock.utc_now())
    monkeypatch.setattr(clock, "utc_now", frozen)
    return frozen


def _approved(tmp_path: Path, keys: dict[str, Path], validity: timedelta) -> tuple[Path, Path]:
    pkg = make_package(tmp_path / "output", server="127.0.0.1")
    made = approvals.approve_package(read_package(pkg), keys["jane"], validity, "", passphrase_reader=lambda: "")
    return pkg, made.path


def _run_args(pkg: Path, peer: WinRMPeer, keys: dict[str, Path], *extra: str) -> list[str]:
    return ["run", str(pkg), "--port", str(peer.port), "--transport", "http", "--auth", "ntlm",
            "--username", USER, "--o365-user", O365_USER, "--require-approval",
            "--trusted-keys", str(keys["trusted"]), *extra]


def _sent(engine) -> list[str]:  # noqa: ANN001 - the peer's engine
    return [p.script.split("/")[0].removeprefix("# psbridge step ") for p in engine.pipelines
            if p.script.startswith("# psbridge step ")]


def test_an_approval_expiring_at_the_step_prompt_stops_before_the_next_changing_step(
        tmp_path, http_peer, engine, secrets_env, keys, frozen, monkeypatch, capsys):
    pkg, approval = _approved(tmp_path, keys, timedelta(hours=1))

    def ask(step):  # noqa: ANN001, ANN202 - the operator answers y, but waits 2 hours at step 06's prompt
        if step.id == "spn":
            frozen.now += timedelta(hours=2)
        return "y"

    monkeypatch.setattr("psbridge.cli.run.ask_step", ask)
    code = main(_run_args(pkg, http_peer, keys, "--step"))
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    sent = _sent(engine)
    assert "02" in sent and "05" in sent and "06" not in sent and "07" not in sent, sent
    text = out + err
    assert f"approvals/{approval.name}" in text and "expired" in text
    assert "Not sent: step 06 (spn)" in text
    assert "--from-step 6" in text and "psbridge approve" in text


def test_an_approval_expiring_during_a_step_stops_before_the_next_changing_step(
        tmp_path, http_peer, engine, secrets_env, keys, frozen, capsys):
    pkg, approval = _approved(tmp_path, keys, timedelta(hours=1))

    def slow(pipeline) -> bool:  # noqa: ANN001 - step 02 takes two hours on the server
        if pipeline.script.startswith("# psbridge step 02/"):
            frozen.now += timedelta(hours=2)
        return False

    engine.when(slow, None)  # never matches: only moves the clock
    code = main(_run_args(pkg, http_peer, keys))
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    sent = _sent(engine)
    assert "02" in sent and "06" not in sent, sent
    assert f"approvals/{approval.name}" in out + err and "expired" in out + err


def test_a_valid_approval_lets_every_step_through(tmp_path, http_peer, engine, secrets_env, keys, frozen, capsys):
    pkg, _ = _approved(tmp_path, keys, timedelta(hours=3))

    def slow(pipeline) -> bool:  # noqa: ANN001 - still within the approval's window
        if pipeline.script.startswith("# psbridge step 02/"):
            frozen.now += timedelta(hours=2)
        return False

    engine.when(slow, None)
    assert main(_run_args(pkg, http_peer, keys)) == 0, capsys.readouterr()
    assert {"02", "06", "07"} <= set(_sent(engine))


def test_an_approval_expiring_at_rollbacks_prompt_stops_before_the_first_back_out(
        tmp_path, http_peer, engine, secrets_env, keys, frozen, monkeypatch, capsys):
    """A rollback's back-out scripts change state too: `rollback --require-approval` judged the approvals once,
    then asked (its values come from evidence) and, answered after the approval expired, sent every back-out."""
    from support.rollback_runs import _rollback_args, _run

    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys)  # approved by jane for 7 days, then run
    [approval] = sorted((pkg / "approvals").glob("*.json"))

    def answer_after_eight_days(question: str, **_: str) -> None:
        frozen.now += timedelta(days=8)  # the operator comes back to the prompt a week later and answers y

    monkeypatch.setattr("psbridge.cli.rollback.confirm_or_refuse", answer_after_eight_days)
    capsys.readouterr()
    before = len(engine.pipelines)
    args = [a for a in _rollback_args(pkg, http_peer, record, log) if a != "--yes"]
    code = main([*args, "--require-approval", "--trusted-keys", str(keys["trusted"])])
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    backouts = [p for p in engine.pipelines[before:] if p.script.startswith("# psbridge back-out")]
    assert backouts == [], [p.script.splitlines()[0] for p in backouts]
    text = out + err
    assert f"approvals/{approval.name}" in text and "expired" in text
    assert "psbridge approve" in text and "psbridge rollback" in text


def test_a_valid_approval_lets_rollback_send_its_back_outs(tmp_path, http_peer, engine, secrets_env, keys, frozen,
                                                            monkeypatch, capsys):
    from support.rollback_runs import _rollback_args, _run

    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys)
    monkeypatch.setattr("psbridge.cli.rollback.confirm_or_refuse", lambda question, **_: None)
    before = len(engine.pipelines)
    args = [a for a in _rollback_args(pkg, http_peer, record, log) if a != "--yes"]
    assert main([*args, "--require-approval", "--trusted-keys", str(keys["trusted"])]) == 0, capsys.readouterr()
    assert [p for p in engine.pipelines[before:] if p.script.startswith("# psbridge back-out")]
