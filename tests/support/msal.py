"""A MSAL payload signed by the tests' own CA, and what a whole app package needs to render in a test.

psbridge trusts only Microsoft's code-signing roots. A test cannot have a Microsoft-signed
Microsoft.Identity.Client.dll, so it signs a minimal PE with a test CA (support/pe_signing.py) and
makes psbridge trust that CA for the test only, through `payload.TEST_ROOTS` (monkeypatched; nothing
in psbridge sets it). `trusted_payload` returns the `Payload` render takes; `write_nupkg` puts the
test .nupkg next to a parameters file, as an operator would.

`app_stand_ins` bridges the time before the other app units are merged: it registers a stand-in
unit for each app step id the registry does not have yet (the msal-assembly stand-in takes the
payload files) and leaves out the app probes whose templates do not exist yet. Once the real
units and probes are in, it registers nothing and the tests run against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import pytest

from psbridge import catalogue, payload
from psbridge.payload import PAYLOAD_FILES, Payload, read_msal_package
from psbridge.steps import Backout, Step, StepUnit, every_profile
from psbridge import steps as registry

from .pe_signing import TestCA, minimal_pe32, msal_entries, nupkg, osslsigncode_or_skip, sign_pe

NUPKG_NAME = "Microsoft.Identity.Client.4.11.0.nupkg"
XML = b"<doc><assembly><name>Microsoft.Identity.Client</name></assembly></doc>"
#: The app units of the design, in their order, and what each stand-in says it changes.
APP_UNITS = {
    "app-registration": "Entra ID: the app registration, its service principal and admin consent",
    "app-certificate": "Entra ID: the S2S certificate as a key credential of the app",
    "partner-applications": "CRM configuration database: the organization's partner application rows",
    "msal-assembly": "CRM server: Microsoft.Identity.Client.dll and .xml in CRMWeb\\bin",
}
STAND_IN = "{{ header }}\n# stand-in of this app step (tests only)\nparam({{ params }})\nWrite-Output 'stand-in'\n"


@dataclass(frozen=True)
class SignedMsal:
    """A test .nupkg (bytes), the CA whose root signs its DLL, and the payload read from it."""

    nupkg: bytes
    ca: TestCA
    payload: Payload


def make_signed_msal(folder: Path) -> SignedMsal:
    """Sign a minimal DLL with a fresh test CA, pack it like MSAL 4.11.0 and read it with that root."""
    tool = osslsigncode_or_skip()
    ca = TestCA.create()
    dll = sign_pe(tool, minimal_pe32(), ca.code_signer(), ca, folder / "signing")
    data = nupkg(msal_entries(dll, XML))
    path = folder / NUPKG_NAME
    path.write_bytes(data)
    return SignedMsal(data, ca, read_msal_package(path, roots=[ca.der()]))


def trust_test_root(monkeypatch: pytest.MonkeyPatch, msal: SignedMsal) -> None:
    """psbridge trusts the test CA for this test (payload_for, the package gates), never beyond it."""
    monkeypatch.setattr(payload, "TEST_ROOTS", (msal.ca.der(),))


def write_nupkg(params_file: Path, msal: SignedMsal, relative: str = NUPKG_NAME) -> Path:
    """The test .nupkg where `app.msal_package = relative` finds it (next to the parameters file)."""
    path = params_file.parent / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msal.nupkg)
    return path


def app_stand_ins(monkeypatch: pytest.MonkeyPatch, folder: Path) -> list[str]:
    """Register stand-ins for the app units the registry lacks; drop app probes without a template.

    Returns the ids it stood in for (empty once the real units are merged).
    """
    known = {u.id for u in registry.UNITS}
    missing = [step_id for step_id in APP_UNITS if step_id not in known]
    added = []
    for step_id in missing:
        templates = folder / step_id
        templates.mkdir(parents=True, exist_ok=True)
        takes = step_id == "msal-assembly"
        params = "[string] $MsalDll, [string] $MsalXml, [string] $MsalDllSha256, [string] $MsalXmlSha256" if takes else ""
        (templates / "step.ps1.j2").write_text(STAND_IN.replace("{{ params }}", params), encoding="utf-8")
        step = Step(0, step_id, f"Stand-in of {step_id}", "change", changes=APP_UNITS[step_id], one_template=True,
                    payload=tuple(sorted(PAYLOAD_FILES.values())) if takes else ())
        added.append(StepUnit(step_id, every_profile(step), included="app", template_dir=templates,
                              backout=Backout(step_id, (), manual=f"by hand (stand-in of {step_id})")))
    if added:
        monkeypatch.setattr(registry, "UNITS", (*registry.UNITS, *added))
    probes = files("psbridge.templates") / "probes"
    present = tuple(p for p in catalogue.APP_PROBES if (probes / f"{p}.ps1.j2").is_file())
    monkeypatch.setattr(catalogue, "APP_PROBES", present)
    return missing
