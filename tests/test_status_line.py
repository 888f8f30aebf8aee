"""The sign of life while a step runs: a status line redrawn each second on a terminal, plain lines elsewhere.

The StatusLine is tested on its own (real threads, short intervals, no timing assertions beyond
"it drew at least twice"), then through `psbridge run` against the loopback peer with a step that
hangs until --step-timeout, and in a real process on a pseudo-terminal stopped by SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from psbridge.cli import main, screen
from psbridge.cli.progress import HumanReporter, StatusLine, elapsed
from psbridge.errors import ExitCode

from support.cli import run_args
from support.lab import O365_PASSWORD, PFX_PASSWORD, WINRM_PASSWORD
from support.winrm_peer import Reply

HANG = "# psbridge step 02/08: certificate"


class Screen:
    """What a reporter wrote, as click.echo would have written it."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def __call__(self, text: str = "", nl: bool = True) -> None:
        self.writes.append(text + ("\n" if nl else ""))

    @property
    def text(self) -> str:
        return "".join(self.writes)


def _until(predicate, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_elapsed_reads_as_a_clock():
    assert [elapsed(s) for s in (0, 0.9, 42, 65, 600, 3723)] == ["0:00", "0:00", "0:42", "1:05", "10:00", "1:02:03"]


def test_on_a_terminal_the_line_is_redrawn_in_place_and_cleared_before_the_result():
    screen = Screen()
    status = StatusLine(screen, live=True, every=0.05)
    status.start("[07/13] crm-settings … ")
    _until(lambda: len(screen.writes) >= 3)
    lead = status.stop()
    drawn = list(screen.writes)
    time.sleep(0.2)
    assert screen.writes == drawn, "the status line drew after the step ended"
    assert all(w.startswith("\r[07/13] crm-settings … 0:0") and "\n" not in w for w in drawn[:-1])
    # cleared over the whole width drawn: the result line starts on an empty line
    assert drawn[-1] == "\r" + " " * (len(drawn[-2]) - 1) + "\r"
    assert lead == "[07/13] crm-settings … "  # the result repeats the step's name


def test_a_status_line_never_wraps(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(100, 24): os.terminal_size((30, 24)))
    screen = Screen()
    status = StatusLine(screen, live=True, every=None)
    status.start("[09/13] additional-servers on crm02.contoso.local … ")
    status.stop()
    assert len(screen.writes[0]) - 1 <= 29  # "\r" + the text, one column short of the terminal


def test_in_a_pipe_a_plain_line_each_interval_then_the_result_on_its_own_line():
    screen = Screen()
    status = StatusLine(screen, live=False, every=0.05)
    status.start("[07/13] crm-settings … ")
    _until(lambda: screen.text.count("still running") >= 2)
    lead = status.stop()
    assert "\r" not in screen.text
    lines = screen.text.splitlines()
    assert lines[0] == "[07/13] crm-settings … still running, 0:00"
    assert lines[1] == "[07/13] crm-settings … still running, 0:00"
    assert lead == "[07/13] crm-settings … "


def test_a_short_step_in_a_pipe_is_one_line_as_before():
    screen = Screen()
    report = HumanReporter(screen, StatusLine(screen, live=False, every=60.0))
    report({"event": "step-start", "index": 7, "total": 13, "id": "crm-settings"})
    report({"event": "step-end", "index": 7, "total": 13, "id": "crm-settings", "state": "ok", "seconds": 1.25})
    assert screen.text == "[07/13] crm-settings … ok 1.2s\n"


def test_a_terminal_run_shows_the_running_step_and_then_its_result(pkg, http_peer, engine, secrets_env, capsys,
                                                                    monkeypatch):
    engine.when(HANG, Reply(hang=True))
    monkeypatch.setattr(screen, "is_terminal", lambda stream=None: True)
    code = main(run_args(pkg, http_peer, "--step-timeout", "2.5"))
    out, err = capsys.readouterr()
    assert code == ExitCode.UNKNOWN, err
    assert "\r[02/08] certificate … 0:00" in out and "\r[02/08] certificate … 0:01" in out
    # after the last redraw the line is cleared (spaces over it), then the whole result line
    assert re.search(r"\r\[02/08\] certificate … 0:0\d\r +\r\[02/08\] certificate … UNKNOWN \d+\.\ds\n", out), out
    assert "\r" not in out.split("certificate … UNKNOWN", 1)[1]  # nothing redrawn after the result
    assert "[01/08] prerequisites … ok " in out  # a short step: its result line, no stray status text


def test_a_run_in_a_pipe_and_with_json_has_no_carriage_returns(pkg, http_peer, engine, secrets_env, capsys):
    engine.when(HANG, Reply(hang=True))
    code = main(run_args(pkg, http_peer, "--step-timeout", "1.5"))
    out, _ = capsys.readouterr()
    assert code == ExitCode.UNKNOWN and "\r" not in out
    assert "[02/08] certificate … UNKNOWN " in out
    code = main(run_args(pkg, http_peer, "--step-timeout", "1.5", "--from-step", "2", "--json"))
    out, _ = capsys.readouterr()
    assert code == ExitCode.UNKNOWN and "\r" not in out
    assert all(json.loads(line)["event"] for line in out.splitlines())


def _read_until(fd: int, needle: bytes, seconds: float = 30.0) -> bytes:
    """What the pseudo-terminal showed until `needle` appeared (or the process closed it)."""
    seen = b""
    deadline = time.monotonic() + seconds
    while needle not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_sigterm_on_a_terminal_still_stops_the_step_and_the_status_line(pkg, http_peer, engine, ntlm_users,
                                                                        tmp_path: Path):
    engine.when(HANG, Reply(hang=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSBRIDGE_")}
    env.update(PSBRIDGE_WINRM_PASSWORD=WINRM_PASSWORD, PSBRIDGE_PFX_PASSWORD=PFX_PASSWORD,
               PSBRIDGE_O365_PASSWORD=O365_PASSWORD, PSBRIDGE_AUDIT_LOG=str(tmp_path / "audit.jsonl"),
               COLUMNS="100", LINES="24")
    env.pop("NO_COLOR", None)
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "psbridge", *run_args(pkg, http_peer)], cwd=tmp_path, env=env,
                            stdin=subprocess.DEVNULL, stdout=child_fd, stderr=subprocess.PIPE)
    os.close(child_fd)
    try:
        shown = _read_until(main_fd, "certificate … 0:01".encode())
        assert "certificate … 0:01".encode() in shown, shown.decode(errors="replace")
        proc.send_signal(signal.SIGTERM)
        shown += _read_until(main_fd, b"audit: ")
        proc.wait(timeout=60)
        shown += _read_until(main_fd, b"\x00", seconds=0.5)
    finally:
        proc.kill()
        os.close(main_fd)
        proc.stderr.close()  # type: ignore[union-attr]
    text = shown.decode(errors="replace")
    assert proc.returncode == ExitCode.UNKNOWN, text
    # the step was stopped on the server, as without a status line (the server lock's release follows it)
    assert [p for p in engine.pipelines if p.script.startswith("# psbridge step ")][-1].stopped
    result = text.index("[02/08] certificate … ")
    tail = text[text.index("UNKNOWN", result):]
    assert "\r[02/08]" not in tail  # the status line stopped before the result
