"""A certificate's SHA-1 thumbprint as a value: 40 hexadecimal digits, upper case, as Windows shows it."""

from __future__ import annotations

import re

_HEX40 = re.compile(r"[0-9A-Fa-f]{40}")


class Thumbprint(str):
    """A thumbprint, normalised to upper case; construct it with `Thumbprint.parse` or `Thumbprint.of`."""

    __slots__ = ()

    @classmethod
    def parse(cls, value: str) -> Thumbprint:
        """`value` as a thumbprint, or ValueError: for input that must be one (parameters, plan.json)."""
        if not isinstance(value, str) or not _HEX40.fullmatch(value):
            raise ValueError("must be a certificate thumbprint: 40 hexadecimal digits")
        return cls(value.upper())

    @classmethod
    def of(cls, value: object) -> Thumbprint | None:
        """`value` as a thumbprint when it is one, else None: for what a server or a record says."""
        if isinstance(value, str) and _HEX40.fullmatch(value.strip()):
            return cls(value.strip().upper())
        return None
