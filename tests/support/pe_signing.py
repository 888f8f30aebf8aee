"""Signed test PE files and .nupkg zips for tests/test_payload.py.

A test CA (made here with `cryptography`) issues a code-signing certificate and a time-stamping
authority; Debian's `osslsigncode` signs a minimal hand-made PE32 with them. osslsigncode's built-in
TSA (-TSA-certs/-TSA-key/-TSA-time) makes an RFC 3161 timestamp offline, so the timestamped path is
tested without a network. Every file lives in the test's temporary folder.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import struct
import subprocess
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.now(timezone.utc).replace(microsecond=0)
DAY = timedelta(days=1)


def osslsigncode_or_skip() -> str:
    """The osslsigncode binary; skip without it, but fail under CI (which installs it: .ci/run)."""
    found = shutil.which("osslsigncode")
    if found:
        return found
    reason = "osslsigncode not installed: apt-get install osslsigncode (.ci/run installs it)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)


def osslsigncode_with_tsa_or_skip() -> str:
    """osslsigncode with its built-in TSA (-TSA-certs; 2.9 ships in the machine images, 2.5 lacks it)."""
    tool = osslsigncode_or_skip()
    usage = subprocess.run([tool, "--help"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    if "-TSA-certs" in usage.stdout + usage.stderr:
        return tool
    reason = "this osslsigncode has no built-in TSA (-TSA-certs): the timestamped cases need osslsigncode >= 2.6"
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)


def minimal_pe32() -> bytes:
    """A valid 1 KiB PE32 image (i386, one .text section holding `ret`) that osslsigncode signs.

    Laid out by hand after the PE/COFF specification: DOS header with e_lfanew, COFF header,
    a 0xE0-byte optional header with 16 data directories (all empty), one section header.
    """
    file_align, section_align = 0x200, 0x1000
    dos = bytearray(0x40)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x40)
    coff = struct.pack("<4sHHIIIHH", b"PE\0\0", 0x14C, 1, 0, 0, 0, 0xE0, 0x0102)
    optional = bytearray(0xE0)
    struct.pack_into("<HBBIIIIII", optional, 0, 0x10B, 14, 0, file_align, 0, 0, 0x1000, 0x1000, 0x1000)
    struct.pack_into("<IIIHHHHHHIIIIHHIIIIII", optional, 28, 0x400000, section_align, file_align,
                     6, 0, 0, 0, 6, 0, 0, 0x2000, file_align, 0, 3, 0x8540,
                     0x100000, 0x1000, 0x100000, 0x1000, 0, 16)
    section = struct.pack("<8sIIIIIIHHI", b".text\0\0\0", 0x1000, 0x1000, file_align, file_align,
                          0, 0, 0, 0, 0x60000020)
    headers = bytes(dos) + coff + bytes(optional) + section
    body = b"\xC3" + b"psbridge test PE".ljust(file_align - 1, b"\0")
    return headers.ljust(file_align, b"\0") + body


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclasses.dataclass
class Issued:
    """A certificate and its key."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


@dataclasses.dataclass
class TestCA:
    """A self-signed test root that issues code-signing and time-stamping certificates."""

    __test__ = False  # not a pytest class
    root: Issued

    @classmethod
    def create(cls, common_name: str = "psbridge test root") -> TestCA:
        key = _key()
        subject = _name(common_name)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(NOW - 400 * DAY).not_valid_after(NOW + 400 * DAY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                               critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(Issued(cert, key))

    def der(self) -> bytes:
        """The root as DER, the form `roots=` takes."""
        return self.root.cert.public_bytes(serialization.Encoding.DER)

    def issue(self, subject: x509.Name, usage: x509.ObjectIdentifier, *,
              not_before: datetime = NOW - DAY, not_after: datetime = NOW + 30 * DAY) -> Issued:
        """An end-entity certificate for `usage` (code signing or time stamping)."""
        key = _key()
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.root.cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(not_before).not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                               critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]),
                               critical=usage == ExtendedKeyUsageOID.TIME_STAMPING)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root.key.public_key()),
                               critical=False)
                .sign(self.root.key, hashes.SHA256()))
        return Issued(cert, key)

    def code_signer(self, common_name: str = "Microsoft Corporation", organization: str = "Microsoft Corporation",
                    **validity: datetime) -> Issued:
        """A code-signing certificate; by default named exactly like Microsoft's."""
        return self.issue(_name(common_name, organization), ExtendedKeyUsageOID.CODE_SIGNING, **validity)

    def time_stamper(self) -> Issued:
        """A time-stamping authority certificate (critical EKU timeStamping, as RFC 3161 asks)."""
        return self.issue(_name("psbridge test TSA"), ExtendedKeyUsageOID.TIME_STAMPING,
                          not_before=NOW - 300 * DAY, not_after=NOW + 300 * DAY)


@dataclasses.dataclass
class TimestampBy:
    """osslsigncode's built-in TSA: who signs the token, and the moment it states."""

    tsa: Issued
    at: datetime


def sign_pe(tool: str, pe: bytes, signer: Issued, ca: TestCA, folder: Path,
            timestamp: TimestampBy | None = None) -> bytes:
    """`pe` signed by `signer` (SHA-256) with osslsigncode, optionally timestamped; all files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "in.dll").write_bytes(pe)
    (folder / "signer.pem").write_bytes(signer.pem() + ca.root.pem())
    (folder / "signer.key").write_bytes(signer.key_pem())
    command = [tool, "sign", "-certs", str(folder / "signer.pem"), "-key", str(folder / "signer.key"),
               "-h", "sha256", "-n", "psbridge test", "-in", str(folder / "in.dll"), "-out", str(folder / "out.dll")]
    if timestamp is not None:
        (folder / "tsa.pem").write_bytes(timestamp.tsa.pem() + ca.root.pem())
        (folder / "tsa.key").write_bytes(timestamp.tsa.key_pem())
        command += ["-TSA-certs", str(folder / "tsa.pem"), "-TSA-key", str(folder / "tsa.key"),
                    "-TSA-time", str(int(timestamp.at.timestamp()))]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"osslsigncode failed: {done.stdout} {done.stderr}"
    return (folder / "out.dll").read_bytes()


def nuspec(package_id: str = "Microsoft.Identity.Client", version: str = "4.11.0", *, doctype: bool = False) -> bytes:
    """A .nuspec like NuGet's (namespaced), optionally with a DOCTYPE declaring an entity."""
    head = '<?xml version="1.0" encoding="utf-8"?>\n'
    if doctype:
        head += '<!DOCTYPE package [<!ENTITY x "Microsoft.Identity.Client">]>\n'
    return (head + '<package xmlns="http://schemas.microsoft.com/packaging/2013/05/nuspec.xsd">'
            f"<metadata><id>{package_id}</id><version>{version}</version><authors>Microsoft</authors>"
            "</metadata></package>").encode()


def nupkg(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip with `entries` in order (names taken as given, even hostile ones)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 4, 1, 0, 0, 0)), data, compress_type=compression)
    return buffer.getvalue()


def msal_entries(dll: bytes, xml: bytes = b"<doc><assembly>Microsoft.Identity.Client</assembly></doc>",
                 spec: bytes | None = None) -> dict[str, bytes]:
    """The entries of an MSAL-like package: root nuspec, NuGet's bookkeeping, lib/net45 files."""
    return {
        "[Content_Types].xml": b"<Types/>",
        "_rels/.rels": b"<Relationships/>",
        "Microsoft.Identity.Client.nuspec": spec if spec is not None else nuspec(),
        "lib/net45/Microsoft.Identity.Client.dll": dll,
        "lib/net45/Microsoft.Identity.Client.xml": xml,
        "lib/netstandard2.0/Microsoft.Identity.Client.dll": b"not checked",
    }
