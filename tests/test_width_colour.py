"""Long lines wrap at 100 columns (not a terminal) with hanging indents; colour only where it belongs.

The outputs issue 21 measured at 140-370 columns: report's "wrote" line, approve, verify's
refusals and rollback's manual steps. No line of them is over 100 columns, except a line that
is one unbreakable word (a path) or a command the operator must copy, which is printed whole on
a line of its own. Colour (ok / failed / unknown) is checked through click's CliRunner with
color=True (a terminal), then with NO_COLOR, --no-color and --json.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from psbridge.cli import cli, main
from psbridge.cli.screen import wrap
from psbridge.steps.app_registration import MANUAL

from support.cli import check_args, run_args
from support.packages import answer_probes, write_check_package
from support.probe_states import state

ESC = "\x1b["


def _too_wide(text: str, commands: tuple[str, ...] = ()) -> list[str]:
    """The lines over 100 columns that are neither one unbreakable word (a path) nor a command to copy.

    `audit: LOG head SHA256`, which every command that writes the audit log prints, is what the
    operator copies into the change ticket (and scripts read it as one line): it stays whole.
    """
    return [line for line in text.splitlines()
            if len(line) > 100 and " " in line.strip() and line.strip() not in commands
            and not re.fullmatch(r"audit: \S+ head [0-9a-f]{64}", line)]


def test_report_wrote_line_wraps(psbridge, pkg: Path) -> None:
    result = psbridge("report", pkg)
    assert result.exit_code == 0, result.stderr
    assert len(" ".join(result.stdout.split())) > 140  # it was one line of this length
    assert result.stdout.startswith("wrote ") and "report sha256" in " ".join(result.stdout.split())
    assert not _too_wide(result.stdout)
    assert re.search(r"\n    \S", result.stdout)  # the continuation hangs under it


def test_approve_and_verify_wrap(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    approved = psbridge("approve", pkg, "--key", keys["jane"], "--comment", "CHG-1234")
    again = psbridge("approve", pkg, "--key", keys["jane"])
    too_few = psbridge("verify", pkg, "--trusted-keys", keys["trusted"], "--min-approvals", "2")
    assert psbridge("approve", pkg, "--key", keys["bob"]).exit_code == 0
    verified = psbridge("verify", pkg, "--trusted-keys", keys["trusted"], "--min-approvals", "2")
    assert (approved.exit_code, again.exit_code, too_few.exit_code, verified.exit_code) == (0, 0, 1, 0)
    assert "nothing added" in again.stdout and "psbridge: refused: too few approvals" in too_few.stderr
    next_command = f"psbridge approve {pkg} --key KEY"  # verify's refusal ends with it: a command to copy
    assert too_few.stderr.splitlines()[-1].strip() == next_command
    for text in (approved.stdout, again.stdout, too_few.stdout, too_few.stderr, verified.stdout):
        assert not _too_wide(text, (next_command,)), text
    # the refusal was 110 columns on one line: now the paragraph continues, indented
    assert re.search(r"psbridge: refused: too few approvals.*\n    \S", too_few.stderr)
    assert len([line for line in verified.stdout.splitlines() if line.startswith("  approved by ")]) == 2


def test_manual_back_out_wraps_and_never_breaks_a_command() -> None:
    commands = tuple(re.findall(r"`([^`]+)`", MANUAL))
    assert len(commands) == 3 and max(map(len, commands)) > 100  # the test would prove nothing otherwise
    lines = wrap(MANUAL, "step 09 app-registration: by hand: ", columns=100)
    assert not _too_wide("\n".join(lines), commands)
    for command in commands:
        holding = [line for line in lines if command in line]
        assert len(holding) == 1, command  # whole, on one line
        # a line that fits keeps the sentence as written; a command too long for one goes alone on its line
        assert len(holding[0]) <= 100 or holding[0].strip() == command
    assert any(line.strip() == commands[0] for line in lines)  # the 230-column one: alone
    prose = " ".join(line.strip() for line in lines)
    assert "An adopted app is left as it was found" in prose and "(it stays restorable for 30 days" in prose


def test_code_lines_and_quoted_values_of_a_procedure_are_never_broken() -> None:
    from psbridge.steps.crm_settings import _absent_note

    value = r"https://x\x1b[2J\nstep 08 tenant-id: forged"
    note = _absent_note("S2SDefaultAuthorizationServerMetadataUrl", value)
    code = [line for line in note.split("\n") if line.startswith("  ")]
    assert code and max(map(len, code)) > 100  # the Attributes.Add line: longer than the screen
    lines = wrap(note, "step 07 crm-settings: by hand: ", columns=100)
    for line in code:
        assert line in lines  # each line of code as it is, at its own indent
    assert any(repr(value) in line for line in lines)  # the quoted value (as the note quotes it) on one line
    assert not _too_wide("\n".join(lines), tuple(line.strip() for line in code))


def test_a_psbridge_command_at_the_end_of_a_message_is_not_broken() -> None:
    from psbridge.keys import KEYGEN_HINT

    reason = ("approvals/20261207T055226Z-02a7c3dcc724.json (Jane Doe <jane@contoso.com>, key 02a7c3dcc724f2): "
              "no usable e-mail address in the identity; it does not count: make a new key with " + KEYGEN_HINT)
    lines = wrap(reason, "psbridge: refused: ", columns=100)
    assert "      " + KEYGEN_HINT in lines and not _too_wide("\n".join(lines))
    bracketed = wrap("the log is broken (run psbridge audit repair /tmp/a/audit.jsonl) and then nothing more "
                     "until it is repaired, as the audit log says", "x: ", columns=60)
    assert "      psbridge audit repair /tmp/a/audit.jsonl" in bracketed
    assert ") and then" in " ".join(bracketed)  # the sentence goes on after it, nothing lost
    # prose that names a command is wrapped as prose
    sentence = wrap("Nothing was sent: this psbridge run is refused because the package is not approved by "
                    "enough people", "x: ", columns=60)
    assert all(len(line) <= 60 for line in sentence)


def test_rollback_manual_steps_wrap(tmp_path, http_peer, engine, secrets_env, capsys, keys) -> None:
    from support.rollback_runs import _rollback_args, _run  # the run whose changes rollback backs out

    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys)
    capsys.readouterr()
    assert main(_rollback_args(pkg, http_peer, record, log)) == 0
    out = capsys.readouterr().out
    manual = re.search(r"^step 02 certificate: by hand: .*?\n(?!    )", out, re.S | re.M)
    assert manual is not None, out
    assert len(" ".join(manual.group(0).split())) > 140 and manual.group(0).count("\n") >= 2
    assert not _too_wide(manual.group(0))


def _invoke(args: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """psbridge through CliRunner on a terminal that shows colour (color=True)."""
    return CliRunner().invoke(cli, args, color=True, env=env)


@pytest.fixture
def ran(pkg, http_peer, secrets_env):  # type: ignore[no-untyped-def]
    return pkg, http_peer


def test_run_results_are_coloured_on_a_terminal(ran, monkeypatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    pkg, peer = ran
    result = _invoke(run_args(pkg, peer))
    assert result.exit_code == 0, result.output
    assert f"prerequisites … {ESC}32mok{ESC}0m " in result.output  # green


@pytest.mark.parametrize("how", ["NO_COLOR", "--no-color", "--json", "pipe"])
def test_no_colour_with_no_color_or_json_or_a_pipe(ran, monkeypatch, how) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    pkg, peer = ran
    args = run_args(pkg, peer)
    env = {"NO_COLOR": "1"} if how == "NO_COLOR" else None
    if how == "pipe":
        result = CliRunner().invoke(cli, args)  # color=False: not a terminal
    else:
        result = _invoke(["--no-color", *args] if how == "--no-color" else
                         [*args, "--json"] if how == "--json" else args, env=env)
    assert result.exit_code == 0, result.output
    assert ESC not in result.output
    assert ("prerequisites" in result.output) and ("ok" in result.output)


def test_check_verdicts_are_coloured_on_a_terminal_only(tmp_path, engine, http_peer, secrets_env, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    pkg = write_check_package(tmp_path)
    answer_probes(engine, state("fully configured"))
    coloured = _invoke(check_args(pkg, http_peer))
    assert f"{ESC}32min place{ESC}0m" in coloured.output, coloured.output
    # the columns after the verdict stay where they were: the colour codes take no room
    plain = CliRunner().invoke(cli, check_args(pkg, http_peer))

    def verdicts(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("[")]

    assert verdicts(re.sub(r"\x1b\[[0-9;]*m", "", coloured.output)) == verdicts(plain.output)
    assert len(verdicts(plain.output)) >= 8
    assert ESC not in _invoke(check_args(pkg, http_peer), env={"NO_COLOR": "1"}).output


def test_approve_and_verify_warnings_wrap_with_the_command_alone(psbridge, tmp_path: Path, keys: dict[str, Path],
                                                                 monkeypatch) -> None:
    """approve's change-window warning (220 columns) and verify's private-key warning (160) wrap like their
    other lines; the command the window warning names is whole, on a line of its own."""
    from datetime import datetime, timezone

    from psbridge import approvals, clock

    from support.report_pages import WINDOW
    from support.winrm_peer.package import make_package

    now = datetime(2026, 12, 10, 9, 0, tzinfo=timezone.utc)
    monkeypatch.setattr(clock, "utc_now", lambda: now)
    monkeypatch.setattr(approvals, "utc_now", lambda: now)
    pkg = make_package(tmp_path / "out", change={"window": WINDOW})
    short = psbridge("approve", pkg, "--key", keys["jane"], "--expires", "1d")
    assert short.exit_code == 0, short.stderr
    command = f"psbridge approve {pkg} --key {keys['jane']} --expires 3d"
    assert command in [line.strip() for line in short.stderr.splitlines()], short.stderr
    assert "before the change window ends" in " ".join(short.stderr.split())
    assert not _too_wide(short.stderr, (command,)), short.stderr
    board = tmp_path / "board"
    board.mkdir()
    (board / "jane.pub.json").write_bytes((keys["trusted"] / "jane.pub.json").read_bytes())
    (board / "jane-doe.key").write_bytes(keys["jane"].read_bytes())
    verified = psbridge("verify", pkg, "--trusted-keys", board)
    assert verified.exit_code == 0, verified.stderr
    assert "holds private key file(s) jane-doe.key" in " ".join(verified.stderr.split())
    assert not _too_wide(verified.stderr), verified.stderr
