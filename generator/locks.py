"""One run at a time: the workstation's lock on a package, and what the server's lock says.

Two `psbridge run`s of one package started a second apart used to interleave their steps
on the server (02, 02, 03, 03, …). Like Terraform's state lock, a run now holds two locks
for its whole length:

* on the workstation, `PKG/runs/.lock` (an evidence folder, outside the digest), held with
  `flock` so that it is released by the operating system if psbridge dies;
* on the server, `%ProgramData%\\psbridge\\run.lock`, held open by the package's reviewed
  lock.ps1 in the run's own session (see the template), so that a run from another
  workstation refuses too.

`psbridge check` takes neither: it changes nothing. This module holds the workstation
lock and the pure reading of the server lock's answer; the session that sends lock.ps1 is
in remote.py.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from .clock import stamp
from .errors import RuntimeFailure, UserError

LOCK_NAME = ".lock"


class RunLocked(RuntimeFailure):
    """Another run holds the lock (exit 1); the message names who and since when."""


class WorkstationLock:
    """`PKG/runs/.lock`, held with an exclusive flock from `acquire` until `release`."""

    def __init__(self, package_dir: Path) -> None:
        self.path = package_dir / "runs" / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, **facts: Any) -> None:
        """Take the lock or raise RunLocked naming the holder; write who holds it into the file."""
        import fcntl

        runs = self.path.parent
        if runs.is_symlink() or (runs.exists() and not runs.is_dir()):
            raise UserError(f"{runs}: exists and is not a folder; run records live in a folder of that name")
        try:
            runs.mkdir(mode=0o700, exist_ok=True)
            # O_NONBLOCK: a FIFO planted as the lock never blocks the open; it is refused just below
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
        except OSError as exc:
            raise UserError(f"{self.path}: cannot open the run lock ({exc.strerror or exc})") from None
        _require_regular(fd, self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(os.read(fd, 4096))
            os.close(fd)
            raise RunLocked(f"{self.path}: another psbridge run of this package is in progress ({holder}); "
                            "wait for it to end") from None
        info = {"user": _user(), "host": socket.gethostname(), "pid": os.getpid(), "since": stamp(), **facts}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info, ensure_ascii=False) + "\n").encode("utf-8"), 0)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (the file stays: it is the last holder's note, like Terraform's)."""
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def _require_regular(fd: int, path: Path) -> None:
    """Refuse (and close) a lock that is not a regular file: a FIFO or device can't be truncated or hold a note."""
    import stat

    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else \
            "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
        raise UserError(f"{path}: the run lock is {kind}, not a regular file; remove it and run again")


def describe_holder(data: bytes) -> str:
    """`user jane on ws01, pid 4242, since …` from the lock file's content, or a neutral phrase."""
    from .text import printable

    try:
        info = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "holder unknown"
    if not isinstance(info, dict):
        return "holder unknown"
    parts = [f"user {info.get('user')}", f"on {info.get('host')}", f"pid {info.get('pid')}",
             f"since {info.get('since')}"]
    return printable(", ".join(parts))


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def holder_for_server() -> str:
    """What the server's lock file says holds it: `user@workstation` (no secret)."""
    return f"{_user()}@{socket.gethostname()}"


def shell_of(lock_text: str) -> str | None:
    """The shell id recorded in the server's lock file (`…; shell=<id>; …`), for --force-unlock."""
    for part in lock_text.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "shell" and value.strip():
            return value.strip()
    return None
