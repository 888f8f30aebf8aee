"""A secret the server echoes in a JSON form is redacted like its plain text (attack review, item 2).

Windows PowerShell 5.1's ConvertTo-Json (JavaScriptSerializer) writes `<` `>` `&` `'` as `\\u003c`,
`\\u003e`, `\\u0026`, `\\u0027` and escapes `"` and `\\`; Python's json writes non-ASCII as `\\uXXXX`; any
JSON writer may escape any character, in upper or lower hex. The redactor replaced only the plain
text, so `{"pw":"O365-Pa55!word\\u003c\\u0026\\u003e"}` in a step's output reached the screen and the
run record, and a reader that decodes the JSON had the password.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from psbridge.cli import main
from psbridge.remote.redact import Redactor, json_unescape

from support.cli import run_args
from support.lab import O365_PASSWORD, PFX_PASSWORD, SECRETS, WINRM_PASSWORD, assert_no_secrets
from support.steps import STEP
from support.winrm_peer.package import marker
from support.winrm_peer import ErrorSpec, Reply

_HTML = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "'": "\\u0027"}


def ps51_json(text: str, upper: bool = False) -> str:
    """A string's body as Windows PowerShell 5.1's ConvertTo-Json writes it (JavaScriptSerializer)."""
    out = []
    for char in text:
        if char in _HTML or ord(char) < 0x20 and char not in "\b\t\n\f\r":
            escape = f"\\u{ord(char):04x}"
            out.append(escape.upper().replace("\\U", "\\u") if upper else escape)
        else:
            out.append(json.dumps(char)[1:-1] if char in '"\\\b\t\n\f\r' else char)
    return "".join(out)


def every_char_escaped(text: str, upper: bool = False) -> str:
    """Every character as `\\uXXXX`: still the secret to any JSON reader."""
    escaped = json.dumps(text, ensure_ascii=True)[1:-1]  # astral characters as surrogate pairs
    decoded = json.loads(f'"{escaped}"')
    units = decoded.encode("utf-16-le")
    hexes = [f"{int.from_bytes(units[i:i + 2], 'little'):04x}" for i in range(0, len(units), 2)]
    return "".join(f"\\u{h.upper() if upper else h}" for h in hexes)


ENCODERS = {
    "ConvertTo-Json (5.1)": ps51_json,
    "ConvertTo-Json, upper hex": lambda s: ps51_json(s, upper=True),
    "Python json, ASCII": lambda s: json.dumps(s)[1:-1],
    "Python json, Unicode": lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    "every character escaped": every_char_escaped,
    "every character escaped, upper hex": lambda s: every_char_escaped(s, upper=True),
    "JSON in a JSON string": lambda s: json.dumps(ps51_json(s))[1:-1],
}


def all_forms(secret: str) -> list[str]:
    return [encode(secret) for encode in ENCODERS.values()]


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("secret", [*SECRETS, "pässwörd-ü-😀-long", "back\\slash\\u0041-and-\"quotes\""])
def test_a_secret_in_a_json_form_is_masked_and_the_json_still_reads(encoder: str, secret: str) -> None:
    encode = ENCODERS[encoder]
    text = '{"user":"jane","password":"' + encode(secret) + '","n":1}'
    cleaned = Redactor([secret])(text)
    assert cleaned == '{"user":"jane","password":"[redacted]","n":1}', cleaned
    for form in all_forms(secret):
        assert form not in cleaned


@given(st.text(min_size=8, max_size=16), st.text(max_size=12), st.text(max_size=12), st.sampled_from(list(ENCODERS)))
def test_no_json_reader_finds_the_secret_after_redaction(secret: str, before: str, after: str, encoder: str) -> None:
    """Whatever surrounds it, the JSON form of a long secret is masked whole: decoding what is left (the
    escapes around it stay whole) never gives the secret back."""
    body = ENCODERS[encoder](before + secret + after)
    cleaned = Redactor([secret])(body)
    assert secret not in cleaned
    decoded, _ = json_unescape(cleaned)
    assert secret not in decoded
    assert secret not in json_unescape(decoded)[0]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_a_short_secret_in_a_json_form_withholds_its_line(encoder: str) -> None:
    secret = "a<b'c"  # shorter than 8: its lines are withheld
    text = "first\n" + '{"pw":"' + ENCODERS[encoder](secret) + '"}\nlast'
    assert Redactor([secret])(text) == "first\n[line withheld: it contained a secret]\nlast"


def test_json_unescape_keeps_where_each_character_came_from() -> None:
    text = 'a\\u003cb\\\\u0041\\"\\ud83d\\ude00\\x'
    decoded, spans = json_unescape(text)
    assert decoded == 'a<b\\u0041"😀\\x'  # `\\\\` is a backslash: the `u0041` after it is text
    assert spans[1] == (1, 7) and spans[3] == (8, 10) and spans[9] == (15, 17) and spans[10] == (17, 29)
    assert spans[-2:] == [(29, 30), (30, 31)]  # not an escape: kept as it is


def test_text_without_a_secret_is_left_as_it_is() -> None:
    text = '{"a":"\\u003cb\\u003e","b":"x\\\\y"}'
    assert Redactor([O365_PASSWORD])(text) == text


def test_a_step_echoing_the_passwords_through_convertto_json_reaches_no_screen_record_or_json(
        pkg, http_peer, engine, secrets_env, capsys, tmp_path):
    """Against the loopback peer: step 02 writes the secrets as ConvertTo-Json would (output, error, information,
    warning); the screen, `--json` and the run record hold none of their forms."""
    echoed = [ps51_json(s) for s in SECRETS] + [ps51_json(s, upper=True) for s in SECRETS]
    engine.when(marker(STEP[2]), Reply(
        output=[json.dumps({"pw": s}) for s in SECRETS] + ['{"pw":"' + e + '"}' for e in echoed],
        information=['{"pfx":"' + ps51_json(PFX_PASSWORD) + '"}'],
        warnings=['{"winrm":"' + ps51_json(WINRM_PASSWORD, upper=True) + '"}'],
        errors=[ErrorSpec('bad {"o365":"' + ps51_json(O365_PASSWORD) + '"}')]))
    code = main([*run_args(pkg, http_peer), "--json"])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    [record] = list((pkg / "runs").glob("*.jsonl"))
    data = record.read_text(encoding="utf-8")
    end = next(json.loads(line) for line in data.splitlines() if '"step-end"' in line and '"failed"' in line)
    assert end["output"] and all(line == '{"pw": "[redacted]"}' or line == '{"pw":"[redacted]"}'
                                 for line in end["output"]), end["output"]
    assert end["errors"][0]["message"] == 'bad {"o365":"[redacted]"}'
    code = main(run_args(pkg, http_peer))  # and on the screen (the failure's error lines are printed)
    screen, err2 = capsys.readouterr()
    assert 'bad {"o365":"[redacted]"}' in screen
    for blob in (out, err, data, screen, err2, *(r.read_bytes() for r in (pkg / "runs").glob("*.jsonl"))):
        assert_no_secrets(blob)
        text = blob.decode("utf-8") if isinstance(blob, bytes) else blob
        for secret in SECRETS:
            for form in all_forms(secret):
                assert form not in text, (secret, form)
