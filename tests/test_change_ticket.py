"""The optional `[change]` table (ticket, summary, window): validated like every other field,
shown in REVIEW.md and the report, and the ticket on every audit line about the package.

A package without `[change]` renders exactly as before: the golden files and every other test
are unchanged, and here the renders with and without the table differ only by the table itself.
"""

from __future__ import annotations

import copy
import html as html_module
import json
import re
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from psbridge import audit
from psbridge.package import Package, read_package
from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.render import REVIEW_WIDTH, canonical_toml, render_package

from support.lab import O365_USER, USER
from support.packages import review_section
from support.winrm_peer import Reply
from support.winrm_peer.package import make_package, marker

MD = MarkdownIt("commonmark").enable("table")

CHANGE = {"ticket": "CHG-1234", "summary": "S2S between Dynamics 365 and SharePoint Online for the sales team.",
          "window": "2026-12-05 20:00-22:00 CET"}
#: Markdown and HTML that must be shown as text: backticks, a list marker, a heading, a pipe, a link, a tag.
HOSTILE = {"ticket": "`CHG`-1 | <b>x</b>", "window": "# 20:00 *to* 22:00 [now](http://x)",
           "summary": "- `` two ticks `` and <script>alert(1)</script> & \u00e9t\u00e9 ` "}


def with_change(change: dict[str, Any] | None, base: dict[str, Any] | None = None) -> dict[str, Any]:
    data = copy.deepcopy(base or EXAMPLE)
    if change is not None:
        data["change"] = change
    return data


def render(data: dict[str, Any]) -> dict[str, bytes]:
    return render_package(parse_parameters(data)).files


def write_params(folder: Path, data: dict[str, Any], name: str = "p.toml") -> Path:
    path = folder / name
    path.write_text(canonical_toml(data) + "\n", encoding="utf-8")
    return path


def audit_lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- the parameters


def test_the_change_table_is_optional_and_its_fields_are_kept() -> None:
    assert parse_parameters(EXAMPLE).change is None
    params = parse_parameters(with_change(CHANGE))
    assert (params.change.ticket, params.change.summary, params.change.window) == (
        CHANGE["ticket"], CHANGE["summary"], CHANGE["window"])
    assert parse_parameters(with_change({"ticket": "CHG-1"})).change.summary is None


def test_validate_accepts_the_change_table_at_its_limits(psbridge, tmp_path: Path) -> None:
    change = {"ticket": "T" * 100, "summary": "s" * 500, "window": "w" * 100}
    result = psbridge("validate", write_params(tmp_path, with_change(change)))
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize(("change", "message"), [
    ({"ticket": "T" * 101}, "change.ticket: longer than 100 characters (101)"),
    ({"window": "w" * 101}, "change.window: longer than 100 characters (101)"),
    ({"summary": "s" * 501}, "change.summary: longer than 500 characters (501)"),
    ({"ticket": "   "}, "change.ticket: must not be empty"),
    ({"summary": ""}, "change.summary: must not be empty"),
    ({}, "change: give ticket, summary or window"),
    ({"ticket": "CHG-1", "tiket": "CHG-1"}, "change.tiket: unknown key"),
    ({"summary": "first paragraph.\n\nsecond paragraph."}, "change.summary: contains a control character or line "
                                                           "break (U+000A"),
    ({"summary": "one\u2029two"}, "change.summary: contains a control character or line break (U+2029"),
    ({"ticket": "CHG-\u202e4321"}, "change.ticket: contains the invisible character U+202E"),
    ({"window": "20:00\x1b[2K-22:00"}, "change.window: contains a control character or line break (U+001B"),
    ({"ticket": 1234}, "change.ticket: "),
])
def test_validate_refuses_a_bad_change_table_naming_the_field(psbridge, tmp_path: Path, change: dict[str, Any],
                                                             message: str) -> None:
    result = psbridge("validate", write_params(tmp_path, with_change(change)))
    assert result.exit_code == 2, result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("psbridge: error: ") and message in lines[0], result.stderr
    assert "\x1b" not in result.stderr and "\u202e" not in result.stderr


def test_a_long_bad_summary_gives_one_short_line(psbridge, tmp_path: Path) -> None:
    result = psbridge("validate", write_params(tmp_path, with_change({"summary": "x" * 900_000})))
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and len(result.stderr) < 200, result.stderr[:300]
    assert "change.summary: longer than 500 characters (900000)" in result.stderr


def test_the_schema_documents_the_change_table(psbridge) -> None:
    schema = json.loads(psbridge("schema").stdout)
    fields = schema["$defs"]["Change"]["properties"]
    assert set(fields) == {"ticket", "summary", "window"}
    assert schema["$defs"]["Change"]["additionalProperties"] is False
    assert "100" in fields["ticket"]["description"] and "500" in fields["summary"]["description"]


def test_the_init_file_documents_the_change_table_and_validates_uncommented(psbridge, tmp_path: Path,
                                                                           msal_package) -> None:
    assert psbridge("init", "p.toml").exit_code == 0
    text = (tmp_path / "p.toml").read_text(encoding="utf-8")
    block = [line for line in text.splitlines() if re.match(r"# (\[change\]|ticket|window|summary) ", line + " ")]
    assert [line.split()[1] for line in block] == ["[change]", "ticket", "window", "summary"]
    uncommented = text
    for line in block:
        uncommented = uncommented.replace(line + "\n", line.removeprefix("# ") + "\n")
    (tmp_path / "q.toml").write_text(uncommented, encoding="utf-8")
    assert psbridge("validate", "p.toml").exit_code == 0
    result = psbridge("render", "q.toml", "--out", "out")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "out" / "p" / "plan.json").read_text())["parameters"]["change"]["ticket"] \
        == "CHG-1234"


# --------------------------------------------------------------------------- REVIEW.md




#: The brief's items that show the [change] table (issue 21: the change is in the one-screen brief).
CHANGE_LABELS = ("Ticket", "Window", "Summary")


def change_items(review: str) -> dict[str, list[tuple[str, str]]]:
    """The brief's change items as {label: [(token type, content), ...]} read by a CommonMark parser."""
    [bullets] = review_section(review, "Brief")
    assert bullets.type == "bullet_list"
    items = {}
    for item in bullets.children:
        paragraph = item.children[0]
        leaves = [(leaf.type, leaf.content) for leaf in paragraph.children[0].children]
        label = leaves[0][1].strip().rstrip(":")
        if label in CHANGE_LABELS:
            assert len(item.children) == 1, label
            items[label] = [leaf for leaf in leaves[1:] if leaf[0] != "softbreak" and leaf[1].strip()]
    return items


def test_review_shows_the_change_near_the_top() -> None:
    review = render(with_change(CHANGE))["REVIEW.md"].decode("utf-8")
    headings = [line for line in review.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Brief" and "## Change" not in headings  # the change is in the brief, first
    assert review.index("- Ticket: ") < review.index("## Back-out plan") < review.index("## What will change, and where")
    assert change_items(review) == {"Ticket": [("code_inline", CHANGE["ticket"])],
                                    "Window": [("code_inline", CHANGE["window"])],
                                    "Summary": [("code_inline", CHANGE["summary"])]}


def test_review_shows_only_the_fields_given() -> None:
    review = render(with_change({"window": "Saturday night"}))["REVIEW.md"].decode("utf-8")
    assert change_items(review) == {"Window": [("code_inline", "Saturday night")]}


def test_review_shows_markdown_and_html_in_change_values_as_text() -> None:
    review = render(with_change(HOSTILE))["REVIEW.md"].decode("utf-8")
    items = change_items(review)
    # One code span each, whose text is the value (CommonMark strips one space each side of a
    # span that starts or ends with a backtick; the value itself is unchanged inside).
    for label, key in (("Ticket", "ticket"), ("Window", "window"), ("Summary", "summary")):
        [(kind, content)] = items[label]
        assert kind == "code_inline" and content.strip(" ") == HOSTILE[key].strip(" "), (label, content)
    rendered = MD.render(review)
    assert "<script>" not in rendered and "<b>" not in rendered and 'href="http://x"' not in rendered


def test_review_width_with_a_long_summary_only_the_value_is_wider() -> None:
    summary = " ".join(["word"] * 99)  # 494 characters
    review = render(with_change({"ticket": "CHG-1", "summary": summary}))["REVIEW.md"].decode("utf-8")
    code = {n for t in MD.parse(review) if t.type in ("fence", "code_block") and t.map for n in range(*t.map)}
    wide = [line for n, line in enumerate(review.split("\n")) if n not in code and len(line) > REVIEW_WIDTH]
    assert wide == [f"  `{summary}`"]
    assert change_items(review)["Summary"] == [("code_inline", summary)]


@pytest.mark.parametrize("profile", ["msonline", "graph"])
def test_the_change_table_changes_nothing_but_itself(profile: str) -> None:
    """With and without [change]: scripts identical; REVIEW.md differs by the section and the TOML block only."""
    base = {**copy.deepcopy(EXAMPLE), "profile": profile}
    without, with_ = render(with_change(None, base)), render(with_change(CHANGE, base))
    assert set(without) == set(with_)
    assert {rel for rel in without if without[rel] != with_[rel]} == {"REVIEW.md", "plan.json"}
    plain, changed = without["REVIEW.md"].decode("utf-8"), with_["REVIEW.md"].decode("utf-8")
    assert "- Ticket: " not in plain and "- Summary: " not in plain and "[change]" not in plain
    # the brief's change items (Ticket, Summary, Window and its check; without [change], one line saying
    # the window is not given), each with its continuation lines
    items = re.compile(r"^- (Ticket|Summary|Window|Window check): .*\n(  (?!\d+\. |- ).*\n)*", re.M)
    assert [m.group(1) for m in items.finditer(plain)] == ["Window"]
    assert [m.group(1) for m in items.finditer(changed)] == ["Ticket", "Summary", "Window", "Window check"]
    toml = re.search(r"\n\[change\]\n(\w+ = .*\n)+", changed)
    assert toml
    stripped = items.sub("", changed.replace(toml.group(0), ""))
    assert stripped == items.sub("", plain)
    old_plan, new_plan = json.loads(without["plan.json"]), json.loads(with_["plan.json"])
    assert "change" not in old_plan["parameters"]
    assert new_plan["parameters"].pop("change") == CHANGE
    new_plan["files"].pop("REVIEW.md"), old_plan["files"].pop("REVIEW.md")
    assert new_plan == old_plan


# --------------------------------------------------------------------------- the report


def test_the_report_shows_the_change_of_a_rendered_package(psbridge, tmp_path: Path) -> None:
    assert psbridge("render", write_params(tmp_path, with_change(HOSTILE)), "--out", "out").exit_code == 0
    result = psbridge("report", "out/contoso")
    assert result.exit_code == 0, result.stderr
    html = (tmp_path / "out" / "contoso-report.html").read_text(encoding="utf-8")
    summary_box = html[html.index('<div class="ticket">'):html.index('<div class="digest">')]
    text = re.sub(r"\s+", " ", html_module.unescape(re.sub(r"<[^>]+>", " ", summary_box)))
    for key in ("ticket", "window", "summary"):
        assert re.sub(r"\s+", " ", HOSTILE[key]).strip() in text, key
    assert "no change ticket recorded" not in html
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>x</b>" not in html


# --------------------------------------------------------------------------- the audit log


def test_render_approve_and_verify_lines_carry_the_ticket(psbridge, tmp_path: Path, keys: dict[str, Path]) -> None:
    log = tmp_path / "out" / "audit.jsonl"  # beside the packages: the in-process psbridge drops PSBRIDGE_*
    params = write_params(tmp_path, with_change(CHANGE))
    assert psbridge("render", params, "--out", "out").exit_code == 0
    assert psbridge("approve", "out/contoso", "--key", keys["jane"]).exit_code == 0
    assert psbridge("verify", "out/contoso", "--trusted-keys", keys["trusted"]).exit_code == 0
    assert psbridge("verify", "out/contoso", "--trusted-keys", keys["trusted"], "--min-approvals", "2").exit_code == 1
    lines = audit_lines(log)
    assert [(e["action"], e["outcome"]) for e in lines] == [
        ("render", "rendered"), ("approve", "approved"), ("verify", "verified"), ("verify", "refused")]
    digest = read_package(tmp_path / "out" / "contoso").digest
    for entry in lines:
        assert entry["details"]["change"] == {"ticket": "CHG-1234"}, entry  # the ticket only
        assert entry["digest"] == digest
    verified = psbridge("audit", "verify", log)
    assert verified.exit_code == 0 and "4 good line" in verified.stdout, verified.stdout


def test_lines_about_a_package_without_a_ticket_have_no_change(psbridge, tmp_path: Path,
                                                              keys: dict[str, Path]) -> None:
    summary_only = write_params(tmp_path, with_change({"summary": "no ticket yet"}, {**EXAMPLE, "name": "other"}))
    assert psbridge("render", "--example", "--out", "out").exit_code == 0
    assert psbridge("render", summary_only, "--out", "out").exit_code == 0
    assert psbridge("approve", "out/other", "--key", keys["jane"]).exit_code == 0
    lines = audit_lines(tmp_path / "out" / "audit.jsonl")
    assert len(lines) == 3 and all("change" not in e["details"] for e in lines), lines


def test_a_refusal_of_a_changed_package_still_carries_its_ticket(psbridge, tmp_path: Path,
                                                                 keys: dict[str, Path]) -> None:
    assert psbridge("render", write_params(tmp_path, with_change(CHANGE)), "--out", "out").exit_code == 0
    review = tmp_path / "out" / "contoso" / "REVIEW.md"
    review.write_bytes(review.read_bytes() + b"\nedited after rendering\n")
    assert psbridge("approve", "out/contoso", "--key", keys["jane"]).exit_code == 2
    last = audit_lines(tmp_path / "out" / "audit.jsonl")[-1]
    assert (last["action"], last["outcome"]) == ("approve", "error")
    assert last["details"]["change"] == {"ticket": "CHG-1234"}


@pytest.mark.parametrize("damage", ["no parameters", "invalid ticket", "parameters not a table"])
def test_a_plan_with_broken_parameters_is_still_recorded_without_a_ticket(psbridge, tmp_path: Path,
                                                                          keys: dict[str, Path], damage: str) -> None:
    assert psbridge("render", write_params(tmp_path, with_change(CHANGE)), "--out", "out").exit_code == 0
    plan_path = tmp_path / "out" / "contoso" / "plan.json"
    plan = json.loads(plan_path.read_text(encoding="utf-8"))
    if damage == "no parameters":
        del plan["parameters"]
    elif damage == "invalid ticket":
        plan["parameters"]["change"]["ticket"] = "CHG-\u202e1"
    else:
        plan["parameters"] = ["change", {"ticket": "CHG-1"}]
    plan_path.write_text(json.dumps(plan), encoding="utf-8")
    result = psbridge("verify", "out/contoso", "--trusted-keys", keys["trusted"])
    assert result.exit_code == 1 and "Traceback" not in result.stderr and "parameters" in result.stderr
    log = tmp_path / "out" / "audit.jsonl"
    last = audit_lines(log)[-1]
    assert (last["action"], last["outcome"]) == ("verify", "refused")
    assert "change" not in last["details"]
    assert "u202e" not in log.read_text(encoding="utf-8")  # the invalid ticket is not logged, even escaped


def test_record_with_a_package_whose_parameters_raise(tmp_path: Path) -> None:
    """`Package.parameters` raises for a broken plan: record still writes the line, without a ticket."""
    files = dict(render(with_change(CHANGE)))
    plan = json.loads(files["plan.json"])
    plan["parameters"]["crm"]["root_domain"] = "not a domain"
    broken = Package({**files, "plan.json": json.dumps(plan).encode("utf-8")})
    with pytest.raises(Exception):
        broken.parameters  # noqa: B018
    entry = audit.record(tmp_path / "a.jsonl", "verify", broken, "refused", problems=["x"])
    assert entry["details"] == {"problems": ["x"]}
    good = audit.record(tmp_path / "a.jsonl", "verify", Package(files), "verified")
    assert good["details"] == {"change": {"ticket": "CHG-1234"}}
    assert audit.record(tmp_path / "a.jsonl", "render", None, "error")["details"] == {}
    assert audit.verify(tmp_path / "a.jsonl").good_lines == 3


def test_run_lines_carry_the_ticket(tmp_path: Path, http_peer, engine, secrets_env, capsys,
                                    _audit_log_in_tmp: Path) -> None:
    from psbridge.catalogue import MSONLINE_STEPS
    from psbridge.cli import main

    pkg = make_package(tmp_path / "output", change={"ticket": "CHG-77"})
    engine.when(marker(MSONLINE_STEPS[-1]), Reply(output=["5f2e1c1a-0000-4000-8000-000000000001"]))
    code = main(["run", str(pkg), "--yes", "--host", "127.0.0.1", "--port", str(http_peer.port), "--transport",
                 "http", "--auth", "ntlm", "--username", USER, "--o365-user", O365_USER])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    runs = [e for e in audit_lines(_audit_log_in_tmp) if e["action"] == "run"]
    assert [e["outcome"] for e in runs] == ["started", "ok"]
    assert all(e["details"]["change"] == {"ticket": "CHG-77"} for e in runs), runs
    assert re.search(r"audit: .* head [0-9a-f]{64}", out + err)
