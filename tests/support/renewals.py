"""A certificate renewal against the loopback server: the package (`renewal`), the Graph token in the
environment (fixture `graph_env`, imported by name), the step scripts sent, and the audit log's proof line.

test_renewal.py tests the renewal with them; the attack review forges proof lines with them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from support.lab import FARM
from support.probe_states import OTHER
from support.winrm_peer import Engine
from support.winrm_peer.package import parameters_for

#: The certificate in use that the renewal replaces (probe_states' OTHER); the new one is THUMB.
OLD = OTHER
GRAPH_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.renewal-test-token"


@pytest.fixture
def graph_env(secrets_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSBRIDGE_GRAPH_TOKEN", GRAPH_TOKEN)


def renewal(tmp_path: Path, profile: str = "graph", farm: bool = True, wait: int | None = 0) -> Path:
    """A renewal package of the loopback server (and farm), rendered and written as `psbridge render` does.

    `wait` is `[certificate] switch_after_hours`: 0 (the run goes through, as these tests were written
    for) unless a test is about the wait; None leaves it out (the default, 24 hours).
    """
    from psbridge.parameters import parse_parameters
    from psbridge.render import render_package
    from psbridge.writer import write_package

    data = parameters_for(profile=profile, server="127.0.0.1", crm={"additional_servers": FARM} if farm else {})
    data["certificate"]["replaces"] = OLD
    if wait is not None:
        data["certificate"]["switch_after_hours"] = wait
    return write_package(render_package(parse_parameters(data)), tmp_path / "output")


def sent(engine: Engine) -> list[str]:
    """`NN id` of every step script the engine received, in order."""
    out = []
    for script in engine.scripts():
        m = re.match(r"# psbridge step (\d\d)(?:/\d\d)?: ([a-z-]+) -", script)
        if m:
            out.append(f"{m.group(1)} {m.group(2)}")
    return out


# --------------------------------------------------------------------------- the package


def _audit_lines(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


def _proof(tmp_path: Path) -> dict:
    """The audit log's one proof line: step spn of the renewal ended OK (read back)."""
    [line] = [l for l in _audit_lines(tmp_path) if l["action"] == "step-end"]
    return line


def _later(monkeypatch: pytest.MonkeyPatch, moment) -> None:  # type: ignore[no-untyped-def]
    """psbridge's clock reads `moment` (the audit lines keep their real time: the wait counts from it)."""
    from psbridge import clock

    monkeypatch.setattr(clock, "utc_now", lambda: moment)


def _proven_at(line: dict):  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    return datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
