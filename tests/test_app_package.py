"""The package side of the app trust: the MSAL payload in the package, the gates over it, the executor's
parameters, REVIEW.md and the report; and ACS packages whose scripts stay byte for byte what they were.

The payload is signed by the tests' own CA (support/msal.py); psbridge trusts that CA only where a test
sets `payload.TEST_ROOTS`. Until the other app units and probes are merged, `app_stand_ins` registers
stand-ins for the ones missing (the msal-assembly stand-in takes the payload files, as the real one must).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from support.msal import NUPKG_NAME, SignedMsal, app_stand_ins, make_signed_msal, trust_test_root, write_nupkg
from support.pwsh_grammar import syntax_errors

from psbridge import payload as payload_module
from psbridge import __version__
from psbridge.catalogue import step_entry, steps_for
from psbridge.errors import UserError
from psbridge.package import Package
from psbridge.parameters import (ACS_RETIRED_ON, ACS_RETIREMENT, ACS_RETIREMENT_PAGE, EXAMPLE, acs_retirement_warning,
                                 parse_parameters)
from psbridge.payload import PAYLOAD_FILES, payload_for, payload_from_files
from psbridge.remote.inputs import payload_parameters
from psbridge.render import render_package
from psbridge.steps import Step

DLL = "payload/Microsoft.Identity.Client.dll"
XML = "payload/Microsoft.Identity.Client.xml"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
DATA = Path(__file__).parent / "data"


def app_data(**app: str) -> dict[str, Any]:
    """The article's values as an app package: graph, the organization, the tenant and [app]."""
    data = copy.deepcopy(EXAMPLE)
    data.update(profile="graph", trust="app")
    data["crm"]["organization"] = "contoso"
    data["sharepoint"]["tenant_id"] = TENANT
    data["app"] = app or {"name": "psbridge-contoso", "msal_package": NUPKG_NAME}
    return data


@pytest.fixture(scope="module")
def msal(tmp_path_factory: pytest.TempPathFactory) -> SignedMsal:
    return make_signed_msal(tmp_path_factory.mktemp("msal"))


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, msal: SignedMsal) -> SignedMsal:
    """The app units (or their stand-ins) registered and the test CA trusted, for this test only."""
    app_stand_ins(monkeypatch, tmp_path / "stand-ins")
    trust_test_root(monkeypatch, msal)
    return msal


def render_app(msal: SignedMsal, **app: str) -> dict[str, bytes]:
    return render_package(parse_parameters(app_data(**app)), None, None, msal.payload).files


def plan_of(files: dict[str, bytes]) -> dict[str, Any]:
    return json.loads(files["plan.json"])


def with_plan(files: dict[str, bytes], plan: dict[str, Any]) -> dict[str, bytes]:
    return {**files, "plan.json": json.dumps(plan).encode()}


# --------------------------------------------------------------------------- render


def test_an_app_package_is_refused_without_its_payload(app: SignedMsal) -> None:
    with pytest.raises(UserError) as caught:
        render_package(parse_parameters(app_data()))
    [line] = caught.value.problems
    assert line.startswith('trust = "app": the package needs the MSAL payload (app.msal_package')


def test_an_acs_package_refuses_a_payload(msal: SignedMsal) -> None:
    with pytest.raises(UserError, match=r'belongs to a package of trust = "app"'):
        render_package(parse_parameters(EXAMPLE), None, None, msal.payload)


def test_the_payload_goes_into_payload_as_it_is_and_plan_json_records_its_facts(app: SignedMsal) -> None:
    files = render_app(app)
    assert files[DLL] == app.payload.files[DLL] and files[XML] == app.payload.files[XML]
    recorded = plan_of(files)["payload"]
    assert recorded == app.payload.facts()
    assert [f["file"] for f in recorded] == [DLL, XML]
    assert recorded[0]["sha256"] == hashlib.sha256(files[DLL]).hexdigest() and recorded[0]["size"] == len(files[DLL])
    assert recorded[0]["signer"]["subject"] == "CN=Microsoft Corporation,O=Microsoft Corporation"
    assert recorded[1]["signer"] == payload_module.NOT_SIGNED_XML


def test_review_md_shows_file_sha256_and_signer_never_the_bytes(app: SignedMsal) -> None:
    files = render_app(app)
    review = files["REVIEW.md"].decode("utf-8")
    for fact in app.payload.facts():
        row = next(line for line in review.splitlines() if line.startswith(f"| `{fact['file']}` |"))
        assert f"`{fact['sha256']}`" in row
        signer = fact["signer"]
        assert (signer["subject"] in row and signer["issuer"] in row) if isinstance(signer, dict) else signer in row
        assert f"{fact['sha256']}  {fact['file']}" in review  # "Files and hashes" lists it for sha256sum -c
    assert base64.b64encode(files[DLL]).decode()[:40] not in review
    assert files[XML].decode() not in review


def test_review_md_has_the_app_trust_section(app: SignedMsal) -> None:
    review = render_app(app)["REVIEW.md"].decode("utf-8")
    section = review.split("## The app trust\n", 1)[1].split("\n## ", 1)[0]
    flat = " ".join(section.split())
    assert "ADDS Microsoft's app steps" in flat and "does not say the ACS settings can go, so they stay" in flat
    assert "Sites.FullControl.All is full control of every site collection in the tenant" in flat
    assert "Whoever holds the private key of the S2S certificate" in flat
    assert "Writing into CRMWeb\\bin recycles the CRM web application**: a short outage, inside the change window" in flat
    assert "removed **only by hand**" in flat
    assert "Service Update 1.36" in flat and "SQL second hop" in flat and "one-year cap" in flat
    assert "creates the app registration `psbridge-contoso`" in flat
    adopted = render_app(app, client_id="11111111-2222-4333-8444-555555555555", msal_package=NUPKG_NAME)
    flat = " ".join(adopted["REVIEW.md"].decode("utf-8").split())
    assert "adopts the existing app registration `11111111-2222-4333-8444-555555555555`. An adopted app has no uniqueName" in flat


def test_the_first_risk_of_an_acs_package_is_the_retirement() -> None:
    review = render_package(parse_parameters(EXAMPLE)).files["REVIEW.md"].decode("utf-8")
    risks = review.split("## Irreversible and risky parts\n\n", 1)[1]
    first = " ".join(risks.split("\n- ", 1)[0].split())
    assert first.startswith(f"- **Azure ACS was retired on `{ACS_RETIRED_ON}`.**")
    assert f'"{ACS_RETIREMENT}"' in first and f"`{ACS_RETIREMENT_PAGE}`" in first
    assert "may no longer be honoured" in first and '`trust = "app"`' in first
    assert "## The app trust" not in review


def test_the_first_risk_of_an_app_package_says_the_acs_settings_stay(app: SignedMsal) -> None:
    review = render_app(app)["REVIEW.md"].decode("utf-8")
    first = " ".join(review.split("## Irreversible and risky parts\n\n", 1)[1].split("\n- ", 1)[0].split())
    assert first.startswith("- **Azure ACS and the app trust.**") and f'"{ACS_RETIREMENT}"' in first


def _acs_variants() -> list[tuple[str, dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]]:
    """The render matrix the ACS baseline was taken with (tests/data/acs-script-hashes.json)."""
    cert = {"source": "certs/s2s.pfx", "subject": "CN=crm.contoso.com", "thumbprint": "A" * 40, "sha256": "0" * 64,
            "serial": "01", "issuer": "CN=crm.contoso.com", "not_before": "2026-01-01T00:00:00Z",
            "not_after": "2036-01-01T00:00:00Z", "self_signed": True, "warnings": []}
    old = dict(cert, thumbprint="B" * 40, subject="CN=old.contoso.com", not_after="2027-01-01T00:00:00Z")
    out = []
    for profile in ("msonline", "graph"):
        base = copy.deepcopy(EXAMPLE)
        base["profile"] = profile
        farm = copy.deepcopy(base)
        farm["crm"].update(server="crm01.contoso.local", additional_servers=["crm02", "crm03.contoso.local"])
        renewal = copy.deepcopy(base)
        # switch_after_hours = 0: the renewal as 0.2.0 rendered it (the default, 24, adds setup.ps1's wait).
        renewal["certificate"].update(replaces="b" * 40, switch_after_hours=0)
        renewal_farm = copy.deepcopy(farm)
        renewal_farm["certificate"].update(replaces="B" * 40, switch_after_hours=0)
        gcc = copy.deepcopy(base)
        gcc["sharepoint"].update(sites=["https://contoso.sharepoint.us/sites/x"], tenant_id=TENANT)
        change = copy.deepcopy(base)
        change["change"] = {"ticket": "CHG-1", "summary": "Why 'quoted' $x", "window": "tonight"}
        del change["crm"]["tools_dir"]
        out += [(profile, base, None, None), (f"{profile}-cert", base, cert, None), (f"{profile}-farm", farm, cert, None),
                (f"{profile}-renewal", renewal, cert, None), (f"{profile}-renewal-old", renewal, cert, old),
                (f"{profile}-renewal-farm", renewal_farm, cert, old), (f"{profile}-gcchigh", gcc, None, None),
                (f"{profile}-change", change, cert, None)]
    app_only = copy.deepcopy(EXAMPLE)
    app_only["profile"] = "graph"
    app_only["graph"] = {"client_id": "11111111-1111-1111-1111-111111111111", "tenant_id": TENANT,
                         "certificate_thumbprint": "C" * 40}
    return [*out, ("graph-app-only", app_only, cert, None)]


#: The release whose render tests/data/acs-script-hashes.json holds.
BASELINE_VERSION = b"psbridge 0.2.0"


@pytest.mark.parametrize("variant", _acs_variants(), ids=lambda v: v[0])
def test_every_script_of_an_acs_package_is_byte_identical_to_the_baseline(
        variant: tuple[str, dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]) -> None:
    name, data, cert, old = variant
    baseline = json.loads((DATA / "acs-script-hashes.json").read_text(encoding="utf-8"))[name]
    files = render_package(parse_parameters(data), cert, old).files
    # The baseline was rendered by psbridge 0.2.0; setup.ps1 names the version that rendered it (its
    # header and first Write-Host), the one byte difference a release makes by design.
    setup = files["setup.ps1"]
    assert setup.count(f"psbridge {__version__}".encode()) == 2
    files["setup.ps1"] = setup.replace(f"psbridge {__version__}".encode(), BASELINE_VERSION)
    scripts = {rel: hashlib.sha256(b).hexdigest() for rel, b in sorted(files.items()) if rel.endswith(".ps1")}
    assert scripts == baseline
    assert "payload" not in plan_of(files) and not any(rel.startswith("payload/") for rel in files)


# --------------------------------------------------------------------------- payload_for, payload_from_files


def test_payload_for_reads_the_nupkg_relative_to_the_parameters_folder(app: SignedMsal, tmp_path: Path) -> None:
    params_file = tmp_path / "configs" / "contoso.toml"
    write_nupkg(params_file, app, "packages/" + NUPKG_NAME)
    params = parse_parameters(app_data(name="psbridge-contoso", msal_package="packages/" + NUPKG_NAME))
    found = payload_for(params, params_file.parent)
    assert found is not None and found.facts() == app.payload.facts()
    assert payload_for(parse_parameters(EXAMPLE), params_file.parent) is None


def test_payload_for_names_the_field_when_the_nupkg_is_missing(app: SignedMsal, tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        payload_for(parse_parameters(app_data()), tmp_path)
    [line] = caught.value.problems
    assert line.startswith(f"app.msal_package: {tmp_path / NUPKG_NAME}: cannot read the MSAL package")


def test_payload_for_trusts_only_microsofts_roots_outside_a_test_hook(msal: SignedMsal, tmp_path: Path) -> None:
    write_nupkg(tmp_path / "p.toml", msal)
    assert payload_module.TEST_ROOTS is None  # nothing in psbridge sets it
    with pytest.raises(UserError, match=r"^app\.msal_package: .*does not chain to Microsoft's code-signing roots"):
        payload_for(parse_parameters(app_data()), tmp_path)


def test_payload_from_files_gives_the_facts_render_recorded(msal: SignedMsal) -> None:
    again = payload_from_files({**msal.payload.files, "steps/x.ps1": b"x"}, roots=[msal.ca.der()])
    assert again.facts() == msal.payload.facts() and set(again.files) == set(PAYLOAD_FILES.values())
    with pytest.raises(UserError, match=r"^pkg/payload/Microsoft\.Identity\.Client\.xml: missing"):
        payload_from_files({DLL: msal.payload.files[DLL]}, "pkg", roots=[msal.ca.der()])


# --------------------------------------------------------------------------- the package gates


def test_an_app_package_is_intact_and_reproducible_from_its_own_payload(app: SignedMsal) -> None:
    package = Package(render_app(app))
    assert package.problems == [] and package.reproduction_problems == []
    assert package.require_reproducible() is package
    assert package.payload.facts() == app.payload.facts()


@pytest.mark.parametrize("change", ["missing", "changed", "extra"])
def test_a_missing_changed_or_extra_payload_file_is_a_problem(app: SignedMsal, change: str) -> None:
    files = render_app(app)
    if change == "missing":
        del files[XML]
        expected = f"missing file: {XML}"
    elif change == "changed":
        files[XML] = files[XML] + b" "
        expected = f"changed file: {XML} (sha256 differs from plan.json)"
    else:
        files["payload/evil.dll"] = b"MZ"
        expected = "unexpected file: payload/evil.dll"
    package = Package(files)
    assert expected in package.problems
    with pytest.raises(UserError):
        package.require_intact()


def test_the_digest_covers_the_payload(app: SignedMsal) -> None:
    files = render_app(app)
    package = Package(files)
    assert package.listing[DLL] == hashlib.sha256(files[DLL]).hexdigest()
    assert Package({**files, XML: files[XML] + b" "}).digest != package.digest


def test_a_payload_whose_hashes_were_rewritten_still_fails_its_signature(app: SignedMsal) -> None:
    files = render_app(app)
    tampered = bytearray(files[DLL])
    tampered[0x40] ^= 0xFF  # inside the DOS stub: covered by the Authenticode digest
    files[DLL] = bytes(tampered)
    plan = plan_of(files)
    plan["payload"][0].update(sha256=hashlib.sha256(files[DLL]).hexdigest())
    package = Package(with_plan(files, plan))
    assert package.problems == []  # plan.json agrees with the bytes: intact
    [problem] = package.reproduction_problems
    assert problem.startswith(f"{DLL}: ") and "Microsoft.Identity.Client.dll" in problem
    with pytest.raises(UserError):
        package.require_reproducible()
    with pytest.raises(UserError):
        package.payload  # noqa: B018 - the property raises: run sends nothing from this package


def test_recorded_payload_facts_must_be_the_files_facts(app: SignedMsal) -> None:
    files = render_app(app)
    plan = plan_of(files)
    plan["payload"][0]["signer"] = dict(plan["payload"][0]["signer"], subject="CN=Someone Else")
    package = Package(with_plan(files, plan))
    assert package.problems == []
    assert package.reproduction_problems == ["plan.json: payload: the facts it records (sha256, size, signer) are not "
                                             "those of the package's payload files"]


def test_the_gate_judges_by_microsofts_roots_unless_a_test_trusts_its_own(msal: SignedMsal, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    app_stand_ins(monkeypatch, tmp_path)
    trust_test_root(monkeypatch, msal)
    files = render_app(msal)
    monkeypatch.setattr(payload_module, "TEST_ROOTS", None)
    [problem] = Package(files).reproduction_problems
    assert "does not chain to Microsoft's code-signing roots" in problem


def test_plan_json_payload_list_belongs_to_the_app_trust(app: SignedMsal) -> None:
    acs = render_package(parse_parameters(EXAMPLE)).files
    plan = plan_of(acs)
    plan["payload"] = []
    assert "plan.json: payload: a package of the ACS trust carries none" in Package(with_plan(acs, plan)).problems
    files = render_app(app)
    plan = plan_of(files)
    plan["payload"] = plan["payload"][:1]
    assert (f"plan.json: payload: must list {DLL}, {XML} in this order" in Package(with_plan(files, plan)).problems)


def test_as_rendered_rebuilds_an_edited_app_package_from_its_own_payload(app: SignedMsal) -> None:
    files = render_app(app)
    edited = Package({**files, "REVIEW.md": b"edited"})
    twin = edited.as_rendered()
    assert twin is not edited and twin.replaced
    assert twin.files["REVIEW.md"] == files["REVIEW.md"] and twin.files[DLL] == files[DLL]


# --------------------------------------------------------------------------- steps and the executor


def test_step_entries_list_payload_files_only_in_app_packages(app: SignedMsal) -> None:
    plan = plan_of(render_app(app))
    msal_step = next(s for s in plan["steps"] if s["id"] == "msal-assembly")
    assert msal_step["payload"] == [DLL, XML]
    assert all("payload" not in s for s in plan["steps"] if s["id"] != "msal-assembly" and s["id"] != "additional-servers")
    taker = Step(9, "takes", "takes the payload", "change", payload=(DLL, XML))
    assert "payload" not in step_entry(taker, parse_parameters(EXAMPLE))  # an ACS package: plan.json as before
    assert step_entry(taker, parse_parameters(app_data()))["payload"] == [DLL, XML]


def test_payload_parameters_send_the_judged_bytes_as_base64_with_their_sha256(app: SignedMsal) -> None:
    package = Package(render_app(app))
    step = next(s for s in package.steps if s.id == "msal-assembly")
    sent = payload_parameters(step, package)
    assert set(sent) == {"MsalDll", "MsalDllSha256", "MsalXml", "MsalXmlSha256"}
    assert base64.b64decode(sent["MsalDll"]) == package.files[DLL]
    assert base64.b64decode(sent["MsalXml"]) == package.files[XML]
    assert sent["MsalDllSha256"] == hashlib.sha256(package.files[DLL]).hexdigest()
    assert sent["MsalXmlSha256"] == hashlib.sha256(package.files[XML]).hexdigest()
    assert all(payload_parameters(s, package) == {} for s in package.steps if not s.spec.payload)


def test_payload_parameters_are_empty_for_an_acs_package() -> None:
    package = Package(render_package(parse_parameters(EXAMPLE)).files)
    assert all(payload_parameters(s, package) == {} for s in package.steps)


def test_setup_ps1_passes_the_payload_from_the_package_folder_after_checking_it(app: SignedMsal) -> None:
    files = render_app(app)
    setup = files["setup.ps1"].decode("utf-8-sig")
    assert syntax_errors(setup) == []
    index = next(s for s in plan_of(files)["steps"] if s["id"] == "msal-assembly")["index"]
    block = setup.split(f"# ==== Step {index} of", 1)[1].split("# ==== ", 1)[0]
    for name, parameter in (("Microsoft.Identity.Client.dll", "MsalDll"), ("Microsoft.Identity.Client.xml", "MsalXml")):
        sha = hashlib.sha256(files[f"payload/{name}"]).hexdigest()
        assert f"ReadAllBytes($PSScriptRoot + '\\' + 'payload\\{name}')" in block
        assert f"if ($PSBridgeHash -ne '{sha}') {{" in block
        assert f"$PSBridgePayload['{parameter}'] = [System.Convert]::ToBase64String($PSBridgeBytes)" in block
        assert f"$PSBridgePayload['{parameter}Sha256'] = $PSBridgeHash" in block
    assert re.search(r"\n        \} @PSBridgePayload\r?\n", block)
    # the check comes before the step's text runs
    assert block.index("-ne '") < block.index("psbridge step ")


# --------------------------------------------------------------------------- the warning, the report


def test_the_acs_warning_is_one_line_with_the_quote_and_the_date() -> None:
    line = acs_retirement_warning(parse_parameters(EXAMPLE))
    assert line is not None and "\n" not in line
    assert ACS_RETIRED_ON in line and ACS_RETIREMENT in line and ACS_RETIREMENT_PAGE in line
    assert 'use trust = "app"' in line
    assert acs_retirement_warning(parse_parameters(app_data())) is None


def test_the_report_shows_the_retirement_for_acs_and_the_app_trust_for_app(app: SignedMsal, tmp_path: Path) -> None:
    from psbridge.report import build_report

    acs = build_report(Package(render_package(parse_parameters(EXAMPLE)).files), audit_log=tmp_path / "audit.jsonl")
    summary = acs.split('<section class="summary"', 1)[1].split("</section>", 1)[0]
    assert f"retired on\n{ACS_RETIRED_ON}" in summary and ACS_RETIREMENT in summary and ACS_RETIREMENT_PAGE in summary
    assert "The app trust" not in summary
    files = render_app(app)
    html = build_report(Package(files), audit_log=tmp_path / "audit.jsonl")
    summary = html.split('<section class="summary"', 1)[1].split("</section>", 1)[0]
    assert "The app trust" in summary and "Sites.FullControl.All is full control of every site in the tenant" in summary
    assert "recycles the CRM web" in summary and "removed only by hand" in summary
    payload = html.split('<section id="payload">', 1)[1].split("</section>", 1)[0]  # after page one (issue 21)
    for fact in app.payload.facts():
        assert fact["sha256"] in payload and fact["file"] in payload
    assert "CN=Microsoft Corporation,O=Microsoft Corporation" in payload and 'href="#payload"' in summary
