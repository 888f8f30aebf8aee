"""Where the connection settings come from (issue 21, "Commands stay long").

The package's `[crm]` table carries the connection: transport, port and auth are approved with
it (an option may repeat them, another value is refused); the WinRM user and the Office 365 user
are defaults there, which PSBRIDGE_USERNAME / PSBRIDGE_O365_USER and then the options override.
So `psbridge run PKG`, `run PKG --from-step 7` and `check PKG` are whole commands, and a printed
continue command repeats only what differs. Every run here is against the loopback peer, with the
environment set by monkeypatch (never the user's own).
"""

from __future__ import annotations

import copy
import json
import os
import shlex
from pathlib import Path
from typing import Any

import pytest

from psbridge.catalogue import MSONLINE_STEPS
from psbridge.cli import main

from support.lab import O365_USER, USER
from support.packages import answer_probes, check_facts
from support.probe_states import state
from support.winrm_peer import ErrorSpec, Reply, WinRMPeer
from support.winrm_peer.package import marker

STEP = {s.index: s for s in MSONLINE_STEPS}


def _package(root: Path, **crm: Any) -> Path:
    """The example package for the loopback peer, its `[crm]` table extended by `crm`."""
    from psbridge.parameters import EXAMPLE, parse_parameters
    from psbridge.render import render_package
    from psbridge.writer import write_package

    data = copy.deepcopy(EXAMPLE)
    data["crm"].update({"server": "127.0.0.1", **crm})
    return write_package(render_package(parse_parameters(data), check_facts()), root / "out")


def _for_peer(root: Path, peer: WinRMPeer, **crm: Any) -> Path:
    """A package that names the whole connection to the peer: HTTP, its port, NTLM, both users."""
    return _package(root, transport="http", port=peer.port, auth="ntlm", username=USER, o365_user=O365_USER, **crm)


def _steps_sent(engine: Any) -> list[int]:
    return [int(s[len("# psbridge step "):][:2]) for s in engine.scripts() if s.startswith("# psbridge step ")]


def _continue_line(out: str) -> str:
    return next(line.strip() for line in out.splitlines() if line.strip().startswith("psbridge run "))


@pytest.fixture(autouse=True)
def _no_users_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests decide which user variables are set."""
    monkeypatch.delenv("PSBRIDGE_USERNAME", raising=False)
    monkeypatch.delenv("PSBRIDGE_O365_USER", raising=False)


# --------------------------------------------------------------------------- whole commands


def test_check_pkg_is_the_whole_command(tmp_path, http_peer, engine, secrets_env, capsys) -> None:
    pkg = _for_peer(tmp_path, http_peer)
    answer_probes(engine, state("fully configured"))
    code = main(["check", str(pkg)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert engine.pipelines, "check sent nothing"


def test_run_pkg_and_from_step_7_are_whole_commands(tmp_path, http_peer, engine, secrets_env, monkeypatch,
                                                     capsys) -> None:
    monkeypatch.delenv("PSBRIDGE_AUDIT_LOG")  # the default log, beside the packages (in tmp_path)
    pkg = _for_peer(tmp_path, http_peer)
    engine.when(marker(STEP[7]), Reply(errors=[ErrorSpec("settings locked", "PermissionDenied", line=2)]), times=1)
    assert main(["run", str(pkg), "--yes"]) == 1
    out = capsys.readouterr().out
    # The printed continue command repeats nothing the package gives: no host, port, transport, auth or user.
    assert _continue_line(out) == f"psbridge run {shlex.quote(str(pkg))} --yes --from-step 7"
    engine.pipelines.clear()
    assert main(["run", str(pkg), "--yes", "--from-step", "7"]) == 0, capsys.readouterr()
    assert 7 in _steps_sent(engine) and 6 not in _steps_sent(engine)


# --------------------------------------------------------------------------- approved: transport, port, auth


@pytest.mark.parametrize(("option", "value", "key", "approved"), [
    ("--transport", "https", "transport", "http"),
    ("--port", "5985", "port", None),  # the peer's own port is the package's
    ("--auth", "negotiate", "auth", "ntlm"),
])
def test_another_value_than_the_approved_one_is_refused(tmp_path, http_peer, engine, secrets_env, capsys,
                                                        option, value, key, approved) -> None:
    pkg = _for_peer(tmp_path, http_peer)
    approved = approved or str(http_peer.port)
    for command in (["check", str(pkg)], ["run", str(pkg), "--yes"]):
        code = main([*command, option, value])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("psbridge: error:")]
        assert code == 2, err
        assert lines == [f"psbridge: error: {option} {value}: the package is approved for [crm] {key} = {approved}; "
                         f"leave {option} out (or change [crm] {key}, render and approve again)"]
        assert "Traceback" not in err
    assert engine.pipelines == []  # nothing was sent


def test_the_same_value_as_the_package_is_accepted(tmp_path, http_peer, engine, secrets_env, capsys) -> None:
    pkg = _for_peer(tmp_path, http_peer)
    answer_probes(engine, state("fully configured"))
    code = main(["check", str(pkg), "--transport", "http", "--port", str(http_peer.port), "--auth", "ntlm"])
    assert code == 0, capsys.readouterr()


def test_a_refused_option_is_in_the_audit_log(tmp_path, http_peer, engine, secrets_env, capsys,
                                              _audit_log_in_tmp) -> None:
    pkg = _for_peer(tmp_path, http_peer)
    assert main(["run", str(pkg), "--yes", "--auth", "kerberos"]) == 2
    capsys.readouterr()
    last = json.loads(_audit_log_in_tmp.read_text().splitlines()[-1])
    assert last["action"] == "run" and last["outcome"] == "refused"
    assert "--auth kerberos" in last["details"]["problems"][0]


def test_rollback_refuses_another_port(tmp_path, http_peer, engine, secrets_env, capsys) -> None:
    from psbridge.cli.options import ConnectionOptions

    pkg = _for_peer(tmp_path, http_peer)
    from psbridge.package import read_package

    crm = read_package(pkg).parameters.crm
    options = ConnectionOptions(host=None, port=5986, transport=None, auth=None, username=None, ca_bundle=None,
                                no_verify_tls=False, client_cert=None, client_key=None,
                                configuration_name="Microsoft.PowerShell", connection_timeout=30,
                                operation_timeout=20, o365_user=None)
    from psbridge.errors import UserError

    with pytest.raises(UserError, match=rf"--port 5986: the package is approved for \[crm\] port = {http_peer.port}"):
        options.to("127.0.0.1", crm)


def test_the_approved_settings_are_part_of_the_digest(tmp_path, http_peer) -> None:
    """Changing transport, port or auth makes another package: an approval of one does not cover the other."""
    from psbridge.package import read_package

    digests = {read_package(_package(tmp_path / str(i), **crm)).digest for i, crm in enumerate(
        [{}, {"transport": "http"}, {"port": 5999}, {"auth": "kerberos"}])}
    assert len(digests) == 4


def test_an_old_package_without_the_keys_keeps_the_option_defaults(tmp_path, http_peer, engine, secrets_env,
                                                                   capsys) -> None:
    pkg = _package(tmp_path)  # server only, like every package before these keys
    plan = json.loads((pkg / "plan.json").read_text())
    assert set(plan["parameters"]["crm"]) == {"root_domain", "tools_dir", "server"}
    answer_probes(engine, state("fully configured"))
    code = main(["check", str(pkg), "--port", str(http_peer.port), "--transport", "http", "--auth", "ntlm",
                 "--username", USER, "--o365-user", O365_USER])
    assert code == 0, capsys.readouterr()
    # and without --transport the default is still https (the peer speaks http: the connection fails)
    code = main(["check", str(pkg), "--port", str(http_peer.port), "--auth", "ntlm", "--username", USER, "--no-entra"])
    assert code == 3
    assert f"https://127.0.0.1:{http_peer.port}/wsman" in capsys.readouterr().err


# --------------------------------------------------------------------------- defaults: username, o365_user


def test_psbridge_username_overrides_the_package_and_username_overrides_both(tmp_path, http_peer, engine,
                                                                              secrets_env, monkeypatch,
                                                                              capsys) -> None:
    pkg = _for_peer(tmp_path, http_peer, **{})
    wrong = _package(tmp_path / "wrong", transport="http", port=http_peer.port, auth="ntlm",
                     username="CONTOSO\\nobody", o365_user=O365_USER)
    answer_probes(engine, state("fully configured"))
    assert main(["check", str(wrong)]) == 3  # the package's user is not the peer's
    assert "for CONTOSO\\nobody" in capsys.readouterr().err
    monkeypatch.setenv("PSBRIDGE_USERNAME", USER)
    assert main(["check", str(wrong)]) == 0, capsys.readouterr()  # the environment wins over the package
    monkeypatch.setenv("PSBRIDGE_USERNAME", "CONTOSO\\nobody")
    assert main(["check", str(pkg)]) == 3  # ... over a right package value too
    capsys.readouterr()
    assert main(["check", str(pkg), "--username", USER]) == 0, capsys.readouterr()  # and the option over both


def test_o365_user_comes_from_option_then_environment_then_package(monkeypatch) -> None:
    from psbridge.cli.options import ConnectionOptions
    from psbridge.parameters import EXAMPLE, parse_parameters

    data = copy.deepcopy(EXAMPLE)
    data["crm"]["o365_user"] = "pkg@contoso.onmicrosoft.com"
    crm = parse_parameters(data).crm

    def options(o365_user: str | None) -> ConnectionOptions:
        return ConnectionOptions(host=None, port=None, transport=None, auth=None, username=None, ca_bundle=None,
                                 no_verify_tls=False, client_cert=None, client_key=None,
                                 configuration_name="Microsoft.PowerShell", connection_timeout=30,
                                 operation_timeout=20, o365_user=o365_user)

    assert options(None).office_user(crm) == "pkg@contoso.onmicrosoft.com"
    assert options(None).office_user(None) is None
    monkeypatch.setenv("PSBRIDGE_O365_USER", "env@contoso.onmicrosoft.com")
    assert options(None).office_user(crm) == "env@contoso.onmicrosoft.com"
    assert options("opt@contoso.onmicrosoft.com").office_user(crm) == "opt@contoso.onmicrosoft.com"


def test_the_o365_user_of_the_environment_reaches_the_step(tmp_path, http_peer, engine, secrets_env, monkeypatch,
                                                           capsys) -> None:
    pkg = _package(tmp_path, transport="http", port=http_peer.port, auth="ntlm", username=USER)
    monkeypatch.setenv("PSBRIDGE_O365_USER", O365_USER)
    assert main(["run", str(pkg), "--yes"]) == 0, capsys.readouterr()
    credentials = [v for p in engine.pipelines for v in p.parameters.values() if hasattr(v, "username")]
    assert credentials and {c.username for c in credentials} == {O365_USER}


def test_without_any_o365_user_the_refusal_names_all_three_places(tmp_path, http_peer, engine, secrets_env,
                                                                 capsys) -> None:
    pkg = _package(tmp_path, transport="http", port=http_peer.port, auth="ntlm", username=USER)
    assert main(["run", str(pkg), "--yes"]) == 2
    err = capsys.readouterr().err
    assert "--o365-user" in err and "PSBRIDGE_O365_USER" in err and "[crm] o365_user" in err
    assert engine.pipelines == []


def test_the_continue_command_keeps_what_differs(tmp_path, http_peer, engine, secrets_env, monkeypatch,
                                                  capsys) -> None:
    """A user given as an option that differs from the package's is repeated; the package's values are not.

    The log named by PSBRIDGE_AUDIT_LOG is repeated too: the next shell may not have the variable.
    """
    pkg = _package(tmp_path, transport="http", port=http_peer.port, auth="ntlm", username="CONTOSO\\other",
                   o365_user=O365_USER)
    engine.when(marker(STEP[7]), Reply(errors=[ErrorSpec("settings locked", "PermissionDenied", line=2)]), times=1)
    assert main(["run", str(pkg), "--yes", "--username", USER, "--step-timeout", "60"]) == 1
    line = _continue_line(capsys.readouterr().out)
    log = shlex.quote(os.environ["PSBRIDGE_AUDIT_LOG"])
    assert line == (f"psbridge run {shlex.quote(str(pkg))} --username {shlex.quote(USER)} --step-timeout 60 "
                    f"--audit-log {log} --yes --from-step 7")
    assert main(shlex.split(line)[1:]) == 0, capsys.readouterr()  # the printed command, exactly as printed


def test_the_continue_command_repeats_a_user_the_environment_gave(tmp_path, http_peer, engine, secrets_env,
                                                                   monkeypatch, capsys) -> None:
    """PSBRIDGE_USERNAME is not the package's: a new shell without it would connect as `[crm] username`, so the
    continue command names the user the run connected as (as it repeats a log PSBRIDGE_AUDIT_LOG named)."""
    pkg = _package(tmp_path, transport="http", port=http_peer.port, auth="ntlm", username="CONTOSO\\other",
                   o365_user=O365_USER)
    monkeypatch.setenv("PSBRIDGE_USERNAME", USER)
    engine.when(marker(STEP[7]), Reply(errors=[ErrorSpec("settings locked", "PermissionDenied", line=2)]), times=1)
    assert main(["run", str(pkg), "--yes"]) == 1
    line = _continue_line(capsys.readouterr().out)
    assert f"--username {shlex.quote(USER)}" in line, line
    monkeypatch.delenv("PSBRIDGE_USERNAME")
    assert main(shlex.split(line)[1:]) == 0, capsys.readouterr()  # in a shell without the variable


# --------------------------------------------------------------------------- the parameters file


@pytest.mark.parametrize(("crm", "message"), [
    ({"port": "5986"}, "crm.port: must be a whole number such as 5986, without quotes"),
    ({"port": 70000}, "crm.port: 70000 is not a TCP port (1-65535)"),
    ({"transport": "ftp"}, "crm.transport: must be 'https' or 'http'"),
    ({"auth": "digest"}, "crm.auth: must be 'negotiate', 'ntlm', 'kerberos', 'credssp', 'basic' or 'certificate'"),
    ({"transport": "http", "auth": "basic"}, 'crm: auth = "basic" over transport = "http" would send credentials'),
    ({"username": "CONTOSO\\a\\b"}, "crm.username: must be one account"),
    ({"username": " CONTOSO\\crmadmin"}, "crm.username: must be an account such as CONTOSO\\crmadmin"),
    ({"o365_user": "admin"}, "crm.o365_user: must be a user principal name such as admin@contoso.onmicrosoft.com"),
])
def test_bad_connection_values_are_named(crm: dict[str, Any], message: str) -> None:
    from psbridge.errors import UserError
    from psbridge.parameters import EXAMPLE, parse_parameters

    data = copy.deepcopy(EXAMPLE)
    data["crm"].update(crm)
    with pytest.raises(UserError) as caught:
        parse_parameters(data)
    assert any(p.startswith(message) for p in caught.value.problems), caught.value.problems


def test_the_file_offers_exactly_the_options_values() -> None:
    """`[crm] transport` and `auth` take the values `--transport` and `--auth` accept."""
    import typing

    from psbridge.cli import options
    from psbridge.fields import AUTH_METHODS, TRANSPORTS
    from psbridge.parameters import Crm
    from psbridge.remote import transport

    def literal(name: str) -> tuple[str, ...]:
        annotation = Crm.model_fields[name].annotation
        return next(typing.get_args(a) for a in typing.get_args(annotation) if typing.get_origin(a) is typing.Literal)

    assert literal("auth") == AUTH_METHODS == options._AUTHS == transport.AUTHS
    assert literal("transport") == TRANSPORTS


def test_init_writes_the_connection_keys_commented(tmp_path, psbridge) -> None:
    assert psbridge("init", "fabrikam.toml").exit_code == 0
    text = (tmp_path / "fabrikam.toml").read_text(encoding="utf-8")
    crm = text.split("[crm]", 1)[1].split("\n[", 1)[0]
    for key in ("server", "transport", "port", "auth", "username", "o365_user"):
        assert f"\n# {key} = " in crm, key
    # uncommented, they are valid as written
    uncommented = text.replace("# username = ", "username = ").replace("# o365_user = ", "o365_user = ")
    uncommented = uncommented.replace("# transport = ", "transport = ").replace("# port = ", "port = ")
    (tmp_path / "fabrikam.toml").write_text(uncommented.replace("# auth = ", "auth = "), encoding="utf-8")
    from psbridge.parameters import load_parameters

    params = load_parameters(tmp_path / "fabrikam.toml")
    assert (params.crm.username, params.crm.o365_user) == ("CONTOSO\\crmadmin", "admin@contoso.onmicrosoft.com")
    assert (params.crm.transport, params.crm.port, params.crm.auth) == ("https", 5986, "negotiate")
