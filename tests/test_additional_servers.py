"""A farm: CertificateReconfiguration.ps1 on every Web Application server, -updateCrm once.

Microsoft documents that the certificate step must run on every server with the Web
Application Server role and `-updateCrm` only once. `[crm] additional_servers` adds step 09,
which `run` sends to each additional server after the main sequence. The loopback range
gives each "server" its own peer (127.0.0.1 main, 127.0.0.2 and 127.0.0.3 additional), all
on one port, so the same connection options reach all of them.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from psbridge.cli import main
from psbridge.package import read_package

from support.lab import FARM, O365_USER, PFX_PASSWORD, USER
from support.winrm_peer import Engine, ErrorSpec, Reply, SecureValue, WinRMPeer
from support.winrm_peer.package import make_package

STEP9 = "# psbridge step 09: additional-servers"


@pytest.fixture
def farm_pkg(tmp_path: Path) -> Path:
    return make_package(tmp_path / "output", server="127.0.0.1", crm={"additional_servers": FARM})


def args(pkg: Path, peer: WinRMPeer, *extra: str) -> list[str]:
    return ["run", str(pkg), "--yes", "--port", str(peer.port), "--transport", "http", "--auth", "ntlm",
            "--username", USER, "--o365-user", O365_USER, *extra]


def check_args(pkg: Path, peer: WinRMPeer) -> list[str]:
    """The same connection options for `check` (which asks nothing, so takes no --yes)."""
    return [a for a in args(pkg, peer)[1:] if a != "--yes"]


def steps_of(engine: Engine) -> list[str]:
    return [s.split(":")[0].removeprefix("# psbridge step ") for s in engine.scripts() if s.startswith("# psbridge step")]


def test_the_package_has_step_09_where_it_runs_and_every_server(farm_pkg):
    package = read_package(farm_pkg)
    plan = json.loads(package.files["plan.json"])
    assert [s["runs_on"] for s in plan["steps"]] == ["main"] * 8 + ["additional"]
    step9 = package.text("steps/09-additional-servers.ps1")
    assert "-updateCrm" not in step9.split("param(")[1] and "& $CertificateScript" in step9
    review = package.text("REVIEW.md")
    assert all(f"  - `{host}`" in review for host in FARM) and "Main server" in review
    setup = package.text("setup.ps1")
    assert "09-additional-servers" in setup and ". {\r\n# psbridge step 09" not in setup  # not run by setup.ps1


def test_run_sends_step_09_to_each_additional_server_after_the_main_sequence(farm_pkg, http_peer, engine, farm,
                                                                            secrets_env, capsys):
    assert main(args(farm_pkg, http_peer)) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert steps_of(engine) == [f"{i:02d}/08" for i in range(1, 9)]
    for (peer, farm_engine), host in zip(farm, FARM):
        assert steps_of(farm_engine) == ["09"], host
        [step9] = [p for p in farm_engine.pipelines if p.script.startswith(STEP9)]
        assert step9.parameters == {"PfxPassword": SecureValue(PFX_PASSWORD)}
        assert any(p.script.startswith("# psbridge lock:") for p in farm_engine.pipelines)  # each server's lock
        assert f"[09/09] additional-servers on {host} … ok" in out
    events = [json.loads(line) for line in next((farm_pkg / "runs").glob("*.jsonl")).read_text().splitlines()]
    assert events[0]["servers"] == ["127.0.0.1", *FARM]
    assert [e.get("host") for e in events if e["event"] == "step-end"] == [None] * 8 + FARM
    assert [e["event"] for e in events].count("run-end") == 1


def test_a_failure_on_one_server_halts_and_resumes_with_from_server(farm_pkg, http_peer, engine, farm, secrets_env,
                                                                    capsys):
    first, second = farm
    second[1].when(STEP9, Reply(terminating=ErrorSpec("Private key not found")), times=1)
    assert main(args(farm_pkg, http_peer)) == 1
    out = capsys.readouterr().out
    assert steps_of(first[1]) == ["09"] and steps_of(second[1]) == ["09"]
    line = next(l.strip() for l in out.splitlines() if l.strip().startswith("psbridge run "))
    assert line.endswith(f"--from-step 9 --from-server {FARM[1]}")
    assert main(shlex.split(line)[1:]) == 0  # the printed command, exactly as printed
    assert steps_of(engine) == [f"{i:02d}/08" for i in range(1, 9)]  # the main server got nothing more
    assert steps_of(first[1]) == ["09"] and steps_of(second[1]) == ["09", "09"]


def test_a_connection_failure_after_steps_ran_exits_1_naming_the_host(tmp_path, http_peer, engine, secrets_env,
                                                                       capsys):
    pkg = make_package(tmp_path / "output", server="127.0.0.1", crm={"additional_servers": ["127.0.0.9"]})
    assert main(args(pkg, http_peer)) == 1
    out = capsys.readouterr().out
    assert "could not connect to 127.0.0.9" in out and "--from-step 9 --from-server 127.0.0.9" in out
    assert steps_of(engine) == [f"{i:02d}/08" for i in range(1, 9)]


def test_nothing_ran_is_still_exit_3(tmp_path, http_peer, secrets_env, capsys):
    pkg = make_package(tmp_path / "output", server="127.0.0.1", crm={"additional_servers": ["127.0.0.9"]})
    code = main(args(pkg, http_peer, "--from-step", "9"))
    assert code == 3 and "127.0.0.9" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--from-server", "127.0.0.2"], "--from-server: give it with --from-step 9"),
    (["--from-step", "9", "--from-server", "crm99"], "--from-server crm99: not one of the package's additional"),
])
def test_from_server_is_checked_before_anything(farm_pkg, http_peer, engine, secrets_env, capsys, extra, message):
    assert main(args(farm_pkg, http_peer, *extra)) == 2
    assert message in capsys.readouterr().err and engine.pipelines == []


@pytest.mark.parametrize("servers,message", [
    (["crm01.contoso.local"], "is the main server"),
    (["crmfe2", "CRMFE2."], "is listed twice"),
    (["bad host"], "not a valid DNS label"),
])
def test_additional_servers_are_validated(psbridge, tmp_path, servers, message):
    from support.winrm_peer.package import parameters_for

    data = parameters_for(server="crm01.contoso.local", crm={"additional_servers": servers})
    lines = [f"name = {json.dumps(data['name'])}", "[certificate]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in data["certificate"].items()]
    lines += ["[crm]"] + [f"{k} = {json.dumps(v)}" for k, v in data["crm"].items()]
    lines += ["[sharepoint]", f"sites = {json.dumps(data['sharepoint']['sites'])}"]
    (tmp_path / "p.toml").write_text("\n".join(lines) + "\n")
    result = psbridge("validate", "p.toml")
    assert result.exit_code == 2 and "crm" in result.stderr and message in result.stderr


def test_step_09_reads_the_tools_folder_from_each_servers_registry_when_not_given(tmp_path):
    from support.winrm_peer.package import parameters_for
    from psbridge.parameters import parse_parameters
    from psbridge.render import render_package

    data = parameters_for(server="crm01", crm={"additional_servers": ["crmfe2"]})
    data["crm"].pop("tools_dir", None)
    files = render_package(parse_parameters(data)).files
    step9 = files["steps/09-additional-servers.ps1"].decode("utf-8-sig")
    assert "CRM_Server_InstallDir" in step9 and "'None'" not in step9
    assert all(b"'None'" not in data for data in files.values())


# --------------------------------------------------------------------------- check on a farm


def _answer(engine: Engine, answers: dict) -> None:
    for name, answer in answers.items():
        if answer is not None:
            engine.when(f"# psbridge probe: {name} ", Reply(output=[json.dumps(answer)]))


def test_check_probes_each_additional_server_and_judges_step_09_there(farm_pkg, http_peer, engine, farm,
                                                                     secrets_env, capsys):
    from support.probe_states import state

    _answer(engine, state("fully configured"))
    done, fresh = farm
    _answer(done[1], {k: v for k, v in state("fully configured").items() if k in ("server", "certificate")})
    _answer(fresh[1], {k: v for k, v in state("fresh server").items() if k in ("server", "certificate")})
    code = main(["check", *check_args(farm_pkg, http_peer), "--json"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    step9 = [v for v in report["verdicts"] if v["id"] == "additional-servers"]
    assert [(v["host"], v["verdict"]) for v in step9] == [(FARM[0], "in place"), (FARM[1], "will change")]
    assert code == 5
    for _, farm_engine in farm:  # read-only there too: only the two probes, no step, no lock
        assert all(s.startswith("# psbridge probe: ") or s.startswith("$ErrorActionPreference")
                   for s in farm_engine.scripts())


def test_check_names_an_unreachable_additional_server(tmp_path, http_peer, engine, secrets_env, capsys):
    from support.probe_states import state

    pkg = make_package(tmp_path / "output", server="127.0.0.1", crm={"additional_servers": ["127.0.0.9"]})
    _answer(engine, state("fully configured"))
    assert main(["check", *check_args(pkg, http_peer)]) == 1  # step 09 cannot be told there
    out = capsys.readouterr().out
    assert "note: server 127.0.0.9: could not connect" in out and "127.0.0.9: the server or certificate probe" in out


def test_run_verify_judges_the_step_on_each_additional_server_too(farm_pkg, http_peer, engine, farm, secrets_env,
                                                                  capsys):
    """--verify used to judge only the main server: step 09 was never checked where it ran."""
    from support.probe_states import state

    _answer(engine, state("fully configured"))
    done, fresh = farm
    _answer(done[1], {k: v for k, v in state("fully configured").items() if k in ("server", "certificate")})
    _answer(fresh[1], {k: v for k, v in state("fresh server").items() if k in ("server", "certificate")})
    assert main(args(farm_pkg, http_peer, "--verify")) == 5
    out = capsys.readouterr().out
    assert f"step 09 additional-servers is will change ({FARM[1]}: not in LocalMachine\\My)" in out
    assert FARM[0] + ": not in" not in out
