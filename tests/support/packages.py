"""Packages for the tests that run or check against the peer, and readers of what a package holds."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from .winrm_peer import Engine, Reply

#: The certificate the check tests' packages record (thumbprint as in support/probe_states.py).
CHECK_THUMB = "A" * 40


def write_check_package(root: Path, profile: str = "msonline", approved: str | None = CHECK_THUMB,
                        not_after: str = "2036-01-01T00:00:00Z") -> Path:
    """The example package for the loopback server, with a local certificate's facts (unless approved=None)."""
    from psbridge.parameters import EXAMPLE, parse_parameters
    from psbridge.render import render_package
    from psbridge.writer import write_package

    data = copy.deepcopy(EXAMPLE)
    data["profile"] = profile
    data["crm"]["server"] = "127.0.0.1"  # the loopback peer: run and check connect to the approved server
    facts = check_facts(approved, not_after) if approved else None
    return write_package(render_package(parse_parameters(data), facts), root / "out")


def check_facts(thumbprint: str = CHECK_THUMB, not_after: str = "2036-01-01T00:00:00Z") -> dict:  # type: ignore[type-arg]
    """The facts of a local copy of the certificate, as plan.json records them (`[certificate] local_pfx`)."""
    return {"source": "certs/s2s.pfx", "subject": "CN=crm.contoso.com", "thumbprint": thumbprint, "sha256": "0" * 64,
            "serial": "01", "issuer": "CN=crm.contoso.com", "not_before": "2026-01-01T00:00:00Z",
            "not_after": not_after, "self_signed": True, "warnings": []}


def answer_probes(engine: Engine, answers: dict) -> None:  # type: ignore[type-arg]
    """Make the peer answer each probe script with its JSON (None: leave the default empty answer)."""
    for name, answer in answers.items():
        if answer is not None:
            engine.when(f"# psbridge probe: {name} ", Reply(output=[json.dumps(answer)]))


def approvals_of(pkg: Path) -> list[Path]:
    """The package's approval files, in name order."""
    return sorted((pkg / "approvals").glob("*.json"))


def review_section(review: str, title: str) -> list:  # type: ignore[type-arg]
    """REVIEW.md's block nodes after the level-2 heading `title`, up to the next one (markdown-it)."""
    from markdown_it import MarkdownIt
    from markdown_it.tree import SyntaxTreeNode

    nodes = SyntaxTreeNode(MarkdownIt("commonmark").enable("table").parse(review)).children
    start = next(i for i, n in enumerate(nodes) if n.type == "heading" and n.tag == "h2"
                 and n.children[0].content == title)
    out = []
    for node in nodes[start + 1:]:
        if node.type == "heading" and node.tag == "h2":
            break
        out.append(node)
    return out
