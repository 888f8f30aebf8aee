"""What templates/lock.ps1.j2 does on the server, modelled where psbridge's decisions depend on it.

Not PowerShell: the PowerShell side (ACL, owner and reparse checks, ConvertTo-Json, the release)
is asserted on the parsed template in tests/test_server_lock.py. This model keeps the one thing
those decisions read: the lock file's holder record (the same JSON lock.ps1 writes, built from
the pipeline's parameters as lock.ps1 builds it, never from concatenated text) and which shell
has the file open. A shell that is gone from the peer no longer holds the file (WinRM ended its
process, and with it the open handle). Time is the model's `now`, which tests move.

- take (no switch): refused with lock.ps1's message and the live holder's record while another
  open shell holds the file; otherwise this shell holds it and its record is written;
- -Heartbeat / -Release: only the holding shell; heartbeat = now; release writes state "released"
  and closes the file;
- -Inspect: one JSON line {"now", "record"}.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from .engine import Engine, ErrorSpec, RecordedPipeline, Reply

LOCK = "# psbridge lock:"
LOCK_PATH = "C:\\ProgramData\\psbridge\\run.lock"


class HasShells(Protocol):
    def shell_ids(self) -> set[str]: ...


def iso(moment: datetime) -> str:
    """The round-trip form lock.ps1 writes ([DateTime]::UtcNow.ToString('o')): 7 fractional digits, Z."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


class ServerLockModel:
    """One server's run.lock as lock.ps1 keeps it; `install` answers every lock.ps1 pipeline of `engine`."""

    def __init__(self, peer: HasShells, package: str = "contoso") -> None:
        self.peer = peer
        self.package = package
        self.now = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
        self.record: dict[str, Any] | None = None
        self.open_by: str | None = None
        self.calls: list[str] = []  # "take" | "heartbeat" | "release" | "inspect", in order

    def install(self, engine: Engine) -> ServerLockModel:
        engine.when(lambda p: p.script.startswith(LOCK), self.respond)
        return self

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def plant(self, shell: str, *, heartbeat_age: float, step_timeout: int = 900, user: str = "bob",
              workstation: str = "ws02") -> dict[str, Any]:
        """A holder that took the lock earlier (a crashed or a live run), its file still open in `shell`."""
        beat = self.now - timedelta(seconds=heartbeat_age)
        self.record = {"format": 1, "state": "held", "user": user, "workstation": workstation,
                       "package": self.package, "shell": shell.upper(), "since": iso(beat - timedelta(hours=1)),
                       "heartbeat": iso(beat), "step_timeout": step_timeout, "pid": 4242,
                       "process_started": iso(beat - timedelta(hours=2))}
        self.open_by = shell.upper()
        return self.record

    def _holder_open(self) -> bool:
        return self.open_by is not None and self.open_by in self.peer.shell_ids()

    def respond(self, pipeline: RecordedPipeline) -> Reply:
        params = pipeline.parameters
        shell = pipeline.shell_id.upper()
        if params.get("Inspect"):
            self.calls.append("inspect")
            return Reply(output=[json.dumps({"now": iso(self.now), "record": self.record})])
        if params.get("Heartbeat") or params.get("Release"):
            return self._beat(shell, release=bool(params.get("Release")))
        self.calls.append("take")
        if self._holder_open() and self.open_by != shell:
            if self.record is not None and self.record.get("state") == "held":
                seen = json.dumps({"now": iso(self.now), "record": self.record})
                return Reply(terminating=ErrorSpec(
                    f"Another psbridge run holds the lock on this server ({LOCK_PATH}): {seen}"))
            return Reply(terminating=ErrorSpec(f"Another process has the psbridge lock file open ({LOCK_PATH}) but "
                                               "no live psbridge run is recorded in it"))
        self.open_by = shell
        self.record = {"format": 1, "state": "held", "user": params["User"], "workstation": params["Workstation"],
                       "package": self.package, "shell": params["ShellId"], "since": iso(self.now),
                       "heartbeat": iso(self.now), "step_timeout": params["StepTimeout"], "pid": 5151,
                       "process_started": iso(self.now)}
        return Reply(output=[f"locked: {LOCK_PATH}"])

    def _beat(self, shell: str, *, release: bool) -> Reply:
        self.calls.append("release" if release else "heartbeat")
        if self.open_by != shell or self.record is None:
            return Reply(terminating=ErrorSpec(f"psbridge lock: this session does not hold the run lock ({LOCK_PATH})"))
        self.record["heartbeat"] = iso(self.now)
        if release:
            self.record["state"] = "released"
            self.open_by = None
            return Reply(output=[f"released: {LOCK_PATH}"])
        return Reply()
