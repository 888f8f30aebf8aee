"""Secrets out of everything the server sends back, before anyone sees or stores it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar, cast

T = TypeVar("T")


class Redactor:
    """Hides every secret in text that came back from the server before anyone sees it.

    Each run of text covered by occurrences of secrets of 8 characters or more (one inside
    another, or two overlapping) is replaced by one fixed marker, so no part leaks. A shorter
    secret can't be replaced safely (a one-letter password would mask every such letter and so
    reveal itself): every line that contains it is withheld instead.
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
        """Per character of `text`: is it part of an occurrence of one of the secrets?

        Found in the original text, all at once: replacing one secret after another would
        break an occurrence of the next where the two overlap, and leak its rest.
        """
        hit = [False] * len(text)
        for secret in secrets:
            start = text.find(secret)
            while start != -1:
                hit[start:start + len(secret)] = [True] * len(secret)
                start = text.find(secret, start + 1)
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
