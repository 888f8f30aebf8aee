"""Signed approvals: approving a package digest, and judging approvals of a package.

A change-advisory board approves *one exact package*: the approval is an Ed25519
signature over the package digest (see `plan.package_digest`) plus who approved, when,
until when, and the per-file hashes at approval time. `verify_package` is the single
gate that `psbridge verify` and `psbridge run --require-approval` both use, so what the
board approved and what may run are decided by the same code.

An approval is ``PKG/approvals/<UTC time>-<fingerprint[:12]>.json`` holding the fields of
`SIGNED_FIELDS` plus ``signature`` = base64 Ed25519 over `signed_message(record)`.
Approver keys live in generator/keys.py.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .clock import format_time, parse_time, utc_now
from .errors import RuntimeFailure, UserError
from .files import write_file
from .keys import (
    PublicKey,
    b64,
    unb64,
    default_passphrase_reader,
    fingerprint,
    identity_key,
    key_fingerprint,
    load_private_key,
    load_public_key,
    no_address_problem,
    load_trusted_keys,
    read_trusted_folder,
    short,
)
from .package import Package
from .text import flatten, no_command, non_ascii_values

APPROVAL_FORMAT = "psbridge-approval-v1"
#: Domain separation: a signature made for an approval can never be replayed as anything else.
SIGNATURE_DOMAIN = b"psbridge-approval-v1\n"
#: Every field of an approval the signature covers; a file with any other field is refused.
SIGNED_FIELDS = (
    "format", "approver", "public_key", "fingerprint", "package", "digest", "files",
    "approved_at", "expires_at", "comment",
)
APPROVALS_DIR = "approvals"
#: A board approves a change window, not a standing permission.
MAX_VALIDITY = timedelta(days=90)
#: Tolerated clock difference between the approver's machine and the verifier's.
CLOCK_SKEW = timedelta(minutes=5)
MAX_COMMENT = 2000
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_VALIDITY = re.compile(r"^\s*(\d{1,6})\s*([dhm])\s*$")


def parse_validity(text: str) -> timedelta:
    """`Nd`, `Nh` or `Nm` (minutes) -> timedelta, bounded by MAX_VALIDITY so approvals lapse."""
    match = _VALIDITY.match(text or "")
    if not match:
        raise UserError(f"--expires {text!r}: use a number and d, h or m (for example 7d, 12h, 30m)")
    amount, unit = int(match.group(1)), match.group(2)
    delta = {"d": timedelta(days=amount), "h": timedelta(hours=amount), "m": timedelta(minutes=amount)}[unit]
    if delta <= timedelta(0):
        raise UserError(f"--expires {text!r}: must be longer than zero")
    if delta > MAX_VALIDITY:
        raise UserError(f"--expires {text!r}: at most {MAX_VALIDITY.days}d")
    return delta




# --------------------------------------------------------------------------- approvals


def signed_message(record: Mapping[str, Any]) -> bytes:
    """The exact bytes an approval signature covers: domain string + canonical JSON of SIGNED_FIELDS.

    Canonical = sorted keys, no whitespace, ASCII escapes, so the same fields always give
    the same bytes whatever tool re-serializes the file.
    """
    body = {name: record[name] for name in SIGNED_FIELDS}
    return SIGNATURE_DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


@dataclass
class ApproveResult:
    """What `approve_package` did: the approval file, and whether it is new."""

    path: Path
    created: bool
    record: dict[str, Any]


def _approvals_dir(package: Package) -> Path:
    """PKG/approvals, refusing a package whose approvals/ is not a plain folder."""
    if package.path is None:
        raise UserError("approvals: the package has no folder")
    folder = package.path / APPROVALS_DIR
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise UserError(f"{folder}: exists and is not a folder; approvals live in a folder of that name")
    return folder


def approve_package(
    package: Package,
    key_path: Path,
    validity: timedelta,
    comment: str = "",
    *,
    now: datetime | None = None,
    passphrase_reader: Callable[[], str] = default_passphrase_reader,
) -> ApproveResult:
    """Sign the package's digest with the approver's key and store the approval under approvals/.

    The package must be exactly what psbridge renders from its plan.json first (approving a
    hand-edited folder would launder the change). A second approval by the same key for
    the same digest that is still valid adds nothing.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if validity <= timedelta(0) or validity > MAX_VALIDITY:
        raise UserError(f"--expires: between 1m and {MAX_VALIDITY.days}d")
    if len(comment) > MAX_COMMENT or any(not ch.isprintable() and ch not in "\n\t" for ch in comment):
        raise UserError(f"--comment: at most {MAX_COMMENT} printable characters")
    package.require_reproducible()
    folder = _approvals_dir(package)
    key, public = load_private_key(key_path, passphrase_reader)
    moment = (now or utc_now()).replace(microsecond=0)
    existing = _existing_approval(package, public.fingerprint, moment)
    if existing is not None and not _extends_into_window(package, existing[1], moment + validity):
        return ApproveResult(existing[0], False, existing[1])
    record: dict[str, Any] = {
        "format": APPROVAL_FORMAT,
        "approver": public.identity,
        "public_key": b64(public.raw),
        "fingerprint": public.fingerprint,
        "package": package.name,
        "digest": package.digest,
        "files": dict(package.listing),
        "approved_at": format_time(moment),
        "expires_at": format_time(moment + validity),
        "comment": comment,
    }
    record["signature"] = b64(key.sign(signed_message(record)))
    # Check our own signature before writing: never leave an approval that verify would reject.
    Ed25519PublicKey.from_public_bytes(public.raw).verify(base64.b64decode(record["signature"]), signed_message(record))
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise UserError(f"{folder}: cannot create ({exc.strerror or exc})") from None
    stamp = moment.strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{stamp}-{public.fingerprint[:12]}.json"
    body = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    write_file(path, body.encode("utf-8"), 0o644, overwrite=False)
    return ApproveResult(path, True, record)


def _extends_into_window(package: Package, existing: Mapping[str, Any], expires: datetime) -> bool:
    """Approving again makes a new approval when the one on file ends before the change window does and
    the new one would last longer: that is the command the window warning prints."""
    end = window_end(package)
    try:
        current = parse_time(existing.get("expires_at"))
    except ValueError:
        return False
    return end is not None and current < end and expires > current


def _existing_approval(package: Package, fp: str, now: datetime) -> tuple[Path, dict[str, Any]] | None:
    """A still-valid approval by this key of this digest, if one is already on file."""
    statuses, _ = list_approvals(package, now=now)
    for status in statuses:
        if status.record and status.fingerprint == fp and status.usable:
            return _approvals_dir(package) / Path(status.file).name, status.record
    return None


@dataclass
class ApprovalStatus:
    """One approval file judged against the package, the clock and (optionally) the trusted keys.

    `problems` empty and `usable` true means it counts. `trusted` is None when no trusted
    keys were given (show without --trusted-keys can only check signature and expiry).
    """

    file: str
    approver: str | None = None
    fingerprint: str | None = None
    approved_at: str | None = None
    expires_at: str | None = None
    comment: str | None = None
    trusted: bool | None = None
    problems: list[str] = field(default_factory=list)
    #: Problems that mean the file was forged or altered, not merely stale.
    tampered: bool = False
    record: dict[str, Any] | None = None

    @property
    def usable(self) -> bool:
        """Counts toward --min-approvals (trust permitting)."""
        return not self.problems

    @property
    def person(self) -> str | None:
        """Who approved, as psbridge counts people (see keys.identity_key)."""
        return identity_key(self.approver) if self.approver else None

    @property
    def status(self) -> str:
        """One word for tables: valid, or the first problem's kind."""
        if self.problems:
            return self.problems[0].split(":", 1)[0]
        return "valid" if self.trusted else "signature valid" if self.trusted is None else "untrusted"

    def describe(self) -> str:
        """`approvals/F (Jane Doe <jane@...>, key 0123abcd...)`, the prefix of every reason about it."""
        who = no_command(self.approver or "unknown approver")
        key = f", key {short(self.fingerprint)}" if self.fingerprint else ""
        return f"{no_command(self.file)} ({who}{key})"

    def to_json(self) -> dict[str, Any]:
        """For `show --json` and run records."""
        return {
            "file": self.file, "approver": self.approver, "fingerprint": self.fingerprint,
            "approved_at": self.approved_at, "expires_at": self.expires_at, "comment": self.comment,
            "trusted": self.trusted, "status": self.status, "problems": list(self.problems),
        }


@dataclass(frozen=True)
class Forbidden:
    """Who may not approve this time: keys by fingerprint, people by identity_key (their normalised address)."""

    fingerprints: frozenset[str] = frozenset()
    persons: frozenset[str] = frozenset()

    def forbids(self, fingerprint_: str, approver: str) -> bool:
        return fingerprint_ in self.fingerprints or identity_key(approver) in self.persons


def forbidden_from(specs: Iterable[str], trusted: Mapping[str, PublicKey] | None = None) -> Forbidden:
    """`--forbid-key` / `--forbid-self-approval --key` values -> the keys AND the people they name.

    A key file names its identity; a bare fingerprint names the person of the trusted key
    with that fingerprint, so a second key of the same person is forbidden too.
    """
    fingerprints: set[str] = set()
    persons: set[str] = set()
    for spec in specs:
        fp = key_fingerprint(spec)
        fingerprints.add(fp)
        identity = _identity_of(spec, fp, trusted)
        person = identity_key(identity) if identity else None
        if person:
            persons.add(person)
    return Forbidden(frozenset(fingerprints), frozenset(persons))


def _identity_of(spec: str, fp: str, trusted: Mapping[str, PublicKey] | None) -> str | None:
    """The identity a key spec names, from its public key file or the trusted keys."""
    from .keys import PUBLIC_KEY_SUFFIX, public_key_path_for

    path = Path(spec.strip())
    candidates = [path] if path.name.endswith(PUBLIC_KEY_SUFFIX) else [public_key_path_for(path)]
    for candidate in candidates:
        if candidate.is_file():
            return load_public_key(candidate).identity
    known = (trusted or {}).get(fp)
    return known.identity if known else None


def evaluate_approval(
    rel: str,
    content: tuple[bytes | None, str | None],
    *,
    package: Package,
    now: datetime,
    trusted: Mapping[str, PublicKey] | None = None,
    forbidden: Forbidden = Forbidden(),
) -> ApprovalStatus:
    """Judge one approval file's bytes (or why it could not be read: `content` is what
    `_read_approval_file` returns). The signature is checked before any field is believed."""
    status = ApprovalStatus(file=rel)
    data, read_problem = content
    try:
        if data is None:
            raise ValueError(read_problem or "unreadable")
        record = _parse_approval(data)
    except ValueError as exc:
        status.problems.append(f"malformed: {exc}")
        status.tampered = True
        return status
    status.record = record
    if not _signature_ok(record):
        status.problems.append("bad signature: the file was altered or the signature forged")
        status.tampered = True
        return status
    status.approver, status.fingerprint = record["approver"], record["fingerprint"]
    status.approved_at, status.expires_at, status.comment = record["approved_at"], record["expires_at"], record["comment"]
    _judge_trust(status, record, trusted, forbidden)
    _judge_target(status, record, package.name, package.digest, package.listing)
    _judge_time(status, record, now)
    return status


#: An approval file is a few KiB; anything much larger is not one.
MAX_APPROVAL_BYTES = 256 * 1024


def _parse_approval(data: bytes) -> dict[str, Any]:
    """Parse and type-check an approval file; it must hold exactly the signed fields and the signature."""
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"not readable JSON ({type(exc).__name__})") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if record.get("format") != APPROVAL_FORMAT:
        raise ValueError(f"not a {APPROVAL_FORMAT} file")
    if set(record) != {*SIGNED_FIELDS, "signature"}:
        extra = sorted(set(record) - {*SIGNED_FIELDS, "signature"})
        missing = sorted({*SIGNED_FIELDS, "signature"} - set(record))
        raise ValueError(f"fields differ from the signed set (extra {extra}, missing {missing})")
    for name in SIGNED_FIELDS:
        if name != "files" and not isinstance(record[name], str):
            raise ValueError(f"{name} is not a string")
    files = record["files"]
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ValueError("files is not a map of path to sha256")
    parse_time(record["approved_at"])
    parse_time(record["expires_at"])
    return record


def _signature_ok(record: Mapping[str, Any]) -> bool:
    """Ed25519 check of the signature with the key the approval carries, and key/fingerprint agreement."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = unb64(record["public_key"], "public_key")
        signature = unb64(record["signature"], "signature")
        if len(raw) != 32 or fingerprint(raw) != record["fingerprint"]:
            return False
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, signed_message(record))
    except (ValueError, InvalidSignature):
        return False
    return True


def _judge_trust(
    status: ApprovalStatus, record: Mapping[str, Any], trusted: Mapping[str, PublicKey] | None, forbidden: Forbidden
) -> None:
    """Trusted = the key is in the board's folder under the same identity; forbidden people never count."""
    fp = record["fingerprint"]
    if forbidden.forbids(fp, record["approver"]):
        status.problems.append("forbidden approver: this person may not approve this run (self-approval)")
    nobody = no_address_problem(record["approver"])
    if nobody:
        status.problems.append(f"no address: {nobody}")
    if trusted is None:
        return
    known = trusted.get(fp)
    status.trusted = known is not None
    if known is None:
        status.problems.append("untrusted key: not in the trusted keys")
    elif known.identity != record["approver"]:
        status.trusted = False
        status.problems.append(f"identity mismatch: the trusted key belongs to {known.identity!r}")


def _judge_target(
    status: ApprovalStatus, record: Mapping[str, Any], package: str, digest: str | None, listing: Mapping[str, str]
) -> None:
    """The approval must name this package and sign its current digest; otherwise say what differs."""
    if record["package"] != package:
        status.problems.append(f"other package: approves package {record['package']!r}, this is {package!r}")
        return
    if digest is not None and record["digest"] != digest:
        changed = sorted(k for k in set(listing) | set(record["files"]) if listing.get(k) != record["files"].get(k))
        detail = f"; changed since approval: {', '.join(changed)}" if changed and listing else ""
        status.problems.append(f"other digest: approves digest {short(record['digest'])}…, package is {short(digest)}…{detail}")
    elif record["files"] != listing:
        changed = sorted(k for k in set(listing) | set(record["files"]) if listing.get(k) != record["files"].get(k))
        status.problems.append(f"signed file list differs from the package: {', '.join(changed)}")


def _judge_time(status: ApprovalStatus, record: Mapping[str, Any], now: datetime) -> None:
    """Unexpired, not dated in the future, and no longer than MAX_VALIDITY (a signer can't grant forever)."""
    approved, expires = parse_time(record["approved_at"]), parse_time(record["expires_at"])
    if expires <= approved or expires - approved > MAX_VALIDITY:
        status.problems.append(f"invalid validity: {record['approved_at']} to {record['expires_at']} (max {MAX_VALIDITY.days}d)")
    elif now >= expires:
        status.problems.append(f"expired: at {record['expires_at']}")
    if approved > now + CLOCK_SKEW:
        status.problems.append(f"not yet valid: dated {record['approved_at']}, in the future")




def _read_approval_file(path: Path) -> tuple[bytes | None, str | None]:
    """An approval file's bytes, or why it can't be read; never blocks on a FIFO, never follows a link."""
    from .files import read_regular

    try:
        return read_regular(path, path.name, limit=MAX_APPROVAL_BYTES, too_large="too large for an approval",
                            follow_symlinks=False), None
    except UserError as exc:
        return None, exc.problems[0].removeprefix(f"{path.name}: ")


def list_approvals(
    package: Package,
    *,
    now: datetime,
    trusted: Mapping[str, PublicKey] | None = None,
    forbidden: Forbidden = Forbidden(),
) -> tuple[list[ApprovalStatus], list[str]]:
    """Judge every approval file; also return names of stray entries under approvals/ (not approvals).

    A file that cannot be read or parsed counts as one invalid approval, named, while the
    others still count: whoever can write approvals/ must not be able to block a run.
    """
    folder = _approvals_dir(package)
    if not folder.is_dir():
        return [], []
    statuses: list[ApprovalStatus] = []
    strays: list[str] = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        rel = f"{APPROVALS_DIR}/{entry.name}"
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            continue  # a concurrent approve's temporary file
        if not entry.name.endswith(".json") or entry.is_dir(follow_symlinks=False):
            strays.append(rel)
            continue
        statuses.append(evaluate_approval(rel, _read_approval_file(Path(entry.path)), package=package, now=now,
                                          trusted=trusted, forbidden=forbidden))
    return statuses, strays


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class UsedApproval:
    """An approval a verification relied on; `run` copies these into its run record."""

    file: str
    approver: str
    fingerprint: str
    approved_at: str
    expires_at: str

    def to_json(self) -> dict[str, str]:
        """For run records and `show --json`."""
        return {"file": self.file, "approver": self.approver, "fingerprint": self.fingerprint,
                "approved_at": self.approved_at, "expires_at": self.expires_at}


@dataclass
class Verification:
    """Result of `verify_package`.

    ok: the package may run. reasons: why not (each names a file, a key or a person),
    empty when ok. approvals_used: the approvals of distinct trusted people that made it
    ok. notes: approvals that did not count although the package is ok (stale,
    untrusted, a second approval by the same person), for the record.
    """

    ok: bool
    reasons: list[str]
    approvals_used: list[UsedApproval]
    package: str
    digest: str
    notes: list[str] = field(default_factory=list)
    #: Every key of the trusted-keys folder that was trusted (file, identity, key), for the auditor.
    trusted_keys: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ApprovalPolicy:
    """What `--require-approval` demands: who is trusted, how many people, and who may not approve."""

    trusted_keys: Path
    min_approvals: int = 1
    forbid: tuple[str, ...] = ()  # key files or fingerprints whose person's approval does not count


def verify_package(package: Package, policy: ApprovalPolicy, *, now: datetime | None = None) -> Verification:
    """May this package run? Only if psbridge renders it byte for byte from its plan.json and at
    least `min_approvals` distinct trusted people signed its digest, unexpired.

    Raises UserError (exit 2) for bad input: no trusted keys, min_approvals < 1. Everything
    about the package itself is a reason in the result, so the caller can print them all.
    An approval that was forged or altered is always a reason (the folder was tampered
    with); stale or untrusted approvals only matter when too few valid ones remain.
    """
    if policy.min_approvals < 1:
        raise UserError("--min-approvals: at least 1")
    folder = read_trusted_folder(policy.trusted_keys)
    trusted = folder.keys
    forbidden = forbidden_from(policy.forbid, trusted)
    reasons = list(package.problems) or list(package.reproduction_problems)
    statuses, strays = list_approvals(package, now=now or utc_now(), trusted=trusted, forbidden=forbidden)
    used, repeats = _count_approvals(statuses)
    rejected = [f"{s.describe()}: {p}" for s in statuses for p in s.problems]
    rejected += [f"unexpected file: {no_command(stray)} (not an approval)" for stray in strays]
    notes = [f"{s.describe()}: another approval by the same person already counts" for s in repeats]
    hidden = folder.notice(policy.trusted_keys)
    notes = ([hidden] if hidden else []) + notes
    if len(used) < policy.min_approvals:
        reasons += rejected
        have = "no" if not used else str(len(used))
        reasons.append(f"too few approvals: {have} valid trusted approval(s) by distinct people of the current "
                       f"digest, {policy.min_approvals} required")
    else:
        # An invalid file (malformed, altered, forged) is named but can't block: whoever can write
        # approvals/ could delete the good ones just as well; what counts is enough valid ones.
        notes += rejected
    return Verification(ok=not reasons, reasons=reasons, approvals_used=used if not reasons else [],
                        package=package.name, digest=package.digest, notes=notes, trusted_keys=folder.named())


class NotApproved(RuntimeFailure):
    """`--require-approval` refused the package; `reasons` says why, one line each (exit 1)."""

    def __init__(self, label: str, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__(f"{label}: not approved ({len(reasons)} reason(s) above); nothing ran")


def require_approved(package: Package, policy: ApprovalPolicy, *, now: datetime | None = None) -> Verification:
    """The gate of `run/check --require-approval`: a reproducible package, approved by enough people.

    Judges the bytes in `package`, the same object the caller then sends from, so
    nothing on disk can change between this gate and the run.
    """
    package.require_reproducible()
    result = verify_package(package, policy, now=now)
    if not result.ok:
        raise NotApproved(package.label, result.reasons)
    return result


def _count_approvals(statuses: list[ApprovalStatus]) -> tuple[list[UsedApproval], list[ApprovalStatus]]:
    """Usable trusted approvals, one per person (two keys of one person are still one approval)."""
    used: dict[str, UsedApproval] = {}
    repeats: list[ApprovalStatus] = []
    for s in statuses:
        if not (s.usable and s.trusted and s.fingerprint and s.person):
            continue
        if s.person in used:
            repeats.append(s)
            continue
        used[s.person] = UsedApproval(s.file, s.approver or "", s.fingerprint, s.approved_at or "", s.expires_at or "")
    return list(used.values()), repeats


# --------------------------------------------------------------------------- the change window


@dataclass(frozen=True)
class WindowShortfall:
    """An approval that expires before the package's change window ends: a run late in the window
    would be refused (or a continuation with --from-step would), so approve and run say so."""

    approver: str
    expires_at: str
    window_end: datetime

    def line(self, package_dir: str, key: str, now: datetime) -> str:
        """One warning line: who, until when, the window's end, and the command to approve again."""
        end = format_time(self.window_end)
        return (f"the approval by {self.approver} expires {self.expires_at}, before the change window ends "
                f"{end}; to cover the window approve again: {approve_again(package_dir, key, self.window_end, now)}")


def approve_again(package_dir: str, key: str, window_end: datetime, now: datetime) -> str:
    """`psbridge approve PKG --key KEY --expires Nd`, with the shortest whole validity that reaches past the
    window's end (at most MAX_VALIDITY: a window further away is approved nearer the time)."""
    import math
    import shlex

    needed = window_end - now + CLOCK_SKEW
    days = max(1, math.ceil(needed / timedelta(days=1)))
    validity = f"{min(days, MAX_VALIDITY.days)}d"
    return f"psbridge approve {shlex.quote(package_dir)} --key {shlex.quote(key)} --expires {validity}"


def window_end(package: Package) -> datetime | None:
    """The end of the package's change window when `[change] window` is an ISO 8601 interval, else None."""
    try:
        change = package.parameters.change
    except UserError:
        return None  # parameters psbridge cannot read: the gates refuse the package, not this warning
    interval = change.window_interval if change is not None else None
    return interval.end if interval is not None else None


def window_shortfalls(package: Package, approvals: Iterable[tuple[str, str]]) -> list[WindowShortfall]:
    """Each (approver, expires_at) that ends before the change window does; empty without an ISO window.

    An expiry psbridge did not write (unparseable) is left to the gates, which refuse it.
    """
    end = window_end(package)
    if end is None:
        return []
    out = []
    for approver, expires_at in approvals:
        try:
            expires = parse_time(expires_at)
        except ValueError:
            continue
        if expires < end:
            out.append(WindowShortfall(approver, expires_at, end))
    return out


# --------------------------------------------------------------------------- show


def package_summary(package: Package, trusted_keys_dir: Path | None = None, *,
                    now: datetime | None = None) -> dict[str, Any]:
    """What `show` prints: identity of the package, its steps, certificate, integrity and approvals."""
    trusted = load_trusted_keys(trusted_keys_dir) if trusted_keys_dir is not None else None
    statuses, strays = list_approvals(package, now=now or utc_now(), trusted=trusted)
    plan = package.plan
    listed = plan.get("steps")  # plan.json is outside text: `"steps": null` is a problem `integrity` names
    steps = [
        {key: step.get(key) for key in ("index", "id", "title", "kind", "changes_state", "file")}
        for step in (listed if isinstance(listed, list) else []) if isinstance(step, Mapping)
    ]
    problems = package.problems
    return {
        "package": package.label,
        "name": package.name,
        "profile": package.profile,
        "tool_version": package.tool_version,
        "digest": package.digest,
        "integrity": problems,
        "reproducible": [] if problems else package.reproduction_problems,
        "steps": steps,
        "certificate": package.certificate,
        "non_ascii": [{"key": key, "value": value, "code_points": points} for key, value, points
                      in non_ascii_values(flatten(plan.get("parameters") or {}))],
        "approvals": [s.to_json() for s in statuses],
        "stray_files": strays,
        "trusted_keys_checked": trusted is not None,
    }
