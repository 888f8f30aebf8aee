"""psbridge.locks: one run of a package at a time on a workstation, and reading the server lock's note."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from psbridge.errors import UserError
from psbridge.locks import RunLocked, WorkstationLock, describe_holder, server_lock_parameters

#: A second process that tries the package's lock: prints LOCKED and the message, or TAKEN (and holds it
#: until its stdin closes when HOLD is passed).
CHILD = """
import sys
from pathlib import Path
from psbridge.locks import RunLocked, WorkstationLock
lock = WorkstationLock(Path(sys.argv[1]))
try:
    lock.acquire(command="run")
except RunLocked as exc:
    print("LOCKED", exc, flush=True)
    sys.exit(0)
print("TAKEN", flush=True)
if sys.argv[2:] == ["HOLD"]:
    sys.stdin.read()
"""


def other_process(package: Path, *extra: str) -> str:
    """What a second psbridge process gets when it tries the lock (it exits without releasing)."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(package), *extra], capture_output=True, text=True,
                          timeout=60, input="")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_a_second_process_is_refused_while_the_lock_is_held_and_gets_it_after_release(tmp_path: Path) -> None:
    lock = WorkstationLock(tmp_path)
    lock.acquire(command="run")
    try:
        answer = other_process(tmp_path)
        assert answer.startswith("LOCKED ")
        assert "another psbridge run of this package is in progress" in answer
        assert f"pid {os.getpid()}" in answer and f"on {socket.gethostname()}" in answer
        assert str(tmp_path / "runs" / ".lock") in answer
    finally:
        lock.release()
    assert other_process(tmp_path) == "TAKEN"


def test_the_lock_is_released_when_its_process_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), "HOLD"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "TAKEN"
        with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
            WorkstationLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait(timeout=30)
    lock = WorkstationLock(tmp_path)
    lock.acquire()  # the operating system released the dead holder's flock
    lock.release()


def test_two_locks_in_one_process_exclude_each_other(tmp_path: Path) -> None:
    first = WorkstationLock(tmp_path)
    first.acquire()
    with pytest.raises(RunLocked):
        WorkstationLock(tmp_path).acquire()
    first.release()
    second = WorkstationLock(tmp_path)
    second.acquire()
    second.release()


def test_the_lock_file_names_its_holder_privately(tmp_path: Path) -> None:
    lock = WorkstationLock(tmp_path)
    lock.acquire(command="run", steps="01-08")
    try:
        info = json.loads(lock.path.read_text(encoding="utf-8"))
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        assert info["command"] == "run" and info["steps"] == "01-08"
        assert info["user"] and info["since"]
        assert stat.S_IMODE(lock.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(lock.path.parent.stat().st_mode) == 0o700
    finally:
        lock.release()


def test_release_keeps_the_note_and_may_be_called_twice(tmp_path: Path) -> None:
    lock = WorkstationLock(tmp_path)
    lock.acquire()
    lock.release()
    lock.release()
    assert json.loads(lock.path.read_text(encoding="utf-8"))["pid"] == os.getpid()


def test_a_longer_note_is_replaced_not_appended_to(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / ".lock").write_text("x" * 4000, encoding="utf-8")
    lock = WorkstationLock(tmp_path)
    lock.acquire()
    lock.release()
    assert json.loads(lock.path.read_text(encoding="utf-8"))["pid"] == os.getpid()


@pytest.mark.parametrize("make", ["file", "link"])
def test_runs_that_is_not_a_folder_is_a_one_line_error(tmp_path: Path, make: str) -> None:
    runs = tmp_path / "runs"
    if make == "file":
        runs.write_text("not a folder")
    else:
        (tmp_path / "elsewhere").mkdir()
        runs.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError) as caught:
        WorkstationLock(tmp_path).acquire()
    assert caught.value.problems == (f"{runs}: exists and is not a folder; run records live in a folder of that name",)
    assert not (tmp_path / "elsewhere" / ".lock").exists()


def test_a_lock_file_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "target").write_text("keep")
    (tmp_path / "runs" / ".lock").symlink_to(tmp_path / "target")
    with pytest.raises(UserError, match="cannot open the run lock"):
        WorkstationLock(tmp_path).acquire()
    assert (tmp_path / "target").read_text() == "keep"


# --------------------------------------------------------------------------- describe_holder, the server's parameters


def test_describe_holder_names_user_host_pid_and_since() -> None:
    note = json.dumps({"user": "jane", "host": "ws01", "pid": 4242, "since": "2026-06-01T10:00:00Z", "command": "run"})
    assert describe_holder(note.encode()) == "user jane, on ws01, pid 4242, since 2026-06-01T10:00:00Z"


@pytest.mark.parametrize("garbage", [b"", b"\xff\xfe", b"not json", b"[1, 2]", b"null", b"42", b'"jane"',
                                     b"[" * 100_000 + b"]" * 100_000])
def test_describe_holder_on_garbage_is_a_neutral_phrase(garbage: bytes) -> None:
    assert describe_holder(garbage) == "holder unknown"


def test_describe_holder_escapes_what_could_rewrite_the_terminal() -> None:
    note = json.dumps({"user": "evil\x1b[2J\rroot", "host": "ws\u202e01", "pid": 1, "since": "x\ny"})
    shown = describe_holder(note.encode())
    assert "\x1b" not in shown and "\r" not in shown and "\n" not in shown and "\u202e" not in shown
    assert "evil\\x1b[2J\\rroot" in shown


def test_describe_holder_of_a_note_without_fields_says_none() -> None:
    assert describe_holder(b"{}") == "user None, on None, pid None, since None"


def test_server_lock_parameters_are_separate_values_never_one_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """lock.ps1 gets who, from where, which session and the step timeout as parameters (issue 20 item 3:
    a `holder=...; shell=...` text built from $USER let `USER='m; shell=VICTIM; x'` name another shell)."""
    monkeypatch.setenv("USER", "m; shell=VICTIM; x")
    monkeypatch.setenv("LOGNAME", "m; shell=VICTIM; x")
    params = server_lock_parameters("6F9A11B2-0000-4000-8000-000000000001", 899.5)
    assert params == {"User": "m; shell=VICTIM; x", "Workstation": socket.gethostname(),
                      "ShellId": "6F9A11B2-0000-4000-8000-000000000001", "StepTimeout": 900}
