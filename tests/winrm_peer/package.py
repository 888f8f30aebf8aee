"""A package folder with the shape `psbridge render` writes, for run tests and the benchmark.

Built from the real step catalogue (generator.steps), so ids, needs, inputs and
changes_state are the ones `run` sees in production; the step texts are short
stand-ins (UTF-8 with BOM, CRLF, a `param()` block with the same secret
parameters) because the peer never interprets them anyway.
"""

from __future__ import annotations

import json
from pathlib import Path

from generator.plan import sha256_hex
from generator.steps import MSONLINE_STEPS, Step

PARAM_BLOCKS = {
    "pfx_password": "[securestring] ${name}",
    "o365_credential": "[pscredential] ${name}",
}


def marker(step: Step) -> str:
    """A line unique to each step's text, so the peer's rules can tell steps apart."""
    return f"# psbridge-step {step.index:02d} {step.id}"


def step_text(step: Step) -> str:
    params = ", ".join(PARAM_BLOCKS[kind].format(name=name) for name, kind in step.inputs.items())
    lines = [
        marker(step),
        f"param({params})",
        "Set-StrictMode -Version 3.0",
        f"Write-Output '{step.title.replace(chr(39), chr(39) * 2)}: done'",
        "",
    ]
    return "\r\n".join(lines)


def make_package(root: Path, name: str = "contoso") -> Path:
    """Write PKG/plan.json, REVIEW.md, setup.ps1 and steps/*.ps1 under `root`; return PKG."""
    pkg = root / name
    (pkg / "steps").mkdir(parents=True)
    (pkg / "runs").mkdir()
    review = b"# Review\r\n"
    setup = "\ufeffparam([int] $FromStep = 1)\r\n".encode()
    (pkg / "REVIEW.md").write_bytes(review)
    (pkg / "setup.ps1").write_bytes(setup)
    steps = []
    for step in MSONLINE_STEPS:
        data = ("\ufeff" + step_text(step)).encode("utf-8")
        (pkg / step.file).write_bytes(data)
        steps.append({
            "index": step.index, "id": step.id, "title": step.title, "file": step.file,
            "sha256": sha256_hex(data), "changes_state": step.changes_state, "kind": step.kind,
            "needs": list(step.needs), "inputs": dict(step.inputs),
        })
    plan = {
        "format_version": 1, "tool": "psbridge", "tool_version": "0.1.0", "name": name, "profile": "msonline",
        "parameters": {}, "files": {"setup.ps1": sha256_hex(setup), "REVIEW.md": sha256_hex(review)},
        "steps": steps,
    }
    (pkg / "plan.json").write_text(json.dumps(plan, indent=2), encoding="utf-8")
    return pkg
