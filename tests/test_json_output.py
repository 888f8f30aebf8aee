"""`approve --json` and `verify --json`: one JSON object on stdout, warnings and refusals on stderr,
the exit codes of the text output (0 approved/verified, 1 refused, 2 bad input)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from psbridge.clock import parse_time

from support.packages import approvals_of


def _one_object(stdout: str) -> dict:  # type: ignore[type-arg]
    """stdout is exactly one JSON object (one line), nothing else."""
    assert stdout.count("\n") == 1 and stdout.endswith("\n"), stdout
    value = json.loads(stdout)
    assert isinstance(value, dict)
    return value


def _head(log: Path) -> str:
    return hashlib.sha256(log.read_bytes().splitlines()[-1]).hexdigest()


def test_approve_json_says_what_was_approved(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    result = psbridge("approve", pkg, "--key", keys["jane"], "--comment", "CHG-1234", "--expires", "3d", "--json")
    assert result.exit_code == 0, result.stderr
    out = _one_object(result.stdout)
    [file] = approvals_of(pkg)
    record = json.loads(file.read_text())
    assert out["added"] is True and out["file"] == str(file) and out["package"] == str(pkg)
    for key in ("approver", "fingerprint", "digest", "approved_at", "expires_at", "comment"):
        assert out[key] == record[key], key
    assert out["name"] == "contoso" and out["approver"] == "Jane Doe <jane@contoso.com>"
    assert (parse_time(out["expires_at"]) - parse_time(out["approved_at"])).days == 3
    assert out["audit_head"] == _head(Path(out["audit_log"]))
    again = _one_object(psbridge("approve", pkg, "--key", keys["jane"], "--json").stdout)
    assert again["added"] is False and again["file"] == str(file)  # the valid approval on file, nothing added


def test_verify_json_names_the_approvals_and_keys_that_counted(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    jane = _one_object(psbridge("approve", pkg, "--key", keys["jane"], "--expires", "2d", "--json").stdout)
    bob = _one_object(psbridge("approve", pkg, "--key", keys["bob"], "--expires", "5d", "--json").stdout)
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"], "--min-approvals", "2", "--json")
    assert result.exit_code == 0, result.stderr
    out = _one_object(result.stdout)
    assert out["verified"] is True and out["reasons"] == [] and out["min_approvals"] == 2
    assert out["digest"] == jane["digest"] and out["name"] == "contoso"
    assert sorted(out["keys_counted"]) == sorted([jane["fingerprint"], bob["fingerprint"]])
    assert {a["approver"] for a in out["approvals"]} == {jane["approver"], bob["approver"]}
    assert out["valid_until"] == jane["expires_at"]  # two are needed: it holds until the earlier one ends
    assert len(out["trusted_keys"]) == 2
    assert out["audit_head"] == _head(Path(out["audit_log"]))
    one = _one_object(psbridge("verify", pkg, "--trusted-keys", keys["trusted"], "--json").stdout)
    assert one["valid_until"] == bob["expires_at"]  # one is needed: until the later one ends


def test_verify_json_refused_exits_1_with_the_reasons_on_stderr_too(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    assert psbridge("approve", pkg, "--key", keys["mallory"]).exit_code == 0  # not trusted
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"], "--json")
    assert result.exit_code == 1
    out = _one_object(result.stdout)
    assert out["verified"] is False and out["valid_until"] is None and out["keys_counted"] == []
    assert out["reasons"] and all(reason.split()[0] in result.stderr for reason in out["reasons"])
    assert "psbridge: refused: " in result.stderr and "psbridge: failed: " in result.stderr


def test_bad_input_stays_exit_2_with_no_json(psbridge, pkg: Path, tmp_path: Path) -> None:
    result = psbridge("verify", pkg, "--trusted-keys", tmp_path / "no-such-folder", "--json")
    assert result.exit_code == 2 and result.stdout == "" and "psbridge: error: " in result.stderr
    result = psbridge("approve", pkg, "--key", tmp_path / "no.key", "--json")
    assert result.exit_code == 2 and result.stdout == "" and "psbridge: error: " in result.stderr


def test_a_warning_goes_to_stderr_not_into_the_json(psbridge, pkg: Path, keys: dict[str, Path], tmp_path: Path) -> None:
    board = tmp_path / "board"
    board.mkdir()
    for item in keys["trusted"].iterdir():
        (board / item.name).write_bytes(item.read_bytes())
    (board / "jane-doe.key").write_bytes(keys["jane"].read_bytes())  # a private key where public keys belong
    assert psbridge("approve", pkg, "--key", keys["jane"]).exit_code == 0
    result = psbridge("verify", pkg, "--trusted-keys", board, "--json")
    assert result.exit_code == 0, result.stderr
    assert _one_object(result.stdout)["verified"] is True
    assert "psbridge: warning: " in result.stderr


def test_approve_json_keeps_the_change_window_warning_on_stderr(psbridge, tmp_path: Path, keys: dict[str, Path],
                                                                 monkeypatch) -> None:
    from datetime import datetime, timezone

    from psbridge import approvals, clock
    from support.winrm_peer.package import make_package

    now = datetime(2026, 12, 10, 9, 0, tzinfo=timezone.utc)  # two and a half days before the window ends
    monkeypatch.setattr(clock, "utc_now", lambda: now)
    monkeypatch.setattr(approvals, "utc_now", lambda: now)
    pkg = make_package(tmp_path / "out", change={"window": "2026-12-12T20:00+01:00/2026-12-12T22:00+01:00"})
    result = psbridge("approve", pkg, "--key", keys["jane"], "--expires", "1d", "--json")
    assert result.exit_code == 0, result.stderr
    assert _one_object(result.stdout)["expires_at"] == "2026-12-11T09:00:00Z"
    [warning] = result.stderr.splitlines()
    assert warning.startswith("psbridge: warning: the approval by Jane Doe") and "before the change window" in warning
