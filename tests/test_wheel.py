"""Install psbridge from a wheel into a fresh virtual environment and run the README's first command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_installs_and_renders_the_example(tmp_path: Path) -> None:
    # Built from a copy of the sources: a build/ folder left in the checkout by an earlier build
    # (of an earlier layout) must not slip stale files into the wheel.
    import shutil

    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", "build", "dist", "output", "*.egg-info",
                                                               "__pycache__", ".git", ".hypothesis"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("psbridge-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "psbridge/templates/steps/certificate/msonline.ps1.j2" in names
    assert "psbridge/templates/steps/certificate/_proof.ps1.j2" in names
    assert "psbridge/steps/spn.py" in names  # the step units ship as a sub-package
    assert "psbridge/templates/parameters.toml" in names
    # Every sub-package is in it (the command line runs packages through psbridge.remote).
    assert {"psbridge/remote/run.py", "psbridge/steps/spn.py"} <= set(names)
    # The import name is psbridge: nothing called `generator` lands in site-packages.
    assert not [n for n in names if n.split("/")[0] == "generator"]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin/pip"), "install", "--quiet", str(wheel)], check=True, capture_output=True,
                   timeout=600)
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run([str(venv / "bin/psbridge"), "render", "--example"], cwd=work, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (work / "output/contoso/setup.ps1").read_bytes().startswith(b"\xef\xbb\xbf#Requires -Version 5.1")
    assert len(list((work / "output/contoso/steps").glob("*.ps1"))) == 8
