"""`psbridge cert new --like OLD` renews a certificate, and `run` warns when the certificate ends before its approval.

Every certificate is made here (tests/support/certfactory.py) or by psbridge itself; the approved
run talks to the loopback WinRM peer.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from psbridge import certificates as certs
from psbridge import newcert
from psbridge.cli import main
from psbridge.dn import windows_dn

from support import certfactory as cf
from support.lab import O365_USER, USER
from support.probe_states import THUMB
from support.winrm_peer import WinRMPeer
from support.winrm_peer.package import make_package

OLD_PASSWORD = "Old-Pfx-$ecret;'1"
NEW_PASSWORD = "New-Pfx-$ecret;'2"
START = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """`psbridge ARGS` in-process, with only the PSBRIDGE_ variables given and `stdin` as standard input."""

    def run(*args: object, stdin: str = "", **env: str) -> Run:
        for name in [n for n in os.environ if n.startswith("PSBRIDGE_") and n != "PSBRIDGE_AUDIT_LOG"]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        for text in (out, err):
            assert OLD_PASSWORD not in text and NEW_PASSWORD not in text and "Traceback" not in text
        return Run(code, out, err)

    return run


def both_passwords() -> dict[str, str]:
    return {certs.LIKE_PFX_PASSWORD_ENV: OLD_PASSWORD, certs.PFX_PASSWORD_ENV: NEW_PASSWORD}


def unusual_subject() -> x509.Name:
    """Windows form X, with a PrintableString
    CN and IA5String e-mail (psbridge would write UTF8String for a typed CN): the copy must keep every byte."""
    return x509.Name([
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "US")]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.EMAIL_ADDRESS, "ops@contoso.com")]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Contoso"),
                                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "CRM")]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "crm.contoso.com",
                                                           _type=_ASN1Type.PrintableString)]),
    ])


def old_certificate(tmp_path: Path, *, size: int = 3072, lifetime: timedelta = timedelta(days=730, hours=3),
                    subject: x509.Name | None = None, kind: str = "pfx") -> tuple[Path, x509.Certificate]:
    """The certificate being renewed, as a PFX (OLD_PASSWORD) or a DER .cer in tmp/old/."""
    key = cf.key(size)
    old = cf.cert(subject or unusual_subject(), subject_key=key, not_before=START, not_after=START + lifetime,
                  self_signed=True)
    if kind == "pfx":
        return cf.write(tmp_path / "old" / "s2s.pfx", cf.pfx(old, key, OLD_PASSWORD)), old
    return cf.write(tmp_path / "old" / "s2s.cer", cf.der(old)), old


def new_certificate(path: Path, password: str = NEW_PASSWORD) -> x509.Certificate:
    loaded = pkcs12.load_pkcs12(path.read_bytes(), password.encode())
    assert loaded.cert is not None and loaded.key is not None
    return loaded.cert.certificate


# --------------------------------------------------------------------------- cert new --like


def test_like_a_pfx_copies_subject_key_size_and_validity(cli, tmp_path: Path) -> None:
    old_path, old = old_certificate(tmp_path)
    run = cli("cert", "new", "--like", old_path, "--out", tmp_path / "new", "--json", **both_passwords())
    assert run.code == 0, run.err
    document = json.loads(run.out)
    made = new_certificate(Path(document["pfx"]))  # the new PFX opens with the new password ...
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(Path(document["pfx"]).read_bytes(), OLD_PASSWORD.encode())  # ... not with the old one
    # The same subject byte for byte: RDNs, their order, the multi-valued RDN, the string types.
    assert made.subject.public_bytes() == old.subject.public_bytes()
    assert windows_dn(made.subject) == windows_dn(old.subject) == \
        "CN=crm.contoso.com, OU=CRM + O=Contoso, E=ops@contoso.com, C=US"
    assert made.public_key().key_size == 3072
    assert made.not_valid_after_utc - made.not_valid_before_utc == timedelta(days=730)
    assert made.not_valid_after_utc > datetime.now(timezone.utc) + timedelta(days=729)  # valid from now, not from OLD
    assert document["like"] == {"file": str(old_path), "thumbprint": hashlib.sha1(cf.der(old)).hexdigest().upper(),
                                "subject": windows_dn(old.subject), "days": 730, "key_size": 3072}
    assert document["certificate"]["subject"] == windows_dn(old.subject)
    assert Path(document["pfx"]).name == "crm.contoso.com.pfx"
    # One note and nothing else: the same subject can't serve a renewal while OLD is in use.
    assert run.err.splitlines() == [run.err.strip()] and "needs another subject: cert new --subject" in run.err
    assert cli("cert", "inspect", document["pfx"], **{certs.PFX_PASSWORD_ENV: NEW_PASSWORD}).code == 0


def test_like_a_cer_needs_no_password_and_days_and_key_size_override(cli, tmp_path: Path) -> None:
    old_path, old = old_certificate(tmp_path, kind="cer", size=2048)
    run = cli("cert", "new", "--like", old_path, "--days", "90", "--key-size", "4096", "--out", tmp_path / "new",
              "--name", "renewed", **{certs.PFX_PASSWORD_ENV: NEW_PASSWORD})
    assert run.code == 0, run.err
    assert "Renews " in run.out and "the same subject, 90 days, RSA 4096 bits" in run.out
    made = new_certificate(tmp_path / "new" / "renewed.pfx")
    assert made.subject.public_bytes() == old.subject.public_bytes()
    assert made.public_key().key_size == 4096
    assert made.not_valid_after_utc - made.not_valid_before_utc == timedelta(days=90)


@pytest.mark.parametrize("lifetime,days", [
    (timedelta(days=364, hours=13), 365),  # rounded to the nearest day
    (timedelta(days=365, hours=11), 365),
    (timedelta(days=365, minutes=10), 365),  # New-SelfSignedCertificate-like: NotBefore a little before now
    (timedelta(hours=12), 1),
])
def test_like_rounds_the_validity_to_days(tmp_path: Path, lifetime: timedelta, days: int) -> None:
    old_path, _ = old_certificate(tmp_path, kind="cer", size=2048, lifetime=lifetime)
    assert newcert.like_certificate(old_path, None).days == days


def test_an_expired_old_certificate_is_the_usual_one_to_renew(cli, tmp_path: Path) -> None:
    key = cf.key(2048)
    old = cf.cert(cf.name(CN="crm.contoso.com", O="Contoso"), subject_key=key, self_signed=True,
                  not_before=START - timedelta(days=400), not_after=START - timedelta(days=35))
    old_path = cf.write(tmp_path / "old.cer", cf.der(old))
    run = cli("cert", "new", "--like", old_path, "--out", tmp_path / "new", "--json", **both_passwords())
    assert run.code == 0, run.err
    assert json.loads(run.out)["like"]["days"] == 365
    assert not [f for f in json.loads(run.out)["certificate"]["findings"] if f["level"] == "error"]


def test_subject_and_like_together_are_refused_naming_both(cli, tmp_path: Path) -> None:
    old_path, _ = old_certificate(tmp_path, kind="cer", size=2048)
    out = tmp_path / "new"
    run = cli("cert", "new", "--subject", "CN=crm.contoso.com", "--like", old_path, "--out", out, **both_passwords())
    assert run.code == 2
    assert "--subject" in run.err and "--like" in run.err and len(run.err.strip().splitlines()) == 1
    assert not out.exists()
    neither = cli("cert", "new", "--out", out, **both_passwords())
    assert neither.code == 2 and "--subject" in neither.err and "--like" in neither.err
    assert not out.exists()


def test_a_weak_old_key_becomes_2048_with_a_warning(cli, tmp_path: Path) -> None:
    old_path, _ = old_certificate(tmp_path, size=1024)
    run = cli("cert", "new", "--like", old_path, "--out", tmp_path / "new", "--json", **both_passwords())
    assert run.code == 0, run.err
    warning = [line for line in run.err.splitlines() if line.startswith("psbridge: warning:")]
    assert len(warning) == 1 and "1024 bits" in warning[0] and "2048" in warning[0]
    assert new_certificate(Path(json.loads(run.out)["pfx"])).public_key().key_size == 2048
    explicit = cli("cert", "new", "--like", old_path, "--key-size", "3072", "--out", tmp_path / "new3", "--json",
                   **both_passwords())
    assert explicit.code == 0 and "warning" not in explicit.err  # --key-size overrides: nothing to warn about
    assert new_certificate(Path(json.loads(explicit.out)["pfx"])).public_key().key_size == 3072


def test_the_old_pfx_password_never_comes_from_the_new_ones(cli, tmp_path: Path) -> None:
    old_path, old = old_certificate(tmp_path, size=2048)
    out = tmp_path / "new"
    # The new PFX's variable holds the old password: it must not be used to open OLD.
    run = cli("cert", "new", "--like", old_path, "--out", out, **{certs.PFX_PASSWORD_ENV: OLD_PASSWORD})
    assert run.code == 2 and certs.LIKE_PFX_PASSWORD_ENV in run.err and "--like-password-stdin" in run.err
    assert not out.exists()
    wrong = cli("cert", "new", "--like", old_path, "--out", out,
                **{certs.LIKE_PFX_PASSWORD_ENV: NEW_PASSWORD, certs.PFX_PASSWORD_ENV: NEW_PASSWORD})
    assert wrong.code == 2 and wrong.err.startswith(f"psbridge: error: --like: {old_path}: wrong password")
    assert not out.exists()
    # --like-password-stdin: the old password on stdin, the new one from its variable.
    piped = cli("cert", "new", "--like", old_path, "--like-password-stdin", "--out", out, "--json",
                stdin=OLD_PASSWORD + "\n", **{certs.PFX_PASSWORD_ENV: NEW_PASSWORD})
    assert piped.code == 0, piped.err
    assert new_certificate(Path(json.loads(piped.out)["pfx"])).subject == old.subject
    both = cli("cert", "new", "--like", old_path, "--like-password-stdin", "--password-stdin", "--out", tmp_path / "x",
               stdin=OLD_PASSWORD + "\n" + NEW_PASSWORD + "\n")
    assert both.code == 2 and "--password-stdin" in both.err and "--like-password-stdin" in both.err
    assert not (tmp_path / "x").exists()


def test_like_never_replaces_the_certificate_it_renews(cli, tmp_path: Path) -> None:
    old_path, _ = old_certificate(tmp_path, size=2048)
    before = old_path.read_bytes()
    run = cli("cert", "new", "--like", old_path, "--out", old_path.parent, "--name", "s2s", "--force",
              **both_passwords())
    assert run.code == 2 and "would be replaced" in run.err
    assert old_path.read_bytes() == before and not (old_path.parent / "s2s.cer").exists()


def test_like_refuses_a_validity_it_cannot_copy_unless_days_is_given(cli, tmp_path: Path) -> None:
    old_path, _ = old_certificate(tmp_path, kind="cer", size=2048, lifetime=timedelta(days=5 * 3650))
    run = cli("cert", "new", "--like", old_path, "--out", tmp_path / "new", **both_passwords())
    assert run.code == 2 and "18250 days" in run.err and "--days" in run.err
    assert cli("cert", "new", "--like", old_path, "--days", "365", "--out", tmp_path / "new",
               **both_passwords()).code == 0


def test_like_refuses_a_subject_without_a_cn(cli, tmp_path: Path) -> None:
    old_path, _ = old_certificate(tmp_path, kind="cer", size=2048, subject=cf.name(O="Contoso", C="US"))
    run = cli("cert", "new", "--like", old_path, "--out", tmp_path / "new", **both_passwords())
    assert run.code == 2 and "no CN" in run.err and "--subject" in run.err


@pytest.mark.parametrize(("value", "named"), [
    ("crm\x1b[2J.contoso.com", "U+001B"), ("crm.contoso.com\nstep 08 forged", "U+000A"),
    ("moc.osotnoc\u202e.crm", "U+202E RIGHT-TO-LEFT OVERRIDE"), ("crm\u200b.contoso.com", "U+200B ZERO WIDTH SPACE"),
    ("crm\x85.contoso.com", "U+0085"), ("crm\u2028.contoso.com", "U+2028 LINE SEPARATOR"),
    ("crm\t.contoso.com", "U+0009")])
@pytest.mark.parametrize("attribute", [NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME])
def test_like_refuses_a_subject_with_control_or_invisible_characters(cli, tmp_path: Path, value: str, named: str,
                                                                     attribute: x509.ObjectIdentifier) -> None:
    """Issue 20 item 5: psbridge refuses Cf and control characters in subjects it creates; `--like` copied a
    hostile OLD's subject (an ESC sequence, a line break, a bidi override) into the new certificate as it was."""
    cn = value if attribute == NameOID.COMMON_NAME else "crm.contoso.com"
    names = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if attribute != NameOID.COMMON_NAME:
        names.append(x509.NameAttribute(attribute, value))
    old_path, _ = old_certificate(tmp_path, kind="cer", size=2048, subject=x509.Name(names))
    run = cli("cert", "new", "--like", old_path, "--out", tmp_path / "new", **both_passwords())
    assert run.code == 2, run.err
    [line] = run.err.strip().splitlines()
    assert line.startswith("psbridge: error: --like: ") and named in line and str(old_path) in line
    assert value not in line  # the refusal names the character, it does not print it
    assert not (tmp_path / "new").exists()


# --------------------------------------------------------------------------- run: certificate vs approval


def facts(not_after: datetime) -> dict[str, object]:
    stamp = not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"source": "certs/s2s.pfx", "subject": "CN=crm.contoso.com", "thumbprint": THUMB, "sha256": "0" * 64,
            "serial": "01", "issuer": "CN=crm.contoso.com", "not_before": "2025-01-01T00:00:00Z",
            "not_after": stamp, "self_signed": True, "warnings": []}


def approved_run(tmp_path: Path, keys: dict[str, Path], peer: WinRMPeer, not_after: datetime) -> list[str]:
    pkg = make_package(tmp_path / "output", server="127.0.0.1", certificate=facts(not_after))
    assert main(["approve", str(pkg), "--key", str(keys["jane"]), "--expires", "7d"]) == 0
    return ["run", str(pkg), "--port", str(peer.port), "--transport", "http", "--auth", "ntlm",
            "--username", USER, "--o365-user", O365_USER, "--require-approval", "--trusted-keys", str(keys["trusted"])]


def test_run_warns_when_the_certificate_expires_before_the_approval(tmp_path, keys, http_peer, engine, secrets_env,
                                                                    capsys) -> None:
    soon = (datetime.now(timezone.utc) + timedelta(days=2)).replace(microsecond=0)
    args = approved_run(tmp_path, keys, http_peer, soon)
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "before the approval" in line]
    expires = json.loads(next((tmp_path / "output" / "contoso" / "approvals").glob("*.json")).read_text())["expires_at"]
    assert warnings == [f"psbridge: warning: the certificate CN=crm.contoso.com expires "
                        f"{soon.strftime('%Y-%m-%dT%H:%M:%SZ')}, before the approval "
                        f"(Jane Doe <jane@contoso.com> until {expires})"]


def test_run_says_nothing_when_the_certificate_outlasts_the_approval(tmp_path, keys, http_peer, engine, secrets_env,
                                                                     capsys) -> None:
    args = approved_run(tmp_path, keys, http_peer, datetime.now(timezone.utc) + timedelta(days=30))
    capsys.readouterr()
    assert main(args) == 0
    assert "before the approval" not in capsys.readouterr().err
