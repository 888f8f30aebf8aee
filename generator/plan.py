"""The package on disk: its files, their hashes, and the one digest that names it.

A package is the folder `render` writes: plan.json, REVIEW.md, setup.ps1 and steps/.
Later additions to the folder (run records under runs/, signed approvals under
approvals/) are evidence *about* the package, not part of the change, so the digest
leaves them out.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .errors import UserError

#: Version of plan.json's layout; readers refuse a version they do not know.
FORMAT_VERSION = 1

#: Top-level folders of a package that record what happened to it; not part of the change.
EVIDENCE_DIRS = frozenset({"runs", "approvals"})


def sha256_hex(data: bytes) -> str:
    """Hex sha256, the one hash psbridge uses for files and packages."""
    return hashlib.sha256(data).hexdigest()


def change_files(package_dir: Path) -> list[str]:
    """Every file of the package that defines the change, as sorted POSIX relative paths.

    Links are refused rather than followed: a link could make the approved text differ
    from what a later reader opens.
    """
    if not package_dir.is_dir():
        raise UserError(f"{package_dir}: not a package folder")
    found: list[str] = []
    for path in package_dir.rglob("*"):
        rel = path.relative_to(package_dir)
        if rel.parts[0] in EVIDENCE_DIRS:
            continue
        if path.is_symlink():
            raise UserError(f"{path}: symbolic links are not allowed in a package")
        if path.is_file():
            found.append(rel.as_posix())
    return sorted(found, key=lambda p: p.encode("utf-8"))


def digest_listing(package_dir: Path) -> str:
    """The canonical listing the digest is taken over: `<sha256>  <path>` per line, like sha256sum."""
    lines = []
    for rel in change_files(package_dir):
        lines.append(f"{sha256_hex((package_dir / rel).read_bytes())}  {rel}\n")
    return "".join(lines)


def read_plan_json(package_dir: Path) -> dict[str, Any]:
    """plan.json as a dict; a missing or broken plan is an input error (the folder is not a package)."""
    path = package_dir / "plan.json"
    if not package_dir.is_dir():
        raise UserError(f"{package_dir}: not a package folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{package_dir}: no plan.json; not a psbridge package (a folder written by `psbridge render`)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not valid JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("tool") != "psbridge":
        raise UserError(f"{path}: not a psbridge plan")
    if data.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: format_version {data.get('format_version')!r}; this psbridge reads {FORMAT_VERSION}")
    return data


def package_digest(package_dir: Path) -> str:
    """sha256 over the canonical listing: one value that changes when any change-defining byte does."""
    return sha256_hex(digest_listing(package_dir).encode("utf-8"))


# --------------------------------------------------------------------------- writing a package


def plan_json_bytes(plan: dict[str, object]) -> bytes:
    """plan.json: one top-level key per line, then one entry (a table, a step, a probe) per line.

    Readable and diff-friendly for a reviewer, and each value is encoded by the json
    module's C encoder (`indent=` would switch to the pure-Python one, the slowest part
    of a render).
    """
    def dump(value: object) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))

    lines = []
    for key, value in plan.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = ",\n".join(f"    {dump(v)}" for v in value)
            lines.append(f"  {dump(key)}: [\n{items}\n  ]")
        elif isinstance(value, dict) and value:
            items = ",\n".join(f"    {dump(k)}: {dump(v)}" for k, v in value.items())
            lines.append(f"  {dump(key)}: {{\n{items}\n  }}")
        else:
            lines.append(f"  {dump(key)}: {dump(value)}")
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode("utf-8")

import os
import shutil
import tempfile
from dataclasses import dataclass



@dataclass(frozen=True)
class Package:
    """A rendered package in memory: relative POSIX path -> exact bytes."""

    name: str
    files: dict[str, bytes]

    def write(self, out_dir: Path, *, force: bool = False) -> Path:
        """Write the package to `out_dir/<name>/` all at once, or not at all.

        Files go to a temporary sibling folder that is renamed into place, so a crash or a
        full disk never leaves a half-written package. With `force`, an existing package is
        replaced, but its evidence (run records, approvals) is carried over: it describes
        what happened and must not vanish with a re-render.
        """
        target = out_dir / self.name
        if target.exists() and not force:
            raise UserError(f"{target}: already exists; use --force to replace it")
        if target.exists() and not target.is_dir():
            raise UserError(f"{target}: exists and is not a folder")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{out_dir}: cannot create the output folder: {exc.strerror or exc}") from None
        staging = Path(tempfile.mkdtemp(prefix=f".{self.name}.", suffix=".tmp", dir=out_dir))
        try:
            for rel, data in self.files.items():
                path = staging / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "wb") as fh:
                    fh.write(data)
            os.chmod(staging, 0o755)
            if target.exists():
                for evidence in EVIDENCE_DIRS:
                    if (target / evidence).is_dir():
                        os.replace(target / evidence, staging / evidence)
                retired = Path(tempfile.mkdtemp(prefix=f".{self.name}.", suffix=".old", dir=out_dir))
                os.replace(target, retired / self.name)
                os.replace(staging, target)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.replace(staging, target)
        except OSError as exc:
            raise UserError(f"{target}: cannot write the package: {exc.strerror or exc}") from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return target
