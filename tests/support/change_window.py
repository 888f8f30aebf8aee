"""A parameters file with a `[change] window`: the example's parameters with a ticket and the window, written
as `psbridge render` reads them. Shared by test_change_window.py and the attack review."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from psbridge.parameters import EXAMPLE
from psbridge.render import canonical_toml


def with_window(window: str) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    data["change"] = {"ticket": "CHG-9", "window": window}
    return data


def write_params(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / "p.toml"
    path.write_text(canonical_toml(data) + "\n", encoding="utf-8")
    return path
