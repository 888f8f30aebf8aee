"""`psbridge run` records the Information stream (Write-Host in Windows PowerShell 5.1).

CertificateReconfiguration.ps1 reports with Write-Host, which in PowerShell 5+ writes to the
Information stream: over PSRP it arrives as INFORMATION_RECORD messages, not as output
(about_Redirection, about_Output_Streams). Run against the loopback peer.
"""

from __future__ import annotations

import json

from test_run import (  # noqa: F401 - fixtures
    PFX_PASSWORD, STEP, assert_no_secrets, engine, http_args, http_peer, ntlm_users, pkg, psbridge, records,
    secrets_env,
)
from winrm_peer import ErrorSpec, Reply
from winrm_peer.package import marker


def test_information_records_are_in_the_run_record(pkg, http_peer, engine, secrets_env, capsys):
    engine.when(marker(STEP[2]), Reply(information=["Installing the certificate", f"password {PFX_PASSWORD}"]))
    code, out, err = psbridge(capsys, http_args(pkg, http_peer))
    assert code == 0, out + err
    events = [json.loads(line) for line in records(pkg)[0].read_text(encoding="utf-8").splitlines()]
    ends = {e["index"]: e for e in events if e["event"] == "step-end"}
    assert ends[2]["information"] == ["Installing the certificate", "password ********"]
    assert ends[3]["information"] == []
    assert_no_secrets(out, err, records(pkg)[0].read_bytes())


def test_information_is_shown_when_a_step_fails(pkg, http_peer, engine, secrets_env, capsys):
    engine.when(marker(STEP[2]), Reply(information=["Private key not found"],
                                       terminating=ErrorSpec("CertificateReconfiguration.ps1 ended with exit code 1")))
    code, out, err = psbridge(capsys, http_args(pkg, http_peer))
    assert code == 1
    assert "    host: Private key not found" in out
