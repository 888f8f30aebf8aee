"""setup.ps1 prints hashes a transcript can be checked against: the steps digest first, then
before each step the sha256 of its step file. It cannot print the package digest, which
covers setup.ps1 itself (and plan.json, which records setup.ps1's sha256)."""

from __future__ import annotations

import copy
import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from psbridge.package import Package
from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.powershell import unquote
from psbridge.render import render_package
from psbridge.writer import write_package

FARM = ["crm02.contoso.local", "crm03.contoso.local"]


def data(profile: str, farm: bool = False) -> dict[str, Any]:
    out = copy.deepcopy(EXAMPLE)
    out["profile"] = profile
    if farm:
        out["crm"]["server"] = "crm01.contoso.local"
        out["crm"]["additional_servers"] = FARM
    return out


CASES = {"msonline": data("msonline"), "graph": data("graph"), "farm": data("msonline", farm=True)}


def printed(setup: bytes) -> list[str]:
    """What setup.ps1's top-level Write-Host lines print, in order (the literals decoded)."""
    text = setup[3:].decode("utf-8")
    return [unquote(m.group(1)) for m in re.finditer(r"^ *Write-Host ('(?:[^']|'')*')\r$", text, re.M)]


def sha256sum_listing(files: dict[str, bytes], prefix: str) -> str:
    """What `sha256sum <prefix>*` prints, computed independently of psbridge."""
    return "".join(f"{hashlib.sha256(files[rel]).hexdigest()}  {rel}\n" for rel in sorted(files)
                   if rel.startswith(prefix))


@pytest.mark.parametrize("case", list(CASES))
def test_setup_prints_the_steps_digest_and_each_steps_sha256(case: str) -> None:
    files = render_package(parse_parameters(CASES[case])).files
    lines = printed(files["setup.ps1"])
    steps_digest = hashlib.sha256(sha256sum_listing(files, "steps/").encode()).hexdigest()
    assert lines[1].startswith(f"steps digest {steps_digest} ")
    hash_lines = [line for line in lines if line.startswith("    sha256 ")]
    main_steps = sorted(rel for rel in files if rel.startswith("steps/") and not rel.startswith("steps/09-"))
    assert hash_lines == [f"    sha256 {hashlib.sha256(files[rel]).hexdigest()}  {rel}" for rel in main_steps]
    # each hash is printed right after its step's banner, before the step's own text
    text = files["setup.ps1"][3:].decode("utf-8")
    for rel in main_steps:
        sha = hashlib.sha256(files[rel]).hexdigest()
        body = files[rel][3:].decode("utf-8")
        assert text.index(sha) < text.index(body) < text.index(body) + len(body)
    package = Package(files, Path(case))
    assert package.digest not in text  # it can't be: setup.ps1 is part of it
    assert "psbridge show" in lines[1]


def test_farm_setup_names_step_09s_sha256_in_its_comment() -> None:
    files = render_package(parse_parameters(CASES["farm"])).files
    sha = hashlib.sha256(files["steps/09-additional-servers.ps1"]).hexdigest()
    assert f"# 'steps/09-additional-servers.ps1' (sha256 '{sha}') runs on each additional server" in \
        files["setup.ps1"][3:].decode("utf-8")


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs coreutils sha256sum")
def test_the_printed_hashes_are_what_sha256sum_says_in_the_package_folder(tmp_path: Path) -> None:
    rendered = render_package(parse_parameters(CASES["farm"]))
    folder = write_package(rendered, tmp_path)
    lines = printed(rendered.files["setup.ps1"])
    listing = subprocess.run("sha256sum steps/*.ps1", shell=True, cwd=folder, capture_output=True, check=True).stdout
    assert lines[1].split()[2] == hashlib.sha256(listing).hexdigest()
    # REVIEW.md's hash block is `sha256sum -c` input for the package folder
    review = rendered.files["REVIEW.md"].decode("utf-8")
    block = review.split("## Files and hashes", 1)[1].split("```text\n", 1)[1].split("\n```", 1)[0]
    assert block.count("\n") >= 9 and "  setup.ps1\n" in block
    check = subprocess.run(["sha256sum", "-c", "--strict", "-"], input=block.encode() + b"\n", cwd=folder,
                           capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    for line in (ln for ln in lines if ln.startswith("    sha256 ")):
        assert line.strip().removeprefix("sha256 ") + "\n" in block + "\n"
