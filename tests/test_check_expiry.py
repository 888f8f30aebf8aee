"""`psbridge check` as a monitoring check: what ends when, `--warn-days`, exit 6 (issue 13).

The real CLI talks to the loopback peer, which answers the probes with tests/support/probe_states.py's
JSON; the clock is frozen (psbridge.clock.utc_now), so "days left" are exact. The package's
certificate and CRM's S2S certificate end on 2036-01-01T00:00:00Z, as do the key credentials
of the "fully configured" tenant (THUMB, CRM's, and OTHER).
Exit codes: 1 (a probe failed, blocked) over 5 (would change) over 6 (expiring) over 0.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
from pathlib import Path
from typing import Any

import pytest

from psbridge import clock
from psbridge.check import evaluate
from psbridge.certificates import EXPIRY_WARNING_DAYS
from psbridge.cli import main
from psbridge.parameters import EXAMPLE, example, parse_parameters
from psbridge.render import render_package

from support.cli import check_args
from support.packages import answer_probes, write_check_package
from support.probe_states import OTHER, THUMB, state

UTC = _dt.timezone.utc
ENDS = "2036-01-01T00:00:00Z"
#: 31 days before the certificate and its credential end: inside the default window (60 days).
SOON = _dt.datetime(2035, 12, 1, tzinfo=UTC)
#: Years before anything ends.
EARLY = _dt.datetime(2026, 11, 27, tzinfo=UTC)
EXPIRED_KEY = {"thumbprint": "C" * 40, "key_id": "0f1e2d3c-0000-4000-8000-000000000001", "type": "AsymmetricX509Cert",
               "usage": "Verify", "start": "2019-01-01T00:00:00.0000000Z", "end": "2020-01-01T00:00:00.0000000Z"}








def write_package(root: Path, profile: str = "msonline", approved: str | None = THUMB, not_after: str = ENDS) -> Path:
    return write_check_package(root, profile, approved, not_after)


def check_lines(out: str) -> list[str]:
    """What _print_check printed: the lines up to its `check:` summary (the audit line follows)."""
    lines = out.splitlines()
    return lines[:next(i for i, line in enumerate(lines) if line.startswith("check: ")) + 1]


@pytest.fixture
def at(monkeypatch):  # type: ignore[no-untyped-def]
    """at(moment): freeze psbridge's clock there."""
    return lambda moment: monkeypatch.setattr(clock, "utc_now", lambda: moment)


def with_expired_key(answers: dict[str, Any]) -> dict[str, Any]:
    answers["entra"]["key_credentials"].append(dict(EXPIRED_KEY))
    return answers


# --------------------------------------------------------------------------- exit 6 and exit 0


@pytest.mark.parametrize("moment,extra,code", [
    (SOON, (), 6),                          # 31 days left, default window 60 days
    (SOON, ("--warn-days", "31"), 6),        # on the edge: within 31 days
    (SOON, ("--warn-days", "30"), 0),        # outside the window
    (SOON, ("--warn-days", "0"), 0),
    (EARLY, (), 0),                         # years left
])
def test_certificate_and_credential_within_the_window_exit_6_outside_0(
        tmp_path, engine, http_peer, secrets_env, capsys, at, moment, extra, code) -> None:
    at(moment)
    pkg = write_package(tmp_path)
    answer_probes(engine, state("fully configured"))
    assert main(check_args(pkg, http_peer, *extra)) == code
    lines = check_lines(capsys.readouterr().out)
    assert all(len(line) <= 100 for line in lines), lines
    warnings = [line for line in lines if line.startswith("warning: ")]
    if code == 6:
        days = 60 if not extra else int(extra[1])
        assert lines[-1] == (f"check: everything is in place, but something ends within {days} days or has "
                             "expired (exit 6)")
        text = " ".join(" ".join(lines).split())
        assert f"warning: CRM's S2STokenIssuer certificate {THUMB} expires on {ENDS} (31 days left)" in text
        assert (f"warning: the key credential of certificate {THUMB} on the Dynamics CRM service principal in "
                f"Entra ID ends on {ENDS} (31 days left)") in text
        assert len(warnings) == 2
    else:
        assert warnings == [] and lines[-1] == "check: nothing would change (exit 0)"
    # the facts are printed either way
    assert any(line.startswith("expiry (at ") for line in lines)
    assert any(line.startswith(f"        crm:    S2STokenIssuer certificate {THUMB}, not after") for line in lines)
    assert any(line.startswith(f"        entra:  key credential of {THUMB}, ends") for line in lines)


def test_only_the_certificate_ends_in_the_window(tmp_path, engine, http_peer, secrets_env, capsys, at) -> None:
    """CRM's certificate ends in 31 days, its key credential in 91: the warning names the certificate only."""
    at(SOON)
    pkg = write_package(tmp_path)
    answers = state("fully configured")
    for key in answers["entra"]["key_credentials"]:
        key["end"] = "2036-03-01T00:00:00Z"
    answer_probes(engine, answers)
    assert main(check_args(pkg, http_peer, "--warn-days", "45", "--json")) == 6
    expiry = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["expiry"]
    assert expiry["warnings"] == [f"CRM's S2STokenIssuer certificate {THUMB} expires on {ENDS} (31 days left)"]
    assert expiry["credential"]["days_left"] == 91 and expiry["credential"]["within_warn_days"] is False


def test_another_expired_credential_exits_6_whatever_the_window(
        tmp_path, engine, http_peer, secrets_env, capsys, at) -> None:
    at(EARLY)
    pkg = write_package(tmp_path)
    answer_probes(engine, with_expired_key(state("fully configured")))
    assert main(check_args(pkg, http_peer, "--warn-days", "0")) == 6
    lines = check_lines(capsys.readouterr().out)
    assert all(len(line) <= 100 for line in lines), lines
    text = " ".join(" ".join(lines).split())
    assert (f"warning: another key credential of the Dynamics CRM service principal in Entra ID, {'C' * 40} "
            f"(key id {EXPIRED_KEY['key_id']}), ended on 2020-01-01T00:00:00Z") in text
    assert f"other: key credential {'C' * 40} (key id {EXPIRED_KEY['key_id']}), ends 2020-01-01T00:00:00Z (EXPIRED)" \
        in text
    assert lines[-1].endswith("(exit 6)")


# --------------------------------------------------------------------------- precedence: 1 over 5 over 6 over 0


@pytest.mark.parametrize("name,moment,code", [
    ("half configured", SOON, 5),               # expiring, but step 06 and 07 would change
    ("wrong certificate on server", SOON, 1),   # expiring, but the certificate step is blocked
    ("certificate expired", EARLY, 1),          # an expired S2S certificate is not in place: blocked
    ("credential expired", EARLY, 5),           # an expired matching credential: step 06 would replace it
])
def test_precedence_1_over_5_over_6(tmp_path, engine, http_peer, secrets_env, capsys, at, name, moment, code) -> None:
    at(moment)
    answers = with_expired_key(state(name))  # and another credential that expired: a reason for 6
    pkg = write_package(tmp_path, not_after=answers["certificate"]["cer_not_after"])
    answer_probes(engine, answers)
    assert main(check_args(pkg, http_peer, "--json")) == code
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["exit_code"] == code
    assert report["expiry"]["warnings"]  # the facts say why 6 would apply; the higher code wins


def test_a_failed_probe_wins_over_expiring(tmp_path, engine, http_peer, secrets_env, capsys, at) -> None:
    at(SOON)
    pkg = write_package(tmp_path)
    answers = state("fully configured")
    answers["crm"] = None  # no answer: the certificate step cannot be told
    answer_probes(engine, answers)
    assert main(check_args(pkg, http_peer)) == 1
    assert "warning: " not in capsys.readouterr().out  # CRM's certificate is unknown; the credentials are others


def test_expired_certificate_and_credential_are_flagged_in_the_facts(
        tmp_path, engine, http_peer, secrets_env, capsys, at) -> None:
    at(EARLY)
    pkg = write_package(tmp_path)
    answer_probes(engine, state("credential expired"))
    assert main(check_args(pkg, http_peer, "--json")) == 5
    expiry = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["expiry"]
    assert expiry["credential"]["expired"] is True and expiry["credential"]["ends"] == "2020-01-01T00:00:00Z"
    assert expiry["certificates"][0]["expired"] is False


# --------------------------------------------------------------------------- --json, --out


def test_json_carries_the_expiry_facts(tmp_path, engine, http_peer, secrets_env, capsys, at) -> None:
    at(SOON)
    pkg = write_package(tmp_path)
    answer_probes(engine, with_expired_key(state("fully configured")))
    target = tmp_path / "evidence.json"
    assert main(check_args(pkg, http_peer, "--json", "--save", str(target))) == 6
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["exit_code"] == 6
    expiry = report["expiry"]
    assert expiry["checked_at"] == "2035-12-01T00:00:00Z" and expiry["warn_days"] == EXPIRY_WARNING_DAYS
    assert expiry["certificate_type"] == "S2STokenIssuer" and expiry["entra_read"] is True
    assert expiry["certificates"] == [{"thumbprint": THUMB, "ends": ENDS, "days_left": 31, "expired": False,
                                       "within_warn_days": True}]
    assert expiry["credential"] == {"thumbprint": THUMB, "key_id": None, "type": None, "usage": None, "ends": ENDS,
                                    "days_left": 31, "expired": False, "within_warn_days": True}
    others = {k["thumbprint"]: k for k in expiry["other_credentials"]}
    assert set(others) == {OTHER, "C" * 40}
    assert others[OTHER]["expired"] is False
    assert others["C" * 40] == {"thumbprint": "C" * 40, "key_id": EXPIRED_KEY["key_id"], "type": "AsymmetricX509Cert",
                                "usage": "Verify", "ends": "2020-01-01T00:00:00Z", "days_left": -5813,
                                "expired": True, "within_warn_days": False}
    assert len(expiry["warnings"]) == 3
    # the saved evidence carries the same facts
    saved = json.loads(target.read_text())
    assert saved["expiry"] == expiry and saved["exit_code"] == 6


# --------------------------------------------------------------------------- --warn-days is validated by click


@pytest.mark.parametrize("value", ["-1", "soon", "1.5"])
def test_warn_days_is_a_whole_number_of_days(tmp_path, engine, http_peer, secrets_env, capsys, value) -> None:
    pkg = write_package(tmp_path)
    assert main(check_args(pkg, http_peer, "--warn-days", value)) == 2
    assert "--warn-days" in capsys.readouterr().err
    assert http_peer.connections == 0 and engine.pipelines == []


def test_warn_days_default_is_the_cert_inspect_constant(capsys) -> None:
    assert main(["check", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--warn-days N" in help_text and f"default: {EXPIRY_WARNING_DAYS}" in help_text


# --------------------------------------------------------------------------- evaluate(now=...), no server


def plan() -> dict[str, Any]:
    data = json.loads(render_package(example()).files["plan.json"])
    data["certificate"] = {"thumbprint": THUMB, "not_after": ENDS}
    return data


def test_evaluate_takes_now_and_the_window() -> None:
    answers = state("fully configured")
    assert evaluate(plan(), answers, now=SOON).exit_code == 6
    assert evaluate(plan(), answers, now=SOON, warn_days=30).exit_code == 0
    assert evaluate(plan(), answers, now=EARLY).exit_code == 0
    after = evaluate(plan(), answers, now=_dt.datetime(2036, 1, 2, tzinfo=UTC))
    assert after.exit_code == 1  # the certificate expired: blocked, as before


def test_a_crm_probe_without_dates_falls_back_to_the_packages_certificate() -> None:
    """A package made before the crm probe printed NotAfter: CRM holds the package's certificate."""
    answers = state("fully configured")
    del answers["crm"]["certificates"]
    expiry = evaluate(plan(), answers, now=SOON).as_json()["expiry"]
    assert expiry["certificates"][0] == {"thumbprint": THUMB, "ends": ENDS, "days_left": 31, "expired": False,
                                         "within_warn_days": True}


def test_an_old_credential_of_the_same_certificate_is_another_credential() -> None:
    """msonline keeps an earlier credential of the certificate: the one that ends last is the matching one."""
    answers = state("fully configured")
    answers["entra"]["key_credentials"].append({"thumbprint": THUMB, "key_id": "k-old", "start": "2026-01-01T00:00:00Z",
                                                "end": "2027-01-01T00:00:00Z"})
    moment = _dt.datetime(2027, 2, 1, tzinfo=UTC)
    report = evaluate(plan(), answers, now=moment)
    assert {v.id: v.verdict for v in report.verdicts}["spn"] == "in place"
    expiry = report.as_json()["expiry"]
    assert expiry["credential"]["ends"] == ENDS
    old = next(k for k in expiry["other_credentials"] if k["key_id"] == "k-old")
    assert old["expired"] is True and report.exit_code == 6
    # graph replaces a credential of the certificate that ends early: the package would change it
    graph = plan()
    graph["profile"] = "graph"
    assert evaluate(graph, answers, now=moment).exit_code == 5


def test_without_entra_the_credentials_are_not_read() -> None:
    answers = state("fully configured")
    answers["entra"] = None
    report = evaluate(plan(), answers, now=SOON)
    expiry = report.as_json()["expiry"]
    assert expiry["entra_read"] is False and expiry["credential"] is None and expiry["other_credentials"] == []
    assert report.exit_code == 1  # spn cannot be told


def test_the_crm_probe_reads_notafter_from_crms_record() -> None:
    data = copy.deepcopy(EXAMPLE)
    text = render_package(parse_parameters(data)).files["probes/crm.ps1"][3:].decode("utf-8")
    assert "[System.Convert]::FromBase64String($_.Data)" in text
    assert "not_after  = $Certificate.NotAfter.ToUniversalTime().ToString('o')" in text
    assert "certificates     = $Certificates" in text
