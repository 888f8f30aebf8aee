"""The `psbridge` command for issue 2: init, validate, schema, render; exit codes and errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from support.cli import Result

GOOD = Path(__file__).parent / "data" / "article.md"  # any non-TOML text file

VALID = r"""
name = "contoso"
profile = "msonline"
[certificate]
pfx_path = 'C:\Personalcertfile.pfx'
cer_path = 'C:\Personalcertfile.cer'
service_account = 'contoso\CRMWebApplicationService'
[crm]
root_domain = "*.contoso.com"
[sharepoint]
sites = ["https://contoso.sharepoint.com/sites/salesteam"]
"""


def write_params(tmp_path: Path, text: str, name: str = "params.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def replace_line(key: str, new: str) -> str:
    """VALID with the line of `key` replaced by `new` (or `new` added to the table when absent)."""
    lines = VALID.splitlines()
    hits = [i for i, line in enumerate(lines) if line.startswith(f"{key} =")]
    if hits:
        lines[hits[0]] = new
    return "\n".join(lines) + "\n"


def test_render_example_writes_the_package(psbridge, tmp_path: Path) -> None:
    result = psbridge("render", "--example", subprocess=True)
    assert result.exit_code == 0, result.stderr
    assert "wrote output/contoso/ (8 steps)" in result.stdout
    files = sorted(p.relative_to(tmp_path / "output/contoso").as_posix() for p in (tmp_path / "output/contoso").rglob("*") if p.is_file())
    probes = [f"probes/{n}.ps1" for n in ("certificate", "crm", "entra", "server")]
    assert files == ["REVIEW.md", "lock.ps1", "plan.json", *probes, "rollback/06-spn.ps1", "rollback/07-crm-settings.ps1",
                     "setup.ps1", *[f"steps/0{i}-{n}.ps1" for i, n in enumerate(
        ["prerequisites", "certificate", "session", "connect", "set-certificate", "spn", "crm-settings", "tenant-id"], 1)]]


def test_render_refuses_to_overwrite_without_force_and_keeps_evidence_with_it(psbridge, tmp_path: Path) -> None:
    assert psbridge("render", "--example").exit_code == 0
    runs = tmp_path / "output/contoso/runs"
    runs.mkdir()
    (runs / "r.jsonl").write_text("{}\n")
    again = psbridge("render", "--example")
    assert again.exit_code == 2 and "already exists; use --force" in again.stderr
    forced = psbridge("render", "--example", "--force")
    assert forced.exit_code == 0
    assert (runs / "r.jsonl").read_text() == "{}\n"
    assert sorted(p.name for p in (tmp_path / "output").iterdir()) == ["audit.jsonl", "contoso"], \
        "no temporary folder left behind (audit.jsonl is the default audit log)"


def test_render_from_a_file_and_out_dir(psbridge, tmp_path: Path) -> None:
    params = write_params(tmp_path, VALID.replace('"contoso"', '"fabrikam"'))
    result = psbridge("render", params, "--out", tmp_path / "pk")
    assert result.exit_code == 0, result.stderr
    plan = json.loads((tmp_path / "pk/fabrikam/plan.json").read_text())
    assert plan["name"] == "fabrikam"


def test_same_parameters_give_the_same_bytes(psbridge, tmp_path: Path) -> None:
    params = write_params(tmp_path, VALID)
    assert psbridge("render", params, "--out", "a").exit_code == 0
    assert psbridge("render", params, "--out", "b").exit_code == 0
    a = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a" / "contoso").rglob("*") if p.is_file()}
    b = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b" / "contoso").rglob("*") if p.is_file()}
    assert a == b and len(a) == 18


def test_init_writes_a_valid_commented_file_and_refuses_to_overwrite(psbridge, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from support.msal import make_signed_msal, trust_test_root, write_nupkg

    assert psbridge("init", "p.toml").exit_code == 0
    text = (tmp_path / "p.toml").read_text()
    assert text.count("\n#") > 5 and "pfx_path = 'C:\\Personalcertfile.pfx'" in text
    # The app trust's MSAL package is the operator's download: until it is next to the file, validate
    # says so (exit 2); with it, the file init wrote is valid as written.
    missing = psbridge("validate", "p.toml")
    assert missing.exit_code == 2 and "app.msal_package" in missing.stderr
    msal = make_signed_msal(tmp_path / "msal")
    trust_test_root(monkeypatch, msal)
    write_nupkg(tmp_path / "p.toml", msal)
    assert psbridge("validate", "p.toml").exit_code == 0
    again = psbridge("init", "p.toml")
    assert again.exit_code == 2 and "p.toml: exists; use --force to replace it" in again.stderr
    assert psbridge("init", "p.toml", "--force").exit_code == 0


def test_schema_is_json_schema_of_the_file(psbridge) -> None:
    result = psbridge("schema")
    schema = json.loads(result.stdout)
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"name", "profile", "trust", "certificate", "crm", "sharepoint", "app", "graph",
                                        "change"}
    assert schema["properties"]["trust"]["enum"] == ["acs", "app"]
    assert schema["properties"]["profile"]["enum"] == ["msonline", "graph"]


def test_version_and_help_with_examples(psbridge) -> None:
    version = psbridge("--version", subprocess=True)
    assert version.exit_code == 0 and re.fullmatch(r"psbridge \d+\.\d+\.\d+\n", version.stdout)
    for command in ("init", "validate", "schema", "render"):
        result = psbridge(command, "--help")
        assert result.exit_code == 0 and "Example" in result.stdout, command


BAD_INPUTS = [
    ("name", replace_line("name", 'name = "Contoso"'), "name: use lowercase letters"),
    ("missing pfx", replace_line("pfx_path", ""), "certificate.pfx_path: required"),
    ("relative pfx", replace_line("pfx_path", "pfx_path = 'certs\\a.pfx'"), "certificate.pfx_path: must be an absolute Windows path"),
    ("pfx suffix", replace_line("pfx_path", "pfx_path = 'C:\\a.p12'"), "certificate.pfx_path: must end with .pfx"),
    ("pfx forbidden char", replace_line("pfx_path", "pfx_path = 'C:\\a|b.pfx'"), "certificate.pfx_path: character '|' is not allowed"),
    ("pfx control char", replace_line("pfx_path", 'pfx_path = "C:\\\\a\\tb.pfx"'), "certificate.pfx_path: contains a control character"),
    ("pfx slashes", replace_line("pfx_path", "pfx_path = 'C:/a.pfx'"), "certificate.pfx_path: use backslashes"),
    ("pfx reserved", replace_line("pfx_path", "pfx_path = 'C:\\certs\\CON.pfx'"), "certificate.pfx_path: 'CON.pfx' is a reserved device name"),
    ("pfx dotdot", replace_line("pfx_path", "pfx_path = 'C:\\a\\..\\b.pfx'"), "certificate.pfx_path: '.' and '..' are not allowed"),
    ("cer suffix", replace_line("cer_path", "cer_path = 'C:\\a.crt'"), "certificate.cer_path: must end with .cer"),
    ("unc too short", replace_line("cer_path", "cer_path = '\\\\server\\a.cer'"), "certificate.cer_path: a UNC path needs"),
    ("account form", replace_line("service_account", "service_account = 'CRMService'"), "certificate.service_account: must be DOMAIN\\user or Network Service"),
    ("account char", replace_line("service_account", "service_account = 'contoso\\a;b'"), "certificate.service_account: character ';' is not allowed"),
    ("cert type", replace_line("service_account", "service_account = 'contoso\\svc'\ncertificate_type = 'Other'"), "certificate.certificate_type: must be 'S2STokenIssuer' or 'AlternativeS2STokenIssuer'"),
    ("root no star", replace_line("root_domain", 'root_domain = "contoso.com"'), "crm.root_domain: must start with '*.'"),
    ("root one label", replace_line("root_domain", 'root_domain = "*.contoso"'), "crm.root_domain: domain needs at least two labels"),
    ("root bad label", replace_line("root_domain", 'root_domain = "*.-x.com"'), "crm.root_domain: '-x' is not a valid DNS label"),
    ("root ip", replace_line("root_domain", 'root_domain = "*.10.0.0.1"'), "crm.root_domain: domain must be a DNS name, not an IP address"),
    ("tools dir", replace_line("root_domain", 'root_domain = "*.contoso.com"\ntools_dir = "Tools"'), "crm.tools_dir: must be an absolute Windows path"),
    ("no sites", replace_line("sites", "sites = []"), "sharepoint.sites: List should have at least 1 item"),
    ("http site", replace_line("sites", 'sites = ["http://contoso.sharepoint.com/sites/a"]'), "sharepoint.sites[1]: must be an https:// URL"),
    ("not spo", replace_line("sites", 'sites = ["https://contoso.example.com/sites/a"]'), "sharepoint.sites[1]: 'contoso.example.com' is not a SharePoint Online host"),
    ("two tenants", replace_line("sites", 'sites = ["https://a.sharepoint.com/sites/x", "https://b.sharepoint.com/sites/y"]'), "sharepoint: all sites must be on one SharePoint Online tenant"),
    ("admin host", replace_line("sites", 'sites = ["https://contoso-admin.sharepoint.com/"]'), "sharepoint.sites[1]: 'contoso-admin.sharepoint.com' is the admin center"),
    ("site query", replace_line("sites", 'sites = ["https://contoso.sharepoint.com/sites/a?x=1"]'), "sharepoint.sites[1]: must be a plain site URL"),
    ("tenant guid", replace_line("sites", 'sites = ["https://contoso.sharepoint.com/sites/a"]\ntenant_id = "contoso"'), "sharepoint.tenant_id: must be a GUID"),
    ("typo key", replace_line("root_domain", 'root_domian = "*.contoso.com"'), "crm.root_domian: unknown key (did you mean 'root_domain'?)"),
    ("password key", replace_line("pfx_path", "pfx_path = 'C:\\a.pfx'\npfx_password = 'hunter2'"), "certificate.pfx_password: secrets do not belong in the parameters file"),
    ("profile", replace_line("profile", 'profile = "azuread"'), "profile: must be 'msonline'"),
    ("toml syntax", "name = \n", "params.toml: not valid TOML"),
]


@pytest.mark.parametrize("label,text,expected", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
@pytest.mark.parametrize("command", ["validate", "render"])
def test_bad_input_exit_2_names_the_field_and_writes_nothing(psbridge, tmp_path: Path, command: str, label: str,
                                                            text: str, expected: str) -> None:
    params = write_params(tmp_path, text)
    result: Result = psbridge(command, params)
    assert result.exit_code == 2
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert all(line.startswith("psbridge: error: ") for line in result.stderr.splitlines())
    assert not (tmp_path / "output").exists()
    assert "hunter2" not in result.stderr


def test_validate_lists_every_problem(psbridge, tmp_path: Path) -> None:
    text = VALID.replace('"contoso"', '"Bad Name"', 1).replace("*.contoso.com", "contoso.com").replace("'C:\\Personalcertfile.cer'", "'x.cer'")
    result = psbridge("validate", write_params(tmp_path, text))
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 3, result.stderr


@pytest.mark.parametrize("args,expected", [
    (["render"], "render: give either a parameters file or --example"),
    (["render", "--example", "x.toml"], "render: give either a parameters file or --example"),
    (["validate", "missing.toml"], "missing.toml: cannot read"),
    (["render", "--bogus"], "No such option '--bogus'"),
    (["frobnicate"], "No such command 'frobnicate'"),
])
def test_usage_errors_exit_2(psbridge, args: list[str], expected: str) -> None:
    result = psbridge(*args)
    assert result.exit_code == 2 and expected in result.stderr
    assert "Traceback" not in result.stderr


def test_not_utf8_and_not_toml_files(psbridge, tmp_path: Path) -> None:
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00name")
    assert "bin.toml: not UTF-8 text" in psbridge("validate", "bin.toml").stderr
    assert "not valid TOML" in psbridge("validate", GOOD).stderr


def test_unwritable_output_is_an_error_and_leaves_nothing(psbridge, tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where the output folder should be")
    result = psbridge("render", "--example", "--out", "blocked/sub")
    assert result.exit_code == 2 and "blocked/sub: cannot create the output folder" in result.stderr
    assert (tmp_path / "blocked").read_text().startswith("a file")


def test_a_failed_write_leaves_no_half_written_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from psbridge.errors import UserError
    from psbridge.parameters import example
    from psbridge.render import render_package
    from psbridge.writer import write_package

    package = render_package(example())
    real_open = open
    calls = {"n": 0}

    def failing_open(path, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if "w" in mode:
            calls["n"] += 1
            if calls["n"] == 5:
                raise OSError(28, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(UserError, match="No space left on device"):
        write_package(package, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_secrets_in_the_environment_never_reach_a_written_file(psbridge, tmp_path: Path) -> None:
    secrets = {"PSBRIDGE_PFX_PASSWORD": "pfx-S3cret-9f1e", "PSBRIDGE_O365_PASSWORD": "o365-S3cret-77ab",
               "PSBRIDGE_WINRM_PASSWORD": "winrm-S3cret-c0de"}
    assert psbridge("render", "--example", env=secrets, subprocess=True).exit_code == 0
    assert psbridge("render", write_params(tmp_path, VALID.replace('"contoso"', '"second"')), env=secrets).exit_code == 0
    assert psbridge("init", "p.toml", env=secrets).exit_code == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 23
    for path in written:
        data = path.read_bytes()
        for value in secrets.values():
            assert value.encode() not in data, path


def test_package_files_are_readable_not_executable(psbridge, tmp_path: Path) -> None:
    assert psbridge("render", "--example").exit_code == 0
    for path in (tmp_path / "output/contoso").rglob("*"):
        if path.is_file():
            assert oct(path.stat().st_mode & 0o777) in {"0o644", "0o600"}, path


def test_validate_and_render_speak_json_when_asked(psbridge, tmp_path: Path) -> None:
    """`--json`: one JSON object on stdout, the warnings on stderr (issue 21)."""
    write_params(tmp_path, VALID, "c.toml")
    checked = psbridge("validate", "c.toml", "--json")
    assert checked.exit_code == 0, checked.stderr
    assert json.loads(checked.stdout) == {"file": "c.toml", "valid": True, "name": "contoso", "profile": "msonline",
                                          "trust": "acs"}
    assert "retired" in checked.stderr  # the ACS warning stays a warning line
    written = psbridge("render", "c.toml", "--out", "out", "--json")
    assert written.exit_code == 0, written.stderr
    document = json.loads(written.stdout)
    assert document["package"] == str(Path("out") / "contoso") and document["steps"] == 8
    assert re.fullmatch(r"[0-9a-f]{64}", document["digest"]) and re.fullmatch(r"[0-9a-f]{64}", document["audit_head"])
