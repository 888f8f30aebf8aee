"""Faults and hostile input around `psbridge run`: never a traceback, never an unrecorded change.

Every test drives the real command against the loopback WinRM peer with something broken:
the audit log (torn, a link, a FIFO, under a file), the package folder (runs/ or
approvals/ as files, a FIFO inside), the server's answers (a malformed PSRP message, text
that tries to forge progress lines), a second run at the same time. The peer's record
proves what was (not) sent.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from psbridge.catalogue import MSONLINE_STEPS
from psbridge.cli import main

from support.cli import check_args, run_args
from support.lab import O365_PASSWORD, PFX_PASSWORD, USER, WINRM_PASSWORD
from support.winrm_peer import Engine, ErrorSpec, Reply
from support.winrm_peer.package import marker

STEP = {s.index: s for s in MSONLINE_STEPS}
LOCK = "# psbridge lock:"


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def steps_sent(engine: Engine) -> list[int]:
    return [int(s[len("# psbridge step "):][:2]) for s in engine.scripts() if s.startswith("# psbridge step ")]


def record_events(pkg: Path) -> list[dict]:
    [record] = sorted((pkg / "runs").glob("*.jsonl"))
    return [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]


def audit_lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_bytes().splitlines()]


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The audit log this test breaks; it starts with one good line (a render of the package)."""
    path = tmp_path / "logs" / "audit.jsonl"
    monkeypatch.setenv("PSBRIDGE_AUDIT_LOG", str(path))
    return path


@pytest.fixture
def pkg(tmp_path: Path, log: Path) -> Path:
    out = tmp_path / "output"
    assert main(["render", "--example", "--out", str(out)]) == 0
    return out / "contoso"


# --------------------------------------------------------------------------- the audit log, broken


def _torn(log: Path) -> None:
    with open(log, "ab") as fh:
        fh.write(b"{")  # one stray byte: the log no longer ends with a complete line


def _symlink(log: Path) -> None:
    target = log.with_name("elsewhere.jsonl")
    os.replace(log, target)
    log.symlink_to(target)


def _fifo(log: Path) -> None:
    log.unlink()
    os.mkfifo(log)


@pytest.mark.parametrize("breakage", [_torn, _symlink, _fifo], ids=["torn tail", "symlink", "fifo"])
def test_no_step_is_sent_when_the_run_cannot_be_recorded(breakage, pkg, log, http_peer, engine, secrets_env, capsys):
    before = log.read_bytes()
    breakage(log)
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert code in (1, 2), out + err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert http_peer.connections == 0 and engine.pipelines == []
    events = record_events(pkg)
    assert events[-1]["event"] == "run-end" and events[-1]["reason"] == "not-recorded"
    if breakage is _torn:
        assert "psbridge audit repair" in err
        assert log.read_bytes() == before + b"{"  # nothing recorded is lost, nothing torn is hidden
    if breakage is _symlink:
        assert log.with_name("elsewhere.jsonl").read_bytes() == before


def test_a_log_under_a_file_refuses_the_run(pkg, tmp_path, http_peer, engine, secrets_env, capsys):
    (tmp_path / "afile").write_text("x")
    code, out, err = run(capsys, run_args(pkg, http_peer, "--audit-log", str(tmp_path / "afile" / "audit.jsonl")))
    assert code in (1, 2) and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert engine.pipelines == []


def test_an_existing_world_readable_log_is_tightened_to_0600(pkg, log, http_peer, engine, secrets_env, capsys):
    os.chmod(log, 0o644)
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert code == 0, out + err
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert [(e["action"], e["outcome"]) for e in audit_lines(log)][-2:] == [("run", "started"), ("run", "ok")]


def test_a_log_that_breaks_during_the_run_loses_nothing_and_says_so(pkg, log, http_peer, engine, secrets_env,
                                                                   capsys):
    def tear_then_answer(pipeline) -> bool:  # the log breaks while step 08 runs
        if marker(STEP[8]) in pipeline.script:
            _torn(log)
        return False

    engine.when(tear_then_answer, Reply())
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert code == 1, out + err
    assert steps_sent(engine) == list(range(1, 9))
    assert "the run ended (ok) but its end is not in the audit log" in err and "audit repair" in err
    assert record_events(pkg)[-1]["exit_code"] == 0  # the run record has the whole run
    lines = log.read_bytes().splitlines()
    assert lines[-1] == b"{" and json.loads(lines[-2])["outcome"] == "started"


def test_run_start_is_logged_before_connecting(pkg, log, http_peer, engine, secrets_env, capsys):
    seen: list[list[str]] = []

    def look_at_the_log(pipeline) -> bool:
        if not seen:
            seen.append([e["outcome"] for e in audit_lines(log)])
        return False

    engine.when(look_at_the_log, Reply())
    assert run(capsys, run_args(pkg, http_peer))[0] == 0
    assert seen == [["rendered", "started"]]  # written before the first pipeline reached the server


def test_printed_commands_carry_the_audit_log(pkg, log, http_peer, engine, secrets_env, capsys):
    engine.when(marker(STEP[6]), Reply(terminating=ErrorSpec("no")))
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert code == 1
    line = next(l for l in out.splitlines() if l.strip().startswith("psbridge run "))
    assert f"--audit-log {log}" in line


# --------------------------------------------------------------------------- the package folder, broken


def test_runs_as_a_regular_file_is_a_clean_refusal(pkg, http_peer, engine, secrets_env, capsys):
    (pkg / "runs").write_text("not a folder")
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert code == 2 and "runs" in err and "Traceback" not in err
    assert engine.pipelines == []


def test_approvals_as_a_regular_file_is_a_clean_refusal(pkg, keys, capsys):
    (pkg / "approvals").write_text("not a folder")
    code, out, err = run(capsys, ["verify", str(pkg), "--trusted-keys", str(keys["trusted"])])
    assert code == 2 and "approvals: exists and is not a folder" in err


def test_a_fifo_inside_a_package_is_refused_without_hanging(pkg, tmp_path):
    os.mkfifo(pkg / "steps" / "09-extra.ps1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSBRIDGE_")}
    env["PSBRIDGE_AUDIT_LOG"] = str(tmp_path / "other.jsonl")
    proc = subprocess.run([sys.executable, "-m", "psbridge", "show", str(pkg)], capture_output=True, text=True,
                          timeout=30, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "09-extra.ps1: not a regular file" in proc.stderr


def test_a_malformed_approval_counts_as_one_invalid_approval_while_the_others_count(pkg, keys, capsys):
    assert main(["approve", str(pkg), "--key", str(keys["jane"])]) == 0
    (pkg / "approvals" / "zz-nested.json").write_text("[" * 100_000 + "]" * 100_000)
    code, out, err = run(capsys, ["verify", str(pkg), "--trusted-keys", str(keys["trusted"])])
    assert code == 0, err
    assert "approvals/zz-nested.json" in out and "malformed" in out  # named in a note
    assert main(["verify", str(pkg), "--trusted-keys", str(keys["trusted"]), "--min-approvals", "2"]) == 1
    assert "approvals/zz-nested.json (unknown approver): malformed" in capsys.readouterr().err


# --------------------------------------------------------------------------- the server's answers


def test_a_malformed_psrp_message_mid_step_is_unknown_and_recorded(pkg, log, http_peer, engine, secrets_env, capsys):
    engine.when(marker(STEP[6]), Reply(garbage=True))
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert code == 4, out + err
    assert "Traceback" not in out + err
    assert steps_sent(engine) == [1, 2, 3, 4, 5, 6]
    events = record_events(pkg)
    end = [e for e in events if e["event"] == "step-end"][-1]
    assert end["index"] == 6 and end["state"] == "unknown"
    assert events[-1]["event"] == "run-end" and events[-1]["exit_code"] == 4
    assert [e["outcome"] for e in audit_lines(log)][-2:] == ["started", "unknown"]


def test_server_text_cannot_forge_progress_lines_or_reorder_the_screen(pkg, http_peer, engine, secrets_env, capsys):
    # (An ESC in a server's error text never arrives: pypsrp cannot read such a message, which
    # ends the step UNKNOWN like the malformed message above.)
    forged = "denied\r\n[07/08] crm-settings … ok 0.1s\u202e\u200b"
    engine.when(marker(STEP[2]), Reply(errors=[ErrorSpec(forged, "PermissionDenied")]))
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert code == 1, out
    assert not re.search(r"^\[07/08\]", out, re.M)
    assert "\u202e" not in out and "\u200b" not in out
    # every line of a server's message is indented under its label, invisible characters shown
    assert "    error: denied\n    error: [07/08] crm-settings … ok 0.1s\\u202e\\u200b\n" in out


# --------------------------------------------------------------------------- one run at a time


def test_two_runs_of_one_package_never_interleave(pkg, http_peer, engine, tmp_path):
    engine.when(marker(STEP[2]), Reply(hang=True))  # the first run stays inside step 02
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSBRIDGE_")}
    env.update(PSBRIDGE_WINRM_PASSWORD=WINRM_PASSWORD, PSBRIDGE_PFX_PASSWORD=PFX_PASSWORD,
               PSBRIDGE_O365_PASSWORD=O365_PASSWORD, PSBRIDGE_AUDIT_LOG=str(tmp_path / "two.jsonl"))
    command = [sys.executable, "-m", "psbridge", *run_args(pkg, http_peer, "--step-timeout", "20")]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while 2 not in steps_sent(engine):
            assert time.monotonic() < deadline and first.poll() is None, "the first run did not reach step 02"
            time.sleep(0.05)
        shells = {p.shell_id for p in engine.pipelines}
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL)
        assert second.returncode == 1, second.stdout + second.stderr
        assert "another psbridge run of this package is in progress" in second.stderr
        assert f"pid {first.pid}" in second.stderr and "since 20" in second.stderr
        assert {p.shell_id for p in engine.pipelines} == shells  # the second run opened nothing
        assert steps_sent(engine) == [1, 2]
    finally:
        first.kill()
        first.wait(timeout=30)


def test_the_server_lock_refuses_a_second_run_from_another_workstation(pkg, http_peer, engine, secrets_env,
                                                                       capsys):
    record = {"format": 1, "state": "held", "user": "bob", "workstation": "ws02", "package": "contoso",
              "shell": "1A2B3C4D-0000-4000-8000-000000000001", "since": "2026-11-27T08:00:00.0000000Z",
              "heartbeat": "2026-11-27T08:05:00.0000000Z", "step_timeout": 900, "pid": 4242,
              "process_started": "2026-11-27T07:00:00.0000000Z"}
    seen = json.dumps({"now": "2026-11-27T08:05:30.0000000Z", "record": record})
    engine.when(LOCK, Reply(terminating=ErrorSpec(
        "Another psbridge run holds the lock on this server (C:\\ProgramData\\psbridge\\run.lock): " + seen)))
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert code == 1, out + err
    assert steps_sent(engine) == []
    assert "held by bob on workstation ws02" in out and "since 2026-11-27T08:00:00" in out
    assert "(30 s ago by the server's clock" in out and "wait for it to end" in out
    assert "--force-unlock" not in out  # a live holder: never suggested (issue 20 item 3)
    assert record_events(pkg)[-1]["reason"] == "locked"


def test_force_unlock_closes_the_stale_session_and_is_audited(pkg, log, http_peer, engine, secrets_env, capsys):
    from pypsrp.powershell import RunspacePool
    from pypsrp.wsman import WSMan

    from support.winrm_peer.serverlock import ServerLockModel

    stale_pool = RunspacePool(WSMan("127.0.0.1", port=http_peer.port, username=USER, password=WINRM_PASSWORD,
                                    ssl=False, auth="ntlm", no_proxy=True))
    stale_pool.open()  # a crashed run's session: never closed
    stale = str(stale_pool.id).upper()
    assert stale in http_peer.shell_ids()
    ServerLockModel(http_peer).install(engine).plant(stale, heartbeat_age=3600)  # its heartbeat: an hour old
    code, out, err = run(capsys, run_args(pkg, http_peer, "--force-unlock"))
    assert code == 0, out + err
    assert stale not in http_peer.shell_ids()
    assert steps_sent(engine) == list(range(1, 9))
    unlock = next(e for e in audit_lines(log) if e["outcome"] == "force-unlock")
    assert unlock["details"]["stale_shell"] == stale and unlock["details"]["closed"] is True
    assert any(e["event"] == "force-unlock" for e in record_events(pkg))
    stale_pool.connection.close()


def test_check_takes_no_lock(pkg, http_peer, engine, secrets_env, capsys):
    code, out, err = run(capsys, check_args(pkg, http_peer, "--no-entra"))
    assert code in (0, 1, 5), out + err
    assert not any(s.startswith(LOCK) for s in engine.scripts())
    assert not (pkg / "runs").exists()


# --------------------------------------------------------------------------- where the audit log lives


def test_the_log_lives_beside_the_packages_whatever_the_working_folder(tmp_path, keys, monkeypatch, psbridge):
    monkeypatch.delenv("PSBRIDGE_AUDIT_LOG", raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert psbridge("render", "--example", "--out", "packages").exit_code == 0
    assert psbridge("approve", tmp_path / "packages" / "contoso", "--key", keys["jane"], cwd=elsewhere).exit_code == 0
    result = psbridge("verify", "../packages/contoso", "--trusted-keys", keys["trusted"], cwd=elsewhere)
    assert result.exit_code == 0, result.stderr
    log = tmp_path / "packages" / "audit.jsonl"
    assert [e["action"] for e in audit_lines(log)] == ["render", "approve", "verify"]
    assert not (tmp_path / "output").exists() and not (elsewhere / "output").exists()
    assert f"audit: {log} head " in result.stdout


def test_the_organisation_log_wins_over_the_default(tmp_path, psbridge):
    org = tmp_path / "org" / "audit.jsonl"
    assert psbridge("render", "--example", env={"PSBRIDGE_AUDIT_LOG": str(org)}).exit_code == 0
    assert [e["action"] for e in audit_lines(org)] == ["render"]
    assert not (tmp_path / "output" / "audit.jsonl").exists()


# --------------------------------------------------------------------------- a package without approvals


def test_an_unapproved_run_needs_yes_without_a_terminal(pkg, http_peer, engine, secrets_env, capsys):
    argv = [a for a in run_args(pkg, http_peer) if a != "--yes"]
    code, out, err = run(capsys, argv)
    assert code == 2 and "no terminal to confirm on; pass --yes" in err
    assert "steps that change state: 02 certificate, 06 spn, 07 crm-settings" in out
    assert "approvals: not checked" in out and engine.pipelines == [] and not (pkg / "runs").exists()


def test_an_unapproved_run_asks_and_no_is_no(pkg, http_peer, engine, secrets_env, capsys, monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    code, out, err = run(capsys, [a for a in run_args(pkg, http_peer) if a != "--yes"])
    assert code == 1 and "not confirmed; nothing ran" in err and engine.pipelines == []
    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    code, out, err = run(capsys, [a for a in run_args(pkg, http_peer) if a != "--yes"])
    assert code == 0, out + err
    assert steps_sent(engine) == list(range(1, 9))


def test_a_failed_force_unlock_leaves_no_run_without_an_end(pkg, log, http_peer, engine, secrets_env, capsys):
    engine.when(lambda p: p.script.startswith(LOCK) and p.parameters.get("Inspect"),
                Reply(terminating=ErrorSpec("access denied")))
    code, out, err = run(capsys, run_args(pkg, http_peer, "--force-unlock"))
    assert code == 1 and "could not read the server's lock file" in err
    assert [e["outcome"] for e in audit_lines(log)][-2:] == ["started", "failed"]
    events = record_events(pkg)
    assert events[-1]["event"] == "run-end" and events[-1]["reason"] == "error"
    assert steps_sent(engine) == []


def test_a_file_size_limit_on_the_log_refuses_the_run_and_loses_nothing(pkg, log, http_peer, engine, tmp_path):
    """`ulimit -f`: the start line can't be written whole, so nothing is sent and the log is as it was."""
    before = log.read_bytes()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSBRIDGE_")}
    env.update(PSBRIDGE_WINRM_PASSWORD=WINRM_PASSWORD, PSBRIDGE_PFX_PASSWORD=PFX_PASSWORD,
               PSBRIDGE_O365_PASSWORD=O365_PASSWORD, PSBRIDGE_AUDIT_LOG=str(log))
    limit = len(before) + 64  # room for the run record's first lines, not for a whole audit line

    def small_files() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "psbridge", *run_args(pkg, http_peer)], env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL, preexec_fn=small_files)
    assert proc.returncode in (1, 2), proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert engine.pipelines == [] and http_peer.connections == 0
    assert log.read_bytes() == before  # the failed append was cut back: no torn line, nothing lost
