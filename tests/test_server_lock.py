"""The server's run lock (issue 19 item 5, issue 20 item 3): lock.ps1, its heartbeat, --force-unlock.

Where psbridge decides (take, refuse, stale or live, ask, close) the real command runs against the
loopback peer, whose `ServerLockModel` keeps run.lock as lock.ps1 does. Where the behaviour is
PowerShell's (the folder's ACL, the owner and reparse-point checks before the open, ConvertTo-Json,
the release) the rendered lock.ps1 is read with the PowerShell grammar.
"""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tree_sitter import Node

from psbridge.cli import main
from psbridge.errors import UserError
from psbridge.locks import STALE_MARGIN_SECONDS, ServerLockReading
from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.remote import serverlock
from psbridge.remote.executor import PipelineReport, RemoteError
from psbridge.render import render_package

from support.cli import run_args
from support.lab import USER, WINRM_PASSWORD
from support.pwsh_grammar import command_invocations, parse, syntax_errors, walk
from support.server_lock import _reading, log, model, other_shell, pkg, run, steps_sent  # noqa: F401 - fixtures
from support.winrm_peer import ErrorSpec, Reply
from support.winrm_peer.serverlock import LOCK, LOCK_PATH

DATA = json.loads((Path(__file__).parent / "data" / "commands.json").read_text(encoding="utf-8"))
VICTIM_USER = "m; shell=VICTIM; x"


def audit_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_bytes().splitlines()]


def record_events(pkg: Path) -> list[dict[str, Any]]:
    [record] = sorted((pkg / "runs").glob("*.jsonl"))
    return [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# --------------------------------------------------------------------------- a run: structured holder, heartbeat, release


def test_a_run_writes_a_structured_holder_beats_before_each_step_and_releases_at_the_end(
        pkg, http_peer, engine, model, secrets_env, capsys):
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert code == 0, out + err
    take = next(p for p in engine.pipelines if p.script.startswith(LOCK))
    assert set(take.parameters) == {"User", "Workstation", "ShellId", "StepTimeout"}  # no concatenated "Holder"
    assert take.parameters["ShellId"] == take.shell_id.upper() and take.parameters["StepTimeout"] == 900
    # take, one heartbeat right before each of the 8 steps, the release at the end (before the session closed)
    assert model.calls == ["take", *["heartbeat"] * 8, "release"]
    # each in a scope of its own: lock.ps1's parameters ($User, $ShellId...) never become the steps' variables
    assert all(p.local_scope == [True] for p in engine.pipelines if p.script.startswith(LOCK))
    assert model.record is not None and model.record["state"] == "released" and model.open_by is None
    scripts = engine.scripts()
    for index, script in enumerate(scripts):
        if script.startswith("# psbridge step "):
            previous = next(s for s in reversed(scripts[:index]) if not s.startswith("# psbridge probe: "))
            assert previous.startswith(LOCK), script[:40]


def test_a_hostile_user_name_is_a_field_value_not_a_field(pkg, http_peer, engine, model, secrets_env, capsys,
                                                          monkeypatch):
    monkeypatch.setenv("USER", VICTIM_USER)
    monkeypatch.setenv("LOGNAME", VICTIM_USER)
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert code == 0, out + err
    take = next(p for p in engine.pipelines if p.script.startswith(LOCK))
    assert take.parameters["User"] == VICTIM_USER
    assert model.record is not None and model.record["user"] == VICTIM_USER
    assert model.record["shell"] == take.shell_id.upper()


# --------------------------------------------------------------------------- a refused run


def test_a_live_holder_is_named_and_force_unlock_is_not_suggested(pkg, http_peer, engine, model, other_shell,
                                                                   secrets_env, capsys):
    model.plant(other_shell, heartbeat_age=20, user="bob\x1b[2J", workstation="ws02")
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert code == 1, out + err
    assert steps_sent(engine) == []
    assert "held by bob\\x1b[2J on workstation ws02" in out and "\x1b" not in out
    assert "last heartbeat" in out and "wait for it to end" in out
    assert "--force-unlock" not in out
    assert record_events(pkg)[-1]["reason"] == "locked"


def test_a_stale_holder_is_named_and_force_unlock_is_suggested(pkg, http_peer, engine, model, other_shell,
                                                               secrets_env, capsys):
    model.plant(other_shell, heartbeat_age=900 + STALE_MARGIN_SECONDS + 1)
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert code == 1, out + err
    assert "held by bob on workstation ws02" in out and "add --force-unlock" in out
    assert other_shell in http_peer.shell_ids()


# --------------------------------------------------------------------------- --force-unlock


def test_force_unlock_refuses_a_live_holder_and_closes_nothing(pkg, log, http_peer, engine, model, other_shell,
                                                               secrets_env, capsys):
    model.plant(other_shell, heartbeat_age=900 + STALE_MARGIN_SECONDS - 5)  # within the bound: alive
    code, out, err = run(capsys, run_args(pkg, http_peer, "--force-unlock"))
    assert code == 1, out + err
    assert "refused: the run holding the server's lock is alive" in err and "held by bob on workstation ws02" in err
    assert other_shell in http_peer.shell_ids()
    assert steps_sent(engine) == [] and "take" not in model.calls
    assert not any(e.get("outcome") == "force-unlock" for e in audit_lines(log))


def test_force_unlock_closes_a_stale_holder_shows_it_and_records_the_structured_holder(
        pkg, log, http_peer, engine, model, other_shell, secrets_env, capsys):
    model.plant(other_shell, heartbeat_age=900 + STALE_MARGIN_SECONDS + 60, user="bob", workstation="ws02")
    code, out, err = run(capsys, run_args(pkg, http_peer, "--force-unlock"))
    assert code == 0, out + err
    assert other_shell not in http_peer.shell_ids()
    assert "held by bob on workstation ws02" in err and "since " in err and "last heartbeat" in err
    assert steps_sent(engine) == list(range(1, 9))
    unlock = next(e for e in audit_lines(log) if e["outcome"] == "force-unlock")
    assert unlock["details"]["stale_shell"] == other_shell and unlock["details"]["closed"] is True
    assert unlock["details"]["holder"]["user"] == "bob" and unlock["details"]["heartbeat_age_seconds"] >= 1260
    event = next(e for e in record_events(pkg) if e["event"] == "force-unlock")
    assert event["holder"]["workstation"] == "ws02" and event["closed"] is True


def test_a_user_name_with_shell_victim_does_not_redirect_force_unlock(pkg, log, http_peer, engine, model,
                                                                      other_shell, secrets_env, capsys):
    """Issue 20 item 3: `USER='m; shell=VICTIM; x'` once made force-unlock delete the VICTIM shell."""
    from pypsrp.powershell import RunspacePool
    from pypsrp.wsman import WSMan

    victim_pool = RunspacePool(WSMan("127.0.0.1", port=http_peer.port, username=USER, password=WINRM_PASSWORD,
                                     ssl=False, auth="ntlm", no_proxy=True))
    victim_pool.open()  # a live run's session the attacker names
    victim = str(victim_pool.id).upper()
    try:
        model.plant(other_shell, heartbeat_age=900 + STALE_MARGIN_SECONDS + 60,
                    user=VICTIM_USER.replace("VICTIM", victim))
        code, out, err = run(capsys, run_args(pkg, http_peer, "--force-unlock"))
        assert code == 0, out + err
        assert victim in http_peer.shell_ids()  # the victim's session lives on
        assert other_shell not in http_peer.shell_ids()  # the recorded holder's session was closed
    finally:
        victim_pool.connection.close()


def test_force_unlock_asks_and_no_closes_nothing(pkg, log, http_peer, engine, model, other_shell, secrets_env,
                                                 capsys, monkeypatch):
    model.plant(other_shell, heartbeat_age=900 + STALE_MARGIN_SECONDS + 60)
    monkeypatch.setattr(sys, "stdin", Terminal("y\nn\n"))  # "Run it?" yes; "Close that run's session?" no
    argv = [a for a in run_args(pkg, http_peer, "--force-unlock") if a != "--yes"]
    code, out, err = run(capsys, argv)
    assert code == 1, out + err
    assert "Close that run's session on the server?" in err and "held by bob on workstation ws02" in err
    assert "not confirmed; nothing was closed" in err
    assert other_shell in http_peer.shell_ids() and steps_sent(engine) == []


def test_force_unlock_asks_and_yes_closes(pkg, log, http_peer, engine, model, other_shell, secrets_env, capsys,
                                          monkeypatch):
    model.plant(other_shell, heartbeat_age=900 + STALE_MARGIN_SECONDS + 60)
    monkeypatch.setattr(sys, "stdin", Terminal("y\ny\n"))
    argv = [a for a in run_args(pkg, http_peer, "--force-unlock") if a != "--yes"]
    code, out, err = run(capsys, argv)
    assert code == 0, out + err
    assert other_shell not in http_peer.shell_ids() and steps_sent(engine) == list(range(1, 9))


def test_force_unlock_with_no_holder_closes_nothing_and_runs(pkg, log, http_peer, engine, model, secrets_env, capsys):
    code, out, err = run(capsys, run_args(pkg, http_peer, "--force-unlock"))
    assert code == 0, out + err
    event = next(e for e in record_events(pkg) if e["event"] == "force-unlock")
    assert event["holder"] is None and event["closed"] is False
    assert model.calls[:2] == ["inspect", "take"]


@pytest.mark.parametrize("change", [
    {"shell": "ABC; shell=VICTIM"},  # not a shell id
    {"extra": "field"},
    {"user": "x" * 300},
    {"state": "mine"},
    {"step_timeout": "900"},  # a string where lock.ps1 writes a number
])
def test_a_hostile_lock_record_is_refused_in_one_line(pkg, log, http_peer, engine, model, other_shell, secrets_env,
                                                      capsys, change):
    record = model.plant(other_shell, heartbeat_age=900 + STALE_MARGIN_SECONDS + 60)
    record.update(change)
    code, out, err = run(capsys, run_args(pkg, http_peer, "--force-unlock"))
    assert code == 2, out + err
    lines = [line for line in err.splitlines() if "lock record" in line]
    assert len(lines) == 1 and "is not one psbridge writes" in lines[0] and "nothing was closed" in lines[0]
    assert "Traceback" not in err and other_shell in http_peer.shell_ids() and steps_sent(engine) == []


# --------------------------------------------------------------------------- the stale bound and the reading


def test_stale_only_past_the_holders_step_timeout_plus_the_margin() -> None:
    assert not _reading(900 + STALE_MARGIN_SECONDS).stale()
    assert _reading(900 + STALE_MARGIN_SECONDS + 1).stale()
    assert not _reading(3600, step_timeout=7200).stale()  # the holder's own (long) step timeout counts
    assert not _reading(10**6, state="released").stale()  # a released record names no holder
    assert _reading(10**6, state="released").holder is None


def test_describe_escapes_control_and_bidi_characters() -> None:
    lines = _reading(5, user="evil\x1b[2J\rroot", workstation="ws\u202e01").describe()
    shown = "\n".join(lines)
    assert "\x1b" not in shown and "\r" not in shown and "\u202e" not in shown
    assert "evil\\x1b[2J\\rroot" in shown and "last heartbeat" in shown and "5 s ago" in shown


def test_unparseable_answers_are_one_line_user_errors() -> None:
    for text in ("", "not json", "[]", '{"now": "x", "record": null}', "{" * 10000):
        with pytest.raises(UserError) as caught:
            ServerLockReading.parse(text, "where")
        [line] = caught.value.problems
        assert line.startswith("where: the server's lock record is not one psbridge writes")


# --------------------------------------------------------------------------- the heartbeat keeper


class FakeSession:
    """A session whose pipelines take `busy` seconds; records when each ran and whether two overlapped."""

    def __init__(self, busy: float = 0.0) -> None:
        self.gate = threading.RLock()
        self.broken = False
        self.busy = busy
        self.sent: list[tuple[str, float]] = []
        self.running = 0
        self.overlapped = False

    def run_step(self, script: str, parameters: dict[str, Any], timeout: float, *,
                 local_scope: bool = False) -> PipelineReport:
        with self.gate:
            self.running += 1
            self.overlapped |= self.running > 1
            self.sent.append(("heartbeat" if parameters.get("Heartbeat") else "other", time.monotonic()))
            time.sleep(self.busy)
            self.running -= 1
            return PipelineReport("Completed")


def test_the_keeper_beats_while_the_session_waits_and_never_beside_a_pipeline() -> None:
    session = FakeSession()
    keeper = serverlock.HeartbeatKeeper("# psbridge lock:", 900, every=0.05)
    keeper.hold(session)  # type: ignore[arg-type]  # the keeper needs only gate, broken and run_step
    time.sleep(0.4)  # a prompt: nothing else is sent
    beats_idle = sum(1 for kind, _ in session.sent if kind == "heartbeat")
    with session.gate:  # a step running for a while: the keeper must not send
        count = len(session.sent)
        time.sleep(0.3)
        assert len(session.sent) == count
    session.busy = 0.02
    for _ in range(10):
        session.run_step("step", {}, 900)
    keeper.release_all()
    assert beats_idle >= 3
    assert not session.overlapped
    kinds = [kind for kind, _ in session.sent]
    assert kinds[-1] == "other"  # the release (-Release) is the last pipeline, after the keeper stopped
    assert keeper.failed == 0


def test_the_keeper_stops_before_release_and_skips_a_broken_session() -> None:
    session = FakeSession()
    session.broken = True
    keeper = serverlock.HeartbeatKeeper("# psbridge lock:", 900, every=0.02)
    keeper.hold(session)  # type: ignore[arg-type]
    time.sleep(0.15)
    keeper.release_all()
    assert session.sent == []  # broken: no heartbeat, no release


def test_a_prompt_at_step_gets_heartbeats_while_it_waits(pkg, http_peer, engine, model, secrets_env, capsys,
                                                         monkeypatch):
    """`run --step`: while the operator thinks, the keeper's thread writes heartbeats in the idle session."""
    monkeypatch.setattr(serverlock, "HEARTBEAT_EVERY", 0.1)

    class SlowTerminal(Terminal):
        def readline(self, *args: Any) -> str:
            time.sleep(0.6)  # the operator, thinking
            return super().readline(*args)

    monkeypatch.setattr(sys, "stdin", SlowTerminal("q\n"))
    code, out, err = run(capsys, run_args(pkg, http_peer, "--step"))
    assert steps_sent(engine) == [], out + err  # the operator quit at the first prompt
    assert model.calls[0] == "take" and model.calls[-1] == "release"
    assert model.calls.count("heartbeat") >= 2, model.calls


def test_every_pipeline_of_a_run_goes_out_with_a_fresh_heartbeat(pkg, http_peer, engine, model, secrets_env, capsys,
                                                                  monkeypatch):
    """Issue 20 item 3: the heartbeat goes with every pipeline the run sends, not only before each step.

    The probes around a changing step and `--verify`'s probes are pipelines too; sent back to back they
    left the keeper no idle moment, so the heartbeat aged by the sum of their durations (each bounded by
    the step timeout) and a live run could look stale to --force-unlock. Here every probe takes longer
    than the heartbeat interval: no pipeline may start with a heartbeat older than the interval."""
    every, slow = 0.2, 0.6
    monkeypatch.setattr(serverlock, "HEARTBEAT_EVERY", every)
    received: list[tuple[float, str]] = []

    def clock(pipeline) -> bool:  # noqa: ANN001 - notes when each pipeline arrives; a probe takes `slow` seconds
        kind = "lock" if pipeline.script.startswith(LOCK) else "probe" if "# psbridge probe: " in pipeline.script \
            else "other"
        received.append((time.monotonic(), kind if kind != "lock" else f"lock {pipeline.parameters}"))
        if kind == "probe":
            time.sleep(slow)
        return False

    engine.reset_rules()
    engine.when(clock, None)  # first, and never answers: only times every pipeline, the lock's too
    model.install(engine)
    code, out, err = run(capsys, run_args(pkg, http_peer, "--verify"))
    assert code in (0, 5), out + err  # the probes are not answered here: verify's verdicts cannot tell (5)
    taken = next(i for i, (_, kind) in enumerate(received) if kind.startswith("lock") and "ShellId" in kind)
    released = max(i for i, (_, kind) in enumerate(received) if "Release" in kind)
    held = received[taken:released]
    assert sum(1 for _, kind in held if kind == "probe") >= 4, held  # the test would prove nothing without probes
    last_beat, gaps = held[0][0], []
    for at, kind in held:
        if kind.startswith("lock"):
            last_beat = at
        else:
            gaps.append(round(at - last_beat, 3))
    assert max(gaps) < every + 0.25, gaps


# --------------------------------------------------------------------------- lock.ps1 as PowerShell parses it


@pytest.fixture(scope="module")
def lock_ps1() -> str:
    return render_package(parse_parameters(EXAMPLE)).files["lock.ps1"].decode("utf-8-sig").replace("\r\n", "\n")


def _text(node: Node) -> str:
    return node.text.decode("utf-8") if node.text is not None else ""


def _functions(text: str) -> dict[str, Node]:
    out = {}
    for node in walk(parse(text).root_node):
        if node.type == "function_statement":
            name = next(c for c in node.children if c.type == "function_name")
            out[_text(name)] = node
    return out


def _top_level_offset(text: str, needle: str) -> int:
    """Where `needle` first occurs outside every function body (the script's own statements)."""
    bodies = [(n.start_byte, n.end_byte) for n in _functions(text).values()]
    data = text.encode("utf-8")
    start = 0
    while (found := data.find(needle.encode("utf-8"), start)) >= 0:
        if not any(a <= found < b for a, b in bodies):
            return found
        start = found + 1
    raise AssertionError(f"{needle!r} not in the script's own statements")


def _static_calls(node: Node) -> list[tuple[str, str]]:
    """Every `[Type]::Member` under `node`: (type, member)."""
    out = []
    for n in walk(node):
        if n.type in ("invokation_expression", "member_access"):
            kids = n.children
            if len(kids) >= 3 and kids[0].type == "type_literal" and _text(kids[1]) == "::":
                out.append((_text(kids[0]).strip("[]"), _text(kids[2])))
    return out


def test_lock_ps1_parses(lock_ps1: str) -> None:
    assert syntax_errors(lock_ps1) == []


def test_the_folder_gets_a_protected_admin_and_system_only_acl(lock_ps1: str) -> None:
    body = _text(_functions(lock_ps1)["New-PSBridgeLockSecurity"])
    assert "$Security.SetAccessRuleProtection($true, $false)" in body  # protected, nothing inherited
    assert "$Security.SetOwner((New-Object -TypeName System.Security.Principal.SecurityIdentifier -ArgumentList " \
           "$TrustedOwners[0]))" in body  # owner: Administrators
    assert "[System.Security.AccessControl.FileSystemRights]::FullControl" in body
    assert "[System.Security.AccessControl.AccessControlType]::Allow" in body
    assert "foreach ($Sid in $TrustedOwners)" in body
    assert "$TrustedOwners = @('S-1-5-32-544', 'S-1-5-18')" in lock_ps1  # Administrators, SYSTEM: nothing else
    create = _top_level_offset(lock_ps1, "[System.IO.Directory]::CreateDirectory($LockFolder, (New-PSBridgeLockSecurity))")
    assert create < _top_level_offset(lock_ps1, "[System.IO.File]::Open($LockPath, [System.IO.FileMode]::OpenOrCreate")


def test_owner_and_reparse_checks_precede_the_open(lock_ps1: str) -> None:
    check = _text(_functions(lock_ps1)["Assert-PSBridgeOwner"])
    assert "[System.IO.FileAttributes]::ReparsePoint" in check
    assert ".GetOwner([System.Security.Principal.SecurityIdentifier]).Value" in check
    assert "$TrustedOwners -notcontains $Owner" in check
    assert check.count("throw (") == 2 and "an administrator must remove" in check and "' + $Path + '" in check
    opening = _top_level_offset(lock_ps1, "[System.IO.File]::Open($LockPath, [System.IO.FileMode]::OpenOrCreate, "
                                          "[System.IO.FileAccess]::ReadWrite, [System.IO.FileShare]::Read)")
    folder = _top_level_offset(lock_ps1, "Assert-PSBridgeOwner $LockFolder 'folder'")
    file = _top_level_offset(lock_ps1, "if (-not $Created) { Assert-PSBridgeOwner $LockPath 'file' }")
    protect = _top_level_offset(lock_ps1, "[System.IO.Directory]::SetAccessControl($LockFolder, (New-PSBridgeLockSecurity))")
    assert folder < protect < file < opening  # an existing folder (checked first) gets the protected ACL too


def test_a_lock_file_this_run_creates_is_given_to_administrators_before_the_record_is_written(lock_ps1: str) -> None:
    """Under "Default owner for objects created by members of the Administrators group: Object creator" the
    file belongs to the admin who ran first, and the owner check refused every other admin's run. The file this
    run creates is given to Administrators (File.SetAccessControl with a FileSecurity that sets only the
    owner); an existing file is still checked, never re-owned."""
    created = _top_level_offset(lock_ps1, "$Created = -not (Test-Path -LiteralPath $LockPath)")
    check = _top_level_offset(lock_ps1, "if (-not $Created) { Assert-PSBridgeOwner $LockPath 'file' }")
    opening = _top_level_offset(lock_ps1, "[System.IO.File]::Open($LockPath, [System.IO.FileMode]::OpenOrCreate")
    owner = _top_level_offset(lock_ps1, "if ($Created) {")
    give = _top_level_offset(lock_ps1, "[System.IO.File]::SetAccessControl($LockPath, $FileSecurity)")
    record = _top_level_offset(lock_ps1, "$Record = @{")
    assert created < check < opening < owner < give < record
    block = lock_ps1[owner:record]
    assert "New-Object -TypeName System.Security.AccessControl.FileSecurity" in block
    assert "$FileSecurity.SetOwner((New-Object -TypeName System.Security.Principal.SecurityIdentifier " \
           "-ArgumentList $TrustedOwners[0]))" in block
    assert "AddAccessRule" not in block  # only the owner section is written: the folder's ACL is inherited


def test_the_record_is_convertto_json_of_a_hashtable_of_the_parameters(lock_ps1: str) -> None:
    writer = _text(_functions(lock_ps1)["Write-PSBridgeLock"])
    assert "ConvertTo-Json -InputObject $Record -Compress" in writer
    # one write after SetLength(0)
    assert writer.index("$Stream.SetLength(0)") < writer.index("$Stream.Write($Bytes, 0, $Bytes.Length)")
    assert writer.count(".Write(") == 1
    # The parameters appear only as hashtable values (and in param()): never concatenated into text.
    for name in ("$User", "$Workstation", "$ShellId", "$StepTimeout"):
        uses = [i for i in range(len(lock_ps1)) if lock_ps1.startswith(name, i)
                and not lock_ps1[i + len(name)].isalnum()]
        lines = [lock_ps1[:i].count("\n") for i in uses]
        texts = [lock_ps1.splitlines()[n].strip() for n in lines]
        assert all(t.startswith("[") or t.split("=")[1].strip() == name for t in texts), texts
    record = lock_ps1[_top_level_offset(lock_ps1, "$Record = @{"):]
    record = record[:record.index("}")]
    keys = [line.split("=")[0].strip() for line in record.splitlines()[1:] if "=" in line]
    assert keys == ["format", "state", "user", "workstation", "package", "shell", "since", "heartbeat", "step_timeout",
                    "pid", "process_started"]
    assert "Write-PSBridgeLock $Stream $Record" in lock_ps1[_top_level_offset(lock_ps1, "$Record = @{"):]


def test_heartbeat_and_release_rewrite_the_held_record_and_release_closes_it(lock_ps1: str) -> None:
    block = lock_ps1[_top_level_offset(lock_ps1, "if ($Heartbeat -or $Release) {"):]
    block = block[:block.index("\n}\n")]
    assert "$Record['heartbeat'] = [System.DateTime]::UtcNow.ToString('o')" in block
    assert block.index("if ($Release) { $Record['state'] = 'released' }") < block.index("Write-PSBridgeLock $Stream $Record")
    assert block.index("Write-PSBridgeLock $Stream $Record") < block.index("$Stream.Dispose()")
    assert "throw ('psbridge lock: this session does not hold the run lock" in block


def test_a_refused_run_names_only_a_live_held_record(lock_ps1: str) -> None:
    refusal = lock_ps1[_top_level_offset(lock_ps1, "catch [System.IO.IOException] {"):]
    refusal = refusal[:refusal.index("\n}\n")]
    assert "$Record.state -eq 'held' -and (Test-PSBridgeHolderAlive $Record)" in refusal
    alive = _text(_functions(lock_ps1)["Test-PSBridgeHolderAlive"])
    assert "[System.Diagnostics.Process]::GetProcessById([int] $Record.pid)" in alive
    assert "$Process.StartTime.ToUniversalTime().ToString('o') -eq [string] $Record.process_started" in alive
    reader = _text(_functions(lock_ps1)["Read-PSBridgeLock"])
    assert "ConvertFrom-Json -InputObject $Text" in reader and "[System.IO.FileShare]::ReadWrite" in reader


def test_every_dotnet_type_and_static_member_is_in_the_catalogue(lock_ps1: str) -> None:
    catalogue = DATA["dotnet"]
    accelerators = {"string", "int", "switch", "hashtable"}
    used_types = set()
    for type_name, member in _static_calls(parse(lock_ps1).root_node):
        assert type_name in catalogue, type_name
        assert member in catalogue[type_name]["members"], (type_name, member)
        used_types.add(type_name)
    for node in walk(parse(lock_ps1).root_node):
        if node.type == "type_literal":
            name = _text(node).strip("[]")
            if name.lower() not in accelerators:
                assert name in catalogue, name
                used_types.add(name)
    for inv in command_invocations(lock_ps1):
        if inv.name == "New-Object":
            type_name = inv.elements[1].text
            assert type_name in catalogue, type_name
            used_types.add(type_name)
    assert set(catalogue) - {"_about"} == used_types  # nothing listed and unused
    for name, entry in catalogue.items():
        if name != "_about":
            assert entry["source"].startswith("https://learn.microsoft.com/dotnet/api/"), name


def test_ctrl_c_during_a_heartbeat_stops_the_run_between_steps(pkg, http_peer, engine, model, secrets_env, capsys,
                                                               monkeypatch):
    """A heartbeat interrupted by Ctrl-C is the operator's interruption (exit 130), never swallowed."""
    real = serverlock.heartbeat
    beats = []

    def interrupted(session: Any, lock_text: str, timeout: float) -> bool:
        beats.append(1)
        if len(beats) == 3:  # right before step 03
            session.run_step = lambda *a, **k: PipelineReport("Stopped", interrupted=True)  # Ctrl-C in it
            try:
                return real(session, lock_text, timeout)
            finally:
                del session.run_step  # the session's own method again
        return real(session, lock_text, timeout)

    monkeypatch.setattr(serverlock, "heartbeat", interrupted)
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert code == 130, out + err
    assert steps_sent(engine) == [1, 2]
    assert record_events(pkg)[-1]["reason"] == "interrupted"


# --------------------------------------------------------------------------- a heartbeat that fails (attack review, item 1)


HOLDS_NOT = f"psbridge lock: this session does not hold the run lock ({LOCK_PATH})"


def continue_line(out: str) -> str:
    """The command printed after "then continue with:"."""
    lines = out.splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.endswith("continue with:")) + 1].strip()


def fail_heartbeats(engine: Any, model: Any, failing: Any, reply: Reply) -> list[int]:
    """Answer a heartbeat with `reply` when `failing(n)` (n: its number in the run, from 1), else as lock.ps1
    does. Returns the numbers of the heartbeats that failed."""
    failed: list[int] = []
    seen = [0]

    def pick(pipeline: Any) -> bool:
        if not (pipeline.script.startswith(LOCK) and pipeline.parameters.get("Heartbeat")):
            return False
        seen[0] += 1
        if failing(seen[0]):
            failed.append(seen[0])
            return True
        return False

    engine.reset_rules()
    engine.when(pick, reply)
    model.install(engine)
    return failed


@pytest.mark.parametrize("reply", [
    Reply(terminating=ErrorSpec(HOLDS_NOT)),  # lock.ps1: the record is not this session's any more
    Reply(errors=[ErrorSpec("Access to the path 'run.lock' is denied.")]),  # its pipeline wrote an error
    Reply(hang=True),  # no answer within the heartbeat's timeout
], ids=["not-ours", "error", "timeout"])
def test_a_failed_heartbeat_right_before_a_changing_step_stops_the_run_before_it(
        pkg, http_peer, engine, model, secrets_env, capsys, monkeypatch, reply):
    """Step 02 changes state: its heartbeat failed, so the lock's record may age toward stale while the run
    goes on, and another operator's --force-unlock may take the lock of this live run. Not sent: exit 1,
    why, and the command that continues."""
    monkeypatch.setattr(serverlock, "HEARTBEAT_TIMEOUT", 1.0)
    failed = fail_heartbeats(engine, model, lambda n: n == 2, reply)  # 1: before step 01, 2: before step 02
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert failed == [2]
    assert code == 1, out + err
    assert steps_sent(engine) == [1]
    assert "Not sent: step 02 (certificate): the run lock's heartbeat on 127.0.0.1 failed right before it:" in out
    assert "A step that changes state is not sent without a heartbeat." in out
    assert "--force-unlock" in out and continue_line(out).endswith("--from-step 2")
    events = record_events(pkg)
    assert not any(e["event"] == "step-start" and e["index"] == 2 for e in events)  # never sent: not UNKNOWN
    assert events[-1]["event"] == "run-end" and events[-1]["exit_code"] == 1 and events[-1]["stopped_at"] == 2
    assert model.calls[-1] == "release"


def test_a_failed_heartbeat_before_a_read_only_step_is_a_warning_and_the_next_one_must_succeed(
        pkg, http_peer, engine, model, secrets_env, capsys):
    """`--from-step 3` sends 01 (which 03 needs), then 03: neither changes state. A failed heartbeat before 01
    is a warning (printed once, escaped) and 01 is sent; the heartbeat before 03 is then mandatory: it fails
    too, so 03 is not sent."""
    failed = fail_heartbeats(engine, model, lambda n: n in (1, 2),
                             Reply(terminating=ErrorSpec("disk full \u202eC: on")))
    code, out, err = run(capsys, run_args(pkg, http_peer, "--from-step", "3"))
    assert failed == [1, 2]
    assert code == 1, out + err
    assert steps_sent(engine) == [1]
    assert err.count("psbridge: warning: ") == 1 and "\u202e" not in out + err
    assert "psbridge: warning: the heartbeat of the server's run lock on 127.0.0.1 failed: disk full \\u202eC: " \
           "on." in " ".join(err.split())
    assert "Not sent: step 03 (session): the run lock's heartbeat on 127.0.0.1 failed right before it:" in out
    assert "  disk full \\u202eC: on\n" in out and "After a failed heartbeat, no step is sent without a new one." in out
    assert continue_line(out).endswith("--from-step 3")
    refusal = out[out.index("Not sent: "):out.index("continue with:")].splitlines()
    assert all(len(line) <= 100 for line in err.splitlines() + refusal), err + out  # 100 columns: not a tty
    event = next(e for e in record_events(pkg) if e["event"] == "lock" and e["state"] == "heartbeat-failed")
    assert "disk full \u202eC: on" in event["output"][0]  # the record keeps the text as read (JSON escapes it)


def test_a_read_only_steps_failed_heartbeat_followed_by_a_good_one_lets_the_run_go_on(
        pkg, http_peer, engine, model, secrets_env, capsys):
    failed = fail_heartbeats(engine, model, lambda n: n == 1, Reply(terminating=ErrorSpec(HOLDS_NOT)))
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert failed == [1]
    assert code == 0, out + err
    assert steps_sent(engine) == list(range(1, 9))
    assert err.count("psbridge: warning: the heartbeat") == 1


@pytest.mark.parametrize("recovers", [True, False], ids=["recovers", "keeps-failing"])
def test_the_keepers_failed_heartbeats_are_one_warning_and_make_the_next_step_wait_for_a_good_one(
        pkg, http_peer, engine, model, secrets_env, capsys, monkeypatch, recovers):
    """While `--step` waits at its prompt the keeper's heartbeats fail (several times): one warning, printed
    once; then the heartbeat before step 01 (which changes nothing) is mandatory: sent and written, the run
    goes on; failed, step 01 is not sent."""
    monkeypatch.setattr(serverlock, "HEARTBEAT_EVERY", 0.1)
    failing = [False]
    failed = fail_heartbeats(engine, model, lambda n: failing[0], Reply(terminating=ErrorSpec("disk full")))

    class SlowTerminal(Terminal):
        prompts = 0

        def readline(self, *args: Any) -> str:
            SlowTerminal.prompts += 1
            if SlowTerminal.prompts == 1:
                failing[0] = True
                time.sleep(0.7)  # the operator, thinking, while the keeper's heartbeats fail
                failing[0] = not recovers
            return super().readline(*args)

    monkeypatch.setattr(sys, "stdin", SlowTerminal("y\n" * 8))
    code, out, err = run(capsys, run_args(pkg, http_peer, "--step"))
    assert len(failed) >= 2 + (0 if recovers else 1), failed  # the keeper's (and, failing, the step's)
    assert err.count("psbridge: warning: the heartbeat") == 1, err
    if recovers:
        assert code == 0, out + err
        assert steps_sent(engine) == list(range(1, 9))
    else:
        assert code == 1, out + err
        assert steps_sent(engine) == []
        assert "Not sent: step 01 (prerequisites): the run lock's heartbeat on 127.0.0.1 failed right before " \
               "it:" in out


def test_a_connection_dropped_in_the_heartbeat_before_a_step_keeps_its_outcome(pkg, http_peer, engine, model,
                                                                              secrets_env, capsys):
    """Nothing of step 02 was sent: exit 1 and "the connection was lost", never UNKNOWN, as before."""
    failed = fail_heartbeats(engine, model, lambda n: n == 2, Reply(drop=True))
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert failed == [2]
    assert code == 1, out + err
    assert steps_sent(engine) == [1]
    assert "Stopped: the connection was lost before step 02 (certificate); nothing of it was sent." in out
    assert not any(e["event"] == "step-end" and e["state"] == "unknown" for e in record_events(pkg))
    assert "heartbeat" not in out + err


def test_the_keeper_counts_each_failure_and_warns_once_per_run_of_failures() -> None:
    """The keeper's own thread never writes to the screen or the record: it keeps the warning for the run's
    thread, once per run of failures (a written heartbeat ends it)."""
    session = FakeSession()
    answers = iter([False, False, True, False])
    session.run_step = lambda *a, **k: PipelineReport(  # type: ignore[method-assign]
        "Completed", errors=[] if next(answers) else [RemoteError("disk full")])
    keeper = serverlock.HeartbeatKeeper("# psbridge lock:", 900, every=3600)
    keeper.sessions.append(session)  # type: ignore[arg-type]
    assert [keeper.beat(session).written for _ in range(2)] == [False, False]  # type: ignore[arg-type]
    assert keeper.missed(session) and keeper.failed == 2  # type: ignore[arg-type]
    assert [(s, why) for s, why in keeper.take_warnings()] == [(session, "disk full")]
    assert keeper.take_warnings() == []
    assert keeper.beat(session).written and not keeper.missed(session)  # type: ignore[arg-type]
    assert not keeper.beat(session).written and len(keeper.take_warnings()) == 1  # type: ignore[arg-type]


def test_rollback_sends_no_back_out_after_its_heartbeat_failed(tmp_path, http_peer, engine, secrets_env, capsys,
                                                              keys):
    """`rollback` holds the same lock: a back-out changes state, so it is not sent when the heartbeat right
    before it was not written (the session steps it needs were sent, with good heartbeats)."""
    from support.rollback_runs import _rollback_args, _run

    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys)
    before = len(engine.pipelines)
    armed, failed = [False], []

    def pick(pipeline: Any) -> bool:  # every heartbeat after the connect step (04) fails: not this session's
        armed[0] = armed[0] or pipeline.script.startswith("# psbridge step 04/")
        heartbeat = pipeline.script.startswith(LOCK) and bool(pipeline.parameters.get("Heartbeat"))
        if heartbeat and armed[0]:
            failed.append(pipeline.seq)
        return heartbeat and armed[0]

    engine.reset_rules()  # the run's probe answers: rollback sends no probe
    engine.when(pick, Reply(terminating=ErrorSpec(HOLDS_NOT)))
    code = main(_rollback_args(pkg, http_peer, record, log))
    out, err = capsys.readouterr()
    assert code == 1, out + err
    sent = [p.script for p in engine.pipelines[before:]]
    assert any(s.startswith("# psbridge step 04/") for s in sent) and len(failed) == 1
    assert not any(s.startswith("# psbridge back-out of step") for s in sent)
    assert "Not sent: undo-spn (script " in out and f"failed right before it:\n  {HOLDS_NOT}\n" in out
    assert "run the same rollback command again" in out
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert (lines[-1]["action"], lines[-1]["outcome"]) == ("rollback", "failed")


@pytest.mark.parametrize("recovers", [True, False], ids=["recovers", "keeps-failing"])
def test_a_heartbeat_that_fails_among_the_probes_before_a_changing_step_is_sent_again_before_it(
        pkg, http_peer, engine, model, secrets_env, capsys, monkeypatch, recovers):
    """The probes before step 02 are slow: the heartbeat due before the second one fails. The step's own
    heartbeat was written before the probes, but one failed since: one more must be written right before
    the step, or the step is not sent."""
    monkeypatch.setattr(serverlock, "HEARTBEAT_EVERY", 0.2)
    probes, failed = [0], []

    def pick(pipeline: Any) -> bool:
        if "# psbridge probe: " in pipeline.script:
            probes[0] += 1
            time.sleep(0.5)  # longer than the heartbeat interval: the next pipeline brings a heartbeat
            return False
        heartbeat = pipeline.script.startswith(LOCK) and bool(pipeline.parameters.get("Heartbeat"))
        fails = heartbeat and probes[0] >= 1 and (len(failed) < 1 or not recovers)
        if fails:
            failed.append(probes[0])
        return fails

    engine.reset_rules()
    engine.when(pick, Reply(terminating=ErrorSpec("disk full")))
    model.install(engine)
    code, out, err = run(capsys, run_args(pkg, http_peer))
    assert probes[0] >= 2 and failed[0] == 1, failed  # a heartbeat failed between the probes before step 02
    if recovers:
        assert code == 0, out + err
        assert steps_sent(engine) == list(range(1, 9))
        assert err.count("psbridge: warning: the heartbeat") == 1
    else:
        assert code == 1, out + err
        assert steps_sent(engine) == [1]
        assert "Not sent: step 02 (certificate): the run lock's heartbeat on 127.0.0.1 failed right before it:" in out
        assert err.count("psbridge: warning: the heartbeat") == 1  # the probe's, once; the refusal says the rest
