"""`psbridge rollback`: undo what one recorded run changed, with the package's reviewed scripts.

The loopback peer answers the state probes differently before and after steps 06 and 07, as
a server would: the run record then holds what the steps added, and rollback sends exactly
that back, in reverse step order, as parameters. A record the audit log does not vouch for is
refused before anything is sent.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from psbridge.cli import main

from support.cli import check_args
from support.lab import O365_PASSWORD, O365_USER
from support.packages import write_check_package
from support.probe_states import state
from support.winrm_peer import CredentialValue, Engine, Reply, WinRMPeer

ADDED_KEY = "11111111-2222-4333-8444-555555555555"
SPN = "00000007-0000-0000-c000-000000000000/*.contoso.com"


def _server_states(engine: Engine) -> None:
    """Before: no credential, no SPN, ServerSettings unset. After 06 and 07: what the steps add."""
    before, after = state("fresh server"), state("fully configured")
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
    engine.when(probe.format("crm"), Reply(output=[json.dumps(before["crm"])]), times=2)  # before 02, before 07
    engine.when(probe.format("crm"), Reply(output=[json.dumps(after["crm"])]))


def _run(tmp_path: Path, peer: WinRMPeer, engine: Engine, log: Path) -> tuple[Path, Path]:
    pkg = write_check_package(tmp_path)
    _server_states(engine)
    assert main(["run", *check_args(pkg, peer)[1:], "--yes", "--audit-log", str(log)]) == 0
    [record] = list((pkg / "runs").glob("*.jsonl"))
    return pkg, record


def _rollback_args(pkg: Path, peer: WinRMPeer, record: Path, log: Path) -> list[str]:
    return ["rollback", *check_args(pkg, peer)[1:], "--run", str(record), "--yes", "--audit-log", str(log)]


def test_rollback_sends_exactly_what_the_run_added_in_reverse_order(tmp_path, http_peer, engine, secrets_env,
                                                                    capsys):
    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log)
    before = len(engine.pipelines)
    assert main(_rollback_args(pkg, http_peer, record, log)) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "step 02 certificate: by hand:" in out and "private key is not in the package" in out
    sent = engine.pipelines[before:]
    scripts = [p.script for p in sent]
    undo = [p for p in sent if p.script.startswith("# psbridge back-out of step")]
    assert [p.script.split(" (")[0] for p in undo] == ["# psbridge back-out of step 07", "# psbridge back-out of step 06"]
    assert undo[0].parameters == {"PrincipalId": "", "MetadataUrl": ""}
    assert undo[1].parameters == {"KeyIds": [ADDED_KEY], "ServicePrincipalName": SPN}
    connect = next(p for p in sent if p.script.startswith("# psbridge step 04/"))
    assert connect.parameters["Credential"] == CredentialValue(O365_USER, O365_PASSWORD)
    assert scripts.index(connect.script) < scripts.index(undo[0].script)  # the session it needs comes first
    assert not any(p.script.startswith("# psbridge step 02/") for p in sent)  # no step is run again
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(l["action"], l["outcome"]) for l in lines[-2:]] == [("rollback", "rollback-started"), ("rollback", "ok")]


def test_a_record_the_audit_log_does_not_vouch_for_is_refused(tmp_path, http_peer, engine, secrets_env, capsys):
    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log)
    record.write_bytes(record.read_bytes().replace(ADDED_KEY.encode(), b"99999999-2222-4333-8444-555555555555"))
    before = len(engine.pipelines)
    assert main(_rollback_args(pkg, http_peer, record, log)) == 2
    assert "is in no `run` line of the audit log" in capsys.readouterr().err
    assert len(engine.pipelines) == before


def test_a_value_that_is_not_what_it_must_be_is_refused(tmp_path, http_peer, engine, secrets_env, capsys):
    """Even a vouched-for record: a key id that is not a GUID never becomes a parameter."""
    from psbridge import audit
    from psbridge.files import sha256_hex

    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log)
    forged = record.read_bytes().replace(ADDED_KEY.encode(), b"'; Remove-Item C:\\\\ -Recurse; '")
    record.write_bytes(forged)
    from psbridge.package import read_package

    audit.record(log, "run", read_package(pkg), "ok", record=str(record), record_sha256=sha256_hex(forged))
    before = len(engine.pipelines)
    assert main(_rollback_args(pkg, http_peer, record, log)) == 2
    assert "is not a GUID; refusing to use the record" in capsys.readouterr().err
    assert len(engine.pipelines) == before
