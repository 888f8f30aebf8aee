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
