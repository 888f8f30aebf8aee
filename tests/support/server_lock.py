"""The server's run lock against the loopback peer: the fixtures (an audit log, a rendered package, the lock
model, another run's shell) and helpers that test_server_lock.py and the attack review share.

The fixtures are imported by name into the test modules that use them (`log` and `pkg` here differ from
conftest's `pkg`: the package is rendered with the audit log in the environment).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from psbridge.cli import main
from psbridge.locks import ServerLockReading

from support.lab import USER, WINRM_PASSWORD
from support.winrm_peer import Engine
from support.winrm_peer.serverlock import ServerLockModel, iso


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "logs" / "audit.jsonl"
    monkeypatch.setenv("PSBRIDGE_AUDIT_LOG", str(path))
    return path


@pytest.fixture
def pkg(tmp_path: Path, log: Path) -> Path:
    out = tmp_path / "output"
    assert main(["render", "--example", "--out", str(out)]) == 0
    return out / "contoso"


@pytest.fixture
def model(http_peer: Any, engine: Engine) -> ServerLockModel:
    return ServerLockModel(http_peer).install(engine)


@pytest.fixture
def other_shell(http_peer: Any) -> Iterator[str]:
    """Another run's session on the server (a crashed or a live one): a shell psbridge did not open."""
    from pypsrp.powershell import RunspacePool
    from pypsrp.wsman import WSMan

    pool = RunspacePool(WSMan("127.0.0.1", port=http_peer.port, username=USER, password=WINRM_PASSWORD, ssl=False,
                              auth="ntlm", no_proxy=True))
    pool.open()
    yield str(pool.id).upper()
    pool.connection.close()


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def steps_sent(engine: Engine) -> list[int]:
    return [int(s[len("# psbridge step "):][:2]) for s in engine.scripts() if s.startswith("# psbridge step ")]


def _reading(age: float, step_timeout: int = 900, **change: Any) -> ServerLockReading:
    from datetime import datetime, timezone

    now = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
    beat = now - timedelta(seconds=age)
    record = {"format": 1, "state": "held", "user": "jane", "workstation": "ws01", "package": "contoso",
              "shell": "6F9A11B2-0000-4000-8000-000000000001", "since": iso(beat), "heartbeat": iso(beat),
              "step_timeout": step_timeout, "pid": 12, "process_started": iso(beat), **change}
    return ServerLockReading.parse(json.dumps({"now": iso(now), "record": record}), "test")
