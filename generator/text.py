"""Text from outside shown safely (placeholder until the hardened version lands)."""

from __future__ import annotations

import re

_DANGEROUS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def printable(text: str) -> str:
    """`text` with control and invisible format characters escaped (`\\x1b`, `\\n`, `\\u202e`)."""
    return _DANGEROUS.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)
