"""An attacker's review of the day's new paths (server lock, settings, proof line, JSON, window).

Each test here failed on main before its fix: what an attacker with write access to the server's
lock record, the package folder or the environment can do, run against the loopback peer.
"""

from __future__ import annotations

from typing import Any

import pytest

from psbridge.locks import STALE_MARGIN_SECONDS

from support.cli import run_args
from support.renewals import graph_env  # noqa: F401 - a fixture
from support.server_lock import log, model, other_shell, pkg, run, steps_sent  # noqa: F401 - fixtures

STALE = 900 + STALE_MARGIN_SECONDS + 60


# --------------------------------------------------------------------------- the server's lock record


def test_a_refusal_naming_a_heartbeat_without_an_offset_is_not_a_traceback(pkg, http_peer, engine, model,
                                                                           other_shell, secrets_env, capsys):
    """lock.ps1 writes UTC with `Z`; a naive heartbeat made heartbeat_age raise TypeError (a traceback)."""
    record = model.plant(other_shell, heartbeat_age=STALE)
    record["heartbeat"] = record["heartbeat"].removesuffix("Z")
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert "Traceback" not in out + err and "TypeError" not in out + err
    assert code == 1, out + err
    assert "the server's run lock was not taken" in out and "add --force-unlock" not in out
    assert other_shell in http_peer.shell_ids() and steps_sent(engine) == []


def test_force_unlock_refuses_a_heartbeat_without_an_offset_in_one_line(pkg, http_peer, engine, model, other_shell,
                                                                         secrets_env, capsys):
    record = model.plant(other_shell, heartbeat_age=STALE)
    record["heartbeat"] = record["heartbeat"].removesuffix("Z")
    code, out, err = run(capsys, run_args(pkg, http_peer, "--force-unlock"))
    assert "Traceback" not in out + err and "TypeError" not in out + err
    assert code == 2, out + err
    lines = [line for line in err.splitlines() if "lock record" in line]
    assert len(lines) == 1 and "is not one psbridge writes (record.heartbeat:" in lines[0]
    assert other_shell in http_peer.shell_ids() and steps_sent(engine) == []

def test_a_reading_whose_now_has_no_offset_is_a_one_line_user_error() -> None:
    """`now - heartbeat` with a naive `now` raised TypeError in stale() and describe()."""
    import json

    from psbridge.errors import UserError
    from psbridge.locks import ServerLockReading
    from support.winrm_peer.serverlock import iso
    from support.server_lock import _reading

    good = _reading(STALE)
    text = json.dumps({"now": iso(good.now).removesuffix("Z"), "record": json.loads(good.record.model_dump_json())})
    with pytest.raises(UserError) as caught:
        ServerLockReading.parse(text, "where")
    [line] = caught.value.problems
    assert line.startswith("where: the server's lock record is not one psbridge writes (now:")


# --------------------------------------------------------------------------- the change window


@pytest.mark.parametrize("window", ["9999-12-31T20:00-05:00/9999-12-31T22:00-05:00",
                                    "0001-01-01T00:30+01:00/0001-01-01T02:00+01:00"])
def test_a_window_out_of_range_in_utc_is_refused_in_one_line_not_rendered_into_a_traceback(psbridge, tmp_path,
                                                                                           window: str) -> None:
    """Its end (or start) in UTC falls outside year 1..9999: describe() raised OverflowError at render."""
    from support.change_window import with_window, write_params

    params = write_params(tmp_path, with_window(window))
    for command in (["validate", params], ["render", params, "--out", tmp_path / "out"]):
        result = psbridge(*command)
        assert result.exit_code == 2, (result.stdout, result.stderr)
        [line] = result.stderr.splitlines()
        assert line.startswith("psbridge: error: ") and "change.window: the " in line and "out of range in UTC" in line
    assert not (tmp_path / "out" / "contoso").exists()


# --------------------------------------------------------------------------- --json carrying outside text

#: What JSON leaves raw with ensure_ascii=False: a bidi override, a C1 CSI, a zero-width space.
RAW = ("\u202e", "\u009b", "\u200b")


def test_run_json_carries_the_servers_text_escaped_and_exact(pkg, http_peer, engine, secrets_env, capsys):
    """A step's output, warning and error from the server reached the terminal raw in `run --json`."""
    import json

    from support.winrm_peer import ErrorSpec, Reply
    from support.winrm_peer.package import marker
    from support.steps import STEP

    said = "ok\u202eevil\u009b2J\u200b"
    engine.when(marker(STEP[8]), Reply(output=[said], warnings=[said], errors=[ErrorSpec(said, "X", line=2)]))
    code, out, err = run(capsys, run_args(pkg, http_peer, "--json"))
    assert code == 1, out + err
    assert not any(ch in out for ch in RAW)
    [end] = [e for e in map(json.loads, out.splitlines()) if e["event"] == "step-end" and e["index"] == 8]
    assert end["output"] == [said] and end["warnings"] == [said] and end["errors"][0]["message"] == said


def test_verify_json_carries_a_planted_file_name_escaped_and_exact(psbridge, pkg, keys) -> None:
    """A file an attacker put in approvals/ is named in `reasons`: its bidi override reached stdout raw."""
    import json

    from support.packages import approvals_of

    assert psbridge("approve", pkg, "--key", keys["mallory"]).exit_code == 0  # not trusted: verify refuses
    [good] = approvals_of(pkg)
    planted = good.parent / "evil\u202e\u009bnosj.json"
    planted.write_text(good.read_text().replace("Mallory", "Eve"), encoding="utf-8")
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"], "--json")
    assert result.exit_code == 1, result.stderr
    assert not any(ch in result.stdout + result.stderr for ch in RAW)
    out = json.loads(result.stdout)
    assert any(reason.startswith(f"approvals/{planted.name} ") for reason in out["reasons"])


def test_page_one_gives_no_covers_the_window_badge_to_an_approval_that_is_not_valid(psbridge, tmp_path, keys,
                                                                                    monkeypatch) -> None:
    """An approval by an untrusted key (anyone who can write approvals/) and an expired one showed a green
    "covers the window" badge beside their red "not valid"; only a valid approval can cover the window."""
    import re
    from datetime import datetime, timezone

    from psbridge import approvals, clock
    from psbridge import report as report_module
    from psbridge.package import read_package
    from support.winrm_peer.package import make_package
    from support.report_pages import WINDOW, approve, text_of

    def rows_at(now: datetime) -> dict[str, str]:
        html = report_module.build_report(read_package(windowed), audit_log=tmp_path / "audit.jsonl", now=now,
                                          trusted_keys=keys["trusted"])
        return {who: text_of(row) for row in re.findall(r"<tr><td>(.*?)</tr>", html, re.S)
                for who in ("Mallory", "Bob Roe") if who in row}

    now = datetime(2026, 12, 10, 9, 0, tzinfo=timezone.utc)
    monkeypatch.setattr(clock, "utc_now", lambda: now)
    monkeypatch.setattr(approvals, "utc_now", lambda: now)
    windowed = make_package(tmp_path / "windowed", change={"ticket": "CHG-21", "window": WINDOW})
    approve(psbridge, windowed, keys["mallory"], "--expires", "7d")  # not a trusted key
    approve(psbridge, windowed, keys["bob"], "--expires", "7d")
    rows = rows_at(now)
    assert "not valid" in rows["Mallory"] and "covers the window" not in rows["Mallory"]
    assert "not valid: it covers nothing" in rows["Mallory"]
    assert "valid now covers the window covers the window (ends 2026-12-12T21:00:00Z)" in rows["Bob Roe"]
    bob = rows_at(datetime(2026, 12, 20, 9, 0, tzinfo=timezone.utc))["Bob Roe"]  # after the window: expired
    assert "expired" in bob and "covers the window" not in bob and "not valid: it covers nothing" in bob


def test_a_heartbeat_later_than_the_servers_time_now_is_not_a_live_holder(pkg, http_peer, engine, model,
                                                                          other_shell, secrets_env, capsys):
    """A heartbeat in the future (lock.ps1 writes it from the clock `now` comes from) was read as alive, "-86400 s
    ago", and --force-unlock refused it for as long as the forger chose."""
    model.plant(other_shell, heartbeat_age=-86400)
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert code == 1, out + err
    assert "s ago" not in out and "wait for it to end" not in out and "add --force-unlock" not in out
    code, out, err = run(capsys, run_args(pkg, http_peer, "--force-unlock"))
    assert code == 2, out + err
    lines = [line for line in err.splitlines() if "lock record" in line]
    assert len(lines) == 1 and "is not one psbridge writes" in lines[0]
    assert "later than the server's time now" in lines[0]
    assert other_shell in http_peer.shell_ids() and steps_sent(engine) == []


def test_a_heartbeat_a_clock_step_ahead_is_still_read() -> None:
    from support.server_lock import _reading

    assert not _reading(-30).stale() and _reading(-30).holder is not None


# --------------------------------------------------------------------------- a renewal's proof line


def test_a_proof_line_appended_with_an_older_time_does_not_shorten_the_wait(tmp_path, http_peer, engine, graph_env,
                                                                            monkeypatch, capsys):
    """A correctly chained proof line added at the log's end, dated two days before the real one: it was the
    last proof, so the switch went out an hour after the key was added instead of 24 hours after."""
    import json
    from datetime import timedelta

    from psbridge import audit
    from psbridge.cli import main
    from support.renewals import _later, _proof, _proven_at, renewal, sent

    pkg = renewal(tmp_path, farm=False, wait=24)
    assert main(run_args(pkg, http_peer)) == 1
    capsys.readouterr()
    log = tmp_path / "audit.jsonl"
    proof = _proof(tmp_path)
    proven = _proven_at(proof)
    last = log.read_bytes().splitlines()[-1]
    forged = {**proof, "time": (proven - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
              "prev": audit.head_of(last)}
    forged.pop("sha256")
    forged["sha256"] = audit.sha256_hex(audit.canonical(forged))
    with log.open("ab") as out:
        out.write(audit.line_of(forged) + b"\n")
    assert audit.verify(log).ok  # the chain vouches for it: only its time gives it away
    _later(monkeypatch, proven + timedelta(hours=1))
    engine.pipelines.clear()
    assert main(run_args(pkg, http_peer, "--from-step", "6")) == 1
    out = capsys.readouterr().out
    assert "06 certificate" not in sent(engine) and "Not sent: step 06 (certificate)" in out
