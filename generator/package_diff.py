"""What changed between two rendered packages, for re-approval.

A board that approved OLD should only have to read what differs in NEW: the changed
parameters (dotted keys, old -> new), other changed plan facts (certificate, profile,
tool version), and a unified diff of each changed step file. setup.ps1 and REVIEW.md
are derived from the steps and parameters, so they are summarized (lines added and
removed) instead of printed in full.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .package import Package
from .text import flatten, non_ascii_values

#: plan.json keys shown elsewhere in the diff (parameters) or derived from the files (hashes).
_PLAN_KEYS_SKIPPED = frozenset({"parameters", "files", "steps"})
#: Files summarized rather than diffed line by line.
SUMMARIZED = frozenset({"setup.ps1", "REVIEW.md"})
_MISSING = object()


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, old, new) for every dotted key that differs; a side lacking the key gets _MISSING."""
    a, b = flatten(dict(old)), flatten(dict(new))
    keys = sorted(set(a) | set(b))
    return [(k, a.get(k, _MISSING), b.get(k, _MISSING)) for k in keys if a.get(k, _MISSING) != b.get(k, _MISSING)]


def show_value(value: Any) -> str:
    """JSON rendering of a value, or `(absent)`; JSON keeps strings and numbers distinguishable."""
    return "(absent)" if value is _MISSING else json.dumps(value, ensure_ascii=False)


def _text(data: bytes) -> list[str]:
    """Lines for display: BOM and CRLF removed, because Windows PowerShell files carry both."""
    return data.decode("utf-8-sig", errors="replace").replace("\r\n", "\n").splitlines()


@dataclass
class PackageDiff:
    """The differences between two packages; `identical` when their digests are equal."""

    old_digest: str
    new_digest: str
    parameters: list[tuple[str, Any, Any]] = field(default_factory=list)
    plan: list[tuple[str, Any, Any]] = field(default_factory=list)
    files: list[tuple[str, str, str]] = field(default_factory=list)  # (status, path, note)
    patches: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """Same digest = same change-defining bytes; evidence folders are not compared."""
        return self.old_digest == self.new_digest

    def render(self, old_label: str, new_label: str) -> str:
        """Human-readable report: summary sections first, then the step patches."""
        lines = [f"--- {old_label} (digest {self.old_digest})", f"+++ {new_label} (digest {self.new_digest})"]
        if self.identical:
            lines.append("identical")
            return "\n".join(lines) + "\n"
        for title, changes in (("parameters", self.parameters), ("plan", self.plan)):
            if changes:
                lines.append(f"{title}:")
                for key, a, b in changes:
                    lines.append(f"  {key}: {show_value(a)} -> {show_value(b)}")
                    for side, value in (("old", a), ("new", b)):
                        for _, _, points in non_ascii_values({key: value}):
                            lines.append(f"    non-ASCII in the {side} value: {', '.join(points)}")
        if self.files:
            lines.append("files:")
            lines += [f"  {status:<8} {path}{f' ({note})' if note else ''}" for status, path, note in self.files]
        text = "\n".join(lines) + "\n"
        return text + "".join(self.patches)


def diff_packages(old: Package, new: Package) -> PackageDiff:
    """Compare two packages read once (`package.read_package`); nothing is read from disk here."""
    result = PackageDiff(old.digest, new.digest)
    if result.identical:
        return result
    old_plan, new_plan = old.plan, new.plan
    result.parameters = changed_keys(_mapping(old_plan.get("parameters")), _mapping(new_plan.get("parameters")))
    result.plan = changed_keys(_plan_facts(old_plan), _plan_facts(new_plan))
    result.plan += changed_keys(_step_facts(old_plan), _step_facts(new_plan))
    for rel in sorted((set(old.files) | set(new.files)) - {"plan.json"}):
        _compare_file(result, rel, old.files.get(rel), new.files.get(rel))
    return result


def _mapping(value: Any) -> Mapping[str, Any]:
    """A plan section that should be an object; anything else compares as empty."""
    return value if isinstance(value, Mapping) else {}


def _step_facts(plan: Mapping[str, Any]) -> dict[str, Any]:
    """Step metadata by id (title, kind, needs...), without hashes: the patches show content changes."""
    steps = plan.get("steps")
    steps = steps if isinstance(steps, list) else []
    return {"steps": {str(s.get("id")): {k: v for k, v in s.items() if k not in ("sha256", "id")}
                      for s in steps if isinstance(s, Mapping)}}


def _plan_facts(plan: Mapping[str, Any]) -> dict[str, Any]:
    """plan.json minus what is shown elsewhere (parameters) or derived from the files (hashes)."""
    return {k: v for k, v in plan.items() if k not in _PLAN_KEYS_SKIPPED}


def _compare_file(result: PackageDiff, rel: str, old_data: bytes | None, new_data: bytes | None) -> None:
    """Record one file's status; step files (and anything not summarized) get a unified diff."""
    in_old, in_new = old_data is not None, new_data is not None
    old, new = old_data or b"", new_data or b""
    if in_old and in_new and old == new:
        return
    status = "added" if not in_old else "removed" if not in_new else "changed"
    a, b = _text(old), _text(new)
    patch = list(difflib.unified_diff(a, b, f"a/{rel}", f"b/{rel}", lineterm=""))
    plus = sum(1 for line in patch[2:] if line.startswith("+"))
    minus = sum(1 for line in patch[2:] if line.startswith("-"))
    if patch:
        note = f"+{plus} -{minus} lines"
    else:
        note = "encoding or line endings only" if a or b else "empty file"
    result.files.append((status, rel, note))
    if rel not in SUMMARIZED and patch:
        result.patches.append("\n".join(patch) + "\n")
