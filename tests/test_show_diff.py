"""`psbridge show` and `psbridge diff`: what a board reads before approving or re-approving."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest

from psbridge import approvals, clock
from psbridge.package import read_package
from psbridge.catalogue import MSONLINE_STEPS

from support.winrm_peer.package import make_package

STEP_IDS = tuple(s.id for s in MSONLINE_STEPS)
STEP_FILES = tuple(s.file for s in MSONLINE_STEPS)
#: Facts of a checked local certificate, as render records them in plan.json.
CERT = {"source": "certs/s2s.pfx", "subject": "CN=contoso", "thumbprint": "AB" * 20, "sha256": "cd" * 32,
        "serial": "01", "issuer": "CN=contoso", "not_before": "2026-01-01T00:00:00Z",
        "not_after": "2036-01-01T00:00:00Z", "self_signed": True, "warnings": []}


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    """The contoso package rendered with a local certificate's facts (show prints them)."""
    return make_package(tmp_path / "output", certificate=CERT)


# --------------------------------------------------------------------------- show


def test_show_prints_identity_steps_certificate(psbridge, pkg: Path) -> None:
    result = psbridge("show", pkg)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "name:        contoso" in out and "profile:     msonline" in out
    assert f"digest:      {read_package(pkg).digest}" in out
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
    approvals.approve_package(read_package(pkg), keys["jane"], timedelta(days=1), now=clock.utc_now() - timedelta(days=2))
    approvals.approve_package(read_package(pkg), keys["bob"], timedelta(days=1))
    (pkg / "steps" / "02-certificate.ps1").write_bytes(b"changed\r\n")
    result = psbridge("show", pkg, "--json", "--trusted-keys", keys["trusted"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["name"] == "contoso" and data["digest"] == read_package(pkg).digest
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
    site_a, site_b = "https://contoso.sharepoint.com/sites/a", "https://contoso.sharepoint.com/sites/b"
    old = make_package(tmp_path / "a", sharepoint={"sites": [site_a]})
    new = make_package(tmp_path / "b", crm={"root_domain": "*.crm2.contoso.com"}, sharepoint={"sites": [site_a, site_b]})
    result = psbridge("diff", old, new)
    assert result.exit_code == 1, result.stderr
    out = result.stdout
    assert 'crm.root_domain: "*.contoso.com" -> "*.crm2.contoso.com"' in out
    assert f'sharepoint.sites.1: (absent) -> "{site_b}"' in out
    assert "sharepoint.sites.0" not in out  # unchanged keys are not shown
    assert "--- a/steps/06-spn.ps1\n+++ b/steps/06-spn.ps1\n" in out
    assert "-$RootDomain = '*.contoso.com'\n+$RootDomain = '*.crm2.contoso.com'\n" in out
    assert "steps/02-certificate.ps1" not in out
    assert re.search(r"changed  setup\.ps1 \(\+\d+ -\d+ lines\)", out)
    assert "+$RootDomain" in out and out.count("+$RootDomain") == 1  # setup.ps1 is summarized, not printed
    assert read_package(old).digest in out and read_package(new).digest in out


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
    assert result.exit_code == 2 and "no such package folder" in result.stderr


def test_diff_shows_step_metadata_changes(psbridge, tmp_path: Path) -> None:
    old = make_package(tmp_path / "a")
    new = make_package(tmp_path / "b")
    plan = json.loads((new / "plan.json").read_text())
    plan["steps"][5]["kind"] = "check"
    (new / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    result = psbridge("diff", old, new)
    assert result.exit_code == 1
    assert 'steps.spn.kind: "change" -> "check"' in result.stdout


# --------------------------------------------------------------------------- non-ASCII values are spelled out


def test_review_show_and_diff_list_the_non_ascii_code_points(psbridge, tmp_path: Path) -> None:
    """`Prógram` (o with acute) must not pass for `Program`: every such value is spelled out."""
    plain = make_package(tmp_path / "a", crm={"tools_dir": "C:\\Program Files\\Tools"})
    lookalike = make_package(tmp_path / "b", crm={"tools_dir": "C:\\Prógram Files\\Tools"})
    review = (lookalike / "REVIEW.md").read_text(encoding="utf-8")
    assert "crm.tools_dir" in review and "U+00F3 LATIN SMALL LETTER O WITH ACUTE" in review
    assert "U+00F3" not in (plain / "REVIEW.md").read_text(encoding="utf-8")
    shown = psbridge("show", lookalike)
    assert shown.exit_code == 0 and "crm.tools_dir = C:\\Prógram Files\\Tools" in shown.stdout
    assert "    U+00F3 LATIN SMALL LETTER O WITH ACUTE" in shown.stdout
    diff = psbridge("diff", plain, lookalike)
    assert diff.exit_code == 1
    assert "    non-ASCII in the new value: U+00F3 LATIN SMALL LETTER O WITH ACUTE" in diff.stdout
