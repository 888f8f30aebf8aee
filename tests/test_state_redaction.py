"""State readings are evidence from the server: a secret it echoes never reaches a run record or `--json`.

Issue 20, item 4: a server (or a probe answer tampered with on the way) that echoes a password in
the probes run around a state-changing step must not get it written to runs/*.jsonl nor printed by
`run --json`. `remote/probing.py`'s observer passes the readings through the run's redactor.
"""

from __future__ import annotations

import copy
import json

from psbridge.cli import main

from support.cli import check_args
from support.lab import O365_PASSWORD, SECRETS, WINRM_PASSWORD, assert_no_secrets
from support.packages import write_check_package
from support.probe_states import state
from support.winrm_peer import Reply


def test_a_password_echoed_in_state_readings_reaches_no_record_and_no_json(tmp_path, http_peer, engine,
                                                                         secrets_env, capsys):
    pkg = write_check_package(tmp_path)
    crm, entra = copy.deepcopy(state("fresh server")["crm"]), copy.deepcopy(state("fresh server")["entra"])
    crm["server_settings"]["S2SDefaultAuthorizationServerMetadataUrl"] = f"https://x/{O365_PASSWORD}"
    crm["echo"] = [WINRM_PASSWORD, {"nested": O365_PASSWORD}]
    entra["service_principal_names"] = [f"spn/{O365_PASSWORD}"]
    probe = "# psbridge probe: {} "
    engine.when(probe.format("crm"), Reply(output=[json.dumps(crm)]))
    engine.when(probe.format("entra"), Reply(output=[json.dumps(entra)]))
    engine.when(probe.format("certificate"), Reply(output=[json.dumps(state("fully configured")["certificate"])]))
    log = tmp_path / "audit.jsonl"
    code = main(["run", *check_args(pkg, http_peer)[1:], "--yes", "--json", "--audit-log", str(log)])
    out, err = capsys.readouterr()
    assert code == 0, err
    [record] = list((pkg / "runs").glob("*.jsonl"))
    data = record.read_bytes()
    states = [json.loads(line) for line in data.splitlines() if b'"event": "state"' in line or b'"event":"state"' in line]
    assert states, "the run recorded no state readings: the test would prove nothing"
    assert any("crm" in s["readings"] for s in states) and any("entra" in s["readings"] for s in states)
    assert '"event": "state"' in out or '"event":"state"' in out  # --json printed them too
    assert_no_secrets(out, err, data, log.read_bytes())
    for secret in SECRETS:
        assert secret not in out


def test_a_password_echoed_as_a_key_of_a_reading_reaches_no_record_no_json_and_no_saved_check(
        tmp_path, http_peer, engine, secrets_env, capsys):
    """A JSON object's keys are server text too: the redactor once followed only the values, so a
    password the server echoed as a key (of ServerSettings, or of any object in a probe answer)
    reached runs/*.jsonl, `run --json`, `check --json` and checks/ as it was."""
    pkg = write_check_package(tmp_path)
    crm = copy.deepcopy(state("fresh server")["crm"])
    crm["server_settings"][O365_PASSWORD] = "echoed"
    crm["echo"] = {WINRM_PASSWORD: {f"nested {O365_PASSWORD}": 1}}
    probe = "# psbridge probe: {} "
    engine.when(probe.format("crm"), Reply(output=[json.dumps(crm)]))
    log = tmp_path / "audit.jsonl"
    code = main(["run", *check_args(pkg, http_peer)[1:], "--yes", "--json", "--audit-log", str(log)])
    out, err = capsys.readouterr()
    assert code == 0, err
    [record] = list((pkg / "runs").glob("*.jsonl"))
    data = record.read_bytes()
    states = [json.loads(line) for line in data.splitlines() if json.loads(line).get("event") == "state"]
    assert any("crm" in s["readings"] for s in states), "no crm reading recorded: the test would prove nothing"
    assert any("[redacted]" in json.dumps(s["readings"]) for s in states)  # the key is there, masked
    assert_no_secrets(out, err, data, log.read_bytes())
    code = main([*check_args(pkg, http_peer), "--json", "--save", "--audit-log", str(log)])
    out, err = capsys.readouterr()
    assert code != 2, err  # other probes go unanswered here: a verdict, not an input error
    saved = [p.read_bytes() for p in (pkg / "checks").glob("*.json")]
    assert saved, "check --save wrote nothing: the test would prove nothing"
    assert any(b"[redacted]" in blob for blob in saved)  # the saved readings hold the key, masked
    assert_no_secrets(out, err, *saved, log.read_bytes())


def test_keys_that_redact_alike_keep_both_values() -> None:
    from psbridge.remote.redact import Redactor

    redact = Redactor([O365_PASSWORD, WINRM_PASSWORD])
    cleaned = redact.clean({O365_PASSWORD: 1, WINRM_PASSWORD: [O365_PASSWORD], "plain": {O365_PASSWORD: "x"}})
    assert cleaned == {"[redacted]": 1, "[redacted] 2": ["[redacted]"], "plain": {"[redacted]": "x"}}
