"""The package on disk: its files, their hashes, and the one digest that names it.

A package is the folder `render` writes: plan.json, REVIEW.md, setup.ps1 and steps/.
Later additions to the folder (run records under runs/, signed approvals under
approvals/) are evidence *about* the package, not part of the change, so the digest
leaves them out.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import UserError

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


def package_digest(package_dir: Path) -> str:
    """sha256 over the canonical listing: one value that changes when any change-defining byte does."""
    return sha256_hex(digest_listing(package_dir).encode("utf-8"))
