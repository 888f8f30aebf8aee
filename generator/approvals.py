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
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .clock import format_time, parse_time, utc_now
from .errors import UserError
from .files import write_file
from .keys import (
    PublicKey,
    b64,
    unb64,
    default_passphrase_reader,
    fingerprint,
    key_fingerprint,
    load_private_key,
    load_trusted_keys,
    short,
)
from .plan import change_files, package_digest, read_plan_json, sha256_hex

APPROVAL_FORMAT = "psbridge-approval-v1"
#: Domain separation: a signature made for an approval can never be replayed as anything else.
SIGNATURE_DOMAIN = b"psbridge-approval-v1\n"
#: Every field of an approval the signature covers; a file with any other field is refused.
SIGNED_FIELDS = (
    "format", "approver", "public_key", "fingerprint", "package", "digest", "files",
    "approved_at", "expires_at", "comment",
)
APPROVALS_DIR = "approvals"
DEFAULT_VALIDITY = "7d"
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



# --------------------------------------------------------------------------- the package


def file_listing(package_dir: Path) -> dict[str, str]:
    """Change-defining file -> sha256, as approvals record it; used to name what changed later."""
    return {rel: sha256_hex((package_dir / rel).read_bytes()) for rel in change_files(package_dir)}


def recorded_hashes(plan: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """What plan.json says every other package file hashes to, and problems with those records.

    Steps record `file` + `sha256`; `files` maps a path to a sha256 (or to an object with
    one). plan.json itself is covered by the digest, not by a record inside itself.
    """
    expected: dict[str, str] = {}
    problems: list[str] = []

    def add(path: object, digest: object, where: str) -> None:
        if not isinstance(path, str) or not _safe_relative(path):
            problems.append(f"plan.json: {where}: unsafe or missing file path {path!r}")
            return
        if isinstance(digest, Mapping):
            digest = digest.get("sha256")
        if not isinstance(digest, str) or not _HEX64.match(digest):
            problems.append(f"plan.json: {where}: no sha256 recorded for {path}")
            return
        if expected.get(path, digest) != digest:
            problems.append(f"plan.json: {path}: recorded twice with different hashes")
        expected[path] = digest

    steps = plan.get("steps")
    if not isinstance(steps, list):
        problems.append("plan.json: no steps list")
        steps = []
    for number, step in enumerate(steps, start=1):
        if not isinstance(step, Mapping):
            problems.append(f"plan.json: steps[{number}] is not an object")
            continue
        add(step.get("file"), step.get("sha256"), f"step {step.get('index', number)}")
    probes = plan.get("probes", [])
    if not isinstance(probes, list):
        problems.append("plan.json: probes is not a list")
        probes = []
    for number, probe in enumerate(probes, start=1):
        if not isinstance(probe, Mapping):
            problems.append(f"plan.json: probes[{number}] is not an object")
            continue
        add(probe.get("file"), probe.get("sha256"), f"probe {probe.get('id', number)}")
    files = plan.get("files", {})
    if not isinstance(files, Mapping):
        problems.append("plan.json: files is not an object")
        files = {}
    for path, digest in files.items():
        add(path, digest, f"files[{path!r}]")
    return expected, problems


def _safe_relative(path: str) -> bool:
    """A recorded path stays inside the package: relative, no `..`, not evidence."""
    parts = Path(path).parts
    return bool(parts) and not Path(path).is_absolute() and ".." not in parts and parts[0] not in {"runs", APPROVALS_DIR}


def integrity_problems(package_dir: Path, plan: Mapping[str, Any]) -> list[str]:
    """Every way the folder differs from what plan.json records: changed, missing, unexpected files.

    Each problem names the file, because the board needs to know *what* was touched.
    """
    expected, problems = recorded_hashes(plan)
    try:
        present = set(change_files(package_dir))
    except UserError as exc:  # a symbolic link: tampering, reported like any other change
        return problems + list(exc.problems)
    for rel in sorted(expected):
        if rel not in present:
            problems.append(f"missing file: {rel}")
            continue
        if sha256_hex((package_dir / rel).read_bytes()) != expected[rel]:
            problems.append(f"changed file: {rel} (sha256 differs from plan.json)")
    for rel in sorted(present - set(expected) - {"plan.json"}):
        problems.append(f"unexpected file: {rel}")
    return problems


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


def approve_package(
    package_dir: Path,
    key_path: Path,
    validity: timedelta,
    comment: str = "",
    *,
    now: datetime | None = None,
    passphrase_reader: Callable[[], str] = default_passphrase_reader,
) -> ApproveResult:
    """Sign the package's current digest with the approver's key and store it under approvals/.

    The package must be intact (match its plan.json) first: approving a tampered folder
    would launder the change. A second approval by the same key for the same digest that
    is still valid adds nothing.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if validity <= timedelta(0) or validity > MAX_VALIDITY:
        raise UserError(f"--expires: between 1m and {MAX_VALIDITY.days}d")
    if len(comment) > MAX_COMMENT or any(not ch.isprintable() and ch not in "\n\t" for ch in comment):
        raise UserError(f"--comment: at most {MAX_COMMENT} printable characters")
    plan = read_plan_json(package_dir)
    name = plan.get("name")
    if not isinstance(name, str) or not name:
        raise UserError(f"{package_dir}/plan.json: no package name")
    problems = integrity_problems(package_dir, plan)
    if problems:
        raise UserError(*(f"{package_dir}: {p}; not approving a package that differs from its plan" for p in problems))
    key, public = load_private_key(key_path, passphrase_reader)
    digest = package_digest(package_dir)
    moment = (now or utc_now()).replace(microsecond=0)
    approvals = package_dir / APPROVALS_DIR
    existing = _existing_approval(approvals, public.fingerprint, name, digest, moment)
    if existing is not None:
        return ApproveResult(existing[0], False, existing[1])
    record: dict[str, Any] = {
        "format": APPROVAL_FORMAT,
        "approver": public.identity,
        "public_key": b64(public.raw),
        "fingerprint": public.fingerprint,
        "package": name,
        "digest": digest,
        "files": file_listing(package_dir),
        "approved_at": format_time(moment),
        "expires_at": format_time(moment + validity),
        "comment": comment,
    }
    record["signature"] = b64(key.sign(signed_message(record)))
    # Check our own signature before writing: never leave an approval that verify would reject.
    Ed25519PublicKey.from_public_bytes(public.raw).verify(base64.b64decode(record["signature"]), signed_message(record))
    approvals.mkdir(exist_ok=True)
    stamp = moment.strftime("%Y%m%dT%H%M%SZ")
    path = approvals / f"{stamp}-{public.fingerprint[:12]}.json"
    body = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    write_file(path, body.encode("utf-8"), 0o644, overwrite=False)
    return ApproveResult(path, True, record)


def _existing_approval(
    approvals: Path, fp: str, name: str, digest: str, now: datetime
) -> tuple[Path, dict[str, Any]] | None:
    """A still-valid approval by this key of this digest, if one is already on file."""
    if not approvals.is_dir():
        return None
    for path in sorted(approvals.glob("*.json")):
        status = evaluate_approval(path, package=name, digest=digest, listing={}, now=now)
        if status.record and status.fingerprint == fp and status.usable:
            return path, status.record
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
    def status(self) -> str:
        """One word for tables: valid, or the first problem's kind."""
        if self.problems:
            return self.problems[0].split(":", 1)[0]
        return "valid" if self.trusted else "signature valid" if self.trusted is None else "untrusted"

    def describe(self) -> str:
        """`approvals/F (Jane Doe <jane@...>, key 0123abcd...)`, the prefix of every reason about it."""
        who = self.approver or "unknown approver"
        key = f", key {short(self.fingerprint)}" if self.fingerprint else ""
        return f"{self.file} ({who}{key})"

    def to_json(self) -> dict[str, Any]:
        """For `show --json` and run records."""
        return {
            "file": self.file, "approver": self.approver, "fingerprint": self.fingerprint,
            "approved_at": self.approved_at, "expires_at": self.expires_at, "comment": self.comment,
            "trusted": self.trusted, "status": self.status, "problems": list(self.problems),
        }


def evaluate_approval(
    path: Path,
    *,
    package: str,
    digest: str | None,
    listing: Mapping[str, str],
    now: datetime,
    trusted: Mapping[str, PublicKey] | None = None,
    forbidden: Iterable[str] = (),
) -> ApprovalStatus:
    """Judge one approval file. The signature is checked before any field is believed.

    `listing` (current file -> sha256) lets an approval of an older digest name the files
    that changed since it was given.
    """
    status = ApprovalStatus(file=f"{APPROVALS_DIR}/{path.name}")
    try:
        record = _read_approval(path)
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
    _judge_trust(status, record, trusted, set(forbidden))
    _judge_target(status, record, package, digest, listing)
    _judge_time(status, record, now)
    return status


def _read_approval(path: Path) -> dict[str, Any]:
    """Parse and type-check an approval file; it must hold exactly the signed fields and the signature."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not readable JSON ({exc})") from None
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
    status: ApprovalStatus, record: Mapping[str, Any], trusted: Mapping[str, PublicKey] | None, forbidden: set[str]
) -> None:
    """Trusted = the key is in the board's folder under the same identity; forbidden keys never count."""
    fp = record["fingerprint"]
    if fp in forbidden:
        status.problems.append("forbidden key: this key may not approve this run (self-approval)")
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


def _judge_time(status: ApprovalStatus, record: Mapping[str, Any], now: datetime) -> None:
    """Unexpired, not dated in the future, and no longer than MAX_VALIDITY (a signer can't grant forever)."""
    approved, expires = parse_time(record["approved_at"]), parse_time(record["expires_at"])
    if expires <= approved or expires - approved > MAX_VALIDITY:
        status.problems.append(f"invalid validity: {record['approved_at']} to {record['expires_at']} (max {MAX_VALIDITY.days}d)")
    elif now >= expires:
        status.problems.append(f"expired: at {record['expires_at']}")
    if approved > now + CLOCK_SKEW:
        status.problems.append(f"not yet valid: dated {record['approved_at']}, in the future")


def list_approvals(
    package_dir: Path,
    *,
    package: str,
    digest: str | None,
    now: datetime,
    trusted: Mapping[str, PublicKey] | None = None,
    forbidden: Iterable[str] = (),
) -> tuple[list[ApprovalStatus], list[str]]:
    """Judge every approval file; also return names of stray files under approvals/ (not approvals)."""
    folder = package_dir / APPROVALS_DIR
    if not folder.is_dir():
        return [], []
    try:
        listing = file_listing(package_dir)
    except UserError:
        listing = {}
    statuses: list[ApprovalStatus] = []
    strays: list[str] = []
    forbidden = tuple(forbidden)
    for path in sorted(folder.iterdir()):
        if path.name.endswith(".json") and path.is_file() and not path.is_symlink():
            statuses.append(
                evaluate_approval(path, package=package, digest=digest, listing=listing, now=now,
                                  trusted=trusted, forbidden=forbidden)
            )
        elif not (path.name.startswith(".") and path.name.endswith(".tmp")):  # a concurrent approve's temp file
            strays.append(f"{APPROVALS_DIR}/{path.name}")
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

    ok: the package may run. reasons: why not (each names a file or key), empty when ok.
    approvals_used: the distinct trusted approvals that made it ok. notes: approvals that
    did not count although the package is ok (stale, untrusted), for the record.
    files: relative path -> sha256 of every change-defining file as verified; a runner
    hashes the bytes it actually sends and compares them with these, which closes the
    window between verifying and reading the file again.
    """

    ok: bool
    reasons: list[str]
    approvals_used: list[UsedApproval]
    package: str | None = None
    digest: str | None = None
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


def verify_package(
    package_dir: Path,
    trusted_keys_dir: Path,
    min_approvals: int = 1,
    forbidden_fingerprints: Iterable[str] = (),
    *,
    now: datetime | None = None,
) -> Verification:
    """May this package run? Yes only if it is byte-for-byte what plan.json records, no file was
    added, and at least `min_approvals` distinct trusted keys signed its current digest, unexpired.

    Raises UserError (exit 2) for bad input: not a package, no trusted keys, min_approvals < 1.
    Everything about the package itself is a reason in the result, never an exception, so
    the caller can print them all. An approval that was forged or altered is always a
    reason (the folder was tampered with); stale or untrusted approvals only matter when
    too few valid ones remain.
    """
    if min_approvals < 1:
        raise UserError("--min-approvals: at least 1")
    trusted = load_trusted_keys(trusted_keys_dir)
    forbidden = {key_fingerprint(fp) for fp in forbidden_fingerprints}
    plan = read_plan_json(package_dir)
    name = plan.get("name") if isinstance(plan.get("name"), str) else ""
    reasons = integrity_problems(package_dir, plan)
    try:
        digest: str | None = package_digest(package_dir)
    except UserError:
        digest = None
    statuses, strays = list_approvals(package_dir, package=name, digest=digest, now=now or utc_now(),
                                      trusted=trusted, forbidden=forbidden)
    reasons += [f"unexpected file: {stray} (not an approval)" for stray in strays]
    used = _count_approvals(statuses)
    rejected = [f"{s.describe()}: {p}" for s in statuses for p in s.problems]
    notes: list[str] = []
    if len(used) < min_approvals:
        reasons += rejected
        have = "no" if not used else str(len(used))
        reasons.append(f"too few approvals: {have} valid trusted approval(s) of the current digest, {min_approvals} required")
    else:
        reasons += [f"{s.describe()}: {p}" for s in statuses if s.tampered for p in s.problems]
        notes += [f"{s.describe()}: {p}" for s in statuses if not s.tampered for p in s.problems]
    files = _signed_listing(package_dir, statuses, used, reasons) if not reasons else {}
    return Verification(ok=not reasons, reasons=reasons, approvals_used=used if not reasons else [],
                        package=name or None, digest=digest, notes=notes, files=files)


def _signed_listing(
    package_dir: Path, statuses: list[ApprovalStatus], used: list[UsedApproval], reasons: list[str]
) -> dict[str, str]:
    """Hash every file once more and require exactly the listing the counted approvals signed.

    This is the listing a runner compares its bytes with; reading it last and matching it
    against the signed one means nothing changed between the checks above and now.
    """
    try:
        listing = file_listing(package_dir)
    except (UserError, OSError) as exc:
        reasons.append(f"package changed during verification: {exc}")
        return {}
    counted = {u.file for u in used}
    for status in statuses:
        if status.file in counted and status.record is not None and status.record["files"] != listing:
            changed = sorted(k for k in set(listing) | set(status.record["files"])
                             if listing.get(k) != status.record["files"].get(k))
            reasons.append(f"{status.describe()}: signed file list differs from the package: {', '.join(changed)}")
    return listing if not reasons else {}


def _count_approvals(statuses: list[ApprovalStatus]) -> list[UsedApproval]:
    """Usable approvals, one per key: two files from one approver are still one approval."""
    used: dict[str, UsedApproval] = {}
    for s in statuses:
        if s.usable and s.trusted and s.fingerprint and s.fingerprint not in used:
            used[s.fingerprint] = UsedApproval(s.file, s.approver or "", s.fingerprint, s.approved_at or "", s.expires_at or "")
    return list(used.values())


# --------------------------------------------------------------------------- show


def package_summary(package_dir: Path, trusted_keys_dir: Path | None = None, *, now: datetime | None = None) -> dict[str, Any]:
    """What `show` prints: identity of the package, its steps, certificate, integrity and approvals."""
    plan = read_plan_json(package_dir)
    name = plan.get("name") if isinstance(plan.get("name"), str) else ""
    trusted = load_trusted_keys(trusted_keys_dir) if trusted_keys_dir is not None else None
    try:
        digest: str | None = package_digest(package_dir)
    except UserError:
        digest = None
    statuses, strays = list_approvals(package_dir, package=name, digest=digest, now=now or utc_now(), trusted=trusted)
    steps = [
        {key: step.get(key) for key in ("index", "id", "title", "kind", "changes_state", "file")}
        for step in plan.get("steps", []) if isinstance(step, Mapping)
    ]
    return {
        "package": str(package_dir),
        "name": name,
        "profile": plan.get("profile"),
        "tool_version": plan.get("tool_version"),
        "digest": digest,
        "integrity": integrity_problems(package_dir, plan),
        "steps": steps,
        "certificate": plan.get("certificate") if isinstance(plan.get("certificate"), Mapping) else None,
        "approvals": [s.to_json() for s in statuses],
        "stray_files": strays,
        "trusted_keys_checked": trusted is not None,
    }
