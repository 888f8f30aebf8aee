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
lock and the pure reading of the server lock's record (`ServerLockReading`: JSON that lock.ps1
writes, one format for the run that is refused and for --force-unlock); the session that sends
lock.ps1 is in remote/serverlock.py.
"""

from __future__ import annotations

import json
import math
import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

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


def server_lock_parameters(shell_id: str, step_timeout: float) -> dict[str, object]:
    """lock.ps1's parameters: who takes the server's lock, from where, in which session, with which step timeout.

    They reach PowerShell as parameters, and lock.ps1 writes them with ConvertTo-Json: no text of
    the operator's (such as `$USER`) is ever spliced into the record, so it cannot forge a field.
    """
    return {"User": _user(), "Workstation": socket.gethostname(), "ShellId": shell_id,
            "StepTimeout": max(1, math.ceil(step_timeout))}


#: A live run's heartbeat can lag by one pipeline (at most the step timeout) plus this many seconds: the
#: keeper's interval (60 s), stopping a timed-out pipeline (WinRM's operation timeout) and the round trips.
STALE_MARGIN_SECONDS = 300
#: How far the server's clock may step back (a time sync) between a heartbeat and a reading.
CLOCK_STEP_SECONDS = 60
_GUID = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
_Text = Annotated[str, Field(max_length=256)]


class ServerHolder(BaseModel):
    """The record lock.ps1 writes in %ProgramData%\\psbridge\\run.lock (JSON; one format for run and --force-unlock)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    format: Literal[1]
    state: Literal["held", "released"]
    user: _Text
    workstation: _Text
    package: _Text
    shell: Annotated[str, Field(pattern=_GUID)]
    #: lock.ps1 writes UTC with its `Z`; a time without an offset cannot be compared with `now` (refused).
    since: AwareDatetime
    heartbeat: AwareDatetime
    step_timeout: Annotated[int, Field(ge=1, le=10_000_000)]
    pid: Annotated[int, Field(ge=0, le=2**32)]
    process_started: _Text

    @property
    def stale_after(self) -> timedelta:
        """How old its heartbeat must be before psbridge calls the holder stale: its step timeout + the margin."""
        return timedelta(seconds=self.step_timeout + STALE_MARGIN_SECONDS)


class ServerLockReading(BaseModel):
    """What lock.ps1 prints (-Inspect) or names in a refusal: the server's time now and the record, if any."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    now: AwareDatetime
    record: ServerHolder | None

    @model_validator(mode="after")
    def _not_from_the_future(self) -> ServerLockReading:
        """lock.ps1 writes `heartbeat` and `now` from the same server clock: a heartbeat later than `now`
        (beyond a clock step) was not written by a run; taken as read it kept the holder alive forever."""
        record = self.record
        if record is not None and record.heartbeat - self.now > timedelta(seconds=CLOCK_STEP_SECONDS):
            raise ValueError(f"its heartbeat {record.heartbeat.isoformat()} is later than the server's time now "
                             f"{self.now.isoformat()}")
        return self

    @classmethod
    def parse(cls, text: str, where: str) -> ServerLockReading:
        """Read the server's answer; anything psbridge did not write is refused in one line naming `where`."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first.get("loc", ())) or "the record"
            raise UserError(f"{where}: the server's lock record is not one psbridge writes ({field}: "
                            f"{first.get('msg', 'invalid')}); nothing was closed") from None

    @property
    def holder(self) -> ServerHolder | None:
        """The record when it says a run holds the lock (a released record names no holder)."""
        return self.record if self.record is not None and self.record.state == "held" else None

    def heartbeat_age(self) -> timedelta | None:
        """How long ago, by the server's clock, the holder last showed it is alive."""
        holder = self.holder
        return None if holder is None else self.now - holder.heartbeat

    def stale(self) -> bool:
        """The holder's heartbeat is older than its stated bound (its step timeout + STALE_MARGIN_SECONDS)."""
        holder, age = self.holder, self.heartbeat_age()
        return holder is not None and age is not None and age > holder.stale_after

    def describe(self) -> list[str]:
        """Who holds it, from which workstation, since when, last heartbeat: one escaped line each."""
        from .text import printable

        holder, age = self.holder, self.heartbeat_age()
        if holder is None or age is None:
            return ["no run holds the server's lock"]
        seconds = int(age.total_seconds())
        return [printable(line) for line in (
            f"held by {holder.user} on workstation {holder.workstation} (package {holder.package})",
            f"session {holder.shell}, server process {holder.pid}",
            f"since {holder.since.isoformat()}",
            f"last heartbeat {holder.heartbeat.isoformat()} ({seconds} s ago by the server's clock; stale after "
            f"{int(holder.stale_after.total_seconds())} s: its step timeout {holder.step_timeout} s + "
            f"{STALE_MARGIN_SECONDS} s)")]
