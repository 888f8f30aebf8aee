"""A recorded run for rollback to back out: the loopback peer answers the state probes as a server would
before and after steps 06 and 07, so the run record holds what the steps added (ADDED_KEY, SPN).

test_rollback.py tests rollback with it; other test modules make the same run to test what surrounds rollback.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from psbridge.cli import main

from support.cli import check_args
from support.packages import write_check_package
from support.probe_states import state
from support.winrm_peer import Engine, Reply, WinRMPeer

ADDED_KEY = "11111111-2222-4333-8444-555555555555"
SPN = "00000007-0000-0000-c000-000000000000/*.contoso.com"


def _server_states(engine: Engine, settings_before: dict[str, str | None] | None = None) -> None:
    """Before: no credential, no SPN, ServerSettings unset (or `settings_before`). After 06 and 07: what the steps add."""
    before, after = state("fresh server"), state("fully configured")
    if settings_before is not None:
        before["crm"]["server_settings"] = settings_before
    entra_before = copy.deepcopy(before["entra"])
    entra_before["key_credentials"] = []
    entra_before["service_principal_names"] = []
    entra_after = copy.deepcopy(after["entra"])
    entra_after["key_credentials"] = [{"key_id": ADDED_KEY, "thumbprint": "A" * 40, "matches_certificate": True,
                                       "start": "2026-01-01T00:00:00Z", "end": "2036-01-01T00:00:00Z"}]
    entra_after["service_principal_names"] = [SPN]
    probe = "# psbridge probe: {} "
    engine.when(probe.format("certificate"), Reply(output=[json.dumps(after["certificate"])]))
    engine.when(probe.format("entra"), Reply(output=[json.dumps(entra_before)]), times=1)
    engine.when(probe.format("entra"), Reply(output=[json.dumps(entra_after)]))
    engine.when(probe.format("crm"), Reply(output=[json.dumps(before["crm"])]), times=3)  # 02 before/after, 07 before
    engine.when(probe.format("crm"), Reply(output=[json.dumps(after["crm"])]))


def _run(tmp_path: Path, peer: WinRMPeer, engine: Engine, log: Path, keys: dict[str, Path],
         settings_before: dict[str, str | None] | None = None) -> tuple[Path, Path]:
    """The package approved (so the log named with --audit-log is the package's own log), then run."""
    pkg = write_check_package(tmp_path)
    assert main(["approve", str(pkg), "--key", str(keys["jane"]), "--audit-log", str(log)]) == 0
    _server_states(engine, settings_before)
    assert main(["run", *check_args(pkg, peer)[1:], "--yes", "--audit-log", str(log)]) == 0
    [record] = list((pkg / "runs").glob("*.jsonl"))
    return pkg, record


def _rollback_args(pkg: Path, peer: WinRMPeer, record: Path, log: Path) -> list[str]:
    return ["rollback", *check_args(pkg, peer)[1:], "--run", str(record), "--yes", "--audit-log", str(log)]
