"""`psbridge check` names the known failures through the real CLI and the loopback peer.

The peer answers the probes with tests/probe_states.py's KNOWN_FAILURES (sources there and in
tests/test_known_failures.py). The human output prints `cause:` and `fix:` under the step,
every line within 100 columns, outside text escaped; --json carries both fields.
"""

from __future__ import annotations

import datetime as _dt
import json

import pytest

from generator import clock
from generator.check import EXCHANGE_ONLINE
from generator.cli import main
from probe_states import KNOWN_FAILURES, state
from test_check_remote import answer_probes, check_args, write_package

NOW = _dt.datetime(2026, 6, 1, tzinfo=_dt.timezone.utc)  # inside the test certificate's validity (2026..2027)


def _check_lines(out: str) -> list[str]:
    """What _print_check printed: the lines up to its `check:` summary (the audit line follows)."""
    lines = out.splitlines()
    return lines[:next(i for i, line in enumerate(lines) if line.startswith("check: ")) + 1]


@pytest.fixture
def frozen_clock(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(clock, "utc_now", lambda: NOW)


@pytest.mark.parametrize("name", sorted(KNOWN_FAILURES))
def test_check_prints_cause_and_fix_within_100_columns(
        tmp_path, engine, http_peer, secrets_env, capsys, frozen_clock, name) -> None:
    pkg = write_package(tmp_path)
    answer_probes(engine, state(name))
    code = main(check_args(pkg, http_peer))
    out = capsys.readouterr().out
    lines = _check_lines(out)
    assert code in (1, 5), out
    assert all(len(line) <= 100 for line in lines), [line for line in lines if len(line) > 100]
    causes = [i for i, line in enumerate(lines) if line.startswith("        cause:  ")]
    assert causes, out
    for i in causes:
        # under a step line, and followed (after the cause's wrapped lines) by its fix
        assert any(lines[j].startswith("[0") for j in range(i)), out
        rest = lines[i + 1:]
        assert next(line for line in rest if not line.startswith(" " * 16)).startswith("        fix:    "), out


def test_check_json_carries_cause_and_fix(tmp_path, engine, http_peer, secrets_env, capsys, frozen_clock) -> None:
    pkg = write_package(tmp_path)
    answer_probes(engine, state("key not readable"))
    assert main(check_args(pkg, http_peer, "--json")) == 5
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cert = next(v for v in report["verdicts"] if v["id"] == "certificate")
    assert cert["verdict"] == "will change"
    assert "cannot read the private key" in cert["cause"] and cert["fix"].endswith(EXCHANGE_ONLINE)


def test_check_human_output_escapes_outside_text_in_causes(
        tmp_path, engine, http_peer, secrets_env, capsys, frozen_clock) -> None:
    pkg = write_package(tmp_path)
    answers = state("key not readable")
    answers["certificate"]["store"][0]["key_access"]["note"] = "no access\x1b[2J\u202e forged"
    answer_probes(engine, answers)
    assert main(check_args(pkg, http_peer)) == 5
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out
    assert "\\x1b[2J\\u202e forged" in out
    # the fix's URL is too long for its line: host/…/page (whole in --json)
    assert any(line.endswith("learn.microsoft.com/…/connect-dynamics-365-on-premises-exchange-online")
               for line in _check_lines(out))


def test_long_before_and_after_go_on_their_own_lines(
        tmp_path, engine, http_peer, secrets_env, capsys, frozen_clock) -> None:
    pkg = write_package(tmp_path)
    answers = state("fresh server")
    answer_probes(engine, answers)
    main(check_args(pkg, http_peer))
    lines = _check_lines(capsys.readouterr().out)
    settings = lines.index(next(line for line in lines if line.startswith("[07/08] crm-settings")))
    assert lines[settings + 1:settings + 7] == [
        "        before: S2SDefaultAuthorizationServerPrincipalId=(unset)",
        "                S2SDefaultAuthorizationServerMetadataUrl=(unset)",
        "        after:  S2SDefaultAuthorizationServerPrincipalId=00000001-0000-0000-c000-000000000000",
        "                S2SDefaultAuthorizationServerMetadataUrl=",
        "                  https://accounts.accesscontrol.windows.net/metadata/json/1",
        "[08/08] tenant-id        ok           tenant ID 72f988bf-86f1-41af-91ab-2d7cd011db47"]
    assert all(len(line) <= 100 for line in lines)
