"""Writing and hashing files, so that nothing is ever half-written or briefly readable by others.

Every file psbridge writes outside a package (parameters files, keys, certificates,
approvals) goes through here: a temporary file in the target's folder, created with its
final mode, then renamed into place. Without `overwrite` the last step is a hard link,
which fails atomically when the name was taken in the meantime.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import UserError


def sha256_hex(data: bytes) -> str:
    """Hex sha256, the one hash psbridge uses for files, packages and records."""
    return hashlib.sha256(data).hexdigest()


def listing_of(files: Mapping[str, bytes]) -> dict[str, str]:
    """Relative path -> sha256 of each file: what approvals record to name changed files later."""
    return {rel: sha256_hex(data) for rel, data in sorted(files.items(), key=lambda kv: kv[0].encode("utf-8"))}


def digest_of(listing: Mapping[str, str]) -> str:
    """sha256 over `<sha256>  <path>` lines (like sha256sum): one value for every change-defining byte.

    plan.json is one of the files, so its exact bytes (the order and selection of steps
    and probes, the parameters) are covered too.
    """
    return sha256_hex("".join(f"{digest}  {rel}\n" for rel, digest in listing.items()).encode("utf-8"))


_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symbolic link",
}


def file_kind(mode: int) -> str:
    """`a FIFO`, `a folder`…: what a stat mode says a path is, for an error line."""
    return _KINDS.get(stat.S_IFMT(mode), "not a file")


def read_regular(path: Path, label: str, *, limit: int, too_large: str, follow_symlinks: bool = True) -> bytes:
    """The bytes of `path`, refusing anything that is not a regular file of at most `limit` bytes.

    Every file psbridge reads from a place someone else could write (parameters, packages,
    approvals, keys) comes through here. It is opened with O_NONBLOCK, so that a FIFO (or a
    link to one) cannot block the open; the type is then checked on the opened descriptor
    (fstat), so a file swapped between a check and the open cannot slip through, and no
    byte is read from a FIFO or a device (/dev/zero would never end). A file that grows
    while it is read is cut off at the limit and refused. Errors are one line starting
    with `label`; `too_large` says why the limit is what it is.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        if path.is_symlink():
            raise UserError(f"{label}: is a symbolic link; links are not followed here")
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise UserError(f"{label}: cannot read: not found") from None
    except PermissionError:
        raise UserError(f"{label}: cannot read: permission denied") from None
    except OSError as exc:
        raise UserError(f"{label}: cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{label}: not a regular file ({file_kind(info.st_mode)})")
        if info.st_size > limit:
            raise UserError(f"{label}: larger than {_size(limit)} ({info.st_size} bytes); {too_large}")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise UserError(f"{label}: larger than {_size(limit)}; {too_large}")
        return b"".join(chunks)
    except OSError as exc:
        raise UserError(f"{label}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _size(limit: int) -> str:
    """`1 MiB`, `64 KiB`: a limit as people say it."""
    for unit, factor in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= factor and limit % factor == 0:
            return f"{limit // factor} {unit}"
    return f"{limit} bytes"


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
