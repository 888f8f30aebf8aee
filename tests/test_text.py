"""psbridge.text: outside text shown clipped, escaped and named, never able to rewrite a terminal line."""

from __future__ import annotations

import time
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psbridge.text import (
    ESCAPED_CATEGORIES,
    clip,
    code_point,
    flatten,
    is_invisible,
    non_ascii_values,
    printable,
)

# --------------------------------------------------------------------------- moved from test_hostile_input.py


def test_non_ascii_code_points_lists_each_distinct_character_once() -> None:
    from psbridge.text import non_ascii_code_points

    assert non_ascii_code_points("plain ascii") == []
    assert non_ascii_code_points("clé été\u200b") == [
        "U+00E9 LATIN SMALL LETTER E WITH ACUTE",
        "U+200B ZERO WIDTH SPACE",
    ]
    assert non_ascii_code_points("\u2019\U0001f600") == [
        "U+2019 RIGHT SINGLE QUOTATION MARK",
        "U+1F600 GRINNING FACE",
    ]
    # Characters without a name (controls, private use) still get a readable label.
    assert non_ascii_code_points("\x85\ue000") == ["U+0085 <control>", "U+E000 <private use>"]


def test_clip_keeps_short_values_and_clips_long_ones() -> None:
    from psbridge.text import clip

    assert clip("short") == "short"
    assert clip("x" * 80) == "x" * 80
    assert clip("x" * 81) == "x" * 80 + "… (81 characters)"
    assert clip("abcdef", limit=3) == "abc… (6 characters)"


def test_printable_escapes_controls_separators_and_format_characters() -> None:
    from psbridge.text import printable

    assert printable("C:\\Program Files\\x.pfx") == "C:\\Program Files\\x.pfx", "backslashes are kept"
    assert printable("é’$`\"'") == "é’$`\"'"
    assert printable("a\nb\r\tc") == "a\\nb\\r\\tc"
    assert printable("\x1b[32mgreen\x1b[0m") == "\\x1b[32mgreen\\x1b[0m"
    assert printable("\x00\x7f\x85\x9f") == "\\x00\\x7f\\x85\\x9f"
    assert printable("a\u2028b\u2029c") == "a\\u2028b\\u2029c"
    assert printable("evil\u202etxt.exe") == "evil\\u202etxt.exe"
    assert printable("\u200b\ufeff\u00ad\u2066") == "\\u200b\\ufeff\\xad\\u2066"
    assert printable("tag\U000e0041") == "tag\\U000e0041"
    assert printable("\ud800") == "\\ud800", "a lone surrogate cannot be written to a terminal"
    assert printable("\u00a0\u3000 ") == "\u00a0\u3000 ", "visible spaces stay"


def test_printable_leaves_no_dangerous_character() -> None:
    import unicodedata

    from psbridge.text import printable

    every = "".join(chr(c) for c in range(0x110000))
    out = printable(every)
    assert not any(unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp", "Cs"} for ch in out)


def test_printable_is_fast_on_large_text() -> None:
    from psbridge.text import printable

    ascii_text = "x" * 5_000_000
    started = time.perf_counter()
    assert printable(ascii_text) is ascii_text
    assert printable(ascii_text + "\n") == ascii_text + "\\n"
    assert printable("é" * 2_000_000 + "\x1b") == "é" * 2_000_000 + "\\x1b"
    assert printable("漢字" * 1_000_000 + "\u202e")[-6:] == "\\u202e"
    assert time.perf_counter() - started < 2.0


# --------------------------------------------------------------------------- printable


@pytest.mark.parametrize("code", [*range(0x20), 0x7F, *range(0x80, 0xA0)])
def test_every_c0_and_c1_control_is_escaped_alone(code: int) -> None:
    expected = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}.get(code, f"\\x{code:02x}")
    assert printable(f"a{chr(code)}b") == f"a{expected}b"


@pytest.mark.parametrize("ansi", [
    "\x1b[2J\x1b[H",            # clear the screen, cursor home
    "\x1b]0;owned\x07",         # set the window title (OSC ... BEL)
    "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\",  # a hyperlink
    "\x9b31m",                  # CSI as the single C1 byte
    "ok\rFAKE",                 # carriage return overwrites the line
])
def test_ansi_and_c1_sequences_come_out_without_escape_or_return_characters(ansi: str) -> None:
    shown = printable(ansi)
    assert not any(ch in shown for ch in "\x1b\x07\x9b\r\n")
    assert shown.isprintable()


@pytest.mark.parametrize("bidi", ["\u200e", "\u200f", "\u061c", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
                                  "\u2066", "\u2067", "\u2068", "\u2069"])
def test_every_bidi_control_is_escaped(bidi: str) -> None:
    assert printable(f"evil{bidi}txt.exe") == f"evil\\u{ord(bidi):04x}txt.exe"


def test_visible_text_of_any_script_and_private_use_is_left_alone() -> None:
    text = "Müller Ωμέγα Привет 漢字 עברית العربية \U0001f600 \ue000 \u00a0\u2003\u3000 C:\\x"
    assert printable(text) == text


def test_no_character_outside_the_escaped_categories_is_touched() -> None:
    """The fast table of known ranges never escapes a visible character (checked over all of Unicode).

    Unassigned code points are the exception the table allows itself: it follows Unicode 15.1, so on
    an older Python (3.11 has Unicode 14) U+13439..U+1343F, Egyptian format controls since 15.0, are
    unassigned here and escaped already.
    """
    assigned = "".join(chr(c) for c in range(0x110000)
                       if unicodedata.category(chr(c)) not in ESCAPED_CATEGORIES | {"Cn"})
    assert printable(assigned) == assigned
    unassigned = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cn"]
    touched = {ord(ch) for ch in unassigned if printable(ch) != ch}
    assert touched <= set(range(0x13430, 0x13440))


@settings(max_examples=500, deadline=None, database=None)
@given(st.text(st.characters(codec=None)))
def test_printable_output_is_one_inert_line_and_plain_text_is_unchanged(text: str) -> None:
    shown = printable(text)
    assert not any(unicodedata.category(ch) in ESCAPED_CATEGORIES for ch in shown)
    if not any(unicodedata.category(ch) in ESCAPED_CATEGORIES for ch in text):
        assert shown == text


# --------------------------------------------------------------------------- clip


def test_clip_counts_characters_not_bytes_and_keeps_the_empty_value() -> None:
    assert clip("") == ""
    assert clip("é" * 80) == "é" * 80
    assert clip("漢" * 100, limit=5) == "漢" * 5 + "… (100 characters)"


def test_clip_of_a_huge_value_is_short_and_says_how_long_it_was() -> None:
    shown = clip("a" * 5_000_000)
    assert len(shown) < 120
    assert shown.endswith("… (5000000 characters)")


# --------------------------------------------------------------------------- code points and non-ASCII values


@pytest.mark.parametrize("ch,named", [
    ("a", "U+0061 LATIN SMALL LETTER A"),
    ("\u200b", "U+200B ZERO WIDTH SPACE"),
    ("\x07", "U+0007 <control>"),
    ("\ue000", "U+E000 <private use>"),
    ("\u0378", "U+0378 <unassigned>"),
    ("\U0001f600", "U+1F600 GRINNING FACE"),
    ("\U000e0041", "U+E0041 TAG LATIN CAPITAL LETTER A"),
])
def test_code_point_names_any_character(ch: str, named: str) -> None:
    assert code_point(ch) == named


def test_is_invisible_is_true_for_format_characters_only() -> None:
    assert all(is_invisible(ch) for ch in "\u200b\u200d\u202e\ufeff\u00ad\U000e0041")
    assert not any(is_invisible(ch) for ch in "a \u00a0\x07\u2028é")


def test_non_ascii_values_lists_text_leaves_with_non_ascii_only_in_order() -> None:
    values = {"name": "contoso", "crm.tools_dir": "C:\\Prógram Files", "port": 5986, "flag": None,
              "sharepoint.sites.0": "https://cоntoso.sharepoint.com/"}  # a Cyrillic о
    assert non_ascii_values(values) == [
        ("crm.tools_dir", "C:\\Prógram Files", ["U+00F3 LATIN SMALL LETTER O WITH ACUTE"]),
        ("sharepoint.sites.0", "https://cоntoso.sharepoint.com/", ["U+043E CYRILLIC SMALL LETTER O"]),
    ]
    assert non_ascii_values({"a": "plain", "b": 1}) == []


# --------------------------------------------------------------------------- flatten


def test_flatten_names_every_leaf_by_its_dotted_path() -> None:
    data = {"crm": {"server": "crm01", "ports": [5985, 5986]}, "sharepoint": {"sites": [{"url": "u"}]}, "n": 1}
    assert flatten(data) == {"crm.server": "crm01", "crm.ports.0": 5985, "crm.ports.1": 5986,
                             "sharepoint.sites.0.url": "u", "n": 1}


def test_flatten_keeps_empty_containers_as_leaves_and_honours_the_prefix() -> None:
    assert flatten({"a": {}, "b": [], "c": None}) == {"a": {}, "b": [], "c": None}
    assert flatten({"x": [1]}, "top") == {"top.x.0": 1}
    assert flatten({1: "one"}) == {"1": "one"}
    assert flatten("leaf") == {"": "leaf"}
