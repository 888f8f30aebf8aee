"""The audit log: one JSON line per render, approve, verify and run, chained by hashes.

Each line is a JSON object with, in this order: ``time`` (UTC, ISO 8601 Z), ``action``,
``package`` (name), ``digest`` (package digest or null), ``actor`` (OS user), ``outcome``,
``details`` (object), ``prev`` (sha256 hex of the previous line's bytes without its
newline; 64 zeros for the first line) and ``sha256`` (sha256 hex of the line's own
canonical JSON without the ``sha256`` field). Deleting, inserting, reordering or editing
any line breaks the chain at that line; removing lines from the *end* is only detected
when the verifier knows an earlier head (`verify(..., expected_head=...)`), because a
shorter chain is still a chain. The *head* of a log is the sha256 of its last line's bytes
(`head_of`): what `psbridge audit verify` prints and what the next line's ``prev`` will be.

Where the log lives (`resolve_log`): the ``--audit-log`` option if given; else the
environment variable ``PSBRIDGE_AUDIT_LOG`` (one organisation-wide log) if set and not
empty; else ``audit.jsonl`` next to the work (in the ``--out`` folder for render, in the
parent of PACKAGE_DIR for commands that take a package); else ``output/audit.jsonl``.

Writers take an exclusive `fcntl.flock` on the log for read-last-line + append, so two
psbridge processes never interleave or lose lines. Nothing already recorded is ever lost,
and a failure never leaves the log jammed:

* An append that fails or is short (ENOSPC, EIO, EFBIG / RLIMIT_FSIZE, from write or
  fsync) is cut back to the size the log had before it, under the lock, and reported as
  one `RuntimeFailure` line. SIGXFSZ, which CPython ignores at start-up, is ignored for the
  duration of the write if an embedding application restored its default (kill) action.
* A log whose last line has no newline (a torn tail, e.g. from a crash or a power cut
  outside psbridge's control) is never chained onto: `append` names the torn size and the
  command that fixes it, `psbridge audit repair PATH` (`repair`), which cuts exactly the
  bytes after the last newline, keeps them in ``PATH.torn-<UTC time>`` (0600) for the
  auditors and records the cut as a chained ``audit-repair`` line.
* The log is opened with O_NOFOLLOW (a symbolic link is refused: a writer never follows a
  link planted in its place) and O_NONBLOCK, and must be a regular file (a FIFO, device
  or folder is refused instead of hung on). It is created 0600, and an existing log with
  any group or other permission bit is silently tightened to 0600 by its writer.

Nothing that looks like a secret may be put in `details` (checked, see `_refuse_secrets`).
This module does not import click: the command line's ``--audit-log`` option belongs to
`psbridge.cli`. Where the log lives is generator/audit_place.py (`resolve_log`, `resolve_for`).
"""

from __future__ import annotations

import errno
import getpass
import json
import os
import shlex
import signal
import stat
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from .clock import stamp
from .errors import RuntimeFailure, UserError
from .files import sha256_hex
from .audit_place import ENV_AUDIT_LOG, LOG_NAME, resolve_for, resolve_log  # noqa: F401 - re-exported: part of the log's API

GENESIS = "0" * 64
FIELDS = ("time", "action", "package", "digest", "actor", "outcome", "details", "prev", "sha256")
#: Detail keys that would carry a secret; refused so a careless caller fails loudly in tests.
_SECRET_WORDS = ("password", "passphrase", "secret", "credential", "private_key", "token")
_CHUNK = 4096
_PRIVATE = 0o600


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


class Head(NamedTuple):
    """What a line is about: the action, the package (name, digest), who, and how it ended."""

    action: str
    package: str | None
    digest: str | None
    actor: str | None
    outcome: str


def build_entry(head: Head, details: Mapping[str, Any], prev: str, *, now: datetime | None = None) -> dict[str, Any]:
    """The line as a dict, its own hash last; separated from I/O so the format is testable."""
    _refuse_secrets(details)
    entry: dict[str, Any] = {
        "time": stamp(now, digits=6),
        "action": head.action,
        "package": head.package,
        "digest": head.digest,
        "actor": head.actor or os_user(),
        "outcome": head.outcome,
        "details": dict(details),
        "prev": prev,
    }
    entry["sha256"] = sha256_hex(canonical(entry))
    return entry


def line_of(entry: Mapping[str, Any]) -> bytes:
    """The bytes of an entry's line as `append` writes it, without the newline."""
    return json.dumps(dict(entry), separators=(",", ":"), ensure_ascii=True).encode("ascii")


def head_of(line: Mapping[str, Any] | bytes) -> str:
    """The head hash a line makes: sha256 hex of its bytes without the newline.

    Takes the entry `append`/`record` returned or the raw line. It is what
    `psbridge audit verify` prints as head and what the next line's ``prev`` will be (not
    the entry's own ``sha256`` field, which is taken over its canonical JSON).
    """
    if isinstance(line, (bytes, bytearray, memoryview)):
        raw = bytes(line)
        raw = raw[:-1] if raw.endswith(b"\n") else raw
    else:
        raw = line_of(line)
    return sha256_hex(raw)


# --------------------------------------------------------------------------- opening the log safely


def _repair_command(path: Path) -> str:
    return f"psbridge audit repair {shlex.quote(str(path))}"


def _torn_message(path: Path, torn: int) -> str:
    return f"audit log {path} ends with a torn line ({torn} bytes); repair it with: {_repair_command(path)}"


def _file_in_the_way(folder: Path) -> Path | None:
    """The first existing part of `folder` (itself or an ancestor) that is not a folder."""
    for part in (folder, *folder.parents):
        if os.path.lexists(part):
            return None if part.is_dir() else part
    return None


def _make_parent(path: Path) -> None:
    """Create the log's folder, or fail with one line naming what is in the way."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = _file_in_the_way(path.parent)
        if blocker is not None:
            raise RuntimeFailure(f"audit log {path}: {blocker} is a file, not a folder") from None
        raise RuntimeFailure(f"audit log {path}: cannot create folder {path.parent} ({exc.strerror})") from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a file"


def _open_log(path: Path, *, write: bool, create: bool = False, error: type[Exception]) -> int:
    """Open the log: O_NOFOLLOW for writers, O_NONBLOCK, a regular file, 0600 for writers.

    `create` makes a missing log (0600); without it a missing log is `error`. An existing log with
    group or other permission bits is tightened to 0600 by a writer, silently. Failures are
    `error` (RuntimeFailure for append, UserError for verify/repair) with one line.
    """
    flags = os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if write:
        flags |= os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW
    else:
        flags |= os.O_RDONLY
    try:
        fd = os.open(path, flags | (os.O_CREAT if create else 0), _PRIVATE)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise error(f"{path}: audit log not found") from None
        if exc.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(path):
            raise error(f"audit log {path} is a symbolic link; refusing to follow it") from None
        if exc.errno == errno.EISDIR:
            raise error(f"audit log {path} is not a regular file (a folder); refusing it") from None
        if exc.errno == errno.ENOTDIR:
            blocker = _file_in_the_way(path.parent) or path.parent
            raise error(f"audit log {path}: {blocker} is a file, not a folder") from None
        raise error(f"audit log {path}: cannot open ({exc.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"audit log {path} is not a regular file ({_kind(mode)}); refusing it")
        if write and mode & 0o077:
            try:
                os.fchmod(fd, _PRIVATE)
            except OSError as exc:
                raise error(f"audit log {path}: readable by others and cannot be made 0600 ({exc.strerror})") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lock(fd: int, path: Path) -> None:
    """Take the exclusive writer's lock (released when the descriptor is closed)."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        raise RuntimeFailure(f"audit log {path}: cannot lock ({exc.strerror})") from None


def _tail(fd: int) -> tuple[bytes | None, int]:
    """(last complete line without its newline or None when empty, bytes after the last newline).

    Read backwards in growing steps, so big logs and long torn tails both stay cheap.
    """
    position = os.fstat(fd).st_size
    buffer = b""
    while position > 0:
        step = min(max(_CHUNK, len(buffer)), position)
        position -= step
        buffer = os.pread(fd, step, position) + buffer
        last = buffer.rfind(b"\n")
        if last >= 0 and (last < len(buffer) - 1 or buffer.count(b"\n") >= 2):
            break
    last = buffer.rfind(b"\n")
    torn = len(buffer) - last - 1
    if torn or not buffer:
        return None, torn
    return buffer[:last].rsplit(b"\n", 1)[-1], 0


def _read_all(fd: int) -> bytes:
    parts = []
    while chunk := os.read(fd, 1 << 20):
        parts.append(chunk)
    return b"".join(parts)


# --------------------------------------------------------------------------- writing, and taking a failed write back


class _AppendFailed(RuntimeFailure):
    """An append that did not happen; `reason` says why, the log is as it was before."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@contextmanager
def _file_size_signal_ignored() -> Iterator[None]:
    """Make a write past RLIMIT_FSIZE fail with EFBIG instead of killing the process.

    CPython ignores SIGXFSZ at start-up, so usually nothing is done. If an embedding
    application restored the default action, it is ignored for the duration of the write
    and restored after, which only the main thread may do; other dispositions (an
    application's own handler) are left alone.
    """
    number = getattr(signal, "SIGXFSZ", None)
    if number is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(number)
    if previous != signal.SIG_DFL:
        yield
        return
    signal.signal(number, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(number, previous)


def _write_locked(fd: int, path: Path, line: bytes) -> None:
    """Append `line` with one write(2) and fsync it; on any failure cut the log back.

    The caller holds the exclusive lock, so the bytes past the size taken here are this
    process's own and nothing recorded before is touched.
    """
    before = os.fstat(fd).st_size
    try:
        with _file_size_signal_ignored():
            written = os.write(fd, line)
        if written != len(line):
            raise OSError(errno.EFBIG, f"short write, {written} of {len(line)} bytes; file size limit?")
        os.fsync(fd)
    except BaseException as exc:
        reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else type(exc).__name__
        try:
            os.ftruncate(fd, before)
        except OSError as cut:
            raise RuntimeFailure(
                f"audit log {path}: cannot append ({reason}) nor remove the partial line ({cut.strerror}); "
                f"repair it with: {_repair_command(path)}"
            ) from None
        try:
            os.fsync(fd)
        except OSError:
            pass  # the size is right in the page cache; a failing disk has more to say elsewhere
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt, SystemExit: taken back, then let through
        raise _AppendFailed(f"audit log {path}: cannot append ({reason}); nothing was recorded", reason) from None


def append(log_path: Path | str, head: Head, **details: Any) -> dict[str, Any]:
    """Append one chained line under an exclusive lock and return it (`head_of` gives its head).

    The lock covers reading the previous line and writing the new one, so concurrent
    writers form one chain. The line is written with a single write(2) on an O_APPEND
    descriptor and fsynced before the lock is released; a failed or short write is cut
    back. Raises RuntimeFailure (one line naming the file) when the folder cannot be
    created, the path is a symbolic link or not a regular file, the log ends with a torn
    line (the message names `psbridge audit repair`), or the write fails; ValueError when
    a detail key names a secret.
    """
    path = Path(log_path)
    _refuse_secrets(details)
    _make_parent(path)
    fd = _open_log(path, write=True, create=True, error=RuntimeFailure)
    try:
        _lock(fd, path)
        try:
            last, torn = _tail(fd)
        except OSError as exc:
            raise RuntimeFailure(f"audit log {path}: cannot read ({exc.strerror})") from None
        if torn:
            raise RuntimeFailure(_torn_message(path, torn))
        prev = GENESIS if last is None else sha256_hex(last)
        entry = build_entry(head, details, prev)
        _write_locked(fd, path, line_of(entry) + b"\n")
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
    second read of the folder. When the package's parameters name a change ticket
    (`[change] ticket`), the line's details carry it as ``"change": {"ticket": …}``, so
    that every line about the package can be found by its ticket.
    """
    name = package.name if package is not None else None
    digest = package.digest if package is not None else None
    ticket = _ticket_of(package)
    if ticket is not None and "change" not in details:
        details = {**details, "change": {"ticket": ticket}}
    return append(log_path, Head(action, name, digest, actor, outcome), **details)


def _ticket_of(package: Any) -> str | None:
    """The package's `[change] ticket`, from its validated parameters; None when it has none.

    Only a value that passed validation is logged. A plan whose parameters are missing or
    invalid (a tampered or foreign package, which the command is about to refuse) has no
    ticket: the line that records the refusal must still be written, so nothing here raises.
    """
    if package is None:
        return None
    try:
        change = package.parameters.change
    except Exception:  # noqa: BLE001 - a broken plan (UserError) or not a Package: no ticket
        return None
    ticket = getattr(change, "ticket", None)
    return ticket if isinstance(ticket, str) else None


@dataclass(frozen=True)
class AuditCheck:
    """Result of `verify`: good_lines before the first broken one (1-based `broken_line`), or all.

    `torn_bytes` is the size of a torn last line (no newline) when that is the problem:
    `repair` removes it.
    """

    ok: bool
    good_lines: int
    broken_line: int | None = None
    problem: str | None = None
    head: str | None = None
    torn_bytes: int = 0


def _check_line(raw: bytes, number: int, prev: str) -> str | None:
    """Why line `number` is broken, or None: parseable, all fields, own hash right, chained to prev."""
    try:
        entry = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        return "not valid JSON"
    if not isinstance(entry, dict) or tuple(entry) != FIELDS:
        return "not an audit entry (fields missing, extra or out of order)"
    claimed = entry.pop("sha256")
    try:
        own = sha256_hex(canonical(entry))
    except RecursionError:
        return "not an audit entry (nested too deeply)"
    if own != claimed:
        return "content does not match its sha256 (line edited)"
    if entry["prev"] != prev:
        what = "the genesis value" if number == 1 else f"line {number - 1}"
        return f"prev does not match {what} (a line was deleted, inserted or reordered)"
    return None


def _verify_bytes(data: bytes, expected_head: str | None = None) -> AuditCheck:
    """`verify` over a log's bytes: complete lines first, then a torn tail, then the head."""
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the log ends with a newline (or is empty)
    prev, seen = GENESIS, {GENESIS}
    for number, raw in enumerate(lines, start=1):
        problem = _check_line(raw, number, prev)
        if problem:
            return AuditCheck(False, number - 1, number, problem)
        prev = sha256_hex(raw)
        seen.add(prev)
    if torn:
        return AuditCheck(False, len(lines), len(lines) + 1, f"torn last line ({len(torn)} bytes, no newline)",
                          torn_bytes=len(torn))
    if expected_head is not None and expected_head.lower() not in seen:
        return AuditCheck(False, len(lines), len(lines) + 1, f"head {expected_head} is not in the log (lines removed from the end?)")
    return AuditCheck(True, len(lines), head=prev)


def _read_shared(path: Path) -> bytes:
    """The whole log, read under a shared lock so a line being appended is never seen half written.

    UserError when the log is missing, not a regular file, or unreadable.
    """
    import fcntl

    fd = _open_log(path, write=False, error=UserError)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:
            pass  # a file system without locks: read anyway, a concurrent append may show as torn
        return _read_all(fd)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    finally:
        os.close(fd)


def verify(log_path: Path | str, expected_head: str | None = None) -> AuditCheck:
    """Walk the chain from the first line; stop at the first broken one.

    `expected_head` is a line hash recorded earlier (printed by `psbridge audit verify`);
    if given, it must be one of the lines' hashes, which detects lines cut off the end.
    The log is read under a shared lock (a line being appended is never seen half
    written); it may be reached through a symbolic link but must be a regular file
    (UserError otherwise, and when it is missing or unreadable).
    """
    data = _read_shared(Path(log_path))
    return _verify_bytes(data, expected_head)


def entries(log_path: Path | str, expected_head: str | None = None) -> list[dict[str, Any]]:
    """Every line of an intact log, parsed; a broken chain is a RuntimeFailure naming the line.

    For what must be vouched for by the log (a run record for `rollback`): the chain is
    checked and the entries are parsed from the same bytes. With `expected_head` (a head
    recorded elsewhere, e.g. in the change ticket) only the lines up to and including that
    head are returned: anyone who can write the log can append correctly chained lines after
    it, so nothing after it is believed. A head that is not in the log is a RuntimeFailure.
    """
    path = Path(log_path)
    data = _read_shared(path)
    check = _verify_bytes(data, None)
    if not check.ok:
        raise RuntimeFailure(f"{path}: line {check.broken_line}: {check.problem}; the audit log can't vouch for anything")
    lines = [line for line in data.split(b"\n") if line]
    if expected_head is not None:
        wanted = expected_head.lower()
        heads = [sha256_hex(line) for line in lines]
        if wanted not in heads:
            raise RuntimeFailure(f"{path}: head {wanted} is not in the log (lines removed from the end, or another "
                                 "log?); the audit log can't vouch for anything")
        lines = lines[:heads.index(wanted) + 1]
    return [_entry(json.loads(line), number, path) for number, line in enumerate(lines, start=1)]


def _entry(value: Any, number: int, path: Path) -> dict[str, Any]:
    """One chained line, its fields of the types the format gives them (`_entry_model`); a UserError naming the
    line otherwise. The chain proves who could write the log, not that the writer was psbridge: a line whose
    `details` is a string chains as well as any, and the readers (rollback's vouching) must not trip on it."""
    from pydantic import ValidationError

    try:
        return _entry_model().model_validate(value).model_dump()
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "line"
        raise UserError(f"{path}: line {number}: {where}: {first['msg']}; not an audit line, "
                        "the audit log can't vouch for anything") from None


@cache
def _entry_model() -> Any:
    """`AuditEntry`, built on first use: only readers need it, and building a model costs every command time."""
    from pydantic import BaseModel, ConfigDict, StrictStr

    class AuditEntry(BaseModel):
        """An audit line's fields (`FIELDS`), typed: text, text or null, and `details` an object."""

        model_config = ConfigDict(extra="ignore", strict=True)
        time: StrictStr
        action: StrictStr
        package: StrictStr | None
        digest: StrictStr | None
        actor: StrictStr | None
        outcome: StrictStr
        details: dict[str, Any]
        prev: StrictStr
        sha256: StrictStr

    return AuditEntry


# --------------------------------------------------------------------------- repair


@dataclass(frozen=True)
class Repair:
    """What `repair` did: `removed_bytes` 0 means there was nothing to repair."""

    removed_bytes: int
    removed_sha256: str | None
    side_file: Path | None
    good_lines: int  # lines in the log now, the audit-repair line included
    head: str


def _keep_torn(path: Path, torn: bytes) -> Path:
    """Write the torn bytes to PATH.torn-<UTC time> (0600, new file, fsynced) for the auditors."""
    from .clock import file_stamp

    side = path.with_name(f"{path.name}.torn-{file_stamp()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(side, flags, _PRIVATE)
    except OSError as exc:
        raise RuntimeFailure(f"audit log {path}: cannot keep the torn bytes in {side} ({exc.strerror}); nothing changed") from None
    try:
        os.fchmod(fd, _PRIVATE)
        view = memoryview(torn)
        with _file_size_signal_ignored():
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        side.unlink(missing_ok=True)
        raise RuntimeFailure(f"audit log {path}: cannot keep the torn bytes in {side} ({exc.strerror}); nothing changed") from None
    os.close(fd)
    _fsync_folder(path.parent)
    return side


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _complete_entries(torn: bytes) -> list[str]:
    """The head hashes of complete audit entries inside `torn` (bytes after the last newline).

    A true torn tail is a line cut short; bytes holding a whole entry (its fields in order, its
    own sha256 right) are recorded lines whose newlines were removed, and cutting them would
    delete history that `verify` then calls clean. Every ``{`` is tried, so garbage in front of
    a glued line does not hide it; an entry is its fields and its own sha256 (taken over the
    canonical JSON), so one re-serialised (white space, key order) is still found.
    """
    decoder = json.JSONDecoder()
    text = torn.decode("latin-1")  # one character per byte: offsets stay byte offsets
    found: list[str] = []
    start = text.find("{")
    while start >= 0:
        try:
            entry, end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            entry, end = None, start + 1
        if isinstance(entry, dict) and sorted(entry) == sorted(FIELDS):
            body = {k: v for k, v in entry.items() if k != "sha256"}
            try:
                if sha256_hex(canonical(body)) == entry["sha256"]:
                    found.append(sha256_hex(torn[start:end]))
                else:
                    end = start + 1  # not an entry: an entry may still start inside it
            except (RecursionError, UnicodeEncodeError, TypeError):
                end = start + 1
        else:
            end = start + 1
        start = text.find("{", end)
    return found


def repair(log_path: Path | str, *, actor: str | None = None) -> Repair:
    """Cut a torn last line off the log, keep it aside and record the cut as a chained line.

    Under the exclusive lock: the bytes after the last newline (and only those) are
    written to ``PATH.torn-<UTC time>`` (0600), the log is truncated to its last newline
    and an ``audit-repair`` line (outcome ``repaired``; details ``removed_bytes``,
    ``removed_sha256``, ``kept_in``) is appended. Bytes after the last newline that hold a
    complete audit entry (recorded lines whose newlines were removed) are not a torn line:
    nothing is changed and RuntimeFailure names each entry's line hash. A log without a torn tail whose chain
    verifies is left alone (`removed_bytes` 0). When the complete lines do not verify,
    nothing is changed and RuntimeFailure names the first broken line. A missing log, a
    symbolic link or not a regular file is a UserError.
    """
    path = Path(log_path)
    fd = _open_log(path, write=True, error=UserError)
    try:
        _lock(fd, path)
        try:
            data = _read_all(fd)
        except OSError as exc:
            raise RuntimeFailure(f"audit log {path}: cannot read ({exc.strerror})") from None
        cut = data.rfind(b"\n") + 1
        torn = data[cut:]
        check = _verify_bytes(data[:cut])
        if not check.ok:
            raise RuntimeFailure(
                f"{path}: line {check.broken_line}: {check.problem} ({check.good_lines} good line(s) before it); "
                "not repaired, nothing changed"
            )
        head = check.head or GENESIS
        if not torn:
            return Repair(0, None, None, check.good_lines, head)
        whole = _complete_entries(torn)
        if whole:
            raise RuntimeFailure(
                f"{path}: the {len(torn)} bytes after line {check.good_lines} hold {len(whole)} complete audit "
                f"entr{'y' if len(whole) == 1 else 'ies'} whose newline is missing (line hash(es) {', '.join(whole)}), "
                "not a torn line; not repaired, nothing changed: restore the newlines, then verify"
            )
        digest = sha256_hex(torn)
        side = _keep_torn(path, torn)
        try:
            os.ftruncate(fd, cut)
            os.fsync(fd)
        except OSError as exc:
            raise RuntimeFailure(f"audit log {path}: cannot cut the torn line ({exc.strerror}); it is also kept in {side}") from None
        entry = build_entry(Head("audit-repair", None, None, actor, "repaired"),
                            {"removed_bytes": len(torn), "removed_sha256": digest, "kept_in": side.name}, head)
        try:
            _write_locked(fd, path, line_of(entry) + b"\n")
        except _AppendFailed as exc:
            raise RuntimeFailure(
                f"audit log {path}: torn line removed and kept in {side}, but the audit-repair line could not be "
                f"appended ({exc.reason})"
            ) from None
    finally:
        os.close(fd)
    return Repair(len(torn), digest, side, check.good_lines + 1, head_of(entry))
