"""Hostile parameters files: whatever a file contains, `validate` and `render` agree.

Every value that reaches a script goes through `powershell.quote()`; validation must
refuse everything quote() refuses (as a one-line exit-2 error naming the field), and
every echoed value or key must come out clipped and inert on a terminal.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Result

# --------------------------------------------------------------------------- helpers

BASE: dict[str, Any] = {
    "name": "contoso",
    "profile": "msonline",
    "certificate": {
        "pfx_path": "C:\\Personalcertfile.pfx",
        "cer_path": "C:\\Personalcertfile.cer",
        "service_account": "contoso\\CRMWebApplicationService",
    },
    "crm": {"root_domain": "*.contoso.com"},
    "sharepoint": {"sites": ["https://contoso.sharepoint.com/sites/salesteam"]},
}
GRAPH = {
    "client_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "certificate_thumbprint": "0123456789ABCDEF0123456789ABCDEF01234567",
}


def toml_string(value: str) -> str:
    """A TOML basic string holding exactly `value` (every non-printable-ASCII character escaped)."""
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(f"\\U{ord(ch):08X}")
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return toml_string(value)


def toml_text(data: dict[str, Any]) -> str:
    """A tiny TOML writer for the parameters layout (top-level scalars, then one level of tables)."""
    lines = [f"{toml_string(k)} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for table, values in data.items():
        if isinstance(values, dict):
            lines.append(f"[{toml_string(table)}]")
            lines.extend(f"{toml_string(k)} = {toml_value(v)}" for k, v in values.items())
    return "\n".join(lines) + "\n"


def with_field(field: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of BASE with the dotted `field` set (`sharepoint.sites[2]` sets a second site)."""
    import copy

    data = copy.deepcopy(base or BASE)
    if field.startswith("graph."):
        data["profile"] = "graph"
        data["graph"] = dict(GRAPH)
    if field == "sharepoint.sites[2]":
        data["sharepoint"]["sites"].append(value)
        return data
    if field == "sharepoint.sites[1]":
        data["sharepoint"]["sites"] = [value]
        return data
    *tables, key = field.split(".")
    target = data
    for table in tables:
        target = target.setdefault(table, {})
    target[key] = value
    return data


def write(tmp_path: Path, data: dict[str, Any] | str, name: str = "params.toml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else toml_text(data), encoding="utf-8")
    return path


def assert_usage_error(result: Result, *expected: str) -> None:
    """Exit 2, one clean `psbridge: error:` line per problem, each expected text present."""
    assert result.exit_code == 2, (result.exit_code, result.stderr[:2000])
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("psbridge: error: ") for line in lines), result.stderr[:2000]
    for text in expected:
        assert text in result.stderr, (text, result.stderr[:2000])


# --------------------------------------------------------------------------- 1. validation = what quote() accepts

#: A valid value for every string field, with {} where an inserted character keeps the rest valid.
FIELD_FORMS: dict[str, str] = {
    "name": "conto{}so",
    "certificate.pfx_path": "C:\\certs\\s2s{}.pfx",
    "certificate.cer_path": "C:\\certs\\s2s{}.cer",
    "certificate.service_account": "contoso\\CRMWeb{}ApplicationService",
    "certificate.local_pfx": "./certs/s2s{}.pfx",
    "certificate.local_cer": "./certs/s2s{}.cer",
    "crm.root_domain": "*.contoso.com{}",
    "crm.tools_dir": "C:\\Program Files\\Microsoft Dynamics CRM\\Tools{}",
    "sharepoint.sites[1]": "https://contoso.sharepoint.com/sites/sales{}team",
    "sharepoint.tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47{}",
    "graph.client_id": "72f988bf-86f1-41af-91ab-2d7cd011db47{}",
    "graph.tenant_id": "{}72f988bf-86f1-41af-91ab-2d7cd011db47",
    "graph.certificate_thumbprint": "0123456789ABCDEF0123456789ABCDEF01234567{}",
}

LINE_BREAKS = {
    "\n": "U+000A",
    "\r": "U+000D",
    "\t": "U+0009",
    "\x1b": "U+001B",
    "\x7f": "U+007F",
    "\x85": "U+0085",
    "\u2028": "U+2028",
    "\u2029": "U+2029",
}


# --------------------------------------------------------------------------- 2. invisible characters

INVISIBLE = {
    "\u200b": "U+200B (ZERO WIDTH SPACE)",
    "\u202e": "U+202E (RIGHT-TO-LEFT OVERRIDE)",
    "\u2066": "U+2066 (LEFT-TO-RIGHT ISOLATE)",
    "\ufeff": "U+FEFF (ZERO WIDTH NO-BREAK SPACE)",
    "\u00ad": "U+00AD (SOFT HYPHEN)",
    "\U000e0041": "U+E0041 (TAG LATIN CAPITAL LETTER A)",
}


def test_non_ascii_code_points_lists_each_distinct_character_once() -> None:
    from generator.text import non_ascii_code_points

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


# --------------------------------------------------------------------------- 3. files that are not parameters files


def run_with_timeout(*args: str | os.PathLike[str], cwd: Path, timeout: float = 20) -> Result:
    """`python -m generator ARGS` with a short timeout: a hang fails the test instead of blocking it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSBRIDGE_")}
    proc = subprocess.run([sys.executable, "-m", "generator", *map(str, args)], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


# --------------------------------------------------------------------------- 4. echoed values: clipped and inert


def test_clip_keeps_short_values_and_clips_long_ones() -> None:
    from generator.text import clip

    assert clip("short") == "short"
    assert clip("x" * 80) == "x" * 80
    assert clip("x" * 81) == "x" * 80 + "… (81 characters)"
    assert clip("abcdef", limit=3) == "abc… (6 characters)"


def test_printable_escapes_controls_separators_and_format_characters() -> None:
    from generator.text import printable

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

    from generator.text import printable

    every = "".join(chr(c) for c in range(0x110000))
    out = printable(every)
    assert not any(unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp", "Cs"} for ch in out)


def test_printable_is_fast_on_large_text() -> None:
    from generator.text import printable

    ascii_text = "x" * 5_000_000
    started = time.perf_counter()
    assert printable(ascii_text) is ascii_text
    assert printable(ascii_text + "\n") == ascii_text + "\\n"
    assert printable("é" * 2_000_000 + "\x1b") == "é" * 2_000_000 + "\\x1b"
    assert printable("漢字" * 1_000_000 + "\u202e")[-6:] == "\\u202e"
    assert time.perf_counter() - started < 2.0


# --------------------------------------------------------------------------- 6. hints


# --------------------------------------------------------------------------- property: accepted ⇒ quotable

#: Characters that stress the rules: controls, separators, format characters, quotes, path syntax.
NASTY = list("\x00\t\n\r\x1b\x7f\x85\x9f\u2028\u2029\u200b\u200e\u202a\u202e\u2066\u2069\ufeff\u00ad"
             "'\u2018\u2019\u201a\u201b\"`$;#\\/.:-_ *?<>|{}[]@=+,é") + ["\U000e0001", "\U0001d173"]
TEXT = st.text(alphabet=st.one_of(st.sampled_from(NASTY), st.characters(), st.sampled_from("abcz019")), max_size=12)


def _string_values(value: Any) -> typing.Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _string_values(v)
    elif isinstance(value, list):
        for v in value:
            yield from _string_values(v)


def _string_fields(model: Any, prefix: str = "") -> list[str]:
    """Dotted names of every field whose type can hold a free-form str (Literal fields excluded)."""
    from pydantic import BaseModel

    out = []
    for name, field in model.model_fields.items():
        stack, kinds = [field.annotation], set()
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                out.extend(_string_fields(tp, f"{prefix}{name}."))
            elif tp is str:
                kinds.add("str")
            elif typing.get_origin(tp) is not typing.Literal:
                stack.extend(typing.get_args(tp))
        if "str" in kinds:
            out.append(f"{prefix}{name}")
    return out


