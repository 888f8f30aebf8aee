"""Writing and hashing files, so that nothing is ever half-written or briefly readable by others.

Every file psbridge writes outside a package (parameters files, keys, certificates,
approvals) goes through here: a temporary file in the target's folder, created with its
final mode, then renamed into place. Without `overwrite` the last step is a hard link,
which fails atomically when the name was taken in the meantime.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import UserError


def sha256_hex(data: bytes) -> str:
    """Hex sha256, the one hash psbridge uses for files, packages and records."""
    return hashlib.sha256(data).hexdigest()


def write_file(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    """Write `data` to `path` with `mode`: readers see the old file or the whole new one."""
    folder = path.parent
    if path.is_dir():
        raise UserError(f"{path}: is a folder")
    if not overwrite and (path.exists() or path.is_symlink()):
        raise UserError(f"{path}: exists; use --force to replace it")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise UserError(f"{folder}: cannot write: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)  # from the start: a private key is never readable by others
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise UserError(f"{path}: exists; use --force to replace it") from None
            except OSError:
                # No hard links on this file system: check once more, then rename.
                if path.exists():
                    raise UserError(f"{path}: exists; use --force to replace it") from None
                os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_files(files: Iterable[tuple[Path, bytes]], mode: int, *, overwrite: bool) -> list[Path]:
    """Write several files that belong together (a .pfx and its .cer): all of them, or none.

    Without `overwrite` every target is checked before the first is written, and the files
    already placed are removed again when a later one fails.
    """
    items = [(Path(p), data) for p, data in files]
    if not overwrite:
        taken = [str(p) for p, _ in items if p.exists() or p.is_symlink()]
        if taken:
            raise UserError(*(f"{p}: exists; use --force to replace it" for p in taken))
    placed: list[Path] = []
    try:
        for target, data in items:
            try:
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise UserError(f"{target.parent}: cannot create folder: {exc.strerror or exc}") from None
            write_file(target, data, mode, overwrite=overwrite)
            placed.append(target)
    except BaseException:
        if not overwrite:
            for done in placed:
                done.unlink(missing_ok=True)
        raise
    return placed
