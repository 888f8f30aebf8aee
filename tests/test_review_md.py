"""REVIEW.md read by a real CommonMark parser (markdown-it-py): the wizard checklist's list
structure, step 03's wording, the parameters as canonical TOML, and the 100-column width."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from typing import Any

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markdown_it.tree import SyntaxTreeNode

from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.render import REVIEW_WIDTH, canonical_toml, render_package, toml_string, wrap_markdown

from support.packages import review_section

MD = MarkdownIt("commonmark").enable("table")
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def params(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    for dotted, value in changes.items():
        table, _, key = dotted.rpartition("__")
        (data[table] if table else data)[key] = value
    return data


def render(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    files = render_package(parse_parameters(data)).files
    return files["REVIEW.md"].decode("utf-8"), json.loads(files["plan.json"])


CASES = {
    "example": params(),
    "two-sites-tenant": params(sharepoint__sites=["https://contoso.sharepoint.com/sites/salesteam",
                                                  "https://contoso.sharepoint.com/sites/support"],
                               sharepoint__tenant_id=TENANT),
    "graph-app-only": {**params(profile="graph"), "graph": {
        "client_id": "11111111-2222-3333-4444-555555555555", "tenant_id": TENANT,
        "certificate_thumbprint": "0123456789ABCDEF0123456789ABCDEF01234567"}},
    "farm": params(crm__server="crm01.contoso.local", crm__additional_servers=["crm02.contoso.local",
                                                                               "crm03.contoso.local"]),
    "hostile": params(certificate__pfx_path="C:\\O'Brien #1\\`n $(calc).pfx",
                      certificate__service_account="contoso\\o'brien$",
                      crm__tools_dir="C:\\Dynamics 365\\Tööls ’x’"),
    "no-tools-dir": {**params(), "crm": {"root_domain": "*.contoso.com"}},
}




def inline_text(node: SyntaxTreeNode) -> str:
    """A paragraph's text, code spans in backticks, line breaks as spaces."""
    parts = []
    for leaf in node.children[0].children if node.type == "paragraph" else node.children:
        parts.append(f"`{leaf.content}`" if leaf.type == "code_inline" else " " if leaf.type == "softbreak"
                     else leaf.content)
    return "".join(parts)


# --------------------------------------------------------------------------- the wizard checklist


@pytest.mark.parametrize("case", ["example", "two-sites-tenant"])
def test_wizard_checklist_is_a_seven_item_list_with_each_site_its_own_item(case: str) -> None:
    data = CASES[case]
    review, _ = render(data)
    [checklist] = [n for n in review_section(review, "Manual step: the Enable Server-Based SharePoint Integration wizard")
                   if n.type == "ordered_list"]
    items = checklist.children
    assert len(items) == 7
    first, nested = items[4].children  # item 5: its sentence, then a list of what to enter
    assert inline_text(first) == "On the Prepare Sites stage, enter:"
    assert nested.type == "bullet_list"
    entries = [inline_text(item.children[0]) for item in nested.children]
    sites = data["sharepoint"]["sites"]
    tenant = data["sharepoint"].get("tenant_id")
    assert entries[:-1] == [f"site collection URL: `{site}`" for site in sites]
    assert entries[-1].startswith(f"tenant ID: `{tenant}`" if tenant else "tenant ID: the GUID step 08 prints")
    assert [c.type for c in items[5].children] == ["paragraph"]


# --------------------------------------------------------------------------- step 03


def test_step_03_says_when_it_changes_state_and_stays_a_session_step() -> None:
    review, plan = render(CASES["example"])
    step03 = plan["steps"][2]
    assert (step03["id"], step03["kind"], step03["changes_state"]) == ("session", "session", False)
    nodes = SyntaxTreeNode(MD.parse(review)).children
    start = next(i for i, n in enumerate(nodes) if n.type == "heading" and n.children[0].content == "Step 03/08 session")
    facts = next(n for n in nodes[start:] if n.type == "bullet_list")
    lines = {inline_text(i.children[0]).split(":", 1)[0]: inline_text(i.children[0]) for i in facts.children}
    changes_state = lines["Changes state"]
    assert not changes_state.startswith("Changes state: no")
    assert "restarts WinRM" in lines["What changes"]
    for words in ("only when a person runs it locally", "session step", "`psbridge run --from-step N`",
                  "`setup.ps1 -FromStep N`"):
        assert words in changes_state
    # steps that change nothing still say so plainly
    start = next(i for i, n in enumerate(nodes) if n.type == "heading" and n.children[0].content == "Step 04/08 connect")
    facts = next(n for n in nodes[start:] if n.type == "bullet_list")
    assert "Changes state: no" in [inline_text(i.children[0]) for i in facts.children]


# --------------------------------------------------------------------------- parameters as TOML


@pytest.mark.parametrize("case", list(CASES))
def test_parameters_block_is_toml_that_reads_back_as_plan_parameters(case: str) -> None:
    review, plan = render(CASES[case])
    [block] = [n for n in review_section(review, "Parameters") if n.type == "fence"]
    assert block.info == "toml"
    assert tomllib.loads(block.content) == plan["parameters"]
    lines = block.content.splitlines()
    for table in ("", *(k for k, v in plan["parameters"].items() if isinstance(v, dict))):
        values = plan["parameters"][table] if table else plan["parameters"]
        for key, value in values.items():
            if isinstance(value, str) and "'" not in value:  # a literal, never JSON's "C:\\x"
                assert f"{key} = '{value}'" in lines


def test_parameters_use_single_quoted_literals_where_toml_allows() -> None:
    review, _ = render(CASES["hostile"])
    [block] = [n for n in review_section(review, "Parameters") if n.type == "fence"]
    lines = block.content.splitlines()
    assert "name = 'contoso'" in lines and "profile = 'msonline'" in lines
    assert "cer_path = 'C:\\Personalcertfile.cer'" in lines
    assert "tools_dir = 'C:\\Dynamics 365\\Tööls ’x’'" in lines  # typographic quotes fit a literal
    # an apostrophe cannot be in a literal string: a basic string with escapes
    assert 'pfx_path = "C:\\\\O\'Brien #1\\\\`n $(calc).pfx"' in lines
    assert 'service_account = "contoso\\\\o\'brien$"' in lines
    assert "sites = ['https://contoso.sharepoint.com/sites/salesteam']" in lines


@pytest.mark.parametrize("value,expected", [
    ("C:\\x", "'C:\\x'"),
    ("it's", '"it\'s"'),
    ('say "hi"', "'say \"hi\"'"),
    ("a\tb", '"a\\tb"'),
    ("line\nbreak\r", '"line\\nbreak\\r"'),
    ("bell\x07 del\x7f", '"bell\\u0007 del\\u007F"'),
    ("back\\slash'", '"back\\\\slash\'"'),
    ("", "''"),
])
def test_toml_string_literal_or_escaped_basic_string(value: str, expected: str) -> None:
    assert toml_string(value) == expected
    assert tomllib.loads(f"k = {expected}")["k"] == value


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.one_of(st.text(), st.booleans(), st.integers(), st.lists(st.text(), max_size=3),
              st.dictionaries(st.text(min_size=1, max_size=5), st.one_of(st.text(), st.lists(st.text())), max_size=3)),
    max_size=5,
))
def test_canonical_toml_reads_back_as_the_data(data: dict[str, Any]) -> None:
    assert tomllib.loads(canonical_toml(data)) == data


# --------------------------------------------------------------------------- width


def code_lines(text: str) -> set[int]:
    """0-based numbers of the lines that fenced or indented code blocks occupy."""
    return {n for t in MD.parse(text) if t.type in ("fence", "code_block") and t.map for n in range(*t.map)}


@pytest.mark.parametrize("case", list(CASES))
def test_no_line_outside_code_is_wider_than_100_columns(case: str) -> None:
    review, _ = render(CASES[case])
    code = code_lines(review)
    wide = [(n + 1, line) for n, line in enumerate(review.split("\n")) if n not in code and len(line) > REVIEW_WIDTH]
    assert wide == []


def test_only_a_value_too_long_for_a_line_may_be_wider() -> None:
    folder = "C:\\" + "\\".join(["Very Long Folder Name"] * 9)
    review, _ = render(params(crm__tools_dir=folder))
    code = code_lines(review)
    wide = [line for n, line in enumerate(review.split("\n")) if n not in code and len(line) > REVIEW_WIDTH]
    assert wide and all(line.strip() in (f"`{folder}`", f"`{folder}`,", f"`{folder}`.") or
                        re.fullmatch(r"\s*(- )?[\w .:]*`" + re.escape(folder) + r"`[,.]?", line) for line in wide), wide


# --------------------------------------------------------------------------- wrapping keeps the meaning


def shape(text: str) -> list[tuple[Any, ...]]:
    """The parse tree as a list, with soft line breaks read as spaces (what wrapping changes)."""
    out = []
    for token in MD.parse(text):
        if token.type == "inline":
            content = "".join(_inline(child) for child in token.children or [])
            out.append(("inline", token.level, re.sub(r"\s+", " ", content).strip()))
        else:
            out.append((token.type, token.tag, token.nesting, token.level, token.info, token.hidden,
                        token.content if token.type in ("fence", "code_block", "html_block") else ""))
    return out


def _inline(child: Token) -> str:
    if child.type == "softbreak":
        return " "
    if child.type == "text":
        return child.content
    if child.type == "code_inline":
        return f"<code>{child.content}</code>"
    return f"<{child.type}>{child.content}"


@pytest.mark.parametrize("case", list(CASES))
def test_rewrapping_review_narrower_keeps_its_structure(case: str) -> None:
    review, _ = render(CASES[case])
    narrow = wrap_markdown(review, 30)
    assert narrow != review
    assert shape(narrow) == shape(review)


WORDS = st.sampled_from(["word", "a", "longer-word", "-", "+", "*", "1.", "2)", "#", "##", ">", "|", "=", "===",
                         "---", "<div>", "<!--", "`code span`", "``two ` ticks``", "```", "~~~", "_", "C:\\",
                         "**bold**", "x\\", "[link](u)"])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["", "- ", "1. ", "   - ", "  "]), st.lists(WORDS, min_size=1, max_size=40),
       st.integers(min_value=8, max_value=60))
def test_wrapping_never_changes_what_markdown_makes_of_a_line(prefix: str, words: list[str], width: int) -> None:
    line = prefix + "start " + " ".join(words)
    text = f"# Title\n\n{line}\n\nafter\n"
    wrapped = wrap_markdown(text, width)
    assert shape(wrapped) == shape(text), wrapped


# --------------------------------------------------------------------------- issue 21: the brief first


#: Every section REVIEW.md of the example has, in order: the brief, the back-out plan in words and the
#: steps first; the detail, the full PowerShell and the hash table after.
EXAMPLE_SECTIONS = [
    "Brief", "Back-out plan", "The steps", "The package", "What will change, and where", "Servers",
    "Irreversible and risky parts", "Prerequisites", "Parameters", "Steps", "Read-only probes (`psbridge check`)",
    "Back-out scripts", "The run lock (`psbridge run`)",
    "Manual step: the Enable Server-Based SharePoint Integration wizard", "Files and hashes",
]
BRIEF_MAX_LINES = 40


def h2(review: str) -> list[str]:
    return [n.children[0].content for n in SyntaxTreeNode(MD.parse(review)).children
            if n.type == "heading" and n.tag == "h2"]


def brief_of(review: str) -> list[str]:
    """The brief's lines: from its heading to the next section's."""
    return review.split("## Brief\n", 1)[1].split("\n## ", 1)[0].strip("\n").split("\n")


BRIEF_CASES = {
    **CASES,
    "change-iso": {**params(), "change": {"ticket": "CHG-21", "window": "2026-12-12T20:00+01:00/2026-12-12T22:00+01:00",
                                          "summary": " ".join(["word"] * 99)}},
    "renewal-farm-graph": {**params(profile="graph", crm__server="crm01.contoso.local",
                                    crm__additional_servers=["crm02.contoso.local"]),
                           "certificate": {**EXAMPLE["certificate"], "replaces": "B" * 40}},
}


@pytest.mark.parametrize("case", list(BRIEF_CASES))
def test_the_brief_comes_first_and_fits_one_screen(case: str) -> None:
    review, plan = render(BRIEF_CASES[case])
    headings = h2(review)
    assert headings[:3] == ["Brief", "Back-out plan", "The steps"]
    lines = brief_of(review)
    assert len(lines) <= BRIEF_MAX_LINES, "\n".join(lines)
    items = {line[2:].split(":", 1)[0] for line in lines if line.startswith("- ")}
    assert {"What", "Where", "Window", "Back-out (\"Back-out plan\" below)"} <= items, items
    assert any(line.startswith("- Risk, heaviest first") for line in lines)
    # every state-changing step's back-out is named in the brief, scripted or by hand
    for step in (s for s in plan["steps"] if s["changes_state"]):
        assert any(f"{step['index']:02d}/" in line and step["id"] in line and ("scripted" in line or "by hand" in line)
                   for line in lines), step["id"]
    # the hash table and the full PowerShell come after the steps
    assert review.index("## The steps") < review.index("```powershell\n# psbridge step 01/")
    assert review.index("## The steps") < review.index("| sha256 of setup.ps1 |") < review.index("## Files and hashes")


def test_every_section_is_still_there_in_order() -> None:
    review, _ = render(CASES["example"])
    assert h2(review) == EXAMPLE_SECTIONS


def test_the_brief_lists_the_risks_of_the_one_list_heaviest_first() -> None:
    from psbridge.catalogue import layout_for
    from psbridge.risks import package_risks

    for data in (CASES["example"], BRIEF_CASES["renewal-farm-graph"]):
        review, _ = render(data)
        p = parse_parameters(data)
        layout = layout_for(p)
        risks = package_risks(p, layout.constants, {s.id: f"{s.index:02d}" for s in layout.steps})
        listed = [line.split(". ", 1)[1] for line in brief_of(review) if re.match(r"  \d+\. ", line)]
        assert listed == [r.title for r in risks]
        assert listed[0].startswith("Azure ACS retired on")  # the ACS retirement first while trust = "acs"
        section = review.split("## Irreversible and risky parts\n\n", 1)[1].split("\n## ", 1)[0]
        assert section.count("\n- ") + section.startswith("- ") == len(risks)


def test_the_back_out_plan_says_step_02s_manual_back_out_in_words() -> None:
    review, _ = render(CASES["example"])
    plan = " ".join(review.split("## Back-out plan\n", 1)[1].split("\n## ", 1)[0].split())
    assert "Step `02/08 certificate` (Prepare the certificate): not scripted. The previous S2S certificate's " \
           "private key is not in the package" in plan
    assert "Step `06/08 spn`" in plan and "`psbridge rollback` sends `rollback/06-spn.ps1`" in plan
    assert "The wizard: After the Enable Server-Based SharePoint Integration wizard" in plan
    assert "```" not in plan  # the scripts are in "Back-out scripts", after the steps
    scripts = review.split("## Back-out scripts\n", 1)[1].split("\n## ", 1)[0]
    assert "### Back-out of step `06/08 spn`" in scripts and "```powershell" in scripts


@pytest.mark.parametrize(("window", "check"), [
    ("2026-12-12T20:00+01:00/2026-12-12T22:00+01:00", "- Window check: `2026-12-12 20:00 to 22:00 (UTC+01:00)"),
    ("Saturday 20:00-22:00 CET", "- Window check: free text, so psbridge cannot check that approvals cover it."),
])
def test_the_brief_says_whether_the_window_can_be_checked(window: str, check: str) -> None:
    review, _ = render({**params(), "change": {"window": window}})
    assert check in "\n".join(brief_of(review))
    plain, _ = render(params())
    assert "- Window: not given, so psbridge cannot check that approvals cover one." in brief_of(plain)


def test_the_back_out_plan_names_rollback_last() -> None:
    """The board's back-out command is the one README's workflow uses (`--last`), which a second run record
    (a failed login makes one) does not break; `--run` still names one record."""
    review, _ = render(CASES["example"])
    plan = " ".join(review.split("## Back-out plan\n", 1)[1].split("\n## ", 1)[0].split())
    assert "`psbridge rollback PACKAGE --last`" in plan and "`--run runs/<record>.jsonl`" in plan, plan
