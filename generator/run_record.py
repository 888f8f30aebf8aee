"""The run record's one schema: every event a run or a rollback writes, typed, and the record file.

`psbridge run` and `psbridge rollback` report what happens as events: the same objects go to
the operator's screen (`--json` prints them) and, one JSON line each, into
PACKAGE/runs/<UTC time>.jsonl. The models here are that schema, used both to write a record
and to read one back (`rollback`, `report`): nothing else builds or parses an event.

The record is flushed after every event, so a run killed half way still leaves the evidence
of what was sent, and it keeps a running sha256 of exactly the bytes it appended through its
own file descriptor: that hash, not a later read of the file by path, is what the audit log's
end line vouches for.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .clock import file_stamp, stamp
from .errors import RuntimeFailure, UserError

#: Keys left out of an event's JSON while they are None: the main server's events carry no host.
_OMIT_WHEN_NONE = frozenset({"host", "for_step", "sha256"})


def event_time() -> str:
    """Event times: UTC with milliseconds."""
    return stamp(digits=3)


class _Event(BaseModel):
    """Common to every event: a kind, and (on an additional server) the host it happened on."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    def data(self) -> dict[str, Any]:
        """The event as the record and `--json` hold it (None-valued optional keys left out)."""
        out = self.model_dump(mode="json")
        for key in _OMIT_WHEN_NONE:
            if key in out and out[key] is None:
                del out[key]
        if "host" in out:  # the host comes last, as it was added to the event where it happened
            out["host"] = out.pop("host")
        return out


class ErrorRecord(BaseModel):
    """An error record as the operator needs it: message, category, where in the script."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    message: str
    category: str = ""
    line: int | None = None
    position: str = ""


class RunStart(_Event):
    event: Literal["run-start"] = "run-start"
    started: str
    tool_version: str
    package: str
    package_digest: str
    host: str | None = None
    port: int | None = None
    transport: str | None = None
    auth: str | None = None
    user: str | None = None
    o365_user: str | None = None
    configuration_name: str | None = None
    from_step: int | None = None
    #: A rollback's run: the record it backs out, and that record's sha256.
    rollback_of: str | None = None
    rollback_of_sha256: str | None = None
    steps: list[int | str] = Field(default_factory=list)
    servers: list[str] = Field(default_factory=list)
    record: str = ""

    def data(self) -> dict[str, Any]:
        out = super().data()
        kind = ("rollback_of", "rollback_of_sha256") if self.rollback_of is not None else (
            "o365_user", "configuration_name", "from_step", "servers")
        drop = {"o365_user", "configuration_name", "from_step", "servers", "rollback_of", "rollback_of_sha256"}
        return {k: v for k, v in out.items() if k not in drop or k in kind}


class ApprovalEvent(_Event):
    event: Literal["approval"] = "approval"
    digest: str
    approvals: list[dict[str, Any]] = Field(default_factory=list)


class StepStart(_Event):
    event: Literal["step-start"] = "step-start"
    index: int
    total: int
    id: str
    title: str
    sha256: str | None = None
    started: str
    host: str | None = None


class StepEnd(_Event):
    event: Literal["step-end"] = "step-end"
    total: int
    title: str
    index: int
    id: str
    sha256: str | None = None
    started: str = ""
    ended: str = ""
    seconds: float = 0.0
    output: list[str] = Field(default_factory=list)
    errors: list[ErrorRecord] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    information: list[str] = Field(default_factory=list)
    detail: str = ""
    state: Literal["ok", "failed", "unknown", "skipped"]
    #: A rollback's back-out script: the step of the package it undoes.
    for_step: int | None = None
    host: str | None = None


class StateEvent(_Event):
    """The probes' readings right before (and after) a state-changing step: what rollback restores."""

    event: Literal["state"] = "state"
    when: Literal["before", "after"]
    index: int
    id: str
    readings: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    host: str | None = None


class LockEvent(_Event):
    event: Literal["lock"] = "lock"
    state: str
    output: list[str] = Field(default_factory=list)
    host: str | None = None


class VerifyEvent(_Event):
    """`run --verify`: check's report after the last step (or why it was skipped)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    event: Literal["verify"] = "verify"


class FarmGate(_Event):
    event: Literal["farm-gate"] = "farm-gate"
    servers: list[str] = Field(default_factory=list)
    certificate: str | None = None
    ready: bool
    problems: list[str] = Field(default_factory=list)


class ForceUnlock(_Event):
    """`run --force-unlock`: the holder record read from the server (as lock.ps1 wrote it), how old its
    heartbeat was by the server's clock, and whether its session was closed."""

    event: Literal["force-unlock"] = "force-unlock"
    holder: dict[str, Any] | None = None
    heartbeat_age_seconds: float | None = None
    stale_shell: str | None = None
    closed: bool = False
    host: str | None = None


class RunQuit(_Event):
    event: Literal["run-quit"] = "run-quit"
    index: int
    id: str
    host: str | None = None


class RunEnd(_Event):
    event: Literal["run-end"] = "run-end"
    exit_code: int
    ended: str
    stopped_at: int | None = None
    reason: str
    summary: list[str] = Field(default_factory=list)


RunEvent = Annotated[
    Union[RunStart, ApprovalEvent, StepStart, StepEnd, StateEvent, LockEvent, VerifyEvent, FarmGate, ForceUnlock,
          RunQuit, RunEnd],
    Field(discriminator="event"),
]
_EVENT: TypeAdapter[Any] = TypeAdapter(RunEvent)


def parse_event(value: object) -> RunEvent:
    """One event read back from a record; ValueError (one line) when it is not one of the schema's."""
    try:
        return _EVENT.validate_python(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "event"
        raise ValueError(f"{where}: {first['msg']}") from None


def read_events(data: bytes, label: str) -> list[RunEvent]:
    """Every event of a run record's bytes, validated; UserError naming the line that is not one."""
    events: list[RunEvent] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            events.append(parse_event(json.loads(raw.decode("utf-8"))))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise UserError(f"{label}: line {number}: not a run event ({exc})") from None
    return events


class RunRecord:
    """PACKAGE/runs/<UTC time>.jsonl, mode 0600, one event per line, flushed as it goes.

    Created with O_EXCL so two runs never share a file. `sha256` is the running hash of the
    bytes written through this object's own descriptor: what the audit log vouches for.
    """

    def __init__(self, package_dir: Path) -> None:
        runs = package_dir / "runs"
        if runs.is_symlink() or (runs.exists() and not runs.is_dir()):
            raise UserError(f"{runs}: exists and is not a folder; run records live in a folder of that name")
        try:
            runs.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{runs}: cannot create ({exc.strerror or exc}); the run could not be recorded") from None
        self.path, fd = self._create(runs, file_stamp())
        os.fchmod(fd, 0o600)
        self._file: TextIO = os.fdopen(fd, "w", encoding="utf-8")
        self._hash = hashlib.sha256()

    @staticmethod
    def _create(runs: Path, name: str) -> tuple[Path, int]:
        for n in range(100):
            candidate = runs / (f"{name}.jsonl" if n == 0 else f"{name}-{n}.jsonl")
            try:
                return candidate, os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                continue
            except OSError as exc:
                raise UserError(f"{candidate}: cannot create ({exc.strerror or exc}); "
                                "the run could not be recorded") from None
        raise UserError(f"{runs}: cannot create a run record")  # pragma: no cover - 100 runs in one microsecond

    @property
    def sha256(self) -> str:
        """The sha256 of every byte this record has written so far."""
        return self._hash.hexdigest()

    def write(self, event: Mapping[str, Any]) -> None:
        """Append one event; a record that can't be written stops the run before its next step."""
        line = json.dumps(event, ensure_ascii=False, sort_keys=False) + "\n"
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as exc:
            raise RuntimeFailure(f"{self.path}: cannot write the run record ({exc.strerror or exc}); "
                                 "the run stops here") from None
        self._hash.update(line.encode("utf-8"))

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # a failed flush was reported by write
