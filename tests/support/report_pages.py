"""The board's page (`psbridge report`): approving a package through the CLI fixture, the page's visible text,
and the change window the page tests use. Shared by test_report.py and the attack review."""

from __future__ import annotations

import re
from pathlib import Path

WINDOW = "2026-12-12T20:00+01:00/2026-12-12T22:00+01:00"


def approve(psbridge, pkg: Path, key: Path, *args: str) -> None:
    result = psbridge("approve", pkg, "--key", key, *args)
    assert result.exit_code == 0, result.stderr


def text_of(html: str) -> str:
    """The visible text, roughly: tags dropped, entities decoded, white space runs as one space."""
    import html as html_module

    return re.sub(r"\s+", " ", html_module.unescape(re.sub(r"<[^>]+>", " ", html)))
