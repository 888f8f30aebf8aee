"""Outside text made safe to show: clipped, escaped, its odd characters named.

Values from a parameters file, TOML keys, file names and remote output end up in error
lines, REVIEW.md and the terminal. There they must stay one line, short, and inert: an
ANSI escape (`\\x1b[…`) could recolour or rewrite the terminal, a bidi override (U+202E)
could make `evil‮txt.exe` read as something else, a line break could forge a second
message. These helpers are the one place that decides how such text is shown.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

#: Categories of the characters `printable` escapes: controls (C0, DEL, C1), format
#: characters (zero-width, bidi controls, BOM, soft hyphen, tags), line and paragraph
#: separators, and lone surrogates (a terminal's encoder would fail on them).
ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})

#: The short escapes people recognise; any other escaped character is \xNN, \uNNNN or \UNNNNNNNN.
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

#: The escaped characters as of Unicode 15.1 (Python 3.11 to 3.13): C0, DEL and C1
#: controls, Cf, U+2028/U+2029 and surrogates, as ranges. A regular expression finds them
#: in C; a character a newer Unicode adds to these categories is still caught by the
#: slower fallback in `printable`.
_KNOWN_RANGES = (
    (0x00, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD),
    (0x70F, 0x70F), (0x890, 0x891), (0x8E2, 0x8E2), (0x180E, 0x180E), (0x200B, 0x200F),
    (0x2028, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F), (0xD800, 0xDFFF), (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F),
)
_KNOWN = re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in _KNOWN_RANGES) + "]")

#: For ASCII text (most of it): C0 controls and DEL, replaced by `str.translate` in C.
_ASCII_TABLE: dict[int, str | None] = {code: None for code in (*range(0x20), 0x7F)}

#: Where the fallback looks: runs outside printable ASCII and the space separators (Zs,
#: not printable to Python but visible and harmless, e.g. the no-break space).
_NOT_PLAIN = re.compile(r"[^\x20-\x7e\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")

#: What Unicode calls characters that have no name.
_UNNAMED = {"Cc": "<control>", "Co": "<private use>", "Cs": "<surrogate>", "Cn": "<unassigned>"}


def clip(value: str, limit: int = 80) -> str:
    """At most `limit` characters of `value`, then `… (N characters)` when it was longer.

    An error line that quotes a 5 MB value must not be 5 MB long; the count tells the
    user how long the value really is.
    """
    if len(value) <= limit:
        return value
    return f"{value[:limit]}… ({len(value)} characters)"


def _escape(ch: str) -> str:
    """The backslash escape of one character: `\\n`, `\\x1b`, `\\u202e` or `\\U000e0041`."""
    if ch in _SHORT:
        return _SHORT[ch]
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


@lru_cache(maxsize=4096)
def _escape_if_dangerous(ch: str) -> str:
    """`ch` itself, or its escape when its category is one `printable` escapes."""
    if ch.isprintable() or unicodedata.category(ch) not in ESCAPED_CATEGORIES:
        return ch
    return _escape(ch)


for _code in _ASCII_TABLE:
    _ASCII_TABLE[_code] = _escape(chr(_code))


def _escape_known(match: re.Match[str]) -> str:
    return _escape(match.group(0))


def _escape_run(match: re.Match[str]) -> str:
    run = match.group(0)
    if run.isprintable():  # letters, digits, punctuation of any script: nothing to escape
        return run
    return "".join(map(_escape_if_dangerous, run))


def printable(text: str) -> str:
    """`text` with controls, line/paragraph separators and format characters escaped.

    `\\x1b` becomes the four characters `\\x1b`, a line break `\\n`, U+202E `\\u202e`, so
    the result is one inert line. Backslashes are left alone (Windows paths are full of
    them), and so are visible non-ASCII letters and spaces. Cheap when there is nothing to
    do: `str.isprintable()` is False for every escaped category, so True is final; the
    known characters are then replaced by one regular expression, and only text still not
    printable (no-break spaces, private use, a format character newer than the table)
    takes the per-character fallback.
    """
    if text.isprintable():
        return text
    if text.isascii():
        return text.translate(_ASCII_TABLE)
    text = _KNOWN.sub(_escape_known, text)
    if text.isprintable():
        return text
    return _NOT_PLAIN.sub(_escape_run, text)


def no_command(text: str) -> str:
    """Text from outside (a file name others can write, an identity) put into a message: backticks as
    `\\x60`. Why: the screen prints text between backticks whole on a line of its own, as a command to
    copy (cli.screen), and a planted name must not pose as one. Control characters are escaped where the
    message is shown (`printable`), as for every message."""
    return text.replace("`", "\\x60")


def code_point(ch: str) -> str:
    """`U+200B ZERO WIDTH SPACE`: how an error or a review names one character."""
    name = unicodedata.name(ch, "") or _UNNAMED.get(unicodedata.category(ch), "<unnamed>")
    return f"U+{ord(ch):04X} {name}"


def non_ascii_code_points(value: str) -> list[str]:
    """Each distinct non-ASCII character of `value`, named, in order of first appearance.

    A reviewer cannot tell `contoso` from `cоntoso` (Cyrillic о) by eye; this list can.
    """
    if value.isascii():
        return []
    return [code_point(ch) for ch in dict.fromkeys(value) if not ch.isascii()]


def is_invisible(ch: str) -> bool:
    """True for a Unicode format character (category Cf): zero-width, bidi control, BOM, tag."""
    return unicodedata.category(ch) == "Cf"


def non_ascii_values(values: Mapping[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(dotted key, value, its non-ASCII code points) for each text value that has any.

    `values` maps dotted keys (`crm.tools_dir`, `sharepoint.sites.0`) to leaves, as
    `flatten` makes them. REVIEW.md, `show` and `diff` print these under the
    values, so `C:\\Prógram Files` and `C:\\Program Files` can't be mistaken for each other.
    """
    return [(key, value, non_ascii_code_points(value)) for key, value in values.items()
            if isinstance(value, str) and not value.isascii()]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists -> {"a.b.0": leaf}, so a value is named by one dotted key."""
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}.{index}" if prefix else str(index)))
        return out
    return {prefix: value}

