r"""What to write instead, when a Windows path in double quotes breaks the parameters file.

In a TOML basic string ("…") a backslash starts an escape: `"C:\certs"` is an error ("Invalid
escape" / "Unescaped '\'"), and `"C:\temp\new.pfx"` is valid TOML holding a tab and a line
break, which the field then refuses as control characters. Either way the fix is the same line
in single quotes (a TOML literal string, where a backslash stays as it is): these hints say it.
"""

from __future__ import annotations

import re

from .text import clip, printable

#: A TOML line `key = "value"` (a basic string, where a backslash starts an escape).
_BASIC_STRING_LINE = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*"([^"]*)"\s*(?:#.*)?')
#: The error position tomllib gives: `(at line 3, column 17)`.
_TOML_LINE = re.compile(r"at line (\d+)")
#: TOML's escapes that turn a Windows path's `\t`, `\n`, `\r`, `\b`, `\f` into control characters.
_PATH_ESCAPE = re.compile(r"\\[tnrbf]")


def _as_literal(key: str, value: str) -> str:
    """`key = 'value'`: the line in single quotes (a TOML literal string, where a backslash stays as it is)."""
    return printable(clip(f"{key} = '{value}'", 120))


def single_quotes_hint(text: str, error: str) -> str:
    r"""For TOML's "Invalid escape" / "Unescaped '\'": the line as it should be, in single quotes.

    Why: a Windows path in double quotes is the usual cause (`"C:\certs"` holds the escape `\c`),
    and the fix is one character per side; saying it is the next command.
    """
    if "escape" not in error.lower():
        return ""
    found = _TOML_LINE.search(error)
    lines = text.splitlines()
    line = lines[int(found.group(1)) - 1] if found and 0 < int(found.group(1)) <= len(lines) else ""
    match = _BASIC_STRING_LINE.fullmatch(line)
    if match is None or "'" in match.group(2):
        return "; write a Windows path in single quotes ('C:\\certs\\s2s.pfx'): a backslash stays as it is there"
    return f"; write Windows paths in single quotes: {_as_literal(match.group(1), match.group(2))}"


def escaped_path_hint(text: str, problem: str) -> str:
    r"""For a control character in a field written in double quotes with `\t`, `\n`…: the line in single quotes.

    `"C:\temp\new.pfx"` is valid TOML holding a tab and a line break: the field's error says
    "control character", and this says why and what to write instead.
    """
    if "control character" not in problem:
        return ""
    key = problem.split(":", 1)[0].rsplit(".", 1)[-1]
    for line in text.splitlines():
        match = _BASIC_STRING_LINE.fullmatch(line)
        if match and match.group(1) == key and _PATH_ESCAPE.search(match.group(2)) and "'" not in match.group(2):
            return (f" (in double quotes, TOML reads \\t, \\n… as control characters; write the Windows path in "
                    f"single quotes: {_as_literal(key, match.group(2))})")
    return ""
