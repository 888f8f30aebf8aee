"""Every refusal ends with the next command (issue 21): one test per row of README's table
"When psbridge refuses". Runs are against the loopback peer; the environment is set by
monkeypatch (never the user's own); the clock of the approvals is moved, not waited for.
"""

from __future__ import annotations

import os
import re
import shlex
from datetime import timedelta
from pathlib import Path

import pytest

from psbridge import approvals, clock
from psbridge.catalogue import MSONLINE_STEPS
from psbridge.cli import main
from psbridge.package import read_package

from support.cli import CHECKOUT, run_args
from support.lab import O365_USER, USER
from support.packages import answer_probes
from support.probe_states import state
from support.winrm_peer import Reply
from support.winrm_peer.package import make_package, marker

STEP = {s.index: s for s in MSONLINE_STEPS}
README = (CHECKOUT / "README.md").read_text(encoding="utf-8")


def _peer(peer) -> list[str]:  # noqa: ANN001 - the loopback peer
    return ["--port", str(peer.port), "--transport", "http", "--auth", "ntlm", "--username", USER,
            "--o365-user", O365_USER]


def _last_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("psbridge: ")]
    assert lines, err
    return lines[-1]


def test_an_expired_approval_ends_with_psbridge_approve(tmp_path, http_peer, engine, secrets_env, keys,
                                                        monkeypatch, capsys) -> None:
    pkg = make_package(tmp_path / "output", server="127.0.0.1")
    approvals.approve_package(read_package(pkg), keys["jane"], timedelta(hours=1), "", passphrase_reader=lambda: "")
    later = clock.utc_now() + timedelta(hours=2)
    monkeypatch.setattr(approvals, "utc_now", lambda: later)
    for command in ("run", "check"):
        code = main([command, str(pkg), *_peer(http_peer), "--require-approval", "--trusted-keys",
                     str(keys["trusted"])])
        err = capsys.readouterr().err
        assert code == 1 and "expired: at" in err
        assert _last_error_line(err) == (f"psbridge: failed: {pkg}: not approved (2 reason(s) above); nothing ran; "
                                         f"next: psbridge approve {shlex.quote(str(pkg))} --key KEY (a new approval), "
                                         "then this command again")
    assert engine.pipelines == []


def test_too_few_approvals_ends_with_another_approvers_psbridge_approve(tmp_path, http_peer, engine, secrets_env,
                                                                        keys, capsys) -> None:
    """One valid approval where --min-approvals asks for two: the next command is a second person's approval."""
    pkg = make_package(tmp_path / "output", server="127.0.0.1")
    approvals.approve_package(read_package(pkg), keys["jane"], timedelta(hours=1), "", passphrase_reader=lambda: "")
    for command in ("run", "check"):
        code = main([command, str(pkg), *_peer(http_peer), "--require-approval", "--trusted-keys",
                     str(keys["trusted"]), "--min-approvals", "2"])
        err = capsys.readouterr().err
        assert code == 1 and "too few approvals: 1 valid" in err
        assert _last_error_line(err) == (f"psbridge: failed: {pkg}: not approved (1 reason(s) above); nothing ran; "
                                         f"next: psbridge approve {shlex.quote(str(pkg))} --key KEY (another "
                                         "trusted person's approval: 1 more), then this command again")
    assert engine.pipelines == []


def test_verify_refused_ends_with_psbridge_approve(tmp_path, keys, capsys) -> None:
    """`verify` refuses for want of approvals as `--require-approval` does, and names the same next command."""
    pkg = make_package(tmp_path / "output", server="127.0.0.1")
    assert main(["verify", str(pkg), "--trusted-keys", str(keys["trusted"])]) == 1
    err = " ".join(capsys.readouterr().err.split())  # verify wraps its lines at 100 columns
    assert err.endswith(f"psbridge: failed: {pkg}: not verified (1 reason(s) above); next, a new approval, then "
                        f"verify again: psbridge approve {shlex.quote(str(pkg))} --key KEY"), err
    approvals.approve_package(read_package(pkg), keys["jane"], timedelta(hours=1), "", passphrase_reader=lambda: "")
    assert main(["verify", str(pkg), "--trusted-keys", str(keys["trusted"]), "--min-approvals", "2"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert err.endswith(f"next, another trusted person's approval: 1 more, then verify again: psbridge approve "
                        f"{shlex.quote(str(pkg))} --key KEY"), err


def test_an_altered_package_is_not_sent_to_approve_again(tmp_path, keys, capsys) -> None:
    """A package that is not what psbridge renders is not fixed by an approval: no `psbridge approve` advice."""
    pkg = make_package(tmp_path / "output", server="127.0.0.1")
    approvals.approve_package(read_package(pkg), keys["jane"], timedelta(hours=1), "", passphrase_reader=lambda: "")
    (pkg / "setup.ps1").write_text("Write-Output 'altered'\n", encoding="utf-8")
    assert main(["verify", str(pkg), "--trusted-keys", str(keys["trusted"])]) == 1
    assert "psbridge approve" not in capsys.readouterr().err


def test_an_unknown_step_names_psbridge_check_before_the_continue_commands(pkg, http_peer, engine, secrets_env,
                                                                           capsys) -> None:
    engine.when(marker(STEP[6]), Reply(hang=True))
    code = main(run_args(pkg, http_peer, "--step-timeout", "1"))
    out = capsys.readouterr().out
    assert code == 4
    lines = [line.strip() for line in out.splitlines()]
    at = lines.index("See whether it took effect (read-only):")
    check = lines[at + 1]
    # the same connection and approval options as the run, none that only run takes
    assert check == (f"psbridge check {shlex.quote(str(pkg))} --host 127.0.0.1 --port {http_peer.port} "
                     f"--transport http --auth ntlm --username {shlex.quote(USER)} --o365-user {O365_USER} "
                     f"--audit-log {shlex.quote(os.environ['PSBRIDGE_AUDIT_LOG'])}")
    assert lines[at + 2:at + 4] == ["To run it again:", lines[at + 3]] and lines[at + 3].endswith("--from-step 6")
    runs = [line for line in lines if line.startswith("psbridge run ")]
    assert runs[-1].endswith("--from-step 7")  # the summary still ends with the command to continue
    # and the printed check runs as printed (read-only)
    engine.reset_rules()
    answer_probes(engine, state("fully configured"))
    code = main(shlex.split(check)[1:] + ["--no-entra"])
    out = capsys.readouterr().out
    assert code in (0, 1, 5) and "probe server on 127.0.0.1 … ok" in out, out  # parsed, connected, probed


def test_another_host_ends_with_render_and_approve(tmp_path, http_peer, engine, secrets_env, capsys) -> None:
    server_pkg = make_package(tmp_path / "output", server="127.0.0.1")
    code = main(["run", str(server_pkg), "--yes", *_peer(http_peer), "--host", "crm02.contoso.local"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [
        "psbridge: error: --host crm02.contoso.local: the package is for crm.server = 127.0.0.1; refusing another "
        'host. To run it on crm02.contoso.local: set [crm] server = "crm02.contoso.local" in the parameters file, '
        f"then psbridge render FILE.toml and psbridge approve {shlex.quote(str(server_pkg))} --key KEY"]
    assert engine.pipelines == []


@pytest.mark.parametrize("source", ["environment", "prompt"])
def test_a_wrong_password_names_where_it_came_from(pkg, http_peer, engine, secrets_env, monkeypatch, capsys,
                                                   source: str) -> None:
    if source == "environment":
        monkeypatch.setenv("PSBRIDGE_WINRM_PASSWORD", "not-the-password")
        expected = "PSBRIDGE_WINRM_PASSWORD: set it to that user's password, or unset it to be asked"
    else:
        monkeypatch.delenv("PSBRIDGE_WINRM_PASSWORD")
        monkeypatch.setattr("psbridge.cli.prompts.prompt_hidden", lambda what, confirm: "typed-wrong-password")
        monkeypatch.setattr("sys.stdin", _Terminal())
        expected = "the prompt: run again and type that user's password"
    code = main(run_args(pkg, http_peer))
    err = capsys.readouterr().err
    assert code == 3
    assert _last_error_line(err) == (f"psbridge: could not connect: authentication failed at "
                                     f"http://127.0.0.1:{http_peer.port}/wsman for {USER} with ntlm (wrong user or "
                                     f"password, or auth not enabled); the password came from {expected}")
    assert "not-the-password" not in err and "typed-wrong-password" not in err


class _Terminal:
    """Standard input that is a terminal (the prompt is monkeypatched and reads nothing)."""

    def isatty(self) -> bool:
        return True

    def readline(self) -> str:
        return ""


@pytest.mark.parametrize(("line", "expected"), [
    ('pfx_path = "C:\\certs\\s2s.pfx"',  # TOML: \c is no escape
     "not valid TOML: Unescaped '\\' in a string (at line 4, column 17); write Windows paths in single quotes: "
     "pfx_path = 'C:\\certs\\s2s.pfx'"),
    ('pfx_path = "C:\\temp\\new.pfx"',  # valid TOML holding a tab and a line break
     "certificate.pfx_path: contains a control character or line break (U+0009) (in double quotes, TOML reads "
     "\\t, \\n… as control characters; write the Windows path in single quotes: pfx_path = 'C:\\temp\\new.pfx')"),
])
def test_a_windows_path_in_double_quotes_ends_with_single_quotes(psbridge, tmp_path: Path, line: str,
                                                                 expected: str) -> None:
    from psbridge.parameters import EXAMPLE

    text = (f'name = "contoso"\nprofile = "msonline"\n[certificate]\n{line}\n'
            "cer_path = 'C:\\s2s.cer'\nservice_account = 'contoso\\CRMWebApplicationService'\n"
            f'[crm]\nroot_domain = "{EXAMPLE["crm"]["root_domain"]}"\n'
            f'[sharepoint]\nsites = ["{EXAMPLE["sharepoint"]["sites"][0]}"]\n')
    (tmp_path / "p.toml").write_text(text, encoding="utf-8")
    result = psbridge("validate", "p.toml")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"psbridge: error: p.toml: {expected}"]
    # and the line it names is the fix: the file validates with it
    fixed = text.replace(line, expected.rsplit(": ", 1)[-1].removesuffix(")"))
    (tmp_path / "p.toml").write_text(fixed, encoding="utf-8")
    assert psbridge("validate", "p.toml").exit_code == 0


def test_a_dns_failure_names_the_name_and_what_failed(tmp_path, secrets_env, capsys) -> None:
    pkg = make_package(tmp_path / "output", server="no-such-host.invalid")
    code = main(["run", str(pkg), "--yes", "--username", USER, "--o365-user", O365_USER])
    err = capsys.readouterr().err
    assert code == 3
    line = _last_error_line(err)
    assert re.fullmatch(r"psbridge: could not connect: cannot resolve host name 'no-such-host\.invalid' \(DNS: "
                        r"[^()]+\); check \[crm\] server or --host, then: nslookup no-such-host\.invalid", line), line


def test_the_readme_table_has_one_row_per_test() -> None:
    """README's "When psbridge refuses" table: each row names the next command this file tests."""
    table = README.split("### When psbridge refuses", 1)[1].split("\n\n")[2]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| refusal")]
    assert len(rows) == 6, rows
    for words in ("(a new approval)", "psbridge check", 'server = "HOST"', "PSBRIDGE_WINRM_PASSWORD",
                  "single quotes", "nslookup"):
        assert sum(words in row for row in rows) == 1, words
