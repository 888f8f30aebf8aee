"""Secrets out of everything the server sends back, before anyone sees or stores it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, TypeVar, cast

T = TypeVar("T")

#: One escape of a JSON string: `\uHHHH` (hex in either case) or a one-letter escape.
_JSON_ESCAPE = re.compile(r'\\(?:u([0-9a-fA-F]{4})|(["\\/bfnrt]))')
_JSON_LETTERS = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
#: How many layers of JSON string escapes are undone in search of a secret: a secret echoed through
#: ConvertTo-Json, and that JSON echoed inside another JSON string (`\\u003c`).
JSON_LAYERS = 2
#: Where each character of a decoded text came from in the text it was decoded from: [start, end).
Spans = list[tuple[int, int]]


def json_unescape(text: str) -> tuple[str, Spans]:
    r"""`text` with every JSON string escape undone, and for each character the span it came from.

    Why: Windows PowerShell 5.1's ConvertTo-Json writes `<` `>` `&` `'` as `\u003c`... and escapes `"`
    and `\`; Python writes non-ASCII as `\uHHHH` (an astral character as a surrogate pair); any JSON
    writer may escape any character. A secret in such a form is not its plain text, but it is the
    secret to whoever decodes it. The spans let the redactor mask the escapes themselves.
    """
    chars: list[str] = []
    spans: Spans = []
    pos = 0
    for found in _JSON_ESCAPE.finditer(text):
        chars.extend(text[pos:found.start()])
        spans.extend((i, i + 1) for i in range(pos, found.start()))
        hexa, letter = found.groups()
        char = chr(int(hexa, 16)) if hexa else _JSON_LETTERS[letter]
        if (hexa and "\udc00" <= char <= "\udfff" and chars and "\ud800" <= chars[-1] <= "\udbff"
                and spans[-1] == (found.start() - 6, found.start())):
            # a surrogate pair, escaped as two \uHHHH: one character
            chars[-1] = chr(0x10000 + ((ord(chars[-1]) - 0xD800) << 10) + (ord(char) - 0xDC00))
            spans[-1] = (spans[-1][0], found.end())
        else:
            chars.append(char)
            spans.append((found.start(), found.end()))
        pos = found.end()
    chars.extend(text[pos:])
    spans.extend((i, i + 1) for i in range(pos, len(text)))
    return "".join(chars), spans


def views(text: str) -> list[tuple[str, Spans | None]]:
    """`text` itself (spans None), then `text` with up to JSON_LAYERS layers of JSON escapes undone, each
    with the span of the original text every one of its characters came from."""
    out: list[tuple[str, Spans | None]] = [(text, None)]
    current, spans = text, None
    for _ in range(JSON_LAYERS):
        if "\\" not in current:
            break
        decoded, inner = json_unescape(current)
        if decoded == current:
            break
        spans = inner if spans is None else [(spans[a][0], spans[b - 1][1]) for a, b in inner]
        current = decoded
        out.append((current, spans))
    return out


class Redactor:
    r"""Hides every secret in text that came back from the server before anyone sees it.

    Each run of text covered by occurrences of secrets of 8 characters or more (one inside
    another, or two overlapping) is replaced by one fixed marker, so no part leaks. A shorter
    secret can't be replaced safely (a one-letter password would mask every such letter and so
    reveal itself): every line that contains it is withheld instead.

    A secret is found as plain text and in the forms JSON writes it (`views`): ConvertTo-Json's
    `\u003c` for `<`, `\"`, `\\`, `\uHHHH` in upper or lower hex, one JSON string inside another;
    the escapes that spell it are masked (or their lines withheld) as the plain text would be.
    Other encodings (base64, URL or XML escapes, a secret split across pipelines) are not found.
    """

    MARKER = "[redacted]"
    WITHHELD = "[line withheld: it contained a secret]"
    SHORT = 8
    #: Used instead when a secret happens to occur in the usual text (a password "redacted");
    #: the empty string is the last resort, since it contains no secret.
    _MARKERS = (MARKER, "<hidden>", "#####", "")
    _WITHHELDS = (WITHHELD, "<line withheld>", "#####", "")

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        if secret and secret not in self._secrets:
            self._secrets = sorted({*self._secrets, secret}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        short = [s for s in self._secrets if len(s) < self.SHORT]
        if short:
            text = self._withhold(text, short)
        long = [s for s in self._secrets if len(s) >= self.SHORT]
        return self._mask(text, long) if long else text

    def clean(self, value: T) -> T:
        """`value` with every string inside it (dicts and lists followed) passed through the redactor.

        A dict's keys are server text as much as its values (a probe's JSON object, ServerSettings'
        names): they are redacted too. Two keys that redact to the same text keep both values, the
        later one under the marker numbered (`[redacted] 2`), so nothing read is silently dropped.
        """
        if isinstance(value, str):
            return cast(T, self(value))
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                name = self(key) if isinstance(key, str) else key
                base, n = name, 1
                while name in out:
                    n += 1
                    name = f"{base} {n}"
                out[name] = self.clean(item)
            return cast(T, out)
        if isinstance(value, list):
            return cast(T, [self.clean(v) for v in value])
        return value

    def _safe_choice(self, candidates: tuple[str, ...]) -> str:
        """The first marker text that contains none of the secrets."""
        return next(c for c in candidates if not any(s in c for s in self._secrets))

    @staticmethod
    def _hits(text: str, secrets: list[str]) -> list[bool]:
        """Per character of `text`: is it part of an occurrence of one of the secrets (in any of `views`)?

        Found in the original text, all at once: replacing one secret after another would
        break an occurrence of the next where the two overlap, and leak its rest.
        """
        hit = [False] * len(text)
        for view, spans in views(text):
            for secret in secrets:
                start = view.find(secret)
                while start != -1:
                    first, end = (start, start + len(secret)) if spans is None else (
                        spans[start][0], spans[start + len(secret) - 1][1])
                    hit[first:end] = [True] * (end - first)
                    start = view.find(secret, start + 1)
        return hit

    def _mask(self, text: str, long: list[str]) -> str:
        """Replace each run of characters that belong to occurrences of long secrets by one marker."""
        hit = self._hits(text, long)
        if not any(hit):
            return text
        marker, out, i = self._safe_choice(self._MARKERS), [], 0
        while i < len(text):
            if not hit[i]:
                out.append(text[i])
                i += 1
                continue
            while i < len(text) and hit[i]:
                i += 1
            out.append(marker)
        return "".join(out)

    def _withhold(self, text: str, short: list[str]) -> str:
        """Replace every line that overlaps an occurrence of a short secret (a secret may span lines)."""
        hit = self._hits(text, short)
        if not any(hit):
            return text
        lines, pos = [], 0
        for line in text.split("\n"):
            end = pos + len(line)
            # the newline after a line belongs to it: a secret that spans lines withholds both
            covered = any(hit[pos:end + 1])
            lines.append(self._safe_choice(self._WITHHELDS) if covered else line)
            pos = end + 1
        return "\n".join(lines)
