"""Hostile parameters files: whatever a file contains, `validate` and `render` agree.

Every value that reaches a script goes through `powershell.quote()`; validation must
refuse everything quote() refuses (as a one-line exit-2 error naming the field), and
every echoed value or key must come out clipped and inert on a terminal.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.cli import Result

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
    if field.startswith("app."):  # the app trust: Graph, the organization, the tenant and an [app] table
        data.update(profile="graph", trust="app")
        data["crm"]["organization"] = "contoso"
        data["sharepoint"]["tenant_id"] = "72f988bf-86f1-41af-91ab-2d7cd011db47"
        data["app"] = {"name": "psbridge-crm", "msal_package": "./microsoft.identity.client.4.11.0.nupkg"}
        if field == "app.client_id":
            del data["app"]["name"]
    if field == "sharepoint.sites[2]":
        data["sharepoint"]["sites"].append(value)
        return data
    if field == "sharepoint.sites[1]":
        data["sharepoint"]["sites"] = [value]
        return data
    if field == "certificate.local_replaced":
        data["certificate"]["replaces"] = "0123456789ABCDEF0123456789ABCDEF01234567"  # it needs one
    if field == "crm.additional_servers[1]":
        data["crm"]["additional_servers"] = [value]
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


def test_the_helpers_write_a_valid_file(psbridge, tmp_path: Path) -> None:
    result = psbridge("validate", write(tmp_path, BASE))
    assert result.exit_code == 0, result.stderr


# --------------------------------------------------------------------------- 1. validation = what quote() accepts

#: A valid value for every string field, with {} where an inserted character keeps the rest valid.
FIELD_FORMS: dict[str, str] = {
    "name": "conto{}so",
    "certificate.pfx_path": "C:\\certs\\s2s{}.pfx",
    "certificate.cer_path": "C:\\certs\\s2s{}.cer",
    "certificate.service_account": "contoso\\CRMWeb{}ApplicationService",
    "certificate.local_pfx": "./certs/s2s{}.pfx",
    "certificate.local_cer": "./certs/s2s{}.cer",
    "certificate.replaces": "0123456789ABCDEF0123456789ABCDEF01234567{}",
    "certificate.local_replaced": "./certs/old{}.cer",
    "crm.root_domain": "*.contoso.com{}",
    "crm.tools_dir": "C:\\Program Files\\Microsoft Dynamics CRM\\Tools{}",
    "crm.server": "crm01.contoso.local{}",
    "crm.username": "CONTOSO\\crm{}admin",
    "crm.o365_user": "admin{}@contoso.onmicrosoft.com",
    "crm.additional_servers[1]": "crmfe2.contoso.local{}",
    "sharepoint.sites[1]": "https://contoso.sharepoint.com/sites/sales{}team",
    "sharepoint.tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47{}",
    "graph.client_id": "72f988bf-86f1-41af-91ab-2d7cd011db47{}",
    "graph.tenant_id": "{}72f988bf-86f1-41af-91ab-2d7cd011db47",
    "graph.certificate_thumbprint": "0123456789ABCDEF0123456789ABCDEF01234567{}",
    "change.ticket": "CHG-{}1234",
    "change.summary": "S2S for the {}sales team",
    "change.window": "2026-12-05 20:00{}-22:00 CET",
    "crm.organization": "conto{}so",
    "app.client_id": "{}72f988bf-86f1-41af-91ab-2d7cd011db47",
    "app.name": "psbridge-{}crm",
    "app.msal_package": "./msal/microsoft.identity.client.4.11.0{}.nupkg",
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


@pytest.mark.parametrize("field", sorted(FIELD_FORMS))
def test_every_field_form_is_valid_as_written(field: str) -> None:
    """Guard for the tests below: without the inserted character each form is valid."""
    from psbridge.parameters import parse_parameters

    parse_parameters(with_field(field, FIELD_FORMS[field].format("")))


@pytest.mark.parametrize("char", list(LINE_BREAKS), ids=list(LINE_BREAKS.values()))
@pytest.mark.parametrize("field", sorted(FIELD_FORMS))
def test_a_line_break_or_control_character_is_a_validation_error(psbridge, tmp_path: Path, field: str,
                                                                 char: str) -> None:
    params = write(tmp_path, with_field(field, FIELD_FORMS[field].format(char)))
    result = psbridge("validate", params)
    assert_usage_error(result, f"{field}: contains a control character or line break ({LINE_BREAKS[char]}")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("value", ["*.contoso.com\n", "*.contoso\u2028.com", "*.contoso.com\x85"])
def test_render_refuses_what_validate_refuses_without_a_traceback(psbridge, tmp_path: Path, value: str) -> None:
    params = write(tmp_path, with_field("crm.root_domain", value))
    for command in ("validate", "render"):
        result = psbridge(command, params)
        assert_usage_error(result, "crm.root_domain: contains a control character or line break")
    assert not (tmp_path / "output").exists()


@pytest.mark.parametrize("field,value", [
    ("certificate.pfx_path", "C:\\certs\\a\u2028b.pfx"),
    ("certificate.service_account", "contoso\\svc\u2029"),
    ("sharepoint.sites[1]", "https://contoso.sharepoint.com/sites/a\x85b"),
    ("crm.tools_dir", "C:\\Tools\u2028"),
])
def test_render_of_unicode_line_separators_is_a_validation_error(psbridge, tmp_path: Path, field: str,
                                                                 value: str) -> None:
    result = psbridge("render", write(tmp_path, with_field(field, value)))
    assert_usage_error(result, f"{field}: contains a control character or line break")
    assert not (tmp_path / "output").exists()


# --------------------------------------------------------------------------- 2. invisible characters

INVISIBLE = {
    "\u200b": "U+200B (ZERO WIDTH SPACE)",
    "\u202e": "U+202E (RIGHT-TO-LEFT OVERRIDE)",
    "\u2066": "U+2066 (LEFT-TO-RIGHT ISOLATE)",
    "\ufeff": "U+FEFF (ZERO WIDTH NO-BREAK SPACE)",
    "\u00ad": "U+00AD (SOFT HYPHEN)",
    "\U000e0041": "U+E0041 (TAG LATIN CAPITAL LETTER A)",
}


@pytest.mark.parametrize("char", list(INVISIBLE), ids=[v.split()[0] for v in INVISIBLE.values()])
@pytest.mark.parametrize("field", sorted(FIELD_FORMS))
def test_an_invisible_character_is_refused_in_every_field(psbridge, tmp_path: Path, field: str, char: str) -> None:
    result = psbridge("validate", write(tmp_path, with_field(field, FIELD_FORMS[field].format(char))))
    assert_usage_error(result, f"{field}: contains the invisible character {INVISIBLE[char]}")
    assert len(result.stderr.splitlines()) == 1
    assert char not in result.stderr


def test_visible_non_ascii_and_quotes_are_still_accepted(psbridge, tmp_path: Path) -> None:
    """Refusing invisible characters must not refuse real names (é, ’, $) in paths and accounts."""
    data = with_field("certificate.pfx_path", "C:\\Certificats\\clé’s $x.pfx")
    data["certificate"]["service_account"] = "contoso\\Müller"
    result = psbridge("render", write(tmp_path, data))
    assert result.exit_code == 0, result.stderr


# --------------------------------------------------------------------------- 3. files that are not parameters files


def run_with_timeout(*args: str | os.PathLike[str], cwd: Path, timeout: float = 20) -> Result:
    """`python -m psbridge ARGS` with a short timeout: a hang fails the test instead of blocking it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSBRIDGE_")}
    proc = subprocess.run([sys.executable, "-m", "psbridge", *map(str, args)], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("command", ["validate", "render"])
def test_deeply_nested_toml_is_a_one_line_error(psbridge, tmp_path: Path, command: str) -> None:
    params = write(tmp_path, "a = " + "[" * 100_000 + "\n")
    result = psbridge(command, params)
    assert_usage_error(result, "params.toml: ", "nested too deeply")
    assert len(result.stderr.splitlines()) == 1


def test_an_integer_too_long_to_convert_is_a_one_line_error(psbridge, tmp_path: Path) -> None:
    result = psbridge("validate", write(tmp_path, "a = " + "1" * 5000 + "\n"))
    assert_usage_error(result, "params.toml: not valid TOML")
    assert len(result.stderr.splitlines()) == 1 and len(result.stderr) < 300


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "params.toml"
    os.mkfifo(fifo)
    started = time.monotonic()
    result = run_with_timeout("validate", fifo, cwd=tmp_path)
    assert_usage_error(result, f"{fifo}: not a regular file (a FIFO)")
    assert time.monotonic() - started < 20


def test_a_directory_is_refused(tmp_path: Path) -> None:
    """Through load_parameters: the CLI's click.Path(dir_okay=False) answers first for a directory."""
    from psbridge.errors import UserError
    from psbridge.parameters import load_parameters

    (tmp_path / "params.toml").mkdir()
    with pytest.raises(UserError, match=r"params.toml: not a regular file \(a folder\)$"):
        load_parameters(tmp_path / "params.toml")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_a_device_is_refused_without_reading_it(tmp_path: Path) -> None:
    result = run_with_timeout("validate", "/dev/zero", cwd=tmp_path)
    assert_usage_error(result, "/dev/zero: not a regular file (a character device)")


def test_a_symlink_to_a_fifo_is_refused(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "params.toml").symlink_to(tmp_path / "pipe")
    result = run_with_timeout("render", "params.toml", cwd=tmp_path)
    assert_usage_error(result, "params.toml: not a regular file (a FIFO)")
    assert not (tmp_path / "output").exists()


def test_a_file_larger_than_the_cap_is_refused(psbridge, tmp_path: Path) -> None:
    text = "# " + "x" * (1024 * 1024) + "\n" + toml_text(BASE)
    result = psbridge("validate", write(tmp_path, text))
    assert_usage_error(result, "params.toml: larger than 1 MiB")
    assert len(result.stderr) < 300


def test_a_file_just_under_the_cap_is_read(psbridge, tmp_path: Path) -> None:
    body = toml_text(BASE)
    text = "# " + "x" * (1024 * 1024 - len(body) - 10) + "\n" + body
    assert len(text.encode()) <= 1024 * 1024
    result = psbridge("validate", write(tmp_path, text))
    assert result.exit_code == 0, result.stderr[:500]


# --------------------------------------------------------------------------- 4. echoed values: clipped and inert


def test_a_huge_value_is_not_echoed_in_full() -> None:
    from psbridge.errors import UserError
    from psbridge.parameters import parse_parameters

    host = "a" * 5_000_000
    data = with_field("sharepoint.sites[1]", f"https://{host}.example.com/")
    with pytest.raises(UserError) as caught:
        parse_parameters(data)
    (line,) = caught.value.problems
    assert line.startswith("sharepoint.sites[1]: ") and len(line) < 400, line[:500]
    assert "… (5000012 characters)" in line


@pytest.mark.parametrize("field,value", [
    ("sharepoint.sites[1]", "https://" + "a" * 500_000 + ".example.com/"),
    ("certificate.service_account", "contoso.com" + "x" * 500_000 + " y\\svc"),
    ("sharepoint.sites[2]", "https://contoso.sharepoint.com/sites/salesteam"),  # listed twice
])
def test_huge_values_are_clipped_in_error_lines(psbridge, tmp_path: Path, field: str, value: str) -> None:
    data = with_field(field, value)
    if field == "sharepoint.sites[2]":
        long_site = "https://contoso.sharepoint.com/sites/" + "s" * 500_000
        data["sharepoint"]["sites"] = [long_site, long_site]
    result = psbridge("validate", write(tmp_path, data))
    assert_usage_error(result, "characters)")
    assert len(result.stderr) < 500, result.stderr[:600]


def test_a_huge_unknown_key_is_clipped(psbridge, tmp_path: Path) -> None:
    text = toml_text(BASE).replace('["crm"]\n', '["crm"]\n' + "k" * 500_000 + " = 1\n")
    result = psbridge("validate", write(tmp_path, text))
    assert_usage_error(result, 'crm."kkkk', "… (500000 characters)\": unknown key")
    assert len(result.stderr) < 400


@pytest.mark.parametrize("key,shown", [
    ("a\nb", 'crm."a\\nb": unknown key'),
    ("\x1b[31mred", 'crm."\\x1b[31mred": unknown key'),
    ("evil\u202elmth", 'crm."evil\\u202elmth": unknown key'),
])
def test_a_toml_key_with_control_characters_gives_one_inert_line(psbridge, tmp_path: Path, key: str,
                                                                 shown: str) -> None:
    data = with_field(f"crm.{key}", "1")
    result = psbridge("validate", write(tmp_path, data))
    assert_usage_error(result, shown)
    assert len(result.stderr.splitlines()) == 1
    assert "\x1b" not in result.stderr and "\u202e" not in result.stderr


def test_a_file_name_with_control_characters_is_echoed_inert(psbridge, tmp_path: Path) -> None:
    name = "p\x1b[31m\n.toml"
    result = psbridge("validate", name)
    assert_usage_error(result, "p\\x1b[31m\\n.toml: cannot read")
    assert len(result.stderr.splitlines()) == 1


# --------------------------------------------------------------------------- 5. [crm] server

GOOD_SERVERS = ["crm01", "crm01.contoso.local", "CRM01.Contoso.Local.", "xn--crm-bma.contoso.local",
                "10.0.0.5", "a" * 63 + ".contoso.local"]
BAD_SERVERS = [
    ("", "must be a host name such as crm01.contoso.local"),
    ("10.0.0.256", "not a valid IPv4 address"),
    ("1.2.3", "not a valid IPv4 address"),
    ("010.0.0.5", "not a valid IPv4 address"),
    ("::1", "IPv6 addresses are not supported"),
    ("[fe80::1]", "IPv6 addresses are not supported"),
    ("crm01:5986", "give the host name only"),
    ("https://crm01.contoso.local", "give the host name only"),
    ("crm01.contoso.local/wsman", "give the host name only"),
    ("crm_01.contoso.local", "'crm_01' is not a valid DNS label"),
    ("-crm.contoso.local", "'-crm' is not a valid DNS label"),
    ("crm..contoso.local", "'' is not a valid DNS label"),
    ("a" * 64 + ".contoso.local", "is not a valid DNS label"),
    (".".join(["abcdefghi"] * 26), "longer than 253 characters"),
    ("crmé.contoso.local", "must be ASCII"),
    ("crm.123", "the last label of a DNS name cannot be numeric"),
    ("crm01 .contoso.local", "is not a valid DNS label"),
]


@pytest.mark.parametrize("server", GOOD_SERVERS)
def test_server_accepts_dns_names_and_ipv4_addresses(psbridge, tmp_path: Path, server: str) -> None:
    result = psbridge("validate", write(tmp_path, with_field("crm.server", server)))
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("server,expected", BAD_SERVERS, ids=[b[0][:20] or "empty" for b in BAD_SERVERS])
def test_server_refuses_anything_else(psbridge, tmp_path: Path, server: str, expected: str) -> None:
    result = psbridge("validate", write(tmp_path, with_field("crm.server", server)))
    assert_usage_error(result, "crm.server: ", expected)


def test_server_is_part_of_the_rendered_parameters(psbridge, tmp_path: Path) -> None:
    import json

    result = psbridge("render", write(tmp_path, with_field("crm.server", "crm01.contoso.local")))
    assert result.exit_code == 0, result.stderr
    plan = json.loads((tmp_path / "output/contoso/plan.json").read_text())
    assert plan["parameters"]["crm"]["server"] == "crm01.contoso.local"


def test_normalize_host_compares_case_and_trailing_dot_insensitively() -> None:
    from psbridge.parameters import normalize_host

    assert normalize_host("CRM01.Contoso.Local.") == "crm01.contoso.local"
    assert normalize_host("crm01") == normalize_host("CRM01.") == "crm01"
    assert normalize_host("10.0.0.5") == "10.0.0.5"


def test_server_description_documents_the_rule() -> None:
    from psbridge.parameters import json_schema

    description = json_schema()["$defs"]["Crm"]["properties"]["server"]["description"]
    assert "IPv4" in description and "DNS" in description


def test_init_template_documents_server_and_it_validates_uncommented(psbridge, tmp_path: Path, msal_package) -> None:
    assert psbridge("init", "p.toml").exit_code == 0
    text = (tmp_path / "p.toml").read_text(encoding="utf-8")
    assert '# server = "crm01.contoso.local"' in text
    (tmp_path / "q.toml").write_text(text.replace('# server = "crm01.contoso.local"', 'server = "crm01.contoso.local"'),
                                     encoding="utf-8")
    assert psbridge("validate", "p.toml").exit_code == 0
    assert psbridge("validate", "q.toml").exit_code == 0


# --------------------------------------------------------------------------- 6. hints


@pytest.mark.parametrize("field", ["sharepoint.tenant_id", "graph.client_id", "graph.tenant_id"])
def test_a_guid_in_braces_gets_a_hint(psbridge, tmp_path: Path, field: str) -> None:
    data = with_field(field, "{72f988bf-86f1-41af-91ab-2d7cd011db47}")
    result = psbridge("validate", write(tmp_path, data))
    assert_usage_error(result, f"{field}: must be a GUID", "(remove the braces)")


def test_site_errors_are_numbered_from_one(psbridge, tmp_path: Path) -> None:
    data = with_field("sharepoint.sites[2]", "http://contoso.sharepoint.com/sites/b")
    result = psbridge("validate", write(tmp_path, data))
    assert_usage_error(result, "sharepoint.sites[2]: must be an https:// URL")
    assert "sites.1" not in result.stderr


def test_a_site_listed_twice_names_both_positions(psbridge, tmp_path: Path) -> None:
    site = "https://contoso.sharepoint.com/sites/a"
    data = with_field("sharepoint.sites[1]", site)
    data["sharepoint"]["sites"] = [site, "https://contoso.sharepoint.com/sites/b", site.upper().replace("HTTPS", "https")]
    result = psbridge("validate", write(tmp_path, data))
    assert_usage_error(result, "sharepoint: site listed twice", "sites[1] and sites[3]")


def test_a_url_the_parser_refuses_is_a_field_error(psbridge, tmp_path: Path) -> None:
    for site in ("https://contoso.sharepoint.com:x/sites/a", "https://[contoso.sharepoint.com/sites/a"):
        result = psbridge("validate", write(tmp_path, with_field("sharepoint.sites[1]", site)))
        assert_usage_error(result, "sharepoint.sites[1]: ")


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


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(sorted(FIELD_FORMS)), text=TEXT, raw=st.booleans())
def test_whatever_validation_accepts_quote_accepts(field: str, text: str, raw: bool) -> None:
    from psbridge.errors import UserError
    from psbridge.parameters import parse_parameters
    from psbridge.powershell import quote

    value = text if raw else FIELD_FORMS[field].format(text)
    try:
        params = parse_parameters(with_field(field, value))
    except UserError as exc:
        assert all("\n" not in p and "\x1b" not in p for p in exc.problems)
        return
    for string in _string_values(params.model_dump(mode="json")):
        quote(string)  # raises ValueError if validation let through what rendering refuses


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


def test_the_property_covers_every_string_field() -> None:
    from psbridge.parameters import Parameters

    covered = {f.replace("[1]", "") for f in FIELD_FORMS}
    assert set(_string_fields(Parameters)) == covered


def test_literal_fields_refuse_hidden_characters_too(psbridge, tmp_path: Path) -> None:
    result = psbridge("validate", write(tmp_path, with_field("profile", "msonline\u200b")))
    assert_usage_error(result, "profile: contains the invisible character U+200B")


def test_the_schema_pattern_of_name_is_anchored() -> None:
    """JSON Schema searches a pattern: without anchors `Bad Name-x` would match `x`."""
    from psbridge.parameters import json_schema

    assert json_schema()["properties"]["name"]["pattern"] == "^[a-z0-9][a-z0-9-]{0,62}$"
