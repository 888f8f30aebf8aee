"""`psbridge report`: one self-contained HTML file, checked as text and in a real browser.

The report is read by a change-advisory board and kept by auditors, so the tests hold it
to what the issue promises: it is written beside the package (never inside), shows the
digest, every step's sha256, every approval with who/when/expiry and whether it is valid
now, the runs as a timeline, saved check results, the back-out plan and the audit chain;
it says plainly what is missing; it escapes every outside value; and it loads nothing.
The browser test renders it with Debian's Chromium (headless), prints it to PDF and
reads the PDF's first page with pdftotext (poppler-utils). CI installs both (`.ci/run`);
there a missing browser fails the test, elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from psbridge import report as report_module
from psbridge.catalogue import MSONLINE_STEPS
from psbridge.package import Package, read_package

from support.report_pages import WINDOW, approve, text_of

HOSTILE = "<img src=x onerror=alert(1)> \x1b[31m \u202e gnp.exe & \"quoted\""


# --------------------------------------------------------------------------- helpers


def write_run(pkg: Path, name: str = "20261127T090000.000000Z.jsonl", *, cut_off: bool = False) -> Path:
    """A run record as `psbridge run` writes it: step 01 ok, step 02 failed with hostile server text."""
    digest = read_package(pkg).digest
    events = [
        {"event": "run-start", "started": "2026-11-27T09:00:00.000Z", "tool_version": "0.1.0", "package": "contoso",
         "package_digest": digest, "host": "crm01.contoso.local", "port": 5986, "transport": "https",
         "auth": "negotiate", "user": "CONTOSO\\crmadmin", "o365_user": None, "configuration_name": "Microsoft.PowerShell",
         "from_step": None, "steps": [1, 2, 3, 4, 5, 6, 7, 8], "servers": ["crm01.contoso.local"], "record": "x"},
        {"event": "approval", "digest": digest, "approvals": [
            {"file": "approvals/a.json", "approver": "Jane Doe <jane@contoso.com>", "fingerprint": "ab" * 32,
             "approved_at": "2026-11-27T08:00:00Z", "expires_at": "2026-12-04T08:00:00Z"}]},
        {"event": "lock", "state": "held", "output": []},
        {"event": "step-start", "index": 1, "total": 8, "id": "prerequisites", "title": "Check the prerequisites",
         "sha256": "x", "started": "2026-11-27T09:00:01.000Z"},
        {"event": "step-end", "total": 8, "title": "Check the prerequisites", "index": 1, "id": "prerequisites",
         "sha256": "x", "started": "2026-11-27T09:00:01.000Z", "ended": "2026-11-27T09:00:02.300Z", "seconds": 1.3,
         "output": [], "errors": [], "warnings": [], "information": ["all prerequisites present"], "detail": "",
         "state": "ok"},
        {"event": "step-start", "index": 2, "total": 8, "id": "certificate", "title": "Prepare the certificate",
         "sha256": "x", "started": "2026-11-27T09:00:02.400Z"},
    ]
    if not cut_off:
        events += [
            {"event": "step-end", "total": 8, "title": "Prepare the certificate", "index": 2, "id": "certificate",
             "sha256": "x", "started": "2026-11-27T09:00:02.400Z", "ended": "2026-11-27T09:00:14.400Z",
             "seconds": 12.0, "output": ["<script>alert(1)</script>"],
             "errors": [{"message": f"Access denied {HOSTILE}", "category": "PermissionDenied", "line": 12,
                         "position": "At line:12 char:1"}],
             "warnings": [], "information": ["Importing certificate"], "detail": "", "state": "failed"},
            {"event": "run-end", "exit_code": 1, "ended": "2026-11-27T09:00:14.500Z", "stopped_at": 2,
             "reason": "failed", "summary": ["Stopped: step 02 (certificate) failed; no later step was sent."]},
        ]
    runs = pkg / "runs"
    runs.mkdir(exist_ok=True)
    path = runs / name
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return path


def make_report(psbridge, pkg: Path, *args: str) -> str:
    result = psbridge("report", pkg, *args)
    assert result.exit_code == 0, result.stderr
    return (pkg.parent / f"{pkg.name}-report.html").read_text(encoding="utf-8") if "-o" not in args else ""


# --------------------------------------------------------------------------- content


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_a_fifo_or_a_link_among_the_evidence_is_named_not_read(psbridge, pkg: Path, tmp_path: Path) -> None:
    real = write_run(pkg).rename(tmp_path / "elsewhere.jsonl")  # a run record outside the package
    runs = pkg / "runs"
    os.mkfifo(runs / "20261127T100000.000000Z.jsonl")
    (runs / "20261127T110000.000000Z.jsonl").symlink_to(real)
    text = text_of(make_report(psbridge, pkg))
    assert "not a regular file" in text  # the FIFO: named, and the report did not block on it
    assert "symbolic link" in text or "Too many levels of symbolic links" in text  # the link: not followed
    assert "Access denied" not in text  # nothing of the linked record was shown


def test_report_is_written_beside_the_package_and_shows_the_summary(psbridge, pkg: Path, keys) -> None:
    approve(psbridge, pkg, keys["jane"], "--expires", "3d")
    before = read_package(pkg)
    result = psbridge("report", pkg)
    assert result.exit_code == 0, result.stderr
    target = pkg.parent / "contoso-report.html"
    assert target.is_file() and str(target) in result.stdout
    after = read_package(pkg)
    assert after.listing == before.listing and not after.problems  # nothing written inside the package
    html = target.read_text(encoding="utf-8")
    text = text_of(html)
    assert before.digest in text
    for step in after.steps:
        assert step.sha256 in text, step.file
    assert "no change ticket recorded" in text
    assert "Jane Doe <jane@contoso.com>" in text
    approval = json.loads(next((pkg / "approvals").glob("*.json")).read_text())
    assert approval["approved_at"] in text and approval["expires_at"] in text
    assert "Trust was not checked" in text and "signature valid, unexpired; trust not checked" in text
    assert "rollback/06-spn.ps1" in text and "rollback/07-crm-settings.ps1" in text  # the package's back-out
    assert "no saved check results (checks/ is empty)" in text
    assert "no run recorded (runs/ is empty)" in text
    assert "intact and reproducible" in text
    # what changes where: the three places of the diagram, each with its steps
    for place, step in (("CRM server", "02 certificate"), ("Entra ID", "06 spn"),
                        ("CRM configuration database", "07 crm-settings")):
        assert place in text and step in text
    # the audit chain: intact, with the lines about this package
    assert re.search(r"intact\s+\d+ line\(s\), the hash chain is unbroken", text)


def test_report_judges_trust_only_with_trusted_keys(psbridge, pkg: Path, keys) -> None:
    approve(psbridge, pkg, keys["jane"])
    approve(psbridge, pkg, keys["mallory"])
    text = text_of(make_report(psbridge, pkg, "--trusted-keys", keys["trusted"]))
    assert "valid now" in text
    assert "untrusted key: not in the trusted keys" in text
    assert "1 distinct trusted person has a valid approval" in text
    assert "Trust was not checked" not in text


def test_report_escapes_every_outside_value(psbridge, pkg: Path, keys) -> None:
    approve(psbridge, pkg, keys["jane"], "--comment", HOSTILE.replace("\x1b", "").replace("\u202e", ""))
    write_run(pkg)
    html = make_report(psbridge, pkg)
    assert "<img" not in html and "<script" not in html and "onerror=alert(1)>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\x1b" not in html and "\u202e" not in html  # shown as \x1b and \u202e, never acted on
    assert "\\x1b[31m" in html and "\\u202e gnp.exe" in html


def test_report_loads_nothing(psbridge, pkg: Path, keys) -> None:
    approve(psbridge, pkg, keys["jane"], "--comment", "see https://evil.example/x.png url(http://evil.example)")
    write_run(pkg)
    html = make_report(psbridge, pkg)
    csp = re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', html)
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'"]
    assert html.index("Content-Security-Policy") < html.index("<style>")  # in force before anything else
    for tag in ("<script", "<link", "<iframe", "<object", "<embed", "<img", "<base", "@import", "<meta http-equiv=\"refresh"):
        assert tag not in html.lower(), tag
    for attr, value in re.findall(r"\b(src|href|srcset|action|formaction|poster|data)\s*=\s*\"([^\"]*)\"", html):
        assert value.startswith(("#", "data:")), (attr, value)
    css = "".join(re.findall(r"<style>(.*?)</style>", html, re.S)) + "".join(re.findall(r'style="([^"]*)"', html))
    assert "url(" not in css
    assert "url(http://evil.example)" in text_of(html)  # the comment is shown as text, outside any CSS
    assert not re.search(r"<[a-z]+[^>]*\son[a-z]+\s*=", html)  # no event handler attribute at all


def test_report_output_option_and_refusals(psbridge, pkg: Path, tmp_path: Path) -> None:
    result = psbridge("report", pkg, "-o", tmp_path / "CHG-1234.html")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "CHG-1234.html").is_file()
    assert not (pkg.parent / "contoso-report.html").exists()
    inside = psbridge("report", pkg, "-o", pkg / "report.html")
    assert inside.exit_code == 2 and "inside the package folder" in inside.stderr
    assert not (pkg / "report.html").exists()
    nested = psbridge("report", pkg, "-o", pkg / "steps" / "report.html")
    assert nested.exit_code == 2 and not (pkg / "steps" / "report.html").exists()
    missing = psbridge("report", tmp_path / "nope")
    assert missing.exit_code == 2 and "Traceback" not in missing.stderr
    no_folder = psbridge("report", pkg, "-o", tmp_path / "no" / "such" / "r.html")
    assert no_folder.exit_code == 2 and "no such folder" in no_folder.stderr


def test_report_shows_the_change_ticket_of_the_plan_parameters(pkg: Path, tmp_path: Path) -> None:
    package = read_package(pkg)
    plan = json.loads(package.files["plan.json"])
    plan["parameters"]["change"] = {"ticket": "CHG-1234", "summary": "S2S for <contoso>",
                                    "window": "2026-12-01T20:00Z/2026-12-01T22:00Z"}
    files = {**package.files, "plan.json": json.dumps(plan).encode("utf-8")}
    html = report_module.build_report(Package(files, pkg), audit_log=tmp_path / "audit.jsonl")
    text = text_of(html)
    assert "CHG-1234" in text and "S2S for <contoso>" in text and "2026-12-01T20:00Z/2026-12-01T22:00Z" in text
    assert "no change ticket recorded" not in text
    assert "&lt;contoso&gt;" in html


def test_report_runs_as_a_timeline(psbridge, pkg: Path) -> None:
    write_run(pkg)
    write_run(pkg, "20261128T090000.000000Z.jsonl", cut_off=True)
    (pkg / "runs" / ".lock").write_text("", encoding="utf-8")  # the run lock is not a run
    html = make_report(psbridge, pkg)
    text = text_of(html)
    assert "2 run record(s)" in text
    assert "runs/20261127T090000.000000Z.jsonl" in text and "runs/20261128T090000.000000Z.jsonl" in text
    assert re.search(r"01 prerequisites\s+ok\s+1\.3 s", text)
    assert re.search(r"02 certificate\s+failed\s+12\.0 s", text)
    assert "category: PermissionDenied" in text and "script line 12" in text
    assert "no end recorded" in text and "the record ends during this step" in text
    assert "Approvals relied on: Jane Doe <jane@contoso.com>" in text
    assert "server run lock: held" in text
    # the bars: positioned on the run's time axis (step 02 starts 2.4 s into a 14.5 s run)
    assert 'style="left:16.55%;width:82.76%"' in html


def test_report_lights_up_with_checks_and_back_out_scripts(psbridge, pkg: Path) -> None:
    (pkg / "checks").mkdir()
    (pkg / "checks" / "20261127T100000Z.json").write_text(json.dumps({
        "checked_at": "2026-11-27T10:00:00Z", "host": "crm01.contoso.local", "exit_code": 5, "notes": ["a note"],
        "verdicts": [{"index": 6, "id": "spn", "verdict": "will change", "detail": "SPN missing",
                      "before": "none", "after": "00000007-0000-0000-c000-000000000000/*.contoso.com"}],
    }), encoding="utf-8")
    (pkg / "checks" / "broken.json").write_text("{not json", encoding="utf-8")
    result = psbridge("report", pkg)
    assert result.exit_code == 0, result.stderr
    html = (pkg.parent / "contoso-report.html").read_text(encoding="utf-8")
    text = text_of(html)
    assert "2 saved check result(s)" in text and "will change" in text and "SPN missing" in text
    assert "none -> 00000007-0000-0000-c000-000000000000/*.contoso.com" in text
    assert "checks/broken.json" in text and "not valid JSON" in text
    assert "rollback/07-crm-settings.ps1" in text and "no back-out scripts" not in text
    assert "Set-CrmAdvancedSetting" in text
    assert "NOT INTACT" not in text  # the back-out scripts are the package's own


def test_report_says_when_the_audit_chain_is_broken(psbridge, pkg: Path, tmp_path: Path, keys) -> None:
    log = tmp_path / "audit.jsonl"
    assert psbridge("approve", pkg, "--key", keys["jane"], "--audit-log", log).exit_code == 0
    assert psbridge("approve", pkg, "--key", keys["bob"], "--audit-log", log).exit_code == 0
    good = text_of(make_report(psbridge, pkg, "--audit-log", str(log)))
    assert "2 line(s), the hash chain is unbroken" in good and "approve" in good
    lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
    log.write_text(lines[0].replace("approved", "approvXd", 1) + lines[1], encoding="utf-8")
    text = text_of(make_report(psbridge, pkg, "--audit-log", str(log)))
    assert "broken" in text and "line 1: content does not match its sha256" in text
    gone = text_of(make_report(psbridge, pkg, "--audit-log", str(tmp_path / "none.jsonl")))
    assert "no audit log at this path" in gone


def _forged_ok_run(pkg: Path) -> Path:
    """A record anyone who can write runs/ can drop: this package's digest, step 01 ok, the run ended ok."""
    digest = read_package(pkg).digest
    events = [
        {"event": "run-start", "started": "2026-11-28T09:00:00.000Z", "tool_version": "0.4.0", "package": "contoso",
         "package_digest": digest, "host": "crm01.contoso.local", "steps": [1], "record": "x"},
        {"event": "step-start", "index": 1, "total": 8, "id": "prerequisites", "title": "Check the prerequisites",
         "started": "2026-11-28T09:00:01.000Z"},
        {"event": "step-end", "total": 8, "title": "Check the prerequisites", "index": 1, "id": "prerequisites",
         "started": "2026-11-28T09:00:01.000Z", "ended": "2026-11-28T09:00:02.000Z", "seconds": 1.0, "state": "ok"},
        {"event": "run-end", "exit_code": 0, "ended": "2026-11-28T09:00:03.000Z", "reason": "ok", "summary": []},
    ]
    runs = pkg / "runs"
    runs.mkdir(exist_ok=True)
    path = runs / "20261128T090000.000000Z.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return path


def test_report_does_not_take_a_record_the_audit_log_does_not_vouch_for(psbridge, pkg: Path, tmp_path: Path) -> None:
    """Issue 20 item 1: the report, like rollback, believes a run record only when an audit `run` line holds its
    sha256. A record dropped into runs/ (after a failed run) made page one say "last run ok", green, as any other."""
    from psbridge import audit
    from psbridge.files import sha256_hex

    log = tmp_path / "audit.jsonl"
    write_run(pkg)  # a failed run ...
    forged = _forged_ok_run(pkg)  # ... hidden behind a later, forged "ok"
    html = make_report(psbridge, pkg, "--audit-log", str(log))
    text = text_of(html)
    status = re.search(r'<span class="badge (\w+)" id="status">([^<]*)</span>', html)
    assert status is not None, html[:3000]
    assert status.group(1) != "good" and "not vouched for by the audit log" in status.group(2), status.group(0)
    assert text.count("not vouched for by the audit log") >= 3  # page one, and each run of the timeline
    audit.record(log, "run", read_package(pkg), "ok", record=str(forged), record_sha256=sha256_hex(forged.read_bytes()))
    vouched = make_report(psbridge, pkg, "--audit-log", str(log))
    status = re.search(r'<span class="badge (\w+)" id="status">([^<]*)</span>', vouched)
    assert status is not None and status.group(2) == "last run ok at 2026-11-28T09:00:03.000Z", status
    assert text_of(vouched).count("not vouched for by the audit log") == 1  # only the failed run's record now


def test_report_shows_the_repairs_of_the_log(psbridge, pkg: Path, tmp_path: Path, keys) -> None:
    """Issue 20 item 7: the report shows repairs. An `audit-repair` line names no package (the torn bytes it
    cut may have been this package's line), so the report, listing only lines naming the package, hid it."""
    import hashlib

    log = tmp_path / "audit.jsonl"
    assert psbridge("approve", pkg, "--key", keys["jane"], "--audit-log", log).exit_code == 0
    torn = b'{"time":"2026-12-01T00:00:00.000000Z","action":"run","package":"' + pkg.name.encode() + b'","dig'
    log.write_bytes(log.read_bytes() + torn)
    assert psbridge("audit", "repair", log).exit_code == 0
    text = text_of(make_report(psbridge, pkg, "--audit-log", str(log)))
    assert "audit-repair" in text and "repaired" in text
    assert hashlib.sha256(torn).hexdigest() in text and f'"removed_bytes": {len(torn)}' in text


def test_report_of_a_tampered_package_says_so_and_shows_the_bytes(psbridge, pkg: Path) -> None:
    step = pkg / MSONLINE_STEPS[6].file
    step.write_bytes(step.read_bytes() + b"\r\nWrite-Host 'added'\r\n")
    result = psbridge("report", pkg)
    assert result.exit_code == 0 and "not intact" in result.stderr
    text = text_of((pkg.parent / "contoso-report.html").read_text(encoding="utf-8"))
    assert "NOT INTACT" in text and "changed file: steps/07-crm-settings.ps1" in text
    assert re.search(r"Write-Host\s+'added'", text) and "plan.json records" in text


# --------------------------------------------------------------------------- in a real browser


def _tool(*names: str) -> str | None:
    return next((found for name in names if (found := shutil.which(name))), None)


def _browser_or_skip() -> tuple[str, str]:
    chromium = _tool("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    pdftotext = _tool("pdftotext")
    if chromium and pdftotext:
        return chromium, pdftotext
    missing = " and ".join(n for n, p in (("Chromium", chromium), ("pdftotext (poppler-utils)", pdftotext)) if not p)
    reason = f"{missing} not installed: apt-get install chromium poppler-utils (.ci/run installs them)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)


def _chromium(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / "chromium-profile"
    home = tmp / "chromium-home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache")}
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_report_in_a_headless_browser(psbridge, pkg: Path, keys, tmp_path: Path) -> None:
    chromium, pdftotext = _browser_or_skip()
    approve(psbridge, pkg, keys["jane"], "--expires", "3d", "--comment", "CHG-1234")
    approve(psbridge, pkg, keys["bob"], "--expires", "2d")
    write_run(pkg)
    result = psbridge("report", pkg, "--trusted-keys", keys["trusted"])
    assert result.exit_code == 0, result.stderr
    page = pkg.parent / "contoso-report.html"
    package = read_package(pkg)
    url = page.resolve().as_uri()

    dom = _chromium(chromium, tmp_path, "--dump-dom", url).stdout
    dom_text = text_of(dom)
    assert package.digest in dom_text
    for step in package.steps:  # every step's sha256 is on the page the browser built
        assert step.sha256 in dom_text, step.file
    assert "<script" not in dom

    pdf = tmp_path / "report.pdf"
    _chromium(chromium, tmp_path, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", url)
    assert pdf.read_bytes().startswith(b"%PDF")
    first = subprocess.run([pdftotext, "-f", "1", "-l", "1", "-layout", str(pdf), "-"], capture_output=True,
                           text=True, timeout=60, check=True).stdout
    assert package.digest in first
    records = [json.loads(p.read_text()) for p in sorted((pkg / "approvals").glob("*.json"))]
    assert len(records) == 2
    for record in records:
        assert record["approver"] in first and record["expires_at"] in first
    assert first.count("valid now") == 2
    assert "no change ticket recorded" in first and "What changes where" in first
    # issue 21: the risks heaviest first (ACS first), the back-out in words, the package's status
    flat = re.sub(r"\s+", " ", first)
    assert "Risks, heaviest first" in flat and "1. Azure ACS retired on 2026-04-02" in flat
    assert flat.index("Risks, heaviest first") < flat.index("Back-out, step by step") < flat.index("Approvals")
    assert re.search(r"02 certificate\s+by hand\s+The previous S2S certificate's private key is not in the package",
                     flat)
    assert "rollback/06-spn.ps1" in flat and "rollback/07-crm-settings.ps1" in flat
    assert "the wizard none After the Enable Server-Based SharePoint Integration wizard" in flat
    assert "now last run failed at 2026-11-27T09:00:14.500Z" in flat
    # the summary is page 1 alone: the scripts start on a later page
    assert "param(" not in first and "$ErrorActionPreference" not in first
    second = subprocess.run([pdftotext, "-f", "2", "-l", "2", str(pdf), "-"], capture_output=True, text=True,
                            timeout=60, check=True).stdout
    assert second.lstrip().startswith("Steps")


# --------------------------------------------------------------------------- issue 21: the board's page


def _with_window(pkg: Path, window: str) -> Package:
    """The package with `[change] window` in its plan.json (the report reads the window from there)."""
    package = read_package(pkg)
    plan = json.loads(package.files["plan.json"])
    plan["parameters"]["change"] = {"ticket": "CHG-21", "window": window}
    return Package({**package.files, "plan.json": json.dumps(plan).encode("utf-8")}, pkg)


def _summary(html: str) -> str:
    return text_of(html.split('<section class="summary"', 1)[1].split("</section>", 1)[0])


def test_page_one_lists_the_risks_heaviest_first_from_reviews_list(pkg: Path, tmp_path: Path) -> None:
    from psbridge.risks import package_risks
    from psbridge.catalogue import layout_for

    package = read_package(pkg)
    params = package.parameters
    layout = layout_for(params)
    risks = package_risks(params, layout.constants, {s.id: f"{s.index:02d}" for s in layout.steps})
    html = report_module.build_report(package, audit_log=tmp_path / "audit.jsonl")
    summary = _summary(html)
    titles = [text_of(t).strip() for t in re.findall(r'<ol class="risks" id="risk-list">(.*?)</ol>', html, re.S)[0]
              .split("</li>") if t.strip()]
    assert titles == [r.title for r in risks] and titles[0].startswith("Azure ACS retired on 2026-04-02")
    assert "Risks, heaviest first" in summary
    # the same risks in the same words as REVIEW.md's section, in full after page one
    def bare(text: str) -> str:  # the words alone: markup, code spans and line breaks aside
        return re.sub(r"\s+", "", text_of(text.replace("`", "").replace("**", "")))

    review = bare(package.text("REVIEW.md").split("## Irreversible and risky parts", 1)[1].split("\n## ", 1)[0])
    full = bare(html.split('<section id="risks">', 1)[1].split("</section>", 1)[0])
    for risk in risks:
        words = bare("".join(text for _, text in risk.parts))
        assert words in full and words in review, risk.key
    places = [full.index(bare("".join(text for _, text in risk.parts))) for risk in risks]
    assert places == sorted(places)  # in the order of weight, ACS first


def test_page_one_says_the_back_out_in_words_with_step_02_by_hand(pkg: Path, tmp_path: Path) -> None:
    summary = _summary(report_module.build_report(read_package(pkg), audit_log=tmp_path / "audit.jsonl"))
    back_out = summary.split("Back-out, step by step", 1)[1].split("Approvals", 1)[0]
    assert re.search(r"02 certificate by hand The previous S2S certificate's private key is not in the package", back_out)
    assert "CertificateReconfiguration.ps1 -updateCrm" in back_out
    assert re.search(r"06 spn scripted psbridge rollback sends rollback/06-spn\.ps1", back_out)
    assert re.search(r"07 crm-settings scripted psbridge rollback sends rollback/07-crm-settings\.ps1", back_out)
    assert "the wizard none After the Enable Server-Based SharePoint Integration wizard" in back_out
    assert "back-out file(s)" not in summary


def test_page_one_says_whether_each_approval_covers_the_window(psbridge, pkg: Path, keys, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime, timezone

    from psbridge import approvals, clock

    from support.winrm_peer.package import make_package

    now = datetime(2026, 12, 10, 9, 0, tzinfo=timezone.utc)
    monkeypatch.setattr(clock, "utc_now", lambda: now)
    monkeypatch.setattr(approvals, "utc_now", lambda: now)
    windowed = make_package(tmp_path / "windowed", change={"ticket": "CHG-21", "window": WINDOW})
    approve(psbridge, windowed, keys["jane"], "--expires", "1d")
    approve(psbridge, windowed, keys["bob"], "--expires", "7d")
    html = report_module.build_report(read_package(windowed), audit_log=tmp_path / "audit.jsonl", now=now,
                                      trusted_keys=keys["trusted"])
    summary = _summary(html)
    assert "window 2026-12-12T20:00+01:00/2026-12-12T22:00+01:00 2026-12-12 20:00 to 22:00 (UTC+01:00)" in summary
    rows = {who: row for row in re.findall(r"<tr><td>(.*?)</tr>", html, re.S)
            for who in ("Jane Doe", "Bob Roe") if who in row}
    assert "valid now ends first ends before the window ends (2026-12-12T21:00:00Z)" in text_of(rows["Jane Doe"])
    assert "valid now covers the window covers the window (ends 2026-12-12T21:00:00Z)" in text_of(rows["Bob Roe"])
    approve(psbridge, pkg, keys["jane"], "--expires", "1d")
    approve(psbridge, pkg, keys["bob"], "--expires", "7d")
    free = _summary(report_module.build_report(_with_window(pkg, "Saturday night"), audit_log=tmp_path / "a.jsonl",
                                               now=now))  # plan.json edited: the approvals judge another digest
    assert "free text: psbridge cannot check that approvals cover it" in free
    assert free.count("window is free text: cannot tell") == 2


def _server_states(engine) -> None:  # noqa: ANN001 - the peer's engine
    """As tests/test_rollback.py: before, no credential and no SPN; after steps 06 and 07, what they add."""
    import copy

    from support.probe_states import state

    before, after = state("fresh server"), state("fully configured")
    entra_before = copy.deepcopy(before["entra"])
    entra_before["key_credentials"] = []
    entra_before["service_principal_names"] = []
    entra_after = copy.deepcopy(after["entra"])
    entra_after["key_credentials"] = [{"key_id": "11111111-2222-4333-8444-555555555555", "thumbprint": "A" * 40,
                                       "matches_certificate": True, "start": "2026-01-01T00:00:00Z",
                                       "end": "2036-01-01T00:00:00Z"}]
    entra_after["service_principal_names"] = ["00000007-0000-0000-c000-000000000000/*.contoso.com"]
    probe = "# psbridge probe: {} "
    engine.when(probe.format("certificate"), Reply(output=[json.dumps(after["certificate"])]))
    engine.when(probe.format("entra"), Reply(output=[json.dumps(entra_before)]), times=1)
    engine.when(probe.format("entra"), Reply(output=[json.dumps(entra_after)]))
    engine.when(probe.format("crm"), Reply(output=[json.dumps(before["crm"])]), times=2)
    engine.when(probe.format("crm"), Reply(output=[json.dumps(after["crm"])]))


from support.winrm_peer import Reply  # noqa: E402 - used by the helper above only


def test_runs_label_rollbacks_show_the_status_and_state_before_after(psbridge, tmp_path: Path, http_peer, engine,
                                                                     secrets_env, capsys, keys) -> None:
    from psbridge.cli import main

    from support.cli import check_args
    from support.packages import write_check_package

    log = tmp_path / "audit.jsonl"
    pkg = write_check_package(tmp_path)
    assert main(["approve", str(pkg), "--key", str(keys["jane"]), "--audit-log", str(log)]) == 0
    _server_states(engine)
    assert main(["run", *check_args(pkg, http_peer)[1:], "--yes", "--audit-log", str(log)]) == 0
    [record] = list((pkg / "runs").glob("*.jsonl"))
    ran = text_of(make_report(psbridge, pkg, "--audit-log", str(log)))
    assert re.search(r"1 run record\(s\); now last run ok at \S+", ran)
    assert main(["rollback", *check_args(pkg, http_peer)[1:], "--run", str(record), "--yes", "--audit-log",
                 str(log)]) == 0
    capsys.readouterr()
    html = make_report(psbridge, pkg, "--audit-log", str(log))
    text = text_of(html)
    rollback = next(p for p in sorted((pkg / "runs").glob("*.jsonl")) if p != record)
    assert re.search(rf"now backed out at \S+ \(rollback of runs/{re.escape(record.name)}\)", text), text[:3000]
    assert "last: ok" not in text and "last run ok" not in text
    assert f"rollback ok" in text and f"Rollback of {record}" in text
    assert f"Backed out by runs/{rollback.name} at" in text
    # step 07's ServerSettings were not set before the run: its back-out leaves them (issue 19 item 11), so
    # the rollback's only scripted step undoes step 06
    assert re.search(r"03 undo-spn undoes step 06 ok", text) and "undo-crm-settings" not in text
    # step 06's readings around it: the SPN it added, before → after
    assert "state before → after" in text
    assert re.search(r"entra\.service_principal_names: \[\] → \[\"00000007-0000-0000-c000-000000000000/\*\.contoso\.com\"\]",
                     text), text
    assert "event state" not in text


def test_page_one_in_a_headless_browser_with_a_change_window(psbridge, keys, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A package with a ticket, a summary and an ISO window, two approvals (one ends first): page one holds it all."""
    from datetime import datetime, timezone

    from psbridge import approvals, clock

    from support.winrm_peer.package import make_package

    chromium, pdftotext = _browser_or_skip()
    now = datetime(2026, 12, 10, 9, 0, tzinfo=timezone.utc)
    monkeypatch.setattr(clock, "utc_now", lambda: now)
    monkeypatch.setattr(approvals, "utc_now", lambda: now)
    monkeypatch.setattr(report_module, "utc_now", lambda: now)
    pkg = make_package(tmp_path / "out", change={"ticket": "CHG-21", "window": WINDOW,
                                                 "summary": "S2S between Dynamics 365 and SharePoint Online."})
    approve(psbridge, pkg, keys["jane"], "--expires", "1d")
    approve(psbridge, pkg, keys["bob"], "--expires", "7d")
    assert psbridge("report", pkg, "--trusted-keys", keys["trusted"]).exit_code == 0
    pdf = tmp_path / "report.pdf"
    _chromium(chromium, tmp_path, "--no-pdf-header-footer", f"--print-to-pdf={pdf}",
              (pkg.parent / "contoso-report.html").resolve().as_uri())
    first = re.sub(r"\s+", " ", subprocess.run([pdftotext, "-f", "1", "-l", "1", str(pdf), "-"], capture_output=True,
                                               text=True, timeout=60, check=True).stdout)
    assert "CHG-21" in first and "2026-12-12 20:00 to 22:00 (UTC+01:00)" in first
    assert first.count("valid now") == 2 and "ends first" in first and "covers the window" in first
    assert "Risks, heaviest first" in first and "Back-out, step by step" in first and "What changes where" in first
    assert read_package(pkg).digest in first
    second = subprocess.run([pdftotext, "-f", "2", "-l", "2", str(pdf), "-"], capture_output=True, text=True,
                            timeout=60, check=True).stdout
    assert second.lstrip().startswith("Steps")  # page one holds the whole summary



def _app_package(psbridge, tmp_path: Path, change: str = "") -> Path:  # noqa: ANN001 - the CLI fixture
    """The package `init` leads to (trust = "app"), rendered with the test MSAL package beside its file;
    `change` is a `[change]` table's TOML text to append."""
    from support.probe_states import TENANT

    params = tmp_path / "parameters.toml"
    assert psbridge("init", params).exit_code == 0
    text = params.read_text(encoding="utf-8").replace('tenant_id = "00000000-0000-0000-0000-000000000000"',
                                                      f'tenant_id = "{TENANT}"', 1) + change
    params.write_text(text, encoding="utf-8")
    rendered = psbridge("render", params, "--out", tmp_path / "out")
    assert rendered.exit_code == 0, rendered.stderr
    return tmp_path / "out" / "parameters"


def test_page_one_says_a_by_hand_procedure_in_words_and_leaves_its_commands_to_the_plan(
        psbridge, tmp_path: Path, msal_package) -> None:
    """Step 09's back-out is a procedure with Graph commands: page one says it in words and where the commands
    are; the back-out plan after page one holds the whole procedure."""
    from psbridge.steps.app_registration import MANUAL

    html = report_module.build_report(read_package(_app_package(psbridge, tmp_path)),
                                      audit_log=tmp_path / "audit.jsonl")
    back_out = _summary(html).split("Back-out, step by step", 1)[1].split("Approvals", 1)[0]
    row = re.search(r"09 app-registration by hand (.*?) 10 app-certificate", back_out).group(1)
    assert row.startswith("Removing the app, its service principal or the consent is a manual procedure")
    assert row.endswith('The commands: "Back-out plan" below.'), row
    assert "Remove-Mg" not in row and "`" not in row and "$Sp" not in row
    after = text_of(html.split("</section>", 1)[1])
    for command in re.findall(r"`([^`]+)`", MANUAL):
        assert " ".join(command.split()) in after, command


def _heading_height(pdftotext: str, pdf: Path, page: int, word: str) -> float:
    """The height in points of `word`'s box on `page` (pdftotext -bbox): a 12.5 pt heading's is about 14 pt when
    printed at its own size, less when Chromium shrank every page because something was wider than the page."""
    boxes = subprocess.run([pdftotext, "-f", str(page), "-l", str(page), "-bbox", str(pdf), "-"], capture_output=True,
                           text=True, timeout=60, check=True).stdout
    found = re.search(rf'<word xMin="[\d.]+" yMin="([\d.]+)" xMax="[\d.]+" yMax="([\d.]+)">{word}</word>', boxes)
    assert found, f"{word} not on page {page}"
    return float(found.group(2)) - float(found.group(1))


def test_page_one_of_an_app_trust_package_in_a_headless_browser(psbridge, keys, tmp_path: Path, msal_package,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The package `init` leads to (trust = "app") with a ticket, an ISO window and two approvals: page one holds
    what changes where, the risks, the whole back-out, the approvals against the window and the package's status;
    the MSAL payload's full sha256 values follow on a later page (the report's payload section)."""
    from datetime import datetime, timezone

    from psbridge import approvals, clock

    chromium, pdftotext = _browser_or_skip()
    now = datetime(2026, 12, 10, 9, 0, tzinfo=timezone.utc)
    monkeypatch.setattr(clock, "utc_now", lambda: now)
    monkeypatch.setattr(approvals, "utc_now", lambda: now)
    monkeypatch.setattr(report_module, "utc_now", lambda: now)
    pkg = _app_package(psbridge, tmp_path, f'\n[change]\nticket = "CHG-21"\nwindow = "{WINDOW}"\n'
                                           'summary = "S2S between Dynamics 365 and SharePoint Online."\n')
    approve(psbridge, pkg, keys["jane"], "--expires", "1d", "--comment", "CAB 2026-12-09, item 4")
    approve(psbridge, pkg, keys["bob"], "--expires", "7d")
    assert psbridge("report", pkg, "--trusted-keys", keys["trusted"]).exit_code == 0
    pdf = tmp_path / "report.pdf"
    _chromium(chromium, tmp_path, "--no-pdf-header-footer", f"--print-to-pdf={pdf}",
              (pkg.parent / f"{pkg.name}-report.html").resolve().as_uri())
    first = re.sub(r"\s+", " ", subprocess.run([pdftotext, "-f", "1", "-l", "1", str(pdf), "-"], capture_output=True,
                                               text=True, timeout=60, check=True).stdout)
    package = read_package(pkg)
    assert package.digest in first and "CHG-21" in first and "2026-12-12 20:00 to 22:00 (UTC+01:00)" in first
    assert "THE APP TRUST" in first.upper() and "Sites.FullControl.All" in first
    assert "What changes where" in first and "Risks, heaviest first" in first and "Back-out, step by step" in first
    # the whole back-out table: every step with a back-out, and the wizard last
    back_out = first.split("Back-out, step by step", 1)[1].split("Approvals", 1)[0]
    for step in package.steps:
        if step.kind == "change":
            assert f"{step.index:02d} {step.id}" in back_out, step.id
    assert "the wizard none" in back_out
    # the approvals against the window, and the evidence with the package's status
    assert first.count("valid now") == 2 and "ends first" in first and "covers the window" in first
    assert "Jane Doe" in first and "Bob Roe" in first and "CAB 2026-12-09, item 4" in first
    assert "distinct trusted people have a valid approval" in first
    assert "Evidence." in first and "no run recorded" in first and "Audit log:" in first
    second = subprocess.run([pdftotext, "-f", "2", "-l", "2", str(pdf), "-"], capture_output=True, text=True,
                            timeout=60, check=True).stdout
    assert second.lstrip().startswith("Steps")  # page one holds the whole summary
    # printed at its own size: page one fits by its layout, not because a long audit detail after it made
    # Chromium shrink every page (the audit log's lines hold this test's long temporary paths)
    assert _heading_height(pdftotext, pdf, 2, "Steps") > 13.5
    # page one points to the MSAL payload; its files, signers and full sha256 follow in their own section (a hash
    # may wrap: compared without white space)
    assert "The MSAL payload's 2 files, their signers and sha256: MSAL payload, after page one." in first
    everything = re.sub(r"\s+", "", subprocess.run([pdftotext, str(pdf), "-"], capture_output=True, text=True,
                                                    timeout=60, check=True).stdout)
    payload = everything.split("Thefilesthatstepmsal-assemblywrites", 1)[1]
    for fact in msal_package.payload.facts():
        assert fact["sha256"] not in first.replace(" ", "")
        assert fact["file"] in payload and fact["sha256"] in payload, fact["file"]
