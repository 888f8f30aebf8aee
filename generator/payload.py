"""Read the MSAL NuGet package the operator supplies, safely, and keep the two files Microsoft's page names.

Why: Microsoft's page for CE (on-premises) 9.1 has Microsoft.Identity.Client.dll and .xml from the
lib/net45 folder of NuGet package Microsoft.Identity.Client 4.11.0 copied into CRMWeb's bin folder.
psbridge cannot download the package; the operator gives its path. A .nupkg is a zip from outside,
so it is read as hostile: bounded entries and sizes, no names that escape, no XML entities, and the
DLL must carry Microsoft's Authenticode signature (see authenticode.py).

Nothing is written to disk here: the files come back as bytes for the package writer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # zipfile is imported by the functions that read a .nupkg: an ACS render never pays for it
    import zipfile

from .authenticode import Signer, verify_pe
from .errors import UserError

PACKAGE_ID = "Microsoft.Identity.Client"
PACKAGE_VERSION = "4.11.0"
#: Entry in the .nupkg → file in the package's payload/ folder.
PAYLOAD_FILES: dict[str, str] = {
    "lib/net45/Microsoft.Identity.Client.dll": "payload/Microsoft.Identity.Client.dll",
    "lib/net45/Microsoft.Identity.Client.xml": "payload/Microsoft.Identity.Client.xml",
}
DLL_ENTRY = "lib/net45/Microsoft.Identity.Client.dll"
#: The package's payload files → the PowerShell parameter a step takes each one as (base64 text);
#: the file's sha256 goes as the same name + "Sha256" (the msal-assembly and additional-servers steps).
#: The package files of the payload, as the steps that take them name them.
MSAL_FILES: tuple[str, ...] = tuple(PAYLOAD_FILES.values())

PAYLOAD_PARAMETERS: dict[str, str] = {
    "payload/Microsoft.Identity.Client.dll": "MsalDll",
    "payload/Microsoft.Identity.Client.xml": "MsalXml",
}
NOT_SIGNED_XML = "not signed: documentation file (IntelliSense XML)"

# Bounds. The real 4.11.0 package is a few MB with well under a hundred entries; these leave room and
# still stop a zip bomb before it costs memory.
MAX_ENTRIES = 1000
MAX_ENTRY_BYTES = 32 * 1024 * 1024  # any one entry, uncompressed
MAX_TOTAL_BYTES = 256 * 1024 * 1024  # all entries together, as declared
MAX_RATIO = 100  # uncompressed / compressed, for entries large enough to matter
RATIO_FLOOR = 64 * 1024  # entries smaller than this are not judged by ratio
MAX_NUSPEC_BYTES = 1024 * 1024
_CHUNK = 64 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclasses.dataclass(frozen=True)
class Payload:
    """The files to ship (name in the package → bytes), their digests, and the DLL's signer."""

    files: dict[str, bytes]
    sha256: dict[str, str]
    signer: Signer

    def facts(self) -> list[dict[str, object]]:
        """plan.json's record of each payload file: name, sha256, size and signer (never the bytes)."""
        dll = PAYLOAD_FILES[DLL_ENTRY]
        return [{"file": name, "sha256": self.sha256[name], "size": len(data),
                 "signer": self.signer.facts() if name == dll else NOT_SIGNED_XML}
                for name, data in sorted(self.files.items())]

    def review_rows(self) -> list[dict[str, object]]:
        """REVIEW.md's payload table: file, sha256, size and the signer in one line (never the bytes)."""
        rows = []
        for fact in self.facts():
            signer = fact["signer"]
            if isinstance(signer, dict):
                signer = (f"{signer['subject']}; issued by {signer['issuer']}; serial {signer['serial']}; "
                          f"signed {signer['signing_time'] or 'without a timestamp'}; root {signer['root']}")
            rows.append({**fact, "signer": str(signer)})
        return rows


def check_payload(params: Any, payload: Payload | None) -> None:
    """An app package carries the MSAL payload; an ACS package carries none (its files stay today's)."""
    if params.app_trust and payload is None:
        raise UserError('trust = "app": the package needs the MSAL payload (app.msal_package, read by '
                        "payload_for); psbridge does not render an app package without it")
    if not params.app_trust and payload is not None:
        raise UserError('the MSAL payload belongs to a package of trust = "app"; this one is of the ACS trust')


@dataclasses.dataclass(frozen=True)
class PayloadView:
    """Everything a render writes, shows and records of a package's payload, taken in one call."""

    files: Mapping[str, bytes]
    #: plan.json's `payload` (empty: an ACS package, which records none).
    facts: list[dict[str, object]]
    #: REVIEW.md's payload table.
    review: list[dict[str, object]]
    #: Package file -> how setup.ps1 passes it: the PowerShell parameter (`MsalDll`), the file under
    #: the package folder in Windows form and its sha256, which setup.ps1 compares first.
    setup: Mapping[str, dict[str, str]]


def payload_view(params: Any, payload: Payload | None) -> PayloadView:
    """The payload as a render uses it, after `check_payload`; empty for an ACS package."""
    check_payload(params, payload)
    if payload is None:
        return PayloadView({}, [], [], {})
    setup = {name: {"parameter": PAYLOAD_PARAMETERS[name], "file": name.replace("/", "\\"),
                    "sha256": payload.sha256[name]} for name in payload.files}
    return PayloadView(dict(payload.files), payload.facts(), payload.review_rows(), setup)


#: Tests only: DER roots that replace Microsoft's wherever this module verifies the DLL without
#: explicit `roots` (render's `payload_for`, the package gates' `payload_from_files`), so that a
#: whole package signed by the tests' own CA can go through render, approve and run in a test.
#: It is None in psbridge itself: no option, environment variable or file sets it; only a test's
#: `monkeypatch.setattr(payload, "TEST_ROOTS", ...)` does (tests/support/msal.py).
TEST_ROOTS: Sequence[bytes] | None = None


def _roots(roots: Sequence[bytes] | None) -> Sequence[bytes] | None:
    """The roots to judge by: the explicit ones, else the tests' hook, else None (Microsoft's)."""
    return roots if roots is not None else TEST_ROOTS


def read_msal_package(path: Path, roots: Sequence[bytes] | None = None) -> Payload:
    """Read and check the .nupkg at `path`; `roots` replaces Microsoft's roots (tests only)."""
    label = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{label}: cannot read the MSAL package ({exc.strerror or exc})") from None
    import io
    import zipfile

    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError):
        raise UserError(f"{label}: not a valid zip (.nupkg) file") from None
    with archive:
        entries = _checked_entries(archive, label)
        _check_nuspec(archive, entries, label)
        files = {target: _read_entry(archive, entries, entry, label) for entry, target in PAYLOAD_FILES.items()}
    signer = verify_pe(files[PAYLOAD_FILES[DLL_ENTRY]], f"{label}: {DLL_ENTRY}", _roots(roots))
    return Payload(files=files, sha256={n: hashlib.sha256(d).hexdigest() for n, d in files.items()}, signer=signer)


def payload_from_files(files: Mapping[str, bytes], where: str = "",
                       roots: Sequence[bytes] | None = None) -> Payload:
    """The payload of a rendered package, from its own payload/ files: the DLL's signature verified again.

    Why: approve, verify and run re-render an app package to prove it is psbridge's; the .nupkg it
    was rendered from need not exist where they run, so the package's bytes are judged again,
    offline, exactly as render judged them, and give the same facts. `where`, when given, prefixes
    the file names in messages (the package's folder).
    """
    prefix = f"{where}/" if where else ""
    missing = [name for name in PAYLOAD_FILES.values() if name not in files]
    if missing:
        raise UserError(f"{prefix}{missing[0]}: missing (an app package carries the MSAL payload)")
    chosen = {name: bytes(files[name]) for name in sorted(PAYLOAD_FILES.values())}
    dll = PAYLOAD_FILES[DLL_ENTRY]
    signer = verify_pe(chosen[dll], f"{prefix}{dll}", _roots(roots))
    return Payload(files=chosen, sha256={n: hashlib.sha256(d).hexdigest() for n, d in chosen.items()}, signer=signer)


def payload_for(params: Any, base_dir: Path | str) -> Payload | None:
    """The MSAL payload an app package of `params` carries; None for the ACS trust (no payload).

    `app.msal_package` is taken relative to the parameters file's folder (`base_dir`), like
    `[certificate] local_cer`; every refusal is one line naming the field.
    """
    if not getattr(params, "app_trust", False):
        return None
    path = Path(params.app.msal_package).expanduser()
    path = path if path.is_absolute() else Path(base_dir) / path
    try:
        return read_msal_package(path)
    except UserError as exc:
        raise UserError(*(f"app.msal_package: {p}" for p in exc.problems)) from None


def _checked_entries(archive: zipfile.ZipFile, label: str) -> dict[str, zipfile.ZipInfo]:
    """Every entry's name and declared sizes are sane; returns name → entry."""
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise UserError(f"{label}: {len(infos)} entries in the zip, more than {MAX_ENTRIES}")
    entries: dict[str, zipfile.ZipInfo] = {}
    seen: set[str] = set()
    total = 0
    for info in infos:
        _check_name(info.filename, label)
        if info.filename.lower() in seen:  # Windows folds case: two such names are one file there
            raise UserError(f"{label}: duplicate entry {info.filename!r}")
        seen.add(info.filename.lower())
        _check_size(info, label)
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise UserError(f"{label}: more than {MAX_TOTAL_BYTES} bytes uncompressed in all (zip bomb?)")
        entries[info.filename] = info
    return entries


def _check_name(name: str, label: str) -> None:
    """Refuse a name that could land outside a folder it is extracted to."""
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or "\0" in name or _DRIVE.match(name)
            or any(part in ("..", ".") for part in parts)):
        raise UserError(f"{label}: entry {name!r} escapes the archive (absolute, '..', backslash or drive)")


def _check_size(info: zipfile.ZipInfo, label: str) -> None:
    """Declared sizes within bounds, and no entry compressed implausibly well."""
    if info.file_size > MAX_ENTRY_BYTES:
        raise UserError(f"{label}: entry {info.filename!r} declares {info.file_size} bytes, "
                        f"more than {MAX_ENTRY_BYTES} (zip bomb?)")
    if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise UserError(f"{label}: entry {info.filename!r} compresses {info.file_size}:{info.compress_size}, "
                        f"beyond {MAX_RATIO}:1 (zip bomb?)")


def _read_entry(archive: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo], name: str, label: str,
                limit: int = MAX_ENTRY_BYTES) -> bytes:
    """The entry's bytes, read in chunks and never more than it declared or `limit` (header sizes lie)."""
    info = entries.get(name)
    if info is None:
        raise UserError(f"{label}: no {name} in the package")
    import zipfile

    bound = min(info.file_size, limit)
    buffer = bytearray()
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                buffer += chunk
                if len(buffer) > bound:
                    raise UserError(f"{label}: entry {name!r} inflates past its declared size (zip bomb?)")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError,
            RuntimeError) as exc:  # RuntimeError: an encrypted entry
        raise UserError(f"{label}: entry {name!r} is corrupt ({_one_line(exc)})") from None
    if len(buffer) != info.file_size:
        raise UserError(f"{label}: entry {name!r} is shorter than it declares (corrupt zip)")
    return bytes(buffer)


def _one_line(exc: BaseException) -> str:
    """An exception's text on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_nuspec(archive: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo], label: str) -> None:
    """The root .nuspec names Microsoft.Identity.Client, version 4.11.0 exactly."""
    roots = [name for name in entries if "/" not in name and name.lower().endswith(".nuspec")]
    if len(roots) != 1:
        raise UserError(f"{label}: expected one .nuspec at the package root, found {len(roots)}")
    text = _read_entry(archive, entries, roots[0], label, MAX_NUSPEC_BYTES)
    metadata = _parse_nuspec(text, f"{label}: {roots[0]}")
    if metadata.get("id") != PACKAGE_ID:
        raise UserError(f"{label}: package id {metadata.get('id')!r}, expected {PACKAGE_ID!r}")
    if metadata.get("version") != PACKAGE_VERSION:
        raise UserError(f"{label}: package version {metadata.get('version')!r}, expected {PACKAGE_VERSION!r}")


def _parse_nuspec(data: bytes, label: str) -> dict[str, str]:
    """`<metadata>`'s id and version, by local name (the nuspec namespace varies by NuGet version).

    expat is driven directly so that a DOCTYPE (and with it any entity declaration) is refused before
    anything is expanded; ElementTree offers no such hook.
    """
    import xml.parsers.expat

    path: list[str] = []
    found: dict[str, str] = {}
    text: list[str] = []

    def refuse_doctype(*_args: object) -> None:
        raise UserError(f"{label}: has a DOCTYPE (entities are not accepted)")

    def start(name: str, _attrs: dict[str, str]) -> None:
        path.append(name.rsplit("}", 1)[-1])
        text.clear()

    def end(_name: str) -> None:
        if len(path) == 3 and path[:2] == ["package", "metadata"] and path[2] in ("id", "version"):
            found.setdefault(path[2], "".join(text).strip())
        path.pop()

    parser = xml.parsers.expat.ParserCreate(namespace_separator="}")
    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise UserError(f"{label}: not well-formed XML ({_one_line(exc)})") from None
    return found
