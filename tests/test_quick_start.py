"""The README's Quick start runs as written after its first command; init names its own file;
a parameters file that still holds the article's example values is warned about."""

from __future__ import annotations

import glob
import re
import shlex
from pathlib import Path

import pytest
from support.cli import CHECKOUT
from support.msal import SignedMsal, app_stand_ins, make_signed_msal, trust_test_root, write_nupkg

README = (CHECKOUT / "README.md").read_text(encoding="utf-8")
WARNING = "still holds the article's example values"


@pytest.fixture(scope="module")
def msal(tmp_path_factory: pytest.TempPathFactory) -> SignedMsal:
    return make_signed_msal(tmp_path_factory.mktemp("msal"))


@pytest.fixture(autouse=True)
def msal_next_to_the_parameters(msal: SignedMsal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """init writes trust = "app": render reads the MSAL .nupkg the file names, next to it (as an operator
    downloads it), and trusts the test CA that signed its DLL (for this test only)."""
    trust_test_root(monkeypatch, msal)
    app_stand_ins(monkeypatch, tmp_path / ".stand-ins")
    write_nupkg(tmp_path / "parameters.toml", msal)


def quick_start() -> list[list[str]]:
    """The Quick start's console commands, comments dropped."""
    section = README.split("## Quick start", 1)[1]
    block = section.split("```console\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line[2:], comments=True) for line in block.splitlines() if line.startswith("$ ")]


def test_quick_start_runs_after_the_readmes_first_command(psbridge, tmp_path: Path) -> None:
    first = re.search(r"^    python3 .*? && \.venv/bin/(psbridge .*)$", README, re.M)
    assert first, "the README's first command"
    words = shlex.split(first.group(1))
    assert psbridge(*words[1:]).exit_code == 0  # output/contoso/ exists from here on
    commands = quick_start()
    assert [c[0] for c in commands] == ["psbridge", "$EDITOR", "cp", "psbridge", "psbridge", "less"]
    for command in commands:
        if command[0] == "cp":  # the operator's NuGet download: the fixture put the test package there
            assert (tmp_path / command[2]).is_file()
        elif command[0] == "psbridge":
            result = psbridge(*command[1:])
            assert result.exit_code == 0, (command, result.stderr)
        elif command[0] == "less":
            assert [Path(p).is_file() for p in glob.glob(str(tmp_path / command[1]))] == [True]


def test_init_names_its_own_file_in_the_header(psbridge, tmp_path: Path, msal: SignedMsal) -> None:
    assert psbridge("init", "fabrikam.toml").exit_code == 0
    text = (tmp_path / "fabrikam.toml").read_text(encoding="utf-8")
    assert "#   psbridge validate fabrikam.toml\n#   psbridge render fabrikam.toml\n" in text
    assert "parameters.toml" not in text and "{file}" not in text
    (tmp_path / "my configs").mkdir()
    write_nupkg(tmp_path / "my configs" / "prod.toml", msal)
    assert psbridge("init", "my configs/prod.toml").exit_code == 0
    assert "#   psbridge validate 'my configs/prod.toml'\n" in (tmp_path / "my configs" / "prod.toml").read_text()
    assert psbridge("validate", "my configs/prod.toml").exit_code == 0


def test_an_untouched_example_file_validates_with_one_warning_line(psbridge, tmp_path: Path) -> None:
    assert psbridge("init", "p.toml").exit_code == 0
    for command in (("validate", "p.toml"), ("render", "p.toml", "--out", "out")):
        result = psbridge(*command)
        assert result.exit_code == 0
        # The warning wraps at 100 columns: its lines (the first, then those that hang under it), joined.
        lines = result.stderr.splitlines()
        [first] = [i for i, line in enumerate(lines) if line.startswith("psbridge: warning: p.toml ")]
        hanging = [line for line in lines[first + 1:] if line.startswith("    ")]
        assert hanging == lines[first + 1:first + 1 + len(hanging)]
        assert " ".join(x.strip() for x in lines[first:first + 1 + len(hanging)]) == (
            "psbridge: warning: p.toml still holds the article's example values (certificate.service_account, "
            "crm.root_domain, sharepoint.sites): replace them with yours")
        assert " ".join(result.stderr.split()).count(WARNING) == 1  # one warning, as before


def test_the_example_values_warning_wraps_at_100_columns(psbridge, tmp_path: Path, msal: SignedMsal) -> None:
    """Issue 21: the warning was one line of 168 columns with a usual path; it wraps, its words unchanged."""
    write_nupkg(tmp_path / "parameters-of-the-production-farm" / "prod.toml", msal)
    assert psbridge("init", "parameters-of-the-production-farm/prod.toml").exit_code == 0
    result = psbridge("validate", "parameters-of-the-production-farm/prod.toml")
    assert result.exit_code == 0, result.stderr
    warning = ("psbridge: warning: parameters-of-the-production-farm/prod.toml still holds the article's example "
               "values (certificate.service_account, crm.root_domain, sharepoint.sites): replace them with yours")
    assert len(warning) > 160 and warning in " ".join(result.stderr.split())
    assert max(len(line) for line in result.stderr.splitlines()) <= 100, result.stderr


def test_own_values_and_the_builtin_example_give_no_warning(psbridge, tmp_path: Path) -> None:
    assert psbridge("init", "p.toml").exit_code == 0
    path = tmp_path / "p.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("contoso\\CRMWebApplicationService", "FABRIKAM\\svc-crm")
                    .replace("*.contoso.com", "*.fabrikam.com")
                    .replace("https://contoso.sharepoint.com/sites/salesteam", "https://fabrikam.sharepoint.com/sites/crm"),
                    encoding="utf-8")
    result = psbridge("validate", "p.toml")
    assert result.exit_code == 0 and WARNING not in result.stderr
    # one field left is still named
    path.write_text(path.read_text(encoding="utf-8").replace("*.fabrikam.com", "*.CONTOSO.com"), encoding="utf-8")
    assert "(crm.root_domain)" in psbridge("validate", "p.toml").stderr
    example = psbridge("render", "--example")
    assert example.exit_code == 0 and WARNING not in example.stderr  # the example says what it is


def test_readme_documents_shell_completion() -> None:
    assert "psbridge completion bash|zsh|fish" in README
    for shell in ("bash", "zsh", "fish"):
        assert f"psbridge completion {shell}" in README
