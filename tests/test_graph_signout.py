"""Issue 19 item 2: no Global Administrator token stays on the server after a session that signed in to Graph.

Every run (after --verify), check and rollback of a graph package sends the disconnect pipeline
(templates/shared/graph/_disconnect.ps1.j2) last, from a `finally`: after a failure and after a
Ctrl-C too. A sign-out that fails is a warning and never changes the exit code. Where psbridge
decides (what is sent, when, and what the exit code is) the tests run the real CLI against the
loopback peer; what the disconnect script does in PowerShell is read on its parsed text.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest

from psbridge.cli import main
from psbridge.render import signout_bytes

from support.cli import check_args
from support.packages import answer_probes, write_check_package
from support.probe_states import state
from support.pwsh_grammar import command_invocations, parse, syntax_errors, walk
from support.winrm_peer import Engine, ErrorSpec, RecordedPipeline, Reply, WinRMPeer

GRAPH_TOKEN = "eyJ0eXAi.graph-T0ken$;'x"
DISCONNECT = "# psbridge disconnect:"


@pytest.fixture
def graph_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSBRIDGE_GRAPH_TOKEN", GRAPH_TOKEN)


def _args(command: str, pkg: Path, peer: WinRMPeer, *extra: str) -> list[str]:
    args = [command, *check_args(pkg, peer)[1:], *extra]
    if "--o365-user" in args:  # graph signs in with the token
        at = args.index("--o365-user")
        del args[at:at + 2]
    return args


def _pipelines(engine: Engine) -> list[RecordedPipeline]:
    """The pipelines the peer received, without the server lock's heartbeats and its release (sent after the
    sign-out, before the session closes; tests/test_server_lock.py asserts on those)."""
    return [p for p in engine.pipelines if not (p.parameters.get("Heartbeat") or p.parameters.get("Release"))]


def _kinds(engine: Engine) -> list[str]:
    """Each of `_pipelines`, by what it was: step NN, probe NAME, lock, disconnect, eap."""
    out = []
    for pipeline in _pipelines(engine):
        script = pipeline.script
        if script.startswith("# psbridge step "):
            out.append("step " + script[len("# psbridge step "):][:2])
        elif script.startswith("# psbridge probe: "):
            out.append("probe " + script.split()[3])
        elif script.startswith(DISCONNECT):
            out.append("disconnect")
        elif script.startswith("# psbridge lock:"):
            out.append("lock")
        else:
            out.append("other")
    return out


# --------------------------------------------------------------------------- run


def test_a_graph_run_signs_out_after_its_last_step_and_verify(tmp_path, engine, http_peer, secrets_env, graph_token,
                                                              capsys) -> None:
    pkg = write_check_package(tmp_path, "graph")
    answer_probes(engine, state("fully configured"))
    engine.when(DISCONNECT, Reply(output=["signed out"]))
    assert main(_args("run", pkg, http_peer, "--yes", "--verify")) == 0
    kinds = _kinds(engine)
    assert kinds.count("disconnect") == 1 and kinds[-1] == "disconnect"
    assert kinds.index("step 04") < kinds.index("step 08") < max(i for i, k in enumerate(kinds) if k == "probe entra")
    assert engine.pipelines[-1].shell_id == next(p.shell_id for p in engine.pipelines if p.script.startswith("# psbridge step 04/"))
    assert _pipelines(engine)[-1].script == signout_bytes().decode("utf-8-sig")
    out, err = capsys.readouterr()
    assert "Disconnect-MgGraph" not in out + err and "sign out" not in out + err


def test_a_failed_graph_run_signs_out_and_keeps_its_exit_code(tmp_path, engine, http_peer, secrets_env, graph_token,
                                                              capsys) -> None:
    pkg = write_check_package(tmp_path, "graph")
    engine.when("# psbridge step 06/", Reply(terminating=ErrorSpec("Update-MgServicePrincipal: Forbidden")))
    assert main(_args("run", pkg, http_peer, "--yes")) == 1
    kinds = _kinds(engine)
    assert "step 07" not in kinds and kinds[-1] == "disconnect"


def test_an_interrupted_graph_run_signs_out_after_the_step_is_stopped(tmp_path, engine, http_peer, secrets_env,
                                                                      graph_token, capsys) -> None:
    pkg = write_check_package(tmp_path, "graph")
    engine.when("# psbridge step 05/", Reply(hang=True))
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        code = main(_args("run", pkg, http_peer, "--yes"))
    finally:
        timer.cancel()
    assert code == 4
    kinds = _kinds(engine)
    stopped = [i for i, p in enumerate(_pipelines(engine)) if p.stopped]
    assert kinds[-1] == "disconnect" and stopped and stopped[-1] < len(kinds) - 1


def test_a_failed_sign_out_is_a_warning_not_a_failure(tmp_path, engine, http_peer, secrets_env, graph_token,
                                                      capsys) -> None:
    pkg = write_check_package(tmp_path, "graph")
    engine.when(DISCONNECT, Reply(output=["failed: The token cache is locked"]))
    assert main(_args("run", pkg, http_peer, "--yes")) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[-1] == ("psbridge: warning: Disconnect-MgGraph on 127.0.0.1 did not succeed: failed: The "
                                    "token cache is locked; sign out there by hand (Disconnect-MgGraph) or close the "
                                    "session")
    assert "8 of 8 selected steps succeeded." in out
    [record] = list((pkg / "runs").glob("*.jsonl"))
    end = [json.loads(line) for line in record.read_text().splitlines()][-1]
    assert end["event"] == "run-end" and end["exit_code"] == 0


def test_a_terminating_sign_out_error_is_a_warning_too(tmp_path, engine, http_peer, secrets_env, graph_token,
                                                       capsys) -> None:
    pkg = write_check_package(tmp_path, "graph")
    engine.when(DISCONNECT, Reply(terminating=ErrorSpec("The term 'Get-MgContext' is not recognized")))
    assert main(_args("run", pkg, http_peer, "--yes")) == 0
    assert "psbridge: warning: Disconnect-MgGraph on 127.0.0.1 did not succeed: The term 'Get-MgContext' is not " \
        "recognized" in capsys.readouterr().err


def test_a_broken_connection_is_a_warning_that_the_token_may_stay(tmp_path, engine, http_peer, secrets_env,
                                                                  graph_token, capsys) -> None:
    pkg = write_check_package(tmp_path, "graph")
    engine.when("# psbridge step 06/", Reply(drop=True))
    assert main(_args("run", pkg, http_peer, "--yes")) == 4
    assert "disconnect" not in _kinds(engine)
    assert ("psbridge: warning: could not sign out of Microsoft Graph on 127.0.0.1: the connection broke; if this "
            "session signed in, its token stays in the server's PowerShell process until WinRM closes the shell") \
        in capsys.readouterr().err


def test_an_msonline_run_sends_no_disconnect(tmp_path, engine, http_peer, secrets_env, capsys) -> None:
    pkg = write_check_package(tmp_path, "msonline")
    assert main(["run", *check_args(pkg, http_peer)[1:], "--yes"]) == 0
    assert "disconnect" not in _kinds(engine)


def test_a_run_refused_by_the_server_lock_sends_no_disconnect(tmp_path, engine, http_peer, secrets_env, graph_token,
                                                              capsys) -> None:
    pkg = write_check_package(tmp_path, "graph")
    engine.when("# psbridge lock:", Reply(terminating=ErrorSpec("held by another run")))
    assert main(_args("run", pkg, http_peer, "--yes")) == 1
    assert _kinds(engine)[-1] == "lock" and "disconnect" not in _kinds(engine)


# --------------------------------------------------------------------------- check


def test_check_signs_out_after_the_entra_probes(tmp_path, engine, http_peer, secrets_env, graph_token, capsys) -> None:
    pkg = write_check_package(tmp_path, "graph")
    answer_probes(engine, state("fully configured"))
    assert main(_args("check", pkg, http_peer)) == 0
    kinds = _kinds(engine)
    assert kinds[-1] == "disconnect" and kinds.index("step 04") < kinds.index("probe entra") < len(kinds) - 1


def test_check_reports_a_failed_sign_out_and_keeps_its_exit_code(tmp_path, engine, http_peer, secrets_env,
                                                                  graph_token, capsys) -> None:
    pkg = write_check_package(tmp_path, "graph")
    answer_probes(engine, state("fully configured"))
    engine.when(DISCONNECT, Reply(output=["failed: no"]))
    assert main(_args("check", pkg, http_peer)) == 0
    assert "psbridge: warning: Disconnect-MgGraph on 127.0.0.1 did not succeed: failed: no" in capsys.readouterr().err


def test_check_without_entra_signs_nothing_out(tmp_path, engine, http_peer, secrets_env, capsys) -> None:
    pkg = write_check_package(tmp_path, "graph")
    answer_probes(engine, state("fully configured"))
    main(_args("check", pkg, http_peer, "--no-entra"))
    assert "disconnect" not in _kinds(engine)


# --------------------------------------------------------------------------- rollback


def test_a_graph_rollback_signs_out_after_its_back_out_scripts(tmp_path, engine, http_peer, secrets_env, graph_token,
                                                               capsys, keys) -> None:
    from support.rollback_runs import _server_states

    log = tmp_path / "audit.jsonl"
    pkg = write_check_package(tmp_path, "graph")
    assert main(["approve", str(pkg), "--key", str(keys["jane"]), "--audit-log", str(log)]) == 0
    _server_states(engine)
    assert main(_args("run", pkg, http_peer, "--yes", "--audit-log", str(log))) == 0
    [record] = list((pkg / "runs").glob("*.jsonl"))
    before = len(_pipelines(engine))
    assert main(_args("rollback", pkg, http_peer, "--run", str(record), "--yes", "--audit-log", str(log))) == 0, \
        capsys.readouterr()
    sent = _kinds(engine)[before:]
    undo = [i for i, p in enumerate(_pipelines(engine)[before:]) if p.script.startswith("# psbridge back-out of step")]
    assert undo and sent[-1] == "disconnect" and sent.count("disconnect") == 1 and max(undo) < len(sent) - 1


# --------------------------------------------------------------------------- the script


def test_the_disconnect_script_signs_out_only_when_signed_in_and_never_throws() -> None:
    text = signout_bytes().decode("utf-8-sig")
    assert text.startswith(DISCONNECT) and syntax_errors(text) == []
    root = parse(text).root_node
    [try_statement] = [n for n in walk(root) if n.type == "try_statement"]
    calls = command_invocations(text)
    [loaded] = [c for c in calls if c.name == "Get-Module"]
    [context] = [c for c in calls if c.name == "Get-MgContext"]
    [disconnect] = [c for c in calls if c.name == "Disconnect-MgGraph"]
    assert loaded.start_byte < context.start_byte < disconnect.start_byte
    assert [e.text for e in disconnect.elements] == ["ErrorAction", "Stop"]
    catches = [n for n in walk(root) if n.type == "catch_clause"]
    assert len(catches) == 1 and try_statement.start_byte < disconnect.start_byte < catches[0].start_byte
    assert not [n for n in walk(root) if n.type == "flow_control_statement" and n.text.startswith(b"throw")]
    assert "ListAvailable" not in text  # the module loaded in this process, not one installed somewhere


def test_the_disconnect_script_uses_documented_commands_only() -> None:
    from support.signatures import check_script

    assert check_script(signout_bytes().decode("utf-8-sig"), "disconnect.ps1") == []
