"""PowerShell literal syntax: the one place where a value becomes PowerShell text.

PowerShell ends a single-quoted string at any of five characters (CharTraits.cs,
language spec §2.3.5.2): U+0027 ' and the typographic U+2018 ‘, U+2019 ’, U+201A ‚,
U+201B ‛. Inside a single-quoted string each of them is written twice, and nothing
else is special: no `$` expansion, no backtick escapes. PowerShell's own
`CodeGeneration.EscapeSingleQuotedStringContent` does exactly this. A value rendered
this way cannot end the string, a comment or a statement, whatever it contains.
"""

from __future__ import annotations

import re

#: The characters that open or close a PowerShell single-quoted string.
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"

_QUOTE_RUN = re.compile(f"[{SINGLE_QUOTES}]")
#: Line breaks and other control characters: legal inside a PowerShell literal, but no
#: parameter psbridge renders can contain one, and a line break would end a `#` comment
#: (the wizard checklist quotes values in comments). Refusing them keeps every rendered
#: literal on one line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class PowerShellLiteral(str):
    """A str that is already a complete, safe PowerShell single-quoted literal.

    The renderer accepts only these (and trusted template text) in `{{ … }}`, which is
    how a test can prove that no template interpolates a raw value.
    """

    __slots__ = ()


def quote(value: object) -> PowerShellLiteral:
    """Return `value` as a PowerShell single-quoted literal, doubling all five quote characters."""
    text = value if isinstance(value, str) else str(value)
    if _CONTROL.search(text):
        raise ValueError("a control character or line break cannot be rendered into a script")
    return PowerShellLiteral("'" + _QUOTE_RUN.sub(lambda m: m.group(0) * 2, text) + "'")


def unquote(literal: str) -> str:
    """Read a single-quoted literal back the way PowerShell does (for tests and checks).

    Raises ValueError when `literal` is not exactly one complete single-quoted string.
    """
    if len(literal) < 2 or literal[0] not in SINGLE_QUOTES or literal[-1] not in SINGLE_QUOTES:
        raise ValueError("not a single-quoted literal")
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch in SINGLE_QUOTES:
            if i + 1 < len(body) and body[i + 1] in SINGLE_QUOTES:
                out.append(ch)
                i += 2
                continue
            raise ValueError(f"the literal ends early at offset {i + 1}")
        out.append(ch)
        i += 1
    return "".join(out)
