"""SIGTERM and SIGHUP (a dropped SSH session) stop a run as Ctrl-C does, in a real process.

The step that is running is stopped on the server and reported UNKNOWN, the run record and the
audit log say how the run ended, and the workstation lock is released; a command stopped between
steps exits 128 + the signal (143, 129), as shells report it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from psbridge.errors import ExitCode
from psbridge.locks import WorkstationLock

from support.cli import run_args
from support.lab import O365_PASSWORD, PFX_PASSWORD, WINRM_PASSWORD
from support.winrm_peer import Reply


def _wait_for(predicate, seconds: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_a_step_stops_it_records_the_end_and_releases_the_lock(sig, pkg, http_peer, engine,
                                                                              ntlm_users, tmp_path):
    engine.when("# psbridge step 02/08: certificate", Reply(hang=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSBRIDGE_")}
    env.update(PSBRIDGE_WINRM_PASSWORD=WINRM_PASSWORD, PSBRIDGE_PFX_PASSWORD=PFX_PASSWORD,
               PSBRIDGE_O365_PASSWORD=O365_PASSWORD, PSBRIDGE_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    proc = subprocess.Popen([sys.executable, "-m", "psbridge", *run_args(pkg, http_peer)], cwd=tmp_path, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: any(p.script.startswith("# psbridge step 02/08") for p in engine.pipelines))
        time.sleep(1.0)  # the step is sent and psbridge is waiting for it (as test_run's Ctrl-C test waits)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == ExitCode.UNKNOWN, out + err  # the step may have run: UNKNOWN, as for Ctrl-C
    # the hanging step was stopped on the server (the lock's release follows it)
    assert [p for p in engine.pipelines if p.script.startswith("# psbridge step ")][-1].stopped
    [record] = (pkg / "runs").glob("*.jsonl")
    events = [json.loads(line) for line in record.read_text().splitlines()]
    assert events[-1]["event"] == "run-end" and events[-1]["exit_code"] == 4
    assert [e["state"] for e in events if e["event"] == "step-end"][-1] == "unknown"
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [line["outcome"] for line in audit if line["action"] == "run"] == ["started", "unknown"]
    lock = WorkstationLock(pkg)
    lock.acquire(package="contoso")  # free again: the stopped run released it
    lock.release()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, ExitCode.TERMINATED), (signal.SIGHUP, ExitCode.HANGUP)])
def test_a_signal_outside_a_step_exits_128_plus_the_signal(sig, code, tmp_path: Path) -> None:
    """A command stopped while it waits (here: a command that sleeps, standing for a prompt) exits 128 + the
    signal, with one line and no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSBRIDGE_")}
    env["PSBRIDGE_AUDIT_LOG"] = str(tmp_path / "audit.jsonl")
    script = ("import os, sys, threading, time\n"
              "from psbridge.cli import main, packages\n"
              "def waits(*args, **kwargs):\n"
              f"    threading.Timer(0.3, os.kill, (os.getpid(), {int(sig)})).start()\n"
              "    time.sleep(10)\n"
              "packages.validate.callback = waits\n"
              "sys.exit(main(['validate', 'x.toml']))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.strip() == "psbridge: interrupted" and "Traceback" not in proc.stderr
