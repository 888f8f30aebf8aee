"""`psbridge show` and `psbridge diff`: what a board reads before approving or re-approving."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from generator import approvals, clock
from generator import keys as keymod
from generator.plan import package_digest
from test_approval import STEP_FILES, STEP_IDS, keys, make_package  # noqa: F401  (keys is a fixture)


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    return make_package(tmp_path / "output")


# --------------------------------------------------------------------------- show


def test_show_prints_identity_steps_certificate(psbridge, pkg: Path) -> None:
    result = psbridge("show", pkg)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "name:        contoso" in out and "profile:     msonline" in out
    assert f"digest:      {package_digest(pkg)}" in out
    assert "files match plan.json" in out
    for index, sid in enumerate(STEP_IDS, start=1):
        assert f"{index:>4}  {sid}" in out
    assert "AB" * 20 in out and "CN=contoso" in out
    assert "approvals:   none" in out


def test_show_approval_status_without_and_with_trusted_keys(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    assert psbridge("approve", pkg, "--key", keys["jane"]).exit_code == 0
    assert psbridge("approve", pkg, "--key", keys["mallory"]).exit_code == 0
    plain = psbridge("show", pkg).stdout
    assert "trust not checked" in plain and plain.count("signature valid") == 2
    checked = psbridge("show", pkg, "--trusted-keys", keys["trusted"]).stdout
    jane_line = next(line for line in checked.splitlines() if "Jane Doe" in line)
    mallory_line = next(line for line in checked.splitlines() if "Mallory" in line)
    assert jane_line.split()[0] == "valid"
    assert mallory_line.startswith("  untrusted key")


def test_show_json_reports_expired_other_digest_and_integrity(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    approvals.approve_package(pkg, keys["jane"], timedelta(days=1), now=clock.utc_now() - timedelta(days=2))
    approvals.approve_package(pkg, keys["bob"], timedelta(days=1))
    (pkg / "steps" / "02-certificate.ps1").write_bytes(b"changed\r\n")
    result = psbridge("show", pkg, "--json", "--trusted-keys", keys["trusted"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["name"] == "contoso" and data["digest"] == package_digest(pkg)
    assert [s["id"] for s in data["steps"]] == list(STEP_IDS)
    assert data["certificate"]["thumbprint"] == "AB" * 20
    assert data["integrity"] == ["changed file: steps/02-certificate.ps1 (sha256 differs from plan.json)"]
    by_who = {a["approver"]: a for a in data["approvals"]}
    assert by_who["Jane Doe <jane@contoso.com>"]["status"] == "other digest"
    assert any(p.startswith("expired") for p in by_who["Jane Doe <jane@contoso.com>"]["problems"])
    assert by_who["Bob Roe <bob@contoso.com>"]["status"] == "other digest"
    assert "steps/02-certificate.ps1" in by_who["Bob Roe <bob@contoso.com>"]["problems"][0]


def test_show_not_a_package_is_exit_2(psbridge, tmp_path: Path) -> None:
    result = psbridge("show", tmp_path)
    assert result.exit_code == 2 and "not a psbridge package" in result.stderr


# --------------------------------------------------------------------------- diff


def test_diff_identical_packages_exit_0(psbridge, tmp_path: Path) -> None:
    old = make_package(tmp_path / "a")
    new = make_package(tmp_path / "b")
    (new / "runs").mkdir()
    (new / "runs" / "r.jsonl").write_text("{}\n")  # evidence is not part of the change
    result = psbridge("diff", old, new)
    assert result.exit_code == 0, result.stderr
    assert "identical" in result.stdout


def test_diff_shows_changed_parameters_and_step_patches(psbridge, tmp_path: Path) -> None:
    base = {"name": "contoso", "crm": {"root_domain": "*.contoso.com", "url": "https://crm.contoso.com"},
            "sharepoint": {"sites": ["https://contoso.sharepoint.com/sites/a"]}, "removed": "x"}
    changed = {"name": "contoso", "crm": {"root_domain": "*.contoso.com", "url": "https://crm2.contoso.com"},
               "sharepoint": {"sites": ["https://contoso.sharepoint.com/sites/a", "https://contoso.sharepoint.com/sites/b"]}}

    def text_for(host: str):
        return lambda i, sid: f"# {sid}\r\nWrite-Host one\r\nConnect-Crm {host if sid == 'crm-settings' else 'same'}\r\n"

    old = make_package(tmp_path / "a", parameters=base, step_text=text_for("crm"))
    new = make_package(tmp_path / "b", parameters=changed, step_text=text_for("crm2"))
    (new / "setup.ps1").write_bytes((new / "setup.ps1").read_bytes() + b"Write-Host done\r\n")
    result = psbridge("diff", old, new)
    assert result.exit_code == 1, result.stderr
    out = result.stdout
    assert 'crm.url: "https://crm.contoso.com" -> "https://crm2.contoso.com"' in out
    assert 'sharepoint.sites.1: (absent) -> "https://contoso.sharepoint.com/sites/b"' in out
    assert 'removed: "x" -> (absent)' in out
    assert "crm.root_domain" not in out  # unchanged keys are not shown
    assert "--- a/steps/07-crm-settings.ps1\n+++ b/steps/07-crm-settings.ps1\n" in out
    assert "-Connect-Crm crm\n+Connect-Crm crm2\n" in out
    assert "steps/06-spn.ps1" not in out
    assert "changed  setup.ps1 (+1 -0 lines)" in out
    assert "+Write-Host done" not in out  # setup.ps1 is summarized, not printed
    assert package_digest(old) in out and package_digest(new) in out


def test_diff_added_and_removed_steps(psbridge, tmp_path: Path) -> None:
    old = make_package(tmp_path / "a")
    new = make_package(tmp_path / "b")
    (new / STEP_FILES[7]).unlink()
    (new / "steps" / "09-extra.ps1").write_bytes(b"Write-Host extra\r\n")
    result = psbridge("diff", old, new)
    assert result.exit_code == 1
    assert f"removed  {STEP_FILES[7]}" in result.stdout and "added    steps/09-extra.ps1" in result.stdout
    assert "+Write-Host extra" in result.stdout


def test_diff_line_ending_only_change_is_named(psbridge, tmp_path: Path) -> None:
    old = make_package(tmp_path / "a")
    new = make_package(tmp_path / "b")
    rel = STEP_FILES[0]
    (new / rel).write_bytes((new / rel).read_bytes().replace(b"\r\n", b"\n"))
    result = psbridge("diff", old, new)
    assert result.exit_code == 1 and f"changed  {rel} (encoding or line endings only)" in result.stdout


def test_diff_not_a_package_is_exit_2(psbridge, tmp_path: Path) -> None:
    old = make_package(tmp_path / "a")
    result = psbridge("diff", old, tmp_path / "missing")
    assert result.exit_code == 2 and "not a package folder" in result.stderr


def test_diff_shows_step_metadata_changes(psbridge, tmp_path: Path) -> None:
    old = make_package(tmp_path / "a")
    new = make_package(tmp_path / "b")
    plan = json.loads((new / "plan.json").read_text())
    plan["steps"][5]["kind"] = "check"
    (new / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    result = psbridge("diff", old, new)
    assert result.exit_code == 1
    assert 'steps.spn.kind: "change" -> "check"' in result.stdout
