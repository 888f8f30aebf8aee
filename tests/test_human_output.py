"""`show` prints values for people (no Python reprs); `cert inspect` wraps the base64 like PEM."""

from __future__ import annotations

import base64
from pathlib import Path

from support import certfactory as cf
from support.winrm_peer.package import make_package

CERT = {"source": "certs/s2s.pfx", "subject": "CN=contoso", "thumbprint": "AB" * 20, "sha256": "cd" * 32,
        "serial": "01", "issuer": "CN=contoso", "not_before": "2026-01-01T00:00:00Z",
        "not_after": "2027-01-01T00:00:00Z", "self_signed": True,
        "warnings": ["self-signed: for evaluation only", "expires in 20 days"]}


def test_show_prints_yes_no_and_one_line_per_warning(psbridge, tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "output", certificate=CERT)
    result = psbridge("show", pkg)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for repr_text in ("True", "False", "None", "['", "[]", "{'"):
        assert repr_text not in out, repr_text
    lines = out.splitlines()
    assert "  self_signed: yes" in lines
    start = lines.index("  warnings:")
    assert lines[start + 1:start + 3] == ["    - self-signed: for evaluation only", "    - expires in 20 days"]


def test_show_without_warnings_says_none(psbridge, tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "output", certificate={**CERT, "self_signed": False, "warnings": []})
    out = psbridge("show", pkg).stdout.splitlines()
    assert "  self_signed: no" in out and "  warnings:    none" in out


def test_cert_inspect_wraps_the_base64_at_64_columns(psbridge, tmp_path: Path) -> None:
    leaf = cf.cert()
    path = cf.write(tmp_path / "s2s.cer", cf.der(leaf))
    result = psbridge("cert", "inspect", path)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("CredentialValue")) + 1
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("  "))
    body = [line[2:] for line in lines[start:end]]
    expected = base64.b64encode(cf.der(leaf)).decode()
    assert len(expected) > 64 and "".join(body) == expected
    assert all(len(line) == 64 for line in body[:-1]) and 0 < len(body[-1]) <= 64
    assert len(lines[start - 1]) <= 80
