"""Property tests: any legal value renders as one PowerShell literal that reads back as itself,
and the rest of every script stays exactly the same."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psbridge.parameters import EXAMPLE, parse_parameters
from psbridge.powershell import SINGLE_QUOTES, quote, unquote
from psbridge.render import render_package

from support.pwsh_grammar import string_literal_spans, syntax_errors, typographic_quotes_outside_literals

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Characters that are legal in Windows file names and dangerous in scripts, plus letters.
NAME_CHARS = st.sampled_from(list(
    "abcXYZ019 ._-" "'\u2018\u2019\u201a\u201b" "\u201c\u201d\u201e" "$;#`@!%^&()[]{}=+,~" "\u00fc\u00df\u00e9\u6f22\u0416"
    "\u2013\u2014"
))
ACCOUNT_CHARS = st.sampled_from(list("abcXYZ019 ._-'\u2019\u2018$#`!%^&(){}~\u00fc\u00e9\u0416"))
URL_CHARS = st.sampled_from(list("abcXYZ019-._~!$&'()*,;=:@%/\u00fc\u2019"))


def _component(chars: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.text(chars, min_size=1, max_size=10).filter(
        lambda s: s[-1] not in " ." and s not in {".", ".."}
        and s.split(".")[0].upper().rstrip() not in {"CON", "PRN", "AUX", "NUL"}
    )


def _path(suffix: str) -> st.SearchStrategy[str]:
    return st.lists(_component(NAME_CHARS), min_size=1, max_size=4).map(
        lambda parts: "C:\\" + "\\".join(parts) + suffix
    )


FIELDS: dict[str, tuple[tuple[str, ...], str, st.SearchStrategy[Any]]] = {
    "pfx_path": (("certificate", "pfx_path"), "C:\\Sentinel0\\zq.pfx", _path(".pfx")),
    "cer_path": (("certificate", "cer_path"), "C:\\Sentinel0\\zq.cer", _path(".cer")),
    "tools_dir": (("crm", "tools_dir"), "C:\\Sentinel0\\Tools", _path("")),
    "service_account": (
        ("certificate", "service_account"), "sentinel\\zqsvc",
        st.tuples(st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,13}\Z"), _component(ACCOUNT_CHARS)).map("\\".join),
    ),
    "root_domain": (
        ("crm", "root_domain"), "*.sentinel-zq.example",
        st.from_regex(r"\A\*\.(?:[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?\.){1,3}[a-z]{2,6}\Z"),
    ),
    "site": (
        ("sharepoint", "sites"), "https://contoso.sharepoint.com/sites/sentinelzq",
        st.text(URL_CHARS, min_size=1, max_size=30).map(lambda p: "https://contoso.sharepoint.com/sites/" + p),
    ),
    "tenant_id": (("sharepoint", "tenant_id"), "00000000-0000-0000-0000-00000000abcd", st.uuids().map(str)),
}


def _with(path: tuple[str, ...], value: str) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    table, key = path
    data[table][key] = [value] if key == "sites" else value
    return data


def _scripts(data: dict[str, Any]) -> dict[str, str]:
    files = render_package(parse_parameters(data)).files
    scripts = {name: blob[3:].decode("utf-8") for name, blob in files.items() if name.endswith(".ps1")}
    # setup.ps1 prints the step files' sha256, which change with any value: the hashes are
    # masked here and checked against the files in test_setup_hashes.py.
    scripts["setup.ps1"] = re.sub(r"\b[0-9a-f]{64}\b", "<sha256>", scripts["setup.ps1"])
    return scripts


@pytest.mark.parametrize("field", list(FIELDS))
def test_legal_values_render_as_one_literal_and_change_nothing_else(field: str) -> None:
    path, sentinel, strategy = FIELDS[field]
    baseline = _scripts(_with(path, sentinel))
    assert any(quote(sentinel) in text for text in baseline.values()), "the field reaches no script"

    @PROPERTY
    @given(strategy)
    def check(value: str) -> None:
        scripts = _scripts(_with(path, value))  # also proves the value is accepted as legal
        literal = quote(value)
        assert unquote(literal) == value
        for name, text in scripts.items():
            assert text == baseline[name].replace(quote(sentinel), literal), name
            assert syntax_errors(text) == [], name
            assert typographic_quotes_outside_literals(text) == [], name
            spans = string_literal_spans(text)
            data, pos = text.encode("utf-8"), 0
            encoded = literal.encode("utf-8")
            while (pos := data.find(encoded, pos)) != -1:
                line_start = data.rfind(b"\n", 0, pos) + 1
                in_comment = data[line_start:pos].lstrip().startswith(b"#")
                assert in_comment or (pos, pos + len(encoded)) in spans, f"{name}: literal split at {pos}"
                pos += len(encoded)

    check()


@PROPERTY
@given(st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\u2028\u2029\x85")))
def test_quote_round_trips_any_text(value: str) -> None:
    literal = quote(value)
    assert unquote(literal) == value
    body = literal[1:-1]
    # every quote character inside the literal is doubled, so none can end it
    i = 0
    while i < len(body):
        if body[i] in SINGLE_QUOTES:
            assert body[i + 1] in SINGLE_QUOTES
            i += 2
        else:
            i += 1
    script = f"$value = {literal}\r\nWrite-Output $value\r\n"
    assert syntax_errors(script) == []
    start = script.encode("utf-8").index(literal.encode("utf-8"))
    assert (start, start + len(literal.encode("utf-8"))) in string_literal_spans(script)


@pytest.mark.parametrize("value", ["'", "\u2019", "\u2018", "\u201a", "\u201b", "#>", "$(Stop-Computer)", "; rm -r C:\\",
                                   "a'; Remove-Item C:\\ -Recurse; '", "`", "\u201c$env:USERNAME\u201d", "<# x #>"])
def test_dangerous_values_stay_one_literal(value: str) -> None:
    literal = quote(value)
    assert unquote(literal) == value
    script = f"$value = {literal}\r\n"
    assert syntax_errors(script) == []
    assert string_literal_spans(script) == [(9, 9 + len(literal.encode("utf-8")))]


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "a\u2028b", "\x85"])
def test_line_breaks_and_controls_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        quote(value)


def test_unquote_rejects_a_literal_that_ends_early() -> None:
    with pytest.raises(ValueError):
        unquote("'a'b'")
    with pytest.raises(ValueError):
        unquote("'a\u2019b'")
