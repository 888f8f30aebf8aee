"""The audit log: one JSON line per render, approve, verify and run, chained by hashes.

Each line is a JSON object with, in this order: ``time`` (UTC, ISO 8601 Z), ``action``,
``package`` (name), ``digest`` (package digest or null), ``actor`` (OS user), ``outcome``,
``details`` (object), ``prev`` (sha256 hex of the previous line's bytes without its
newline; 64 zeros for the first line) and ``sha256`` (sha256 hex of the line's own
canonical JSON without the ``sha256`` field). Deleting, inserting, reordering or editing
any line breaks the chain at that line; removing lines from the *end* is only detected
when the verifier knows an earlier head (`verify(..., expected_head=...)`), because a
shorter chain is still a chain.

Writers take an exclusive `fcntl.flock` on the log for read-last-line + append, so two
psbridge processes never interleave or lose lines. The file is created 0600. Nothing
that looks like a secret may be put in `details` (checked, see `_refuse_secrets`).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import RuntimeFailure, UserError

DEFAULT_AUDIT_LOG = Path("output") / "audit.jsonl"
GENESIS = "0" * 64
FIELDS = ("time", "action", "package", "digest", "actor", "outcome", "details", "prev", "sha256")
#: Detail keys that would carry a secret; refused so a careless caller fails loudly in tests.
_SECRET_WORDS = ("password", "passphrase", "secret", "credential", "private_key", "token")
_CHUNK = 4096

#: One organisation-wide audit log, when set.
AUDIT_LOG_ENV = "PSBRIDGE_AUDIT_LOG"


def resolve_log(explicit: Path | None, *, near: Path | None) -> Path:
    """Which audit log a command writes: `--audit-log`, else PSBRIDGE_AUDIT_LOG, else beside the packages.

    `near` is the folder that holds the packages the command acts on (`--out` for render,
    the parent of PACKAGE_DIR otherwise), so the log does not depend on the working
    directory and every command about a package writes to the same log.
    """
    if explicit is not None:
        return explicit
    env = os.environ.get(AUDIT_LOG_ENV)
    if env:
        return Path(env)
    return (near / "audit.jsonl") if near is not None else DEFAULT_AUDIT_LOG


def os_user() -> str:
    """Who ran the command, as the operating system knows them; the actor of every line."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers): fall back to the numeric id
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def canonical(entry: Mapping[str, Any]) -> bytes:
    """Sorted-key, compact, ASCII JSON: the bytes a line's own `sha256` is taken over."""
    return json.dumps(dict(entry), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _refuse_secrets(details: Mapping[str, Any], where: str = "details") -> None:
    """Fail (ValueError, a programming error) when a detail key names a secret, at any depth."""
    for key, value in details.items():
        lowered = str(key).lower()
        if any(word in lowered for word in _SECRET_WORDS):
            raise ValueError(f"audit {where}.{key}: secrets are never logged")
        if isinstance(value, Mapping):
            _refuse_secrets(value, f"{where}.{key}")


def build_entry(
    action: str, package: str | None, digest: str | None, actor: str | None, outcome: str,
    details: Mapping[str, Any], prev: str, *, now: datetime | None = None,
) -> dict[str, Any]:
    """The line as a dict, its own hash last; separated from I/O so the format is testable."""
    _refuse_secrets(details)
    entry: dict[str, Any] = {
        "time": (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "action": action,
        "package": package,
        "digest": digest,
        "actor": actor or os_user(),
        "outcome": outcome,
        "details": dict(details),
        "prev": prev,
    }
    entry["sha256"] = hashlib.sha256(canonical(entry)).hexdigest()
    return entry


def _last_line(fd: int) -> bytes | None:
    """The last line of the open log (without newline), read backwards so big logs stay cheap.

    Raises RuntimeFailure when the log does not end with a newline: a torn or edited tail
    must be looked at (`psbridge audit verify`), not silently chained onto.
    """
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0:
        return None
    tail = b""
    position = size
    while position > 0:
        step = min(_CHUNK, position)
        position -= step
        os.lseek(fd, position, os.SEEK_SET)
        tail = os.read(fd, step) + tail
        if tail.count(b"\n") >= 2 or position == 0:
            break
    if not tail.endswith(b"\n"):
        raise RuntimeFailure("audit log does not end with a complete line; check it with `psbridge audit verify`")
    return tail[:-1].rsplit(b"\n", 1)[-1]


def append(
    log_path: Path | str,
    action: str,
    package: str | None,
    digest: str | None,
    actor: str | None,
    outcome: str,
    **details: Any,
) -> dict[str, Any]:
    """Append one chained line under an exclusive lock and return it.

    The lock covers reading the previous line and writing the new one, so concurrent
    writers form one chain. The line is written with a single write(2) on an O_APPEND
    descriptor and fsynced before the lock is released.
    """
    import fcntl

    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise RuntimeFailure(f"audit log {path}: cannot open ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        last = _last_line(fd)
        prev = GENESIS if last is None else hashlib.sha256(last).hexdigest()
        entry = build_entry(action, package, digest, actor, outcome, details, prev)
        line = json.dumps(entry, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"
        written = os.write(fd, line)
        if written != len(line):
            raise RuntimeFailure(f"audit log {path}: short write")
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock
    return entry


def record(
    log_path: Path | str,
    action: str,
    package: Any,
    outcome: str,
    *,
    actor: str | None = None,
    **details: Any,
) -> dict[str, Any]:
    """Append a line for an action on a package (a `package.Package`, read once) or on none.

    The name and digest come from the package object the command judged, never from a
    second read of the folder.
    """
    name = package.name if package is not None else None
    digest = package.digest if package is not None else None
    return append(log_path, action, name, digest, actor, outcome, **details)


@dataclass(frozen=True)
class AuditCheck:
    """Result of `verify`: good_lines before the first broken one (1-based `broken_line`), or all."""

    ok: bool
    good_lines: int
    broken_line: int | None = None
    problem: str | None = None
    head: str | None = None


def _check_line(raw: bytes, number: int, prev: str) -> str | None:
    """Why line `number` is broken, or None: parseable, all fields, own hash right, chained to prev."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return "not valid JSON"
    if not isinstance(entry, dict) or tuple(entry) != FIELDS:
        return "not an audit entry (fields missing, extra or out of order)"
    claimed = entry.pop("sha256")
    if hashlib.sha256(canonical(entry)).hexdigest() != claimed:
        return "content does not match its sha256 (line edited)"
    if entry["prev"] != prev:
        what = "the genesis value" if number == 1 else f"line {number - 1}"
        return f"prev does not match {what} (a line was deleted, inserted or reordered)"
    return None


def verify(log_path: Path | str, expected_head: str | None = None) -> AuditCheck:
    """Walk the chain from the first line; stop at the first broken one.

    `expected_head` is a line hash recorded earlier (printed by `psbridge audit verify`);
    if given, it must be one of the lines' hashes, which detects lines cut off the end.
    """
    path = Path(log_path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: audit log not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    elif data:
        return AuditCheck(False, len(lines) - 1, len(lines), "incomplete last line (no newline)")
    prev, seen = GENESIS, {GENESIS}
    for number, raw in enumerate(lines, start=1):
        problem = _check_line(raw, number, prev)
        if problem:
            return AuditCheck(False, number - 1, number, problem)
        prev = hashlib.sha256(raw).hexdigest()
        seen.add(prev)
    if expected_head is not None and expected_head.lower() not in seen:
        return AuditCheck(False, len(lines), len(lines) + 1, f"head {expected_head} is not in the log (lines removed from the end?)")
    return AuditCheck(True, len(lines), head=prev)


def head_of(entry: Mapping[str, Any]) -> str:
    """The head hash after `entry` was appended: sha256 of its line's bytes (what `audit verify` prints)."""
    return hashlib.sha256(json.dumps(dict(entry), separators=(",", ":"), ensure_ascii=True).encode("ascii")).hexdigest()
