"""The package `psbridge render` writes: layout, article fidelity, encoding, grammar, determinism."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from psbridge.parameters import EXAMPLE, example, parse_parameters
from psbridge.files import sha256_hex
from psbridge.package import read_package
from psbridge.writer import write_package
from psbridge.powershell import quote
from psbridge.render import RawInterpolation, _environments, render_package

from support.pwsh_grammar import string_literal_spans, syntax_errors, typographic_quotes_outside_literals

HERE = Path(__file__).parent
GOLDEN = HERE / "golden" / "msonline"
ARTICLE = (HERE / "data" / "article.md").read_text(encoding="utf-8")
STEP_FILES = [
    "steps/01-prerequisites.ps1", "steps/02-certificate.ps1", "steps/03-session.ps1", "steps/04-connect.ps1",
    "steps/05-set-certificate.ps1", "steps/06-spn.ps1", "steps/07-crm-settings.ps1", "steps/08-tenant-id.ps1",
]


def text_of(data: bytes) -> str:
    assert data.startswith(b"\xef\xbb\xbf"), "PowerShell files must be UTF-8 with BOM"
    return data[3:].decode("utf-8")


@pytest.fixture(scope="module")
def package() -> dict[str, bytes]:
    return render_package(example()).files


# --------------------------------------------------------------------------- layout and golden files


def test_package_has_the_article_steps_in_order(package: dict[str, bytes]) -> None:
    assert sorted(f for f in package if f.startswith("steps/")) == STEP_FILES
    probes = {f"probes/{n}.ps1" for n in ("server", "certificate", "crm", "entra")}
    assert set(package) == {*STEP_FILES, *probes, "setup.ps1", "REVIEW.md", "plan.json", "lock.ps1",
                            "rollback/06-spn.ps1", "rollback/07-crm-settings.ps1"}


@pytest.mark.parametrize("name", [f.split("/")[1] for f in STEP_FILES])
def test_steps_match_golden_files(package: dict[str, bytes], name: str) -> None:
    """The golden files were reviewed line by line against the article (see test_article_* below)."""
    golden = GOLDEN / name
    if os.environ.get("PSBRIDGE_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(package[f"steps/{name}"])
    assert package[f"steps/{name}"] == golden.read_bytes()


# --------------------------------------------------------------------------- fidelity to the article

def _article_blocks() -> list[list[str]]:
    blocks = re.findall(r"```powershell\n(.*?)```", ARTICLE, flags=re.S)
    return [[line.strip() for line in b.splitlines() if line.strip()] for b in blocks]


def _norm(line: str) -> str:
    """Compare as PowerShell would: quotes are quotes, case and spacing do not matter."""
    line = re.sub("[\u201c\u201d\"]", "'", line)
    return re.sub(r"\s+", " ", line).strip().casefold()


#: Article lines the package does not contain verbatim, each with the line(s) that replace it
#: and why. Everything else of the article must appear in its step as written.
DEVIATIONS: dict[str, tuple[list[str], str]] = {
    "import-module msonlineext -force": ([], "third-party module, archived in 2020; no step uses it"),
    "new-pssession": ([], "the loopback session it opens is never used"),
    "$msolcred = get-credential": (
        ["$credential = get-credential -message 'office 365 global administrator'", "$msolcred = $credential"],
        "the credential may come in as a parameter (psbridge run); Get-Credential prompts only without it",
    ),
    "$serviceprincipalname.remove('$crmappid/$rootdomain')": (
        ["$crmserviceprincipalname = $crmappid + '/' + $rootdomain", "$null = $serviceprincipalname.remove($crmserviceprincipalname)"],
        "no data interpolated into double-quoted strings",
    ),
    "$serviceprincipalname.add('$crmappid/$rootdomain')": (
        ["$serviceprincipalname.add($crmserviceprincipalname)"], "no data interpolated into double-quoted strings",
    ),
}

#: The article's code blocks in order, and the step each belongs to.
BLOCK_STEPS = ["02-certificate", "03-session", "04-connect", "05-set-certificate", "06-spn", "07-crm-settings",
               "08-tenant-id"]


def test_article_has_the_blocks_this_test_expects() -> None:
    assert len(_article_blocks()) == len(BLOCK_STEPS)


@pytest.mark.parametrize("block_index", range(1, len(BLOCK_STEPS)))
def test_article_commands_appear_in_their_step(package: dict[str, bytes], block_index: int) -> None:
    step = BLOCK_STEPS[block_index]
    ours = [_norm(line) for line in text_of(package[f"steps/{step}.ps1"]).splitlines()]
    for line in _article_blocks()[block_index]:
        wanted = _norm(line)
        replacements = DEVIATIONS.get(wanted, ([wanted], ""))[0]
        for expected in replacements:
            assert any(expected in ours_line for ours_line in ours), f"{step}: article line {line!r} not found"
        if wanted in DEVIATIONS:
            assert not any(ours_line == wanted for ours_line in ours)


def test_article_step2_command_becomes_a_call_with_the_same_parameters(package: dict[str, bytes]) -> None:
    """Step 2's command string, run by Invoke-Expression in the article, is a direct call here."""
    command = _article_blocks()[0][0]
    string = re.search("\u201c(.*)\u201d", command).group(1)
    pairs = dict(re.findall(r"-(\w+)(?: ([^-\s][^\s]*))?", string.split(" ", 1)[1]))
    step = text_of(package["steps/02-certificate.ps1"])
    call = next(line for line in step.splitlines() if line.strip().startswith("& $CertificateScript"))
    code = [line for line in step.splitlines() if not line.lstrip().startswith("#")]
    assert not any("Invoke-Expression" in line or "iex " in line.casefold() for line in code)
    for name, value in pairs.items():
        if name == "password":
            assert "-password ([System.Net.NetworkCredential]::new('', $PfxPassword).Password)" in call
        elif value:
            assert f"-{name} {quote(value)}".casefold() in call.casefold(), name
        else:
            assert re.search(rf"-{name}(\s|$)", call), name


def test_tenant_check_is_rendered_only_with_a_tenant_id() -> None:
    without = text_of(render_package(example()).files["steps/08-tenant-id.ps1"])
    assert "$ExpectedTenantId" not in without
    tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    data = json.loads(json.dumps(EXAMPLE))
    data["sharepoint"]["tenant_id"] = tenant
    files = render_package(parse_parameters(data)).files
    step = text_of(files["steps/08-tenant-id.ps1"])
    assert f"$ExpectedTenantId = '{tenant}'" in step
    assert "if ([string]$CRMContextId -ne $ExpectedTenantId) {" in step
    assert f"tenant ID:           '{tenant}'" in text_of(files["setup.ps1"])


# --------------------------------------------------------------------------- setup.ps1


def test_setup_is_bom_crlf_requires_and_stops(package: dict[str, bytes]) -> None:
    data = package["setup.ps1"]
    text = text_of(data)
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert text.startswith("#Requires -Version 5.1\r\n")
    assert "$ErrorActionPreference = 'Stop'" in text
    assert "continue with:  .\\setup.ps1 -FromStep ' + $PSBridgeStep" in text


def test_setup_contains_each_step_byte_for_byte(package: dict[str, bytes]) -> None:
    setup = package["setup.ps1"][3:]
    for name in STEP_FILES:
        assert package[name][3:] in setup, name


def test_setup_banner_and_resume_threshold_per_step(package: dict[str, bytes]) -> None:
    """-FromStep 6 must re-run the session steps 6 needs (1, 3, 4, 5) and skip 2 (it changed state)."""
    text = text_of(package["setup.ps1"])
    found = re.findall(r"if \(\$FromStep -le (\d+)\) \{\r\n\s+\$PSBridgeStep = (\d+)", text)
    assert {int(index): int(threshold) for threshold, index in found} == {1: 8, 2: 2, 3: 8, 4: 8, 5: 6, 6: 6, 7: 7, 8: 8}
    assert "Write-Host '==> [06/08] spn: Set the Azure Active Directory Service Principal Name (SPN) in SharePoint'" in text


def test_setup_ends_with_the_wizard_checklist(package: dict[str, bytes]) -> None:
    text = text_of(package["setup.ps1"])
    tail = text[text.index("# ==== Manual step"):]
    assert "#          site collection URL: 'https://contoso.sharepoint.com/sites/salesteam'" in tail
    assert all(line.startswith("#") for line in tail.splitlines() if line)


# --------------------------------------------------------------------------- plan.json and REVIEW.md


def test_plan_json_records_steps_and_hashes(package: dict[str, bytes]) -> None:
    plan = json.loads(package["plan.json"])
    assert plan["format_version"] == 1 and plan["profile"] == "msonline" and plan["name"] == "contoso"
    assert plan["parameters"]["certificate"]["pfx_path"] == "C:\\Personalcertfile.pfx"
    assert [s["index"] for s in plan["steps"]] == list(range(1, 9))
    for step in plan["steps"]:
        assert step["sha256"] == sha256_hex(package[step["file"]])
    assert [s["id"] for s in plan["steps"] if s["changes_state"]] == ["certificate", "spn", "crm-settings"]
    assert plan["files"] == {"setup.ps1": sha256_hex(package["setup.ps1"]), "REVIEW.md": sha256_hex(package["REVIEW.md"]),
                             "lock.ps1": sha256_hex(package["lock.ps1"])}
    assert plan["steps"][1]["inputs"] == {"PfxPassword": "pfx_password"}
    assert plan["steps"][3]["inputs"] == {"Credential": "o365_credential"}


def test_review_names_changes_warnings_checklist_and_setup_hash(package: dict[str, bytes]) -> None:
    review = package["REVIEW.md"].decode("utf-8")
    for heading in ("## What will change, and where", "## Irreversible and risky parts", "## Prerequisites",
                    "## Steps", "## Manual step: the Enable Server-Based SharePoint Integration wizard",
                    "## Files and hashes"):
        assert heading in review
    assert f"| sha256 of setup.ps1 | `{sha256_hex(package['setup.ps1'])}` |" in review
    assert "cannot\n  revert to client-based authentication" in review
    for name in STEP_FILES:
        assert text_of(package[name]).replace("\r\n", "\n").rstrip("\n") in review
        assert f"\n{sha256_hex(package[name])}  {name}\n" in review  # sha256sum -c input


def test_review_fences_survive_backticks_in_values(tmp_path: Path) -> None:
    data = json.loads(json.dumps(EXAMPLE))
    data["certificate"]["pfx_path"] = "C:\\certs\\```weird`` name.pfx"
    review = render_package(parse_parameters(data)).files["REVIEW.md"].decode("utf-8")
    assert "````powershell\n" in review  # the fence outgrew the value's backtick run
    assert "````C:\\certs\\```weird`` name.pfx````" in review


# --------------------------------------------------------------------------- grammar and safety


def test_every_rendered_script_parses(package: dict[str, bytes]) -> None:
    for name, data in package.items():
        if name.endswith(".ps1"):
            assert syntax_errors(text_of(data)) == [], name


def test_no_typographic_quotes_in_rendered_example(package: dict[str, bytes]) -> None:
    for name, data in package.items():
        if name.endswith(".ps1"):
            assert not re.search("[\u2018-\u201e]", text_of(data)), name


def test_hostile_values_render_as_single_literals() -> None:
    data = json.loads(json.dumps(EXAMPLE))
    data["certificate"]["pfx_path"] = "C:\\O’Brien‘s ‚x‛ 'certs' # $(calc); `n\\ü.pfx"
    data["certificate"]["service_account"] = "contoso\\o'brien$"
    files = render_package(parse_parameters(data)).files
    for name, blob in files.items():
        if name.endswith(".ps1"):
            text = text_of(blob)
            assert syntax_errors(text) == [], name
            assert typographic_quotes_outside_literals(text) == [], name
    step = text_of(files["steps/02-certificate.ps1"])
    literal = quote(data["certificate"]["pfx_path"])
    start = step.encode().index(literal.encode())
    assert (start, start + len(literal.encode())) in string_literal_spans(step)


def test_a_template_that_forgets_the_quoting_filter_cannot_render() -> None:
    ps_env, _ = _environments()
    with pytest.raises(RawInterpolation):
        ps_env.from_string("$x = {{ value }}").render(value="C:\\a.pfx")
    assert ps_env.from_string("$x = {{ value | ps }}").render(value="it's") == "$x = 'it''s'"


def test_rendering_is_deterministic() -> None:
    first, second = render_package(example()).files, render_package(example()).files
    assert first == second


def test_digest_changes_with_any_byte(tmp_path: Path) -> None:
    target = write_package(render_package(example()), tmp_path)
    before = read_package(target).digest
    (target / "runs").mkdir()
    (target / "runs" / "x.jsonl").write_text("{}\n")
    assert read_package(target).digest == before, "run records are not part of the change"
    step = target / "steps" / "06-spn.ps1"
    step.write_bytes(step.read_bytes() + b" ")
    assert read_package(target).digest != before
