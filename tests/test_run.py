"""`psbridge run` end to end: the real CLI and the unmodified pypsrp client against the loopback peer.

The peer (tests/support/winrm_peer) is a WinRM/PSRP protocol peer, not PowerShell: these
tests prove what psbridge sends, in which order, how it stops and what it writes;
not what the scripts would do on a Windows server.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from psbridge.catalogue import MSONLINE_STEPS, resume_selection
from psbridge.cli import main

from support.cli import run_args
from support.packages import answer_probes
from support.probe_states import state
from support.steps import STEP
from support.lab import O365_PASSWORD, O365_USER, PFX_PASSWORD, SECRETS, USER, WINRM_PASSWORD, assert_no_secrets
from support.winrm_peer import CredentialValue, Engine, ErrorSpec, Reply, SecureValue, WinRMPeer
from support.winrm_peer.package import marker

EAP = "$ErrorActionPreference = 'Stop'"


def psbridge(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


LOCK = "# psbridge lock:"


def step_scripts(engine: Engine) -> list[int]:
    """Indexes of the steps the peer received, in order (the EAP and lock pipelines left out)."""
    found = []
    for script in engine.scripts():
        match = re.match(r"# psbridge step (\d\d)/", script)
        if match:
            found.append(int(match.group(1)))
        else:
            # the EAP line, the run lock, and the read-only probes that record the state around a change
            assert script == EAP or script.startswith((LOCK, "# psbridge probe: ")), script
    return found


def step_pipelines(pipelines: list) -> list:
    """The pipelines that carried steps (not the EAP or lock scripts)."""
    return [p for p in pipelines if p.script.startswith("# psbridge step ")]


def step_index(script: str) -> int:
    """The step number in a step's header line (`# psbridge step 02/08: …`)."""
    return int(script[len("# psbridge step "):][:2])


def records(pkg: Path) -> list[Path]:
    return sorted((pkg / "runs").glob("*.jsonl"))


def continue_argv(out: str) -> list[str]:
    """The exact continue command the summary printed, as argv for main()."""
    lines = [l.strip() for l in out.splitlines() if l.strip().startswith("psbridge run ")]
    assert lines, out
    words = shlex.split(lines[0])
    assert words[:2] == ["psbridge", "run"]
    return words[1:]


# -- full runs ---------------------------------------------------------------------


def test_full_run_over_http_with_ntlm_message_encryption(pkg, http_peer, engine, secrets_env, capsys):
    engine.when(marker(STEP[8]), Reply(output=["5f2e1c1a-0000-4000-8000-000000000001"], warnings=["slow tenant"]))
    code, out, err = psbridge(capsys, run_args(pkg, http_peer))
    assert code == 0, out + err
    # One session: the EAP pipeline first, then the run lock, then every step once, in order, in one shell.
    assert engine.scripts()[0] == EAP and engine.scripts()[1].startswith(LOCK)
    assert engine.pipelines[1].parameters["ShellId"] == engine.pipelines[1].shell_id.upper()
    assert step_scripts(engine) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert len({p.shell_id for p in engine.pipelines}) == 1
    assert http_peer.connections == 1  # one WSMan connection, kept alive, for the whole run
    assert http_peer.encrypted_requests >= 10  # everything after the handshake was multipart/encrypted
    # The exact text of each file (BOM dropped, CRLF kept) is what arrived.
    for pipe in step_pipelines(engine.pipelines):
        index = step_index(pipe.script)
        assert pipe.script == (pkg / STEP[index].file).read_bytes().decode("utf-8-sig")
        assert pipe.commands[0][1] is True  # sent as a script, not a command name
    # Secrets arrived only as SecureString / PSCredential parameters, and only where needed.
    by_index = {step_index(p.script): p for p in step_pipelines(engine.pipelines)}
    assert by_index[2].parameters == {"PfxPassword": SecureValue(PFX_PASSWORD)}
    assert by_index[4].parameters == {"Credential": CredentialValue(O365_USER, O365_PASSWORD)}
    assert all(not by_index[i].parameters for i in (1, 3, 5, 6, 7, 8))
    for pipe in engine.pipelines:
        assert all(s not in pipe.script for s in SECRETS)
    # Progress lines and summary.
    for step in MSONLINE_STEPS:
        assert re.search(rf"^\[{step.index:02d}/08\] {re.escape(step.id)} … ok \d+\.\d+s$", out, re.M), out
    assert "8 of 8 selected steps succeeded." in out
    # The run record: 0600, one JSON event per line, each step's sha256 and state.
    [record] = records(pkg)
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    events = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]
    assert events[0]["event"] == "run-start" and events[0]["host"] == "127.0.0.1" and events[0]["user"] == USER
    ends = [e for e in events if e["event"] == "step-end"]
    plan = json.loads((pkg / "plan.json").read_text())
    assert [(e["index"], e["sha256"], e["state"]) for e in ends] == [
        (s["index"], s["sha256"], "ok") for s in plan["steps"]
    ]
    assert all(e["started"] <= e["ended"] for e in ends)
    assert ends[-1]["output"] == ["5f2e1c1a-0000-4000-8000-000000000001"] and ends[-1]["warnings"] == ["slow tenant"]
    assert all(e["output"] == [] for e in ends[:-1])
    assert events[-1]["event"] == "run-end" and events[-1]["exit_code"] == 0
    assert_no_secrets(out, err, record.read_bytes())


def test_full_run_over_https_with_ca_bundle(pkg, https_peer, engine, pki, secrets_env, capsys):
    args = ["run", str(pkg), "--yes", "--host", "127.0.0.1", "--port", str(https_peer.port), "--username", USER,
            "--ca-bundle", str(pki.ca_pem), "--o365-user", O365_USER]
    code, out, err = psbridge(capsys, args)
    assert code == 0, out + err
    assert step_scripts(engine) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert https_peer.encrypted_requests == 0  # TLS protects the messages; no double wrapping
    assert "WARNING" not in err
    assert_no_secrets(out, err, records(pkg)[0].read_bytes())


def test_basic_auth_over_https(pkg, engine, ntlm_users, pki, secrets_env, capsys, monkeypatch):
    with WinRMPeer(engine, ntlm_users, auth=("basic",), tls=pki.server_context(), cert_der=pki.cert_der) as peer:
        base = ["run", str(pkg), "--yes", "--host", "127.0.0.1", "--port", str(peer.port), "--auth", "basic",
                "--username", "crmadmin", "--ca-bundle", str(pki.ca_pem), "--o365-user", O365_USER]
        code, out, err = psbridge(capsys, base)
        assert code == 0, out + err
        assert step_scripts(engine) == [1, 2, 3, 4, 5, 6, 7, 8]
        monkeypatch.setenv("PSBRIDGE_WINRM_PASSWORD", "wrong")
        code, out, err = psbridge(capsys, base)
        assert code == 3 and "authentication failed" in err and err.count("\n") == 1
    assert len([p for p in engine.pipelines if not p.script.startswith("# psbridge probe: ")
                and not p.parameters.get("Heartbeat") and not p.parameters.get("Release")]) == 10
    # EAP, lock, 8 steps (and the state probes around the changes, the lock's heartbeats and its release,
    # which tests/test_server_lock.py counts); nothing more after the failed logon


def test_untrusted_certificate_is_refused_by_default(pkg, https_peer, engine, secrets_env, capsys):
    args = ["run", str(pkg), "--yes", "--host", "127.0.0.1", "--port", str(https_peer.port), "--username", USER,
            "--o365-user", O365_USER]
    code, out, err = psbridge(capsys, args)
    assert code == 3
    assert err.count("\n") == 1 and "TLS certificate verify failed" in err and "--ca-bundle" in err
    assert "Traceback" not in out + err
    assert engine.pipelines == []


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_a_ca_bundle_from_the_environment_does_not_widen_trust(variable, pkg, https_peer, engine, pki, secrets_env,
                                                               capsys, monkeypatch):
    """requests (under pypsrp) takes REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE as the trusted CAs when no bundle is
    given: anyone who sets the variable could make psbridge trust their server. Only --ca-bundle widens trust;
    the variable is named in a warning and ignored."""
    monkeypatch.setenv(variable, str(pki.ca_pem))
    args = ["run", str(pkg), "--yes", "--host", "127.0.0.1", "--port", str(https_peer.port), "--username", USER,
            "--o365-user", O365_USER]
    code, out, err = psbridge(capsys, args)
    assert code == 3, out + err
    assert "TLS certificate verify failed" in err and f"{variable} is ignored" in err and "--ca-bundle" in err
    assert engine.pipelines == []


def test_no_verify_tls_is_loudly_warned(pkg, https_peer, engine, secrets_env, capsys):
    args = ["run", str(pkg), "--yes", "--host", "127.0.0.1", "--port", str(https_peer.port), "--username", USER,
            "--o365-user", O365_USER, "--no-verify-tls"]
    code, out, err = psbridge(capsys, args)
    assert code == 0
    assert "WARNING: --no-verify-tls" in err and "NOT checked" in err
    assert step_scripts(engine) == [1, 2, 3, 4, 5, 6, 7, 8]


# -- stop at the first failure, continue with --from-step ----------------------------


@pytest.mark.parametrize("k", range(1, 9))
def test_failure_at_step_k_stops_and_from_step_k_finishes(k, pkg, http_peer, engine, secrets_env, capsys):
    terminating = k % 2 == 0
    error = ErrorSpec(f"step {k} broke", "InvalidOperation", line=3)
    reply = Reply(terminating=error) if terminating else Reply(output=["partial"], errors=[error])
    engine.when(marker(STEP[k]), reply, times=1)

    code, out, err = psbridge(capsys, run_args(pkg, http_peer))
    assert code == 1, out + err
    assert step_scripts(engine) == list(range(1, k + 1))  # nothing after k reached the peer
    assert re.search(rf"^\[{k:02d}/08\] {re.escape(STEP[k].id)} … FAILED \d+\.\d+s$", out, re.M)
    assert f"error: step {k} broke" in out
    assert "category: InvalidOperation" in out and "script line: 3" in out
    assert f"step {k:02d} ({STEP[k].id}) failed" in out
    argv = continue_argv(out)
    assert argv[-2:] == ["--from-step", str(k)]
    assert_no_secrets(out, err, " ".join(argv))

    received_before = len(engine.pipelines)
    code2, out2, err2 = psbridge(capsys, argv)
    assert code2 == 0, out2 + err2
    second = [p for p in engine.pipelines[received_before:]]
    assert second[0].script == EAP and second[1].script.startswith(LOCK)
    sent = [step_index(p.script) for p in step_pipelines(second)]
    assert sent == resume_selection(MSONLINE_STEPS, k)
    # State-changing steps before k are never re-run; session steps k needs are.
    assert all(i >= k or not STEP[i].changes_state for i in sent)
    assert all(i in sent for i in range(k, 9))
    assert len(records(pkg)) == 2
    assert_no_secrets(out2, err2, *(r.read_bytes() for r in records(pkg)))


def test_failure_output_and_errors_are_redacted(pkg, http_peer, engine, secrets_env, capsys):
    engine.when(marker(STEP[2]), Reply(output=[f"pw is {PFX_PASSWORD}"],
                                       errors=[ErrorSpec(f"bad password {PFX_PASSWORD} / {WINRM_PASSWORD}")]))
    code, out, err = psbridge(capsys, run_args(pkg, http_peer))
    assert code == 1
    assert "bad password [redacted] / [redacted]" in out
    record = records(pkg)[0].read_bytes()
    assert b"pw is [redacted]" in record
    assert_no_secrets(out, err, record)


# -- unknown outcomes --------------------------------------------------------------------


def test_step_timeout_stops_the_pipeline_and_reports_unknown(pkg, http_peer, engine, secrets_env, capsys):
    engine.when(marker(STEP[6]), Reply(hang=True))
    code, out, err = psbridge(capsys, run_args(pkg, http_peer, "--step-timeout", "1"))
    assert code == 4, out + err
    assert step_scripts(engine) == [1, 2, 3, 4, 5, 6]
    assert step_pipelines(engine.pipelines)[-1].stopped  # psbridge sent the stop signal
    assert re.search(r"^\[06/08\] spn … UNKNOWN \d+\.\d+s$", out, re.M)
    assert "timed out after 1s" in out and "outcome of step 06 (spn) is UNKNOWN" in out
    assert "--from-step 6" in out and "--from-step 7" in out
    events = [json.loads(l) for l in records(pkg)[0].read_text().splitlines()]
    assert [e["state"] for e in events if e["event"] == "step-end"][-1] == "unknown"
    assert events[-1]["exit_code"] == 4


@pytest.mark.parametrize("how", ["drop", "delete_shell", "unauthorized"])
def test_connection_lost_mid_step_is_unknown(how, pkg, http_peer, engine, secrets_env, capsys):
    engine.when(marker(STEP[3]), Reply(**{how: True}))
    code, out, err = psbridge(capsys, run_args(pkg, http_peer))
    assert code == 4, out + err
    assert step_scripts(engine) == [1, 2, 3]
    assert "connection lost while the step ran" in out
    assert "Traceback" not in out + err
    assert_no_secrets(out, err, records(pkg)[0].read_bytes())


def test_ctrl_c_mid_step_stops_the_pipeline_and_reports_unknown(pkg, http_peer, engine, secrets_env, capsys):
    import signal
    import threading

    engine.when(marker(STEP[2]), Reply(hang=True))
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        code, out, err = psbridge(capsys, run_args(pkg, http_peer))
    finally:
        timer.cancel()
    assert code == 4, out + err
    assert step_scripts(engine) == [1, 2] and step_pipelines(engine.pipelines)[-1].stopped, out
    assert "interrupted by the operator" in out and "--from-step 2" in out


# -- refused before anything runs ------------------------------------------------------------


def test_wrong_password_exits_3_before_any_step(pkg, http_peer, engine, secrets_env, capsys, monkeypatch):
    monkeypatch.setenv("PSBRIDGE_WINRM_PASSWORD", "not-the-password")
    code, out, err = psbridge(capsys, run_args(pkg, http_peer))
    assert code == 3
    assert err == f"psbridge: could not connect: authentication failed at http://127.0.0.1:{http_peer.port}/wsman " \
                  f"for {USER} with ntlm (wrong user or password, or auth not enabled); the password came from " \
                  "PSBRIDGE_WINRM_PASSWORD: set it to that user's password, or unset it to be asked\n"
    assert engine.pipelines == []
    assert http_peer.auth_failures >= 1
    events = [json.loads(l) for l in records(pkg)[0].read_text().splitlines()]
    assert events[-1]["reason"] == "connect-failed" and events[-1]["exit_code"] == 3
    assert "not-the-password" not in out + err


def test_changed_step_file_is_refused_before_connecting(pkg, http_peer, engine, secrets_env, capsys):
    path = pkg / STEP[5].file
    path.write_bytes(path.read_bytes().replace(b"Certificate", b"CERTIFICATE"))
    code, out, err = psbridge(capsys, run_args(pkg, http_peer))
    assert code == 2
    assert f"changed file: {STEP[5].file}" in err and str(pkg) in err
    assert http_peer.connections == 0 and engine.pipelines == []
    assert records(pkg) == []


def test_connection_refused_is_one_line(pkg, secrets_env, capsys, ntlm_users):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["run", str(pkg), "--yes", "--host", "127.0.0.1", "--port", str(port), "--transport", "http", "--auth", "ntlm",
            "--username", USER, "--o365-user", O365_USER]
    code, out, err = psbridge(capsys, args)
    assert code == 3
    assert err == f"psbridge: could not connect: connection refused by http://127.0.0.1:{port}/wsman " \
                  f"(is WinRM listening on port {port}?)\n"


def test_unknown_host_is_one_line(pkg, secrets_env, capsys):
    code, out, err = psbridge(capsys, ["run", str(pkg), "--yes", "--host", "no-such-host.invalid", "--username", USER,
                                       "--o365-user", O365_USER])
    assert code == 3
    # the resolver's own reason differs between systems ("Name or service not known", "Temporary failure…")
    assert re.fullmatch(r"psbridge: could not connect: cannot resolve host name 'no-such-host\.invalid' \(DNS: "
                        r"[^()\n]+\); check \[crm\] server or --host, then: nslookup no-such-host\.invalid\n", err)


def test_wsman_fault_is_one_line(pkg, http_peer, engine, secrets_env, capsys):
    code, out, err = psbridge(capsys, run_args(pkg, http_peer, "--configuration-name", "Contoso.JEA"))
    assert code == 3
    assert err.startswith("psbridge: could not connect: WinRM fault 2150858770 from http://127.0.0.1:")
    assert "Cannot find the Contoso.JEA session configuration" in err and err.count("\n") == 1
    assert engine.pipelines == []


@pytest.mark.parametrize("auth", ["basic", "certificate"])
def test_basic_and_certificate_over_http_are_refused(auth, pkg, secrets_env, capsys):
    code, out, err = psbridge(capsys, ["run", str(pkg), "--host", "h", "--transport", "http", "--auth", auth,
                                       "--username", USER, "--client-cert", __file__, "--client-key", __file__])
    assert code == 2
    assert "clear text" in err and err.count("\n") == 1


def test_from_step_out_of_range_is_usage_error(pkg, secrets_env, capsys):
    code, out, err = psbridge(capsys, ["run", str(pkg), "--host", "h", "--username", USER, "--from-step", "9"])
    assert code == 2 and "--from-step: 9 is not a step" in err


def test_only_the_secrets_the_selected_steps_need_are_asked_for(pkg, http_peer, engine, capsys, monkeypatch):
    # From step 7: steps 1 (prerequisites) and 7, 8 run; 8 needs connect(4) needs session(3).
    # Step 04 takes the O365 credential, so that is needed; the PFX password (step 02) is not.
    monkeypatch.setenv("PSBRIDGE_WINRM_PASSWORD", WINRM_PASSWORD)
    monkeypatch.setenv("PSBRIDGE_O365_PASSWORD", O365_PASSWORD)
    monkeypatch.delenv("PSBRIDGE_PFX_PASSWORD", raising=False)
    code, out, err = psbridge(capsys, run_args(pkg, http_peer, "--from-step", "7"))
    assert code == 0, out + err
    assert step_scripts(engine) == resume_selection(MSONLINE_STEPS, 7) == [1, 3, 4, 7, 8]


# -- output modes ----------------------------------------------------------------------------


def test_json_events(pkg, http_peer, engine, secrets_env, capsys):
    engine.when(marker(STEP[7]), Reply(errors=[ErrorSpec("settings locked", "PermissionDenied", line=2)]))
    code, out, err = psbridge(capsys, run_args(pkg, http_peer, "--json"))
    assert code == 1
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run-start" and kinds[-1] == "run-end"
    assert kinds.count("step-start") == kinds.count("step-end") == 7
    failed = [e for e in events if e["event"] == "step-end" and e["state"] == "failed"]
    assert failed[0]["index"] == 7 and failed[0]["errors"][0]["message"] == "settings locked"
    assert events[-1]["exit_code"] == 1 and "--from-step 7" in events[-1]["summary"][-1]


def test_step_mode_asks_y_n_quit(pkg, http_peer, engine, secrets_env, capsys, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("y\nn\nq\n"))
    code, out, err = psbridge(capsys, run_args(pkg, http_peer, "--step"))
    assert code == 1
    assert step_scripts(engine) == [1]  # 2 skipped, quit before 3
    assert "[02/08] certificate … skipped" in out
    assert "Stopped by the operator before step 03 (session)." in out and "--from-step 2" in out
    assert "Skipped at the operator's request: 02 certificate." in out


def test_library_loggers_never_see_scripts_or_secrets(pkg, http_peer, engine, secrets_env, capsys, caplog):
    import logging

    caplog.set_level(logging.DEBUG)  # even an application that logs everything at DEBUG
    code, out, err = psbridge(capsys, run_args(pkg, http_peer))
    assert code == 0
    noisy = [r for r in caplog.records if r.name.split(".")[0] in ("pypsrp", "requests", "urllib3", "spnego")]
    assert noisy == []
    assert "psbridge step" not in caplog.text
    assert_no_secrets(caplog.text)


# -- the installed command, in its own process ---------------------------------------------------


def test_cli_start_up_does_not_import_pypsrp():
    code = ("import sys, psbridge.cli; "
            "print(any(m.split('.')[0] in ('pypsrp', 'requests', 'spnego') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_real_process_run_never_prints_or_writes_secrets(pkg, http_peer, engine, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSBRIDGE_")}
    env.update(PSBRIDGE_WINRM_PASSWORD=WINRM_PASSWORD, PSBRIDGE_PFX_PASSWORD=PFX_PASSWORD,
               PSBRIDGE_O365_PASSWORD=O365_PASSWORD, PYTHONWARNINGS="always")
    engine.when(marker(STEP[8]), Reply(hang=True))
    proc = subprocess.run(
        [sys.executable, "-m", "psbridge", *run_args(pkg, http_peer, "--step-timeout", "1")],
        capture_output=True, env=env, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert b"Traceback" not in proc.stderr
    assert step_scripts(engine) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert_no_secrets(proc.stdout, proc.stderr, *(p.read_bytes() for p in pkg.rglob("*") if p.is_file()))


# -- the package `psbridge render` writes ------------------------------------------------------


def test_rendered_example_package_runs_byte_for_byte(tmp_path, http_peer, engine, secrets_env, capsys):
    assert main(["render", "--example", "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    [plan_path] = list((tmp_path / "out").glob("*/plan.json"))
    rendered = plan_path.parent
    plan = json.loads(plan_path.read_text(encoding="utf-8"))
    code, out, err = psbridge(capsys, run_args(rendered, http_peer))
    assert code == 0, out + err
    received = step_pipelines(engine.pipelines)
    assert len(received) == len(plan["steps"])
    for step, pipe in zip(plan["steps"], received):
        raw = (rendered / step["file"]).read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
        assert pipe.script == raw.decode("utf-8-sig")  # exactly the reviewed text, BOM aside
        expected = {name: (SecureValue(PFX_PASSWORD) if kind == "pfx_password"
                           else CredentialValue(O365_USER, O365_PASSWORD))
                    for name, kind in step["inputs"].items()}
        assert pipe.parameters == expected
    assert_no_secrets(out, err, *(p.read_bytes() for p in rendered.rglob("*") if p.is_file()))


# -- the Information stream (Write-Host in Windows PowerShell 5.1) ------------------------------
# CertificateReconfiguration.ps1 reports with Write-Host, which in PowerShell 5+ writes to the
# Information stream: over PSRP it arrives as INFORMATION_RECORD messages, not as output
# (about_Redirection, about_Output_Streams).


def test_information_records_are_in_the_run_record(pkg, http_peer, engine, secrets_env, capsys):
    engine.when(marker(STEP[2]), Reply(information=["Installing the certificate", f"password {PFX_PASSWORD}"]))
    code, out, err = psbridge(capsys, run_args(pkg, http_peer))
    assert code == 0, out + err
    events = [json.loads(line) for line in records(pkg)[0].read_text(encoding="utf-8").splitlines()]
    ends = {e["index"]: e for e in events if e["event"] == "step-end"}
    assert ends[2]["information"] == ["Installing the certificate", "password [redacted]"]
    assert ends[3]["information"] == []
    assert_no_secrets(out, err, records(pkg)[0].read_bytes())


def test_information_is_shown_when_a_step_fails(pkg, http_peer, engine, secrets_env, capsys):
    engine.when(marker(STEP[2]), Reply(information=["Private key not found"],
                                       terminating=ErrorSpec("CertificateReconfiguration.ps1 ended with exit code 1")))
    code, out, err = psbridge(capsys, run_args(pkg, http_peer))
    assert code == 1
    assert "    host: Private key not found" in out


def test_a_successful_run_says_what_to_do_next(pkg, http_peer, engine, secrets_env, capsys):
    # The certificate's thumbprint is a value the run read (the certificate probe before step 02,
    # the server's .cer that step 05 imports), not text scraped from a step's output.
    engine.when("# psbridge probe: certificate ", Reply(output=[json.dumps({"probe": "certificate",
                                                                           "cer_thumbprint": "ab12" * 10})]))
    engine.when(marker(STEP[5]), Reply(output=["Certificate CN=crm.contoso.com, thumbprint " + "ab12" * 10]))
    engine.when(marker(STEP[8]), Reply(output=["5f2e1c1a-0000-4000-8000-000000000001"]))
    code, out, err = psbridge(capsys, run_args(pkg, http_peer))
    assert code == 0, out + err
    assert "Next: the Enable Server-Based SharePoint Integration wizard" in out
    assert "  tenant ID:    5f2e1c1a-0000-4000-8000-000000000001" in out
    assert "  certificate:  " + "AB12" * 10 in out
    assert "       https://contoso.sharepoint.com/sites/salesteam" in out
    assert "and the tenant ID 5f2e1c1a-0000-4000-8000-000000000001; Next." in out


def test_the_wizard_hint_takes_the_tenant_that_verify_read(pkg, http_peer, engine, secrets_env, capsys):
    """Step 08's output lacks the tenant, but `--verify` read it from Entra ID: the hint names it (issue 21)."""
    answer_probes(engine, state("fully configured"))
    code, out, err = psbridge(capsys, run_args(pkg, http_peer, "--verify"))
    assert code == 0, out + err
    tenant = state("fully configured")["entra"]["tenant_id"]
    assert f"  tenant ID:    {tenant}" in out and "(not in step 08 output)" not in out
