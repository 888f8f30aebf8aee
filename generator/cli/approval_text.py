"""What approve and verify print: wrapped to the screen, or one JSON object with --json.

With --json, stdout holds exactly one JSON object (what was approved or verified: the approvers,
the keys that counted, until when, the digest, the audit head); warnings and refusals stay on
stderr and the exit codes are those of the text output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .output import echo_wrapped, print_audit_head, safe

if TYPE_CHECKING:
    from ..approvals import ApproveResult, Verification

#: The audit log and the line just written to it.
Audited = tuple[Path, dict[str, Any]]


def _audit_facts(log: Path, entry: dict[str, Any]) -> dict[str, str]:
    """The audit log and its new head, as --json carries them (the text output prints `audit: … head …`)."""
    from ..audit import head_of

    return {"audit_log": str(log), "audit_head": head_of(entry)}


def print_approved(result: ApproveResult, package_dir: Path, audited: Audited, as_json: bool,
                   warnings: list[str]) -> None:
    """What approve did: the approval (new, or the valid one already on file), wrapped to the screen or as
    JSON; then the `warnings` (already escaped: the approval ends before the change window does) on stderr."""
    rec = result.record
    for warning in warnings if as_json else []:
        click.echo(f"psbridge: warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps({
            "package": str(package_dir), "name": rec["package"], "digest": rec["digest"], "added": result.created,
            "approver": rec["approver"], "fingerprint": rec["fingerprint"], "approved_at": rec["approved_at"],
            "expires_at": rec["expires_at"], "comment": rec["comment"], "file": str(result.path),
            **_audit_facts(*audited)}, ensure_ascii=False))
        return
    if result.created:
        echo_wrapped(f"approved {safe(rec['package'])} digest {rec['digest']}", indent="  ")
        echo_wrapped(f"by {safe(rec['approver'])} (key {rec['fingerprint']}), expires {rec['expires_at']}",
                     "  ", "    ")
        click.echo(f"  {safe(result.path)}")
    else:
        echo_wrapped(f"already approved by {safe(rec['approver'])} until {rec['expires_at']} "
                     f"({safe(result.path)}); nothing added", indent="  ")
    for warning in warnings:  # wrapped as the lines above; the command it ends with stays whole
        echo_wrapped(warning, "psbridge: warning: ", err=True)
    print_audit_head(*audited)


def _valid_until(expiries: list[str], min_approvals: int) -> str | None:
    """When the verification stops holding: the moment fewer than --min-approvals approvals remain valid."""
    from ..clock import parse_time

    latest_first = sorted(expiries, key=parse_time, reverse=True)
    return latest_first[min_approvals - 1] if len(latest_first) >= min_approvals else None


def _print_refusals(reasons: list[str]) -> None:
    """One `psbridge: refused:` paragraph per reason on stderr, wrapped to the screen."""
    for reason in reasons:
        echo_wrapped(safe(reason), "psbridge: refused: ", err=True)


def print_verified(result: Verification, package_dir: Path, min_approvals: int, audited: Audited,
                   as_json: bool) -> None:
    """verify's verdict: the approvals and keys that counted and until when, or every reason it refused.

    Refusals go to stderr (with --json too, where the object also lists them); exit codes are the caller's.
    """
    used = result.approvals_used
    if as_json:
        _print_refusals(result.reasons)
        click.echo(json.dumps({
            "package": str(package_dir), "name": result.package, "digest": result.digest, "verified": result.ok,
            "min_approvals": min_approvals, "approvals": [a.to_json() for a in used],
            "keys_counted": [a.fingerprint for a in used],
            "valid_until": _valid_until([a.expires_at for a in used], min_approvals) if result.ok else None,
            "reasons": result.reasons, "notes": result.notes, "trusted_keys": result.trusted_keys,
            **_audit_facts(*audited)}))  # ASCII only: a planted file's name (a bidi override) is escaped, kept exact
        return
    for note in result.notes:
        echo_wrapped(safe(note), "note: ")
    for named in result.trusted_keys:
        echo_wrapped(safe(named), "trusted key: ")
    _print_refusals(result.reasons)
    if result.ok:
        click.echo(f"verified {safe(result.package)} digest {result.digest}")
        for approval in used:
            echo_wrapped(f"approved by {safe(approval.approver)} (key {approval.fingerprint[:16]}), "
                         f"expires {approval.expires_at}", "  ", "    ")
    print_audit_head(*audited)
