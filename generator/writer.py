"""Writing a rendered package to disk: all of it, or nothing.

The package goes to a temporary sibling folder that is renamed into place, so a crash or
a full disk never leaves a half-written package. With `force`, an existing package is
replaced but its evidence (run records, approvals, saved checks) is carried over: it
describes what happened and must not vanish with a re-render.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .errors import UserError
from .package import EVIDENCE_DIRS
from .render import Rendered


def write_package(rendered: Rendered, out_dir: Path, *, force: bool = False) -> Path:
    """Write `rendered` to `out_dir/<name>/` at once; return that folder."""
    target = out_dir / rendered.name
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise UserError(f"{target}: exists and is not a folder")
    if target.exists() and not force:
        raise UserError(f"{target}: already exists; use --force to replace it")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot create the output folder: {exc.strerror or exc}") from None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{rendered.name}.", suffix=".tmp", dir=out_dir))
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot write: {exc.strerror or exc}") from None
    try:
        for rel, data in rendered.files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(data)
        os.chmod(staging, 0o755)
        if target.exists():
            for evidence in sorted(EVIDENCE_DIRS):
                if (target / evidence).is_dir() and not (target / evidence).is_symlink():
                    os.replace(target / evidence, staging / evidence)
            retired = Path(tempfile.mkdtemp(prefix=f".{rendered.name}.", suffix=".old", dir=out_dir))
            os.replace(target, retired / rendered.name)
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
