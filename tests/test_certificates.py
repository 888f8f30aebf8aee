"""`psbridge cert inspect | new | export-cer` and psbridge.certificates, with certificates made here."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from psbridge import certificates as certs
from psbridge.cli import main
from psbridge.errors import UserError

from support import certfactory as cf

PASSWORD = "Pfx-Secr3t-'$`;\"-ü"  # quotes, $, backtick, ; and non-ASCII: must never be echoed
ENV = certs.PFX_PASSWORD_ENV


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> dict:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run `psbridge ARGS` in-process through psbridge.cli.main (exit codes mapped as for users)."""

    def run(*args: object, password: str | None = PASSWORD, stdin: str = "") -> Run:
        for name in [n for n in os.environ if n.startswith("PSBRIDGE_")]:
            monkeypatch.delenv(name)
        if password is not None:
            monkeypatch.setenv(ENV, password)
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        for text in (out, err):
            assert PASSWORD not in text and "Traceback" not in text
        return Run(code, out, err)

    return run


def one_error_line(run: Run, path: Path | str) -> str:
    assert run.code == 2, run
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("psbridge: error: ") and str(path) in lines[0]
    return lines[0]


def codes(run: Run) -> dict[str, str]:
    return {f["code"]: f["level"] for f in run.json["findings"]}


# --------------------------------------------------------------------------- inspect: good files


def test_valid_pfx_facts_match_the_der(cli, tmp_path: Path) -> None:
    leaf = cf.cert()
    path = cf.write(tmp_path / "s2s.pfx", cf.pfx(leaf, cf.key(), PASSWORD))
    run = cli("cert", "inspect", path, "--json")
    assert run.code == 0, run.err
    data = run.json
    der = cf.der(leaf)
    assert data["thumbprint"] == hashlib.sha1(der).hexdigest().upper()
    assert data["sha256"] == hashlib.sha256(der).hexdigest().upper()
    assert data["der_base64"] == base64.b64encode(der).decode()
    assert data["subject"] == "CN=crm.contoso.com, O=Contoso, C=US"
    assert data["issuer"] == "CN=psbridge test CA, O=Tests"
    assert data["serial_number"] == "1234"
    assert data["not_before"] == certs.iso_utc(leaf.not_valid_before_utc)
    assert data["not_after"] == certs.iso_utc(leaf.not_valid_after_utc)
    assert (data["key_type"], data["key_size"]) == ("RSA", 2048)
    assert data["has_private_key"] is True and data["private_key_matches"] is True
    assert data["self_signed"] is False and data["certificate_count"] == 1
    assert data["format"] == "pfx" and data["findings"] == []


def test_text_report_lists_every_fact(cli, tmp_path: Path) -> None:
    leaf = cf.cert()
    path = cf.write(tmp_path / "s2s.p12", cf.pfx(leaf, cf.key(), PASSWORD))
    run = cli("cert", "inspect", path)
    assert run.code == 0
    for label in ("Subject:", "Issuer:", "Serial number:", "Thumbprint (SHA-1):", "SHA-256:", "Not before (UTC):",
                  "Not after (UTC):", "Key:", "Private key:", "Key usage:", "Extended key usage:", "Self-signed:",
                  "Certificates in file:", "CredentialValue", "Findings: none"):
        assert label in run.out
    assert base64.b64encode(cf.der(leaf)).decode() in run.out.replace("\n  ", "")  # wrapped at 64, like PEM


@pytest.mark.parametrize("suffix,encode", [(".cer", "der"), (".crt", "pem"), (".pem", "pem"), (".der", "der")])
def test_certificate_files_der_and_pem(cli, tmp_path: Path, suffix: str, encode: str) -> None:
    leaf = cf.cert()
    data = cf.der(leaf) if encode == "der" else cf.pem(leaf)
    run = cli("cert", "inspect", cf.write(tmp_path / f"c{suffix}", data), "--json", password=None)
    assert run.code == 0, run.err
    assert run.json["format"] == encode
    assert run.json["has_private_key"] is None and run.json["private_key_matches"] is None
    assert run.json["thumbprint"] == hashlib.sha1(cf.der(leaf)).hexdigest().upper()


def test_pem_after_explanatory_text(cli, tmp_path: Path) -> None:
    leaf = cf.cert()
    path = cf.write(tmp_path / "c.pem", b"Bag Attributes\n    friendlyName: s2s\nsubject=CN = crm\n" + cf.pem(leaf))
    run = cli("cert", "inspect", path, "--json", password=None)
    assert run.code == 0 and run.json["thumbprint"] == hashlib.sha1(cf.der(leaf)).hexdigest().upper()


def test_pfx_password_from_stdin(cli, tmp_path: Path) -> None:
    path = cf.write(tmp_path / "s2s.pfx", cf.pfx(cf.cert(), cf.key(), PASSWORD))
    run = cli("cert", "inspect", path, "--password-stdin", password=None, stdin=PASSWORD + "\n")
    assert run.code == 0, run.err


def test_missing_password_without_terminal_names_the_variable(cli, tmp_path: Path) -> None:
    path = cf.write(tmp_path / "s2s.pfx", cf.pfx(cf.cert(), cf.key(), PASSWORD))
    run = cli("cert", "inspect", path, password=None)
    assert run.code == 2 and ENV in run.err


def test_unencrypted_pfx_opens_without_password(cli, tmp_path: Path) -> None:
    path = cf.write(tmp_path / "s2s.pfx", cf.pfx(cf.cert(), cf.key(), ""))
    assert cli("cert", "inspect", path, password="").code == 0


# --------------------------------------------------------------------------- inspect: findings


def test_expired_is_an_error(cli, tmp_path: Path) -> None:
    leaf = cf.cert(not_before=cf.NOW - timedelta(days=400), not_after=cf.NOW - timedelta(days=1))
    run = cli("cert", "inspect", cf.write(tmp_path / "x.pfx", cf.pfx(leaf, cf.key(), PASSWORD)), "--json")
    assert run.code == 1 and codes(run) == {"expired": "error"}
    assert "not usable as the S2S certificate" in run.err


def test_not_yet_valid_is_an_error(cli, tmp_path: Path) -> None:
    leaf = cf.cert(not_before=cf.NOW + timedelta(days=2), not_after=cf.NOW + timedelta(days=400))
    run = cli("cert", "inspect", cf.write(tmp_path / "x.pfx", cf.pfx(leaf, cf.key(), PASSWORD)), "--json")
    assert run.code == 1 and codes(run) == {"not_yet_valid": "error"}


def test_rsa_1024_is_an_error(cli, tmp_path: Path) -> None:
    weak = cf.key(1024)
    leaf = cf.cert(subject_key=weak)
    run = cli("cert", "inspect", cf.write(tmp_path / "x.pfx", cf.pfx(leaf, weak, PASSWORD)), "--json")
    assert run.code == 1 and codes(run) == {"weak_key": "error"}
    assert run.json["key_size"] == 1024


def test_sha1_signature_is_a_warning(cli, tmp_path: Path) -> None:
    leaf = cf.cert(sha1=True)
    assert leaf.signature_hash_algorithm.name == "sha1"
    run = cli("cert", "inspect", cf.write(tmp_path / "x.pfx", cf.pfx(leaf, cf.key(), PASSWORD)), "--json")
    assert run.code == 0 and codes(run) == {"weak_signature": "warning"}
    assert run.json["signature_algorithm"] == "sha1WithRSAEncryption"


def test_pfx_without_private_key_is_an_error(cli, tmp_path: Path) -> None:
    run = cli("cert", "inspect", cf.write(tmp_path / "x.pfx", cf.pfx(cf.cert(), None, PASSWORD, as_ca_only=True)), "--json")
    assert run.code == 1 and codes(run) == {"no_private_key": "error"}
    assert run.json["has_private_key"] is False


def test_mismatched_key_is_an_error(cli, tmp_path: Path) -> None:
    other = cf.key(2048, 1)
    run = cli("cert", "inspect", cf.write(tmp_path / "x.pfx", cf.pfx(cf.cert(), other, PASSWORD, as_ca_only=True)), "--json")
    assert run.code == 1 and codes(run) == {"key_mismatch": "error"}
    assert run.json["has_private_key"] is True and run.json["private_key_matches"] is False


def test_several_certificates_warn_and_the_keyed_one_is_used(cli, tmp_path: Path) -> None:
    leaf = cf.cert()
    ca_cert, _ = cf.ca()
    other = cf.cert(cf.name(CN="other.contoso.com"), subject_key=cf.key(2048, 2))
    data = cf.pfx(leaf, cf.key(), PASSWORD, extra=[ca_cert, other])
    run = cli("cert", "inspect", cf.write(tmp_path / "x.pfx", data), "--json")
    assert run.code == 0 and codes(run) == {"several_certificates": "warning"}
    assert run.json["certificate_count"] == 3
    assert run.json["thumbprint"] == hashlib.sha1(cf.der(leaf)).hexdigest().upper()


def test_keyed_certificate_found_among_unmarked_ones(cli, tmp_path: Path) -> None:
    leaf = cf.cert()
    ca_cert, _ = cf.ca()
    data = cf.pfx(None, cf.key(), PASSWORD, extra=[ca_cert, leaf])
    run = cli("cert", "inspect", cf.write(tmp_path / "x.pfx", data), "--json")
    assert run.json["thumbprint"] == hashlib.sha1(cf.der(leaf)).hexdigest().upper()
    assert run.json["private_key_matches"] is True


def test_expiring_soon_and_self_signed_warn(cli, tmp_path: Path) -> None:
    leaf = cf.cert(self_signed=True, not_after=cf.NOW + timedelta(days=30))
    run = cli("cert", "inspect", cf.write(tmp_path / "x.pfx", cf.pfx(leaf, cf.key(), PASSWORD)), "--json")
    assert run.code == 0 and codes(run) == {"expires_soon": "warning", "self_signed": "warning"}
    assert run.json["self_signed"] is True


def test_unicode_subject(cli, tmp_path: Path) -> None:
    subject = cf.name(CN="Žluťoučký kůň", O="Müller, GmbH", L="Zürich", C="CH")
    leaf = cf.cert(subject)
    run = cli("cert", "inspect", cf.write(tmp_path / "u.cer", cf.der(leaf)), "--json", password=None)
    assert run.code == 0
    assert run.json["subject"] == 'CN=Žluťoučký kůň, O="Müller, GmbH", L=Zürich, C=CH'


# --------------------------------------------------------------------------- bad input: one line, exit 2


def test_wrong_password(cli, tmp_path: Path) -> None:
    path = cf.write(tmp_path / "x.pfx", cf.pfx(cf.cert(), cf.key(), PASSWORD))
    line = one_error_line(cli("cert", "inspect", path, password="not-it"), path)
    assert "wrong password" in line and "not-it" not in line


def test_truncated_pfx(cli, tmp_path: Path) -> None:
    data = cf.pfx(cf.cert(), cf.key(), PASSWORD)
    path = cf.write(tmp_path / "x.pfx", data[: len(data) // 2])
    assert "truncated" in one_error_line(cli("cert", "inspect", path), path)


def test_truncated_der(cli, tmp_path: Path) -> None:
    data = cf.der(cf.cert())
    path = cf.write(tmp_path / "x.cer", data[:-40])
    assert "truncated" in one_error_line(cli("cert", "inspect", path, password=None), path)


@pytest.mark.parametrize("suffix", [".cer", ".pfx", ".pem"])
def test_not_a_certificate(cli, tmp_path: Path, suffix: str) -> None:
    path = cf.write(tmp_path / f"notes{suffix}", b"hello, this is not a certificate\n")
    line = one_error_line(cli("cert", "inspect", path), path)
    assert "not a" in line or "without a certificate" in line


def test_pem_with_several_certificates(cli, tmp_path: Path) -> None:
    ca_cert, _ = cf.ca()
    path = cf.write(tmp_path / "chain.pem", cf.pem(cf.cert(), ca_cert))
    assert "holds 2 certificates" in one_error_line(cli("cert", "inspect", path, password=None), path)


def test_pem_with_only_a_key(cli, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    data = cf.key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path = cf.write(tmp_path / "key.pem", data)
    assert "without a certificate" in one_error_line(cli("cert", "inspect", path, password=None), path)


def test_pfx_without_certificate(cli, tmp_path: Path) -> None:
    path = cf.write(tmp_path / "keyonly.pfx", cf.pfx(None, cf.key(), PASSWORD))
    assert "no certificate" in one_error_line(cli("cert", "inspect", path), path)


def test_missing_file_folder_and_unknown_kind(cli, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pfx"
    assert "no such file" in one_error_line(cli("cert", "inspect", missing), missing)
    folder = tmp_path / "dir.cer"
    folder.mkdir()
    assert "folder" in one_error_line(cli("cert", "inspect", folder), folder)
    odd = cf.write(tmp_path / "cert.txt", cf.der(cf.cert()))
    assert "unknown kind of file" in one_error_line(cli("cert", "inspect", odd), odd)
    empty = cf.write(tmp_path / "empty.cer", b"")
    assert "empty" in one_error_line(cli("cert", "inspect", empty), empty)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_a_fifo_named_like_a_certificate_is_refused_not_read(tmp_path: Path) -> None:
    """A FIFO (or a device such as /dev/zero) would block the read, or never end it."""
    fifo = tmp_path / "pipe.cer"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSBRIDGE_")}
    proc = subprocess.run([sys.executable, "-m", "psbridge", "cert", "inspect", str(fifo)], cwd=tmp_path, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"psbridge: error: {fifo}: not a regular file (a FIFO)"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(cli, tmp_path: Path) -> None:
    path = cf.write(tmp_path / "locked.cer", cf.der(cf.cert()))
    path.chmod(0)
    assert "cannot read" in one_error_line(cli("cert", "inspect", path), path)


def test_unreadable_file_even_as_root(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = cf.write(tmp_path / "locked.pfx", cf.pfx(cf.cert(), cf.key(), PASSWORD))
    real = os.open

    def deny(name, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(name) == path:
            raise PermissionError(13, "Permission denied")
        return real(name, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    assert "permission denied" in one_error_line(cli("cert", "inspect", path), path)


# --------------------------------------------------------------------------- cert new


def test_new_round_trip_agrees_with_inspect(cli, tmp_path: Path) -> None:
    out = tmp_path / "certs"
    made = cli("cert", "new", "--subject", 'CN=crm.contoso.com, O="Contoso, Ltd", C=US', "--out", out, "--json")
    assert made.code == 0, made.err
    pfx_path, cer_path = Path(made.json["pfx"]), Path(made.json["cer"])
    assert (pfx_path.name, cer_path.name) == ("crm.contoso.com.pfx", "crm.contoso.com.cer")
    for path in (pfx_path, cer_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind

    inspected = cli("cert", "inspect", pfx_path, "--json")
    assert inspected.code == 0
    assert inspected.json == made.json["certificate"]  # every field
    data = inspected.json
    assert data["subject"] == 'CN=crm.contoso.com, O="Contoso, Ltd", C=US'
    assert data["key_usage"] == ["digitalSignature", "keyEncipherment"]
    assert data["extended_key_usage"] == ["serverAuth", "clientAuth"]
    assert data["signature_algorithm"] == "sha256WithRSAEncryption"
    assert (data["key_type"], data["key_size"], data["self_signed"]) == ("RSA", 2048, True)
    assert codes(inspected) == {"self_signed": "warning"}

    der = cer_path.read_bytes()
    assert base64.b64encode(der).decode() == data["der_base64"]  # [Convert]::ToBase64String($cert.GetRawCertData())
    assert hashlib.sha1(der).hexdigest().upper() == data["thumbprint"]
    cer_view = cli("cert", "inspect", cer_path, "--json", password=None).json
    assert {k: v for k, v in cer_view.items() if k not in {"path", "format", "has_private_key", "private_key_matches"}} == \
        {k: v for k, v in data.items() if k not in {"path", "format", "has_private_key", "private_key_matches"}}

    for path in (pfx_path, cer_path):
        raw = path.read_bytes()
        for form in (PASSWORD.encode("utf-8"), PASSWORD.encode("utf-16-le"), PASSWORD.encode("utf-16-be")):
            assert form not in raw


def test_new_pfx_encryption_default_and_legacy(cli, tmp_path: Path) -> None:
    aes256_cbc = bytes.fromhex("060960864801650304012a")
    pbes2 = bytes.fromhex("06092a864886f70d01050d")
    triple_des = bytes.fromhex("060a2a864886f70d010c0103")
    assert cli("cert", "new", "--subject", "CN=a.contoso.com", "--out", tmp_path, "--name", "modern").code == 0
    assert cli("cert", "new", "--subject", "CN=a.contoso.com", "--out", tmp_path, "--name", "old", "--legacy-pfx").code == 0
    modern, old = (tmp_path / "modern.pfx").read_bytes(), (tmp_path / "old.pfx").read_bytes()
    assert pbes2 in modern and aes256_cbc in modern and triple_des not in modern
    assert triple_des in old and pbes2 not in old
    for path in (tmp_path / "modern.pfx", tmp_path / "old.pfx"):
        assert cli("cert", "inspect", path).code == 0


def test_new_key_size_days_and_unicode(cli, tmp_path: Path) -> None:
    run = cli("cert", "new", "--subject", "CN=Zürich CRM, O=Müller AG, C=CH", "--days", "30", "--key-size", "3072",
              "--out", tmp_path, "--name", "u", "--json")
    assert run.code == 0, run.err
    data = run.json["certificate"]
    assert data["subject"] == "CN=Zürich CRM, O=Müller AG, C=CH" and data["key_size"] == 3072
    assert codes(Run(0, json.dumps(data), "")) == {"self_signed": "warning", "expires_soon": "warning"}


def test_new_never_overwrites_without_force(cli, tmp_path: Path) -> None:
    args = ("cert", "new", "--subject", "CN=crm.contoso.com", "--out", tmp_path, "--name", "s2s")
    assert cli(*args).code == 0
    before = (tmp_path / "s2s.pfx").read_bytes(), (tmp_path / "s2s.cer").read_bytes()
    again = cli(*args)
    assert again.code == 2 and "--force" in again.err
    assert ((tmp_path / "s2s.pfx").read_bytes(), (tmp_path / "s2s.cer").read_bytes()) == before
    (tmp_path / "s2s.pfx").unlink()
    only_cer = cli(*args)
    assert only_cer.code == 2 and not (tmp_path / "s2s.pfx").exists()
    forced = cli(*args, "--force")
    assert forced.code == 0 and (tmp_path / "s2s.cer").read_bytes() != before[1]


def test_new_password_from_stdin(cli, tmp_path: Path) -> None:
    run = cli("cert", "new", "--subject", "CN=x.contoso.com", "--out", tmp_path, "--password-stdin", password=None,
              stdin=PASSWORD + "\n")
    assert run.code == 0, run.err
    assert cli("cert", "inspect", tmp_path / "x.contoso.com.pfx").code == 0


@pytest.mark.parametrize(
    "subject,fragment",
    [
        ("", "empty"),
        ("crm.contoso.com", "KEY=value"),
        ("CN=a,", "ends with"),
        ("X=1, CN=a", "unknown key"),
        ('CN="a', "unterminated"),
        ("CN=a, C=USA", "two letters"),
        (r"CN=a\, b", "backslash"),
        ("CN=", "empty value"),
        ("O=Contoso", "needs a CN"),
        ('CN="a" b', "after the quoted value"),
    ],
)
def test_new_rejects_bad_subjects(cli, tmp_path: Path, subject: str, fragment: str) -> None:
    out = tmp_path / "out"
    run = cli("cert", "new", "--subject", subject, "--out", out)
    assert run.code == 2 and fragment in run.err and len(run.err.strip().splitlines()) == 1, run.err
    assert not out.exists()


def test_new_rejects_bad_name_days_and_key_size(cli, tmp_path: Path) -> None:
    base = ("cert", "new", "--subject", "CN=a.contoso.com", "--out", tmp_path)
    assert cli(*base, "--name", "../evil").code == 2
    assert cli(*base, "--days", "0").code == 2
    assert cli(*base, "--key-size", "1024").code == 2
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- export-cer


def test_export_cer(cli, tmp_path: Path) -> None:
    leaf = cf.cert()
    path = cf.write(tmp_path / "s2s.pfx", cf.pfx(leaf, cf.key(), PASSWORD))
    out = tmp_path / "s2s.cer"
    run = cli("cert", "export-cer", path, "-o", out)
    assert run.code == 0, run.err
    assert out.read_bytes() == cf.der(leaf)
    assert hashlib.sha1(cf.der(leaf)).hexdigest().upper() in run.out
    again = cli("cert", "export-cer", path, "-o", out)
    assert again.code == 2 and "--force" in again.err
    assert cli("cert", "export-cer", path, "-o", out, "--force").code == 0


def test_export_cer_bad_password_writes_nothing(cli, tmp_path: Path) -> None:
    path = cf.write(tmp_path / "s2s.pfx", cf.pfx(cf.cert(), cf.key(), PASSWORD))
    out = tmp_path / "s2s.cer"
    one_error_line(cli("cert", "export-cer", path, "-o", out, password="wrong"), path)
    assert not out.exists()


def test_serial_number_as_windows_shows_it() -> None:
    assert certs.windows_serial(0x1234) == "1234"
    assert certs.windows_serial(0x80) == "0080"  # DER keeps the sign byte; Windows shows it
    assert certs.windows_serial(0) == "00"


# --------------------------------------------------------------------------- helpers for the plan


def test_certificate_facts_and_store_find_type(tmp_path: Path) -> None:
    leaf = cf.cert()
    info = certs.inspect_file(cf.write(tmp_path / "c.cer", cf.der(leaf)))
    facts = certs.certificate_facts(info)
    assert facts == {
        "subject": "CN=crm.contoso.com, O=Contoso, C=US",
        "thumbprint": hashlib.sha1(cf.der(leaf)).hexdigest().upper(),
        "sha256": hashlib.sha256(cf.der(leaf)).hexdigest().upper(),
        "not_before": leaf.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "serial": "1234",
        "issuer": "CN=psbridge test CA, O=Tests",
        "self_signed": False,
    }
    assert certs.subject_fits_store_find_type(info, "FindBySubjectDistinguishedName") is None
    empty = certs.inspect_file(cf.write(tmp_path / "e.cer", cf.der(cf.cert(x509.Name([])))))
    assert empty.subject == "" and "empty_subject" in {f.code for f in empty.findings}
    assert "empty subject" in certs.subject_fits_store_find_type(empty, "FindBySubjectDistinguishedName")
    assert certs.subject_fits_store_find_type(empty, "FindByThumbprint") is None


def test_library_raises_user_error_naming_the_file(tmp_path: Path) -> None:
    path = cf.write(tmp_path / "x.pfx", cf.pfx(cf.cert(), cf.key(), PASSWORD))
    with pytest.raises(UserError) as caught:
        certs.inspect_file(path, "wrong")
    assert str(path) in caught.value.problems[0]


# --------------------------------------------------------------------------- the real command


def test_real_command_round_trip_and_fast_start(psbridge, tmp_path: Path) -> None:
    env = {ENV: PASSWORD}
    made = psbridge("cert", "new", "--subject", "CN=crm.contoso.com, O=Contoso", "--out", "certs", env=env)
    assert made.exit_code == 0, made.stderr
    seen = psbridge("cert", "inspect", "certs/crm.contoso.com.pfx", "--json", env=env)
    assert seen.exit_code == 0 and json.loads(seen.stdout)["subject"] == "CN=crm.contoso.com, O=Contoso"
    bad = psbridge("cert", "inspect", "certs/crm.contoso.com.pfx", env={ENV: "nope"})
    assert bad.exit_code == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    for result in (made, seen, bad):
        assert PASSWORD not in result.stdout + result.stderr
    probe = subprocess.run([sys.executable, "-c", "import sys, psbridge.cli; print('cryptography' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "False"


# --------------------------------------------------------------------------- wiring into validate / render

PARAMS = """\
name = "contoso"
profile = "msonline"

[certificate]
pfx_path = "C:\\\\Personalcertfile.pfx"
cer_path = "C:\\\\Personalcertfile.cer"
service_account = "contoso\\\\CRMWebApplicationService"
{local}

[crm]
root_domain = "*.contoso.com"

[sharepoint]
sites = ["https://contoso.sharepoint.com/sites/salesteam"]
"""


def parameters_file(folder: Path, local: str) -> Path:
    path = folder / "contoso.toml"
    path.write_text(PARAMS.format(local=local), encoding="utf-8")
    return path


def rendered_text(package: Path, name: str) -> str:
    data = (package / "steps" / name).read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    return data[3:].decode("utf-8").replace("\r\n", "\n")


def test_render_records_the_certificate_in_steps_plan_and_review(cli, tmp_path: Path) -> None:
    from support.pwsh_grammar import syntax_errors

    from psbridge.powershell import quote

    leaf = cf.cert(not_before=cf.NOW - timedelta(days=3), not_after=cf.NOW + timedelta(days=700))
    cf.write(tmp_path / "certs" / "s2s.pfx", cf.pfx(leaf, cf.key(), PASSWORD))
    params = parameters_file(tmp_path, 'local_pfx = "certs/s2s.pfx"')
    assert cli("validate", params).code == 0
    run = cli("render", params, "--out", tmp_path / "out")
    assert run.code == 0, run.err
    package = tmp_path / "out" / "contoso"
    thumbprint = hashlib.sha1(cf.der(leaf)).hexdigest().upper()
    start, end = certs.iso_utc(leaf.not_valid_before_utc), certs.iso_utc(leaf.not_valid_after_utc)

    step05 = rendered_text(package, "05-set-certificate.ps1")
    assert f"$ApprovedThumbprint = {quote(thumbprint)}" in step05
    assert "if ($Certificate.Thumbprint -ne $ApprovedThumbprint) {" in step05 and "throw (" in step05
    assert step05.index("$Certificate.Import(") < step05.index("$ApprovedThumbprint") < step05.index("$CredentialValue =")
    step06 = rendered_text(package, "06-spn.ps1")
    # the dates come from the certificate step 05 read (and checked against the approved thumbprint)
    assert "$StartDate = $Certificate.NotBefore.ToUniversalTime()" in step06
    assert "$EndDate = $Certificate.NotAfter.ToUniversalTime()" in step06
    assert "-Value $CredentialValue -StartDate $StartDate -EndDate $EndDate" in step06
    for text in (step05, step06):
        assert syntax_errors(text) == []

    plan = json.loads((package / "plan.json").read_text(encoding="utf-8"))
    assert plan["certificate"] == {
        "subject": "CN=crm.contoso.com, O=Contoso, C=US", "thumbprint": thumbprint,
        "sha256": hashlib.sha256(cf.der(leaf)).hexdigest().upper(), "not_before": start, "not_after": end,
        "serial": "1234", "issuer": "CN=psbridge test CA, O=Tests", "self_signed": False,
        "source": "certs/s2s.pfx", "warnings": [],
    }
    assert plan["parameters"]["certificate"]["local_pfx"] == "certs/s2s.pfx"
    review = (package / "REVIEW.md").read_text(encoding="utf-8")
    section = review[review.index("## Certificate"):review.index("## Steps")]
    for fact in (thumbprint, start, end, "CN=crm.contoso.com, O=Contoso, C=US"):
        assert fact in section

    for path in package.rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            assert PASSWORD.encode("utf-8") not in raw and PASSWORD.encode("utf-16-le") not in raw, path


def test_render_with_local_cer_and_warnings(cli, tmp_path: Path) -> None:
    leaf = cf.cert(self_signed=True, not_after=cf.NOW + timedelta(days=20))
    cf.write(tmp_path / "s2s.cer", cf.der(leaf))
    params = parameters_file(tmp_path, 'local_cer = "s2s.cer"')
    run = cli("render", params, "--out", tmp_path / "out", password=None)
    assert run.code == 0, run.err
    assert "psbridge: warning: certificate.local_cer: self-signed" in run.err
    assert "psbridge: warning: certificate.local_cer: expires in" in run.err
    plan = json.loads((tmp_path / "out" / "contoso" / "plan.json").read_text(encoding="utf-8"))
    assert plan["certificate"]["self_signed"] is True and len(plan["certificate"]["warnings"]) == 2
    assert "- Warning: " in (tmp_path / "out" / "contoso" / "REVIEW.md").read_text(encoding="utf-8")


def test_render_without_local_certificate_is_unchanged(cli, tmp_path: Path) -> None:
    params = parameters_file(tmp_path, "")
    assert cli("render", params, "--out", tmp_path / "out", password=None).code == 0
    package = tmp_path / "out" / "contoso"
    # step 06 still gives the credential the validity of the server's .cer (read in step 05)
    assert "-StartDate $StartDate -EndDate $EndDate" in rendered_text(package, "06-spn.ps1")
    assert "ApprovedThumbprint" not in rendered_text(package, "05-set-certificate.ps1")
    assert "certificate" not in json.loads((package / "plan.json").read_text(encoding="utf-8"))
    assert "## Certificate" not in (package / "REVIEW.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("kind,fragment", [
    ("expired", "expired on"),
    ("not_yet_valid", "not valid before"),
    ("keyless", "no private key"),
    ("mismatched", "does not belong"),
    ("weak", "1024 bits"),
    ("empty_subject", "empty subject"),
])
@pytest.mark.parametrize("command", ["validate", "render"])
def test_validate_and_render_refuse_unusable_certificates(cli, tmp_path: Path, kind: str, fragment: str, command: str) -> None:
    leaf, private = cf.cert(), cf.key()
    ca_only = False
    if kind == "expired":
        leaf = cf.cert(not_before=cf.NOW - timedelta(days=400), not_after=cf.NOW - timedelta(days=1))
    elif kind == "not_yet_valid":
        leaf = cf.cert(not_before=cf.NOW + timedelta(days=1), not_after=cf.NOW + timedelta(days=400))
    elif kind == "keyless":
        private, ca_only = None, True
    elif kind == "mismatched":
        private, ca_only = cf.key(2048, 1), True
    elif kind == "weak":
        private = cf.key(1024)
        leaf = cf.cert(subject_key=private)
    elif kind == "empty_subject":
        leaf = cf.cert(x509.Name([]))
    cf.write(tmp_path / "s2s.pfx", cf.pfx(leaf, private, PASSWORD, as_ca_only=ca_only))
    params = parameters_file(tmp_path, 'local_pfx = "s2s.pfx"')
    args = (command, params) if command == "validate" else (command, params, "--out", tmp_path / "out")
    run = cli(*args)
    assert run.code == 2, run
    errors = [line for line in run.err.splitlines() if line.startswith("psbridge: error: ")]
    assert errors and all("certificate.local_pfx: " in line for line in errors)
    assert any(fragment in line for line in errors), errors
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("local,fragment", [
    ('local_pfx = "missing.pfx"', "no such file"),
    ('local_pfx = "s2s.pfx"\nlocal_cer = "s2s.cer"', "not both"),
    ('local_pfx = "s2s.cer"', "must end with .pfx or .p12"),
])
def test_bad_local_certificate_parameters(cli, tmp_path: Path, local: str, fragment: str) -> None:
    cf.write(tmp_path / "s2s.pfx", cf.pfx(cf.cert(), cf.key(), PASSWORD))
    params = parameters_file(tmp_path, local)
    run = cli("validate", params)
    assert run.code == 2 and fragment in run.err, run.err


def test_local_pfx_wrong_or_missing_password(cli, tmp_path: Path) -> None:
    cf.write(tmp_path / "s2s.pfx", cf.pfx(cf.cert(), cf.key(), PASSWORD))
    params = parameters_file(tmp_path, 'local_pfx = "s2s.pfx"')
    wrong = cli("render", params, "--out", tmp_path / "out", password="nope")
    assert wrong.code == 2 and "wrong password" in wrong.err and not (tmp_path / "out").exists()
    missing = cli("validate", params, password=None)
    assert missing.code == 2 and ENV in missing.err


def test_local_path_is_relative_to_the_parameters_file(psbridge, tmp_path: Path) -> None:
    cf.write(tmp_path / "conf" / "certs" / "s2s.pfx", cf.pfx(cf.cert(), cf.key(), PASSWORD))
    params = parameters_file(tmp_path / "conf", 'local_pfx = "certs/s2s.pfx"') if (tmp_path / "conf").is_dir() else None
    assert params is not None
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = psbridge("validate", params, env={ENV: PASSWORD}, cwd=elsewhere)
    assert run.exit_code == 0, run.stderr
    assert PASSWORD not in run.stdout + run.stderr


# --------------------------------------------------------------------------- hostile subjects (issue 20, item 5)

HOSTILE_CN = "crm\x1b[2J\x1b]0;pwned\x07\u202egnp.exe\nInjected: yes\u200b"


def _hostile_pfx(tmp_path: Path) -> Path:
    leaf = cf.cert(cf.name(CN=HOSTILE_CN, O="Contoso\u202e"))
    return cf.write(tmp_path / "evil.pfx", cf.pfx(leaf, cf.key(), PASSWORD))


def _inert(text: str) -> None:
    for raw in ("\x1b", "\x07", "\u202e", "\u200b"):
        assert raw not in text, repr(text)


def test_cert_inspect_escapes_a_hostile_subject(cli, tmp_path: Path) -> None:
    path = _hostile_pfx(tmp_path)
    run = cli("cert", "inspect", path)
    _inert(run.out + run.err)
    [subject] = [line for line in run.out.splitlines() if line.startswith("Subject:")]
    assert "\\x1b[2J" in subject and "\\u202e" in subject and "\\n" in subject  # shown, escaped, one line
    assert "Injected: yes" in subject
    as_json = cli("cert", "inspect", path, "--json")
    _inert(as_json.out)
    assert "\\u202e" in as_json.json["subject"] and "\\u202e" in as_json.json["subject_rfc4514"]


def test_review_md_shows_a_hostile_subject_escaped(tmp_path: Path) -> None:
    import copy

    from psbridge.parameters import EXAMPLE, parse_parameters
    from psbridge.render import render_package

    info = certs.inspect_file(_hostile_pfx(tmp_path), PASSWORD)
    facts = {**certs.certificate_facts(info), "source": "certs/evil.pfx", "warnings": []}
    rendered = render_package(parse_parameters(copy.deepcopy(EXAMPLE)), facts)
    review = next(v for k, v in rendered.files.items() if k == "REVIEW.md")
    review = review.decode("utf-8") if isinstance(review, bytes) else review
    _inert(review)
    assert "\\x1b[2J" in review and "\\u202e" in review


@pytest.mark.parametrize("subject", ["CN=crm\u202egnp.exe", "CN=a\u200bb", "CN=crm\x1b[31m", "CN=a\x7fb",
                                     "CN=a\x85b", "CN=a\u2028b", 'CN="a\tb"', "CN=a\ufeff"])
def test_cert_new_refuses_control_and_format_characters(cli, tmp_path: Path, subject: str) -> None:
    run = cli("cert", "new", "--subject", subject, "--out", tmp_path, "--name", "x")
    line = one_error_line(run, "--subject")
    _inert(line)
    assert not list(tmp_path.glob("x.*"))
