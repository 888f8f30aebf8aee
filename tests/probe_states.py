"""Probe answers (the JSON the probe scripts print) for the server states the check tests use.

A state is a dict probe name -> answer. They describe one CRM server and tenant, before,
during and after the package's change, for the example's parameters (root domain
*.contoso.com) and a certificate with thumbprint THUMB.
"""

from __future__ import annotations

import copy
from typing import Any

THUMB = "A" * 40
OTHER = "B" * 40
CRM_APP = "00000007-0000-0000-c000-000000000000"
SPN = f"{CRM_APP}/*.contoso.com"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"

SERVER = {
    "probe": "server", "edition": "Desktop", "version": "5.1.17763.1", "elevated": True, "snapin": True,
    "modules": {"MSOnline": True, "Microsoft.Graph.Authentication": True, "Microsoft.Graph.Applications": True,
                "Microsoft.Graph.Identity.DirectoryManagement": True},
    "tools_script": True, "pfx_file": True, "cer_file": True, "execution_policy": "RemoteSigned",
}


def _cert(store: list[dict[str, Any]], cer: str = THUMB) -> dict[str, Any]:
    return {"probe": "certificate", "cer_thumbprint": cer, "cer_subject": "CN=crm.contoso.com",
            "cer_not_before": "2026-01-01T00:00:00.0000000Z", "cer_not_after": "2027-01-01T00:00:00.0000000Z",
            "store": store}


def _crm(thumbprints: list[str], settings: bool) -> dict[str, Any]:
    values = {"S2SDefaultAuthorizationServerPrincipalId": "00000001-0000-0000-c000-000000000000",
              "S2SDefaultAuthorizationServerMetadataUrl": "https://accounts.accesscontrol.windows.net/metadata/json/1"}
    return {"probe": "crm", "certificate_type": "S2STokenIssuer", "thumbprints": thumbprints,
            "server_settings": values if settings else {k: None for k in values}}


def _entra(keys: list[str], names: list[str]) -> dict[str, Any]:
    return {"probe": "entra", "service_principal_found": True, "service_principal_names": names,
            "key_credentials": [{"thumbprint": k, "start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"}
                                for k in keys], "tenant_id": TENANT}


IN_STORE = {"thumbprint": THUMB, "has_private_key": True, "not_after": "2027-01-01T00:00:00Z", "key_readable": True,
            "key_access": {"key_file": "C:\\ProgramData\\Microsoft\\Crypto\\Keys\\0123abcd", "key_store": "CNG",
                           "readable": True, "via": "account", "note": None}}

STATES: dict[str, dict[str, dict[str, Any]]] = {
    "fresh server": {
        "server": SERVER, "certificate": _cert([]), "crm": _crm([], settings=False),
        "entra": _entra([], [f"{CRM_APP}"]),
    },
    # The run failed at step 06: the certificate is installed, Entra ID and the settings are not.
    "half configured": {
        "server": SERVER, "certificate": _cert([IN_STORE]), "crm": _crm([THUMB], settings=False),
        "entra": _entra([], [f"{CRM_APP}"]),
    },
    "fully configured": {
        "server": SERVER, "certificate": _cert([IN_STORE]), "crm": _crm([THUMB], settings=True),
        "entra": _entra([OTHER, THUMB], [f"{CRM_APP}", SPN]),
    },
    "wrong certificate on server": {
        "server": SERVER, "certificate": _cert([dict(IN_STORE, thumbprint=OTHER)], cer=OTHER),
        "crm": _crm([OTHER], settings=True), "entra": _entra([OTHER], [f"{CRM_APP}", SPN]),
    },
}


def state(name: str) -> dict[str, dict[str, Any]]:
    return copy.deepcopy(STATES[name])
