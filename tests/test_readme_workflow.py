"""The README's whole workflow runs as written: init, render, report, keygen, approve, verify, check,
run, rollback, audit verify, against the loopback WinRM peer.

Only what the README says to change is changed: the edit after `init` (the server), and the
server's name, which points at the peer here (127.0.0.1, plus the peer's port and HTTP with
NTLM message encryption); a shell glob in `--run` is expanded as the shell would.
"""

from __future__ import annotations

import copy
import glob
import io
import json
import re
import shlex
import sys

from psbridge.cli import main

from support.cli import CHECKOUT
from support.packages import answer_probes
from support.probe_states import state
from support.winrm_peer import Engine, Reply


class _Terminal(io.StringIO):
    """Standard input that is a terminal holding the operator's answers."""

    def isatty(self) -> bool:
        return True

README = (CHECKOUT / "README.md").read_text(encoding="utf-8")
SERVER = "crm01.contoso.local"


def workflow() -> list[list[str]]:
    """The commands of the README's workflow block, each as argv (continuation lines joined)."""
    block = README.split("### The whole workflow", 1)[1].split("```console", 1)[1].split("```", 1)[0]
    block = block.replace("\\\n", " ")
    commands = []
    for line in block.splitlines():
        if line.startswith("$ psbridge "):
            words = shlex.split(line[2:], comments=True)
            commands.append(words[1:])
    return commands


def _server_changes(engine: Engine) -> None:
    """The peer answers the state probes as a server that the run changes would."""
    before, after = state("fresh server"), state("fully configured")
    entra_before = copy.deepcopy(before["entra"])
    entra_before["key_credentials"], entra_before["service_principal_names"] = [], []
    entra_after = copy.deepcopy(after["entra"])
    entra_after["key_credentials"] = [{"key_id": "11111111-2222-4333-8444-555555555555", "thumbprint": "A" * 40,
                                       "matches_certificate": True, "start": "2026-01-01T00:00:00Z",
                                       "end": "2036-01-01T00:00:00Z"}]
    probe = "# psbridge probe: {} "
    engine.reset_rules()
    engine.when(probe.format("server"), Reply(output=[json.dumps(after["server"])]))
    engine.when(probe.format("certificate"), Reply(output=[json.dumps(after["certificate"])]))
    engine.when(probe.format("entra"), Reply(output=[json.dumps(entra_before)]), times=1)
    engine.when(probe.format("entra"), Reply(output=[json.dumps(entra_after)]))
    engine.when(probe.format("crm"), Reply(output=[json.dumps(before["crm"])]), times=2)
    engine.when(probe.format("crm"), Reply(output=[json.dumps(after["crm"])]))


def test_the_readme_workflow_runs_as_written(tmp_path, http_peer, engine, secrets_env, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PSBRIDGE_AUDIT_LOG")  # the workflow's log is the default one, beside the packages
    monkeypatch.setenv("PSBRIDGE_KEY_PASSPHRASE", "board-Passphrase-1")
    to_peer = ["--port", str(http_peer.port), "--transport", "http", "--auth", "ntlm"]
    codes = {}
    for argv in workflow():
        command = argv[0]
        argv = [a.replace(SERVER, "127.0.0.1") for a in argv]
        argv = [m for a in argv for m in (sorted(glob.glob(a)) if "*" in a else [a])]
        if command in ("check", "run", "rollback"):
            argv = [*argv, *to_peer]
        if command == "check":
            answer_probes(engine, state("fresh server"))
        if command == "run":
            _server_changes(engine)
        if command == "rollback":  # rollback asks before sending values read from the record: the operator says y
            monkeypatch.setattr(sys, "stdin", _Terminal("y\n"))
        code = main(argv)
        out, err = capsys.readouterr()
        codes[command] = code
        expected = 5 if command == "check" else 0  # check: the fresh server would change
        assert code == expected, (argv, out, err)
        if command == "rollback":
            assert "Send these back-out scripts with these values?" in err
        if command == "init":  # the README's edit: the server this change is for
            params = tmp_path / argv[1]
            text = params.read_text(encoding="utf-8")
            text = re.sub(r"(?m)^\[crm\]\n", '[crm]\nserver = "127.0.0.1"\n', text)  # the peer
            params.write_text(text, encoding="utf-8")
    assert list(codes) == ["init", "render", "report", "keygen", "approve", "verify", "check", "run", "rollback",
                           "audit"]
    assert (tmp_path / "changes" / "contoso-report.html").is_file()
    assert list((tmp_path / "changes" / "contoso" / "checks").glob("*.json"))
    undo = [p for p in engine.pipelines if p.script.startswith("# psbridge back-out of step")]
    assert len(undo) == 2  # the run added a credential, the SPN and the settings: all undone
    log = [json.loads(line) for line in (tmp_path / "changes" / "audit.jsonl").read_text().splitlines()]
    assert [line["action"] for line in log][:2] == ["render", "approve"] and log[-1]["action"] == "rollback"


def test_the_readme_monitoring_check_runs_as_written(tmp_path, http_peer, engine, secrets_env, monkeypatch, capsys):
    """The scheduled `check` of "Monitoring certificate expiry", against a package for the peer."""
    from support.packages import write_check_package

    block = README.split("### Monitoring certificate expiry", 1)[1].split("```console", 1)[1].split("```", 1)[0]
    [line] = [l for l in block.replace("\\\n", " ").splitlines() if l.startswith("$ psbridge ")]
    argv = shlex.split(line[2:])[1:]
    pkg = write_check_package(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "changes").mkdir()
    pkg.rename(tmp_path / "changes" / "contoso")
    answer_probes(engine, state("fully configured"))
    code = main([*argv, "--port", str(http_peer.port), "--transport", "http", "--auth", "ntlm"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    json.loads(out.strip().splitlines()[-1])
    assert list((tmp_path / "changes" / "contoso" / "checks").glob("*.json"))

