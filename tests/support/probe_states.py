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
            "cer_not_before": "2026-01-01T00:00:00.0000000Z", "cer_not_after": "2036-01-01T00:00:00.0000000Z",
            "store": store}


def _crm(thumbprints: list[str], settings: bool, not_after: str = "2036-01-01T00:00:00.0000000Z") -> dict[str, Any]:
    """CRM's S2STokenIssuer certificates (thumbprints, and each with its NotAfter) and ServerSettings."""
    values = {"S2SDefaultAuthorizationServerPrincipalId": "00000001-0000-0000-c000-000000000000",
              "S2SDefaultAuthorizationServerMetadataUrl": "https://accounts.accesscontrol.windows.net/metadata/json/1"}
    return {"probe": "crm", "certificate_type": "S2STokenIssuer", "thumbprints": thumbprints,
            "certificates": [{"thumbprint": t, "not_after": not_after} for t in thumbprints],
            "server_settings": values if settings else {k: None for k in values}}


def _entra(keys: list[str], names: list[str]) -> dict[str, Any]:
    return {"probe": "entra", "service_principal_found": True, "service_principal_names": names,
            "key_credentials": [{"thumbprint": k, "start": "2026-01-01T00:00:00Z", "end": "2036-01-01T00:00:00Z"}
                                for k in keys], "tenant_id": TENANT}


IN_STORE = {"thumbprint": THUMB, "has_private_key": True, "not_after": "2036-01-01T00:00:00Z", "key_readable": True,
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


# Known failures (issue, defect 10). Sources, all under
# https://learn.microsoft.com/dynamics365/customerengagement/on-premises/admin/ :
# - troubleshooting-server-based-authentication: "Private key not found" from two certificates
#   with one subject; "Failed Authentication" when one or more of the configuration steps were
#   not completed, or when there is a problem with the certificate used for server authentication.
# - on-prem-server-based-sharepoint-online (the sequence, seed): step 6 adds the SPN
#   <CRM app id>/<root domain>; "Failed Authentication. This error can be returned when the
#   certificate used for server-to-server authentication is missing or invalid."
# - connect-dynamics-365-on-premises-exchange-online: "Verify that the account that runs the
#   Asynchronous Processing Service has read access to private keys of the certificate"; for
#   Failed Authentication: "To resolve, update or install the certificate and try again."
# - https://learn.microsoft.com/powershell/module/msonline/new-msolserviceprincipalcredential:
#   the credential's -EndDate on or before the certificate's, "otherwise an OAuth token will not
#   be issued".
# Only fields the probes print: certificate.store[].key_readable/key_access (readable, via,
# note) and not_after; entra.key_credentials[].thumbprint/matches_certificate/start/end;
# crm.thumbprints and crm.certificates[].thumbprint/not_after; entra.service_principal_names.
_NO_ACCESS = dict(IN_STORE, key_readable=False, key_access=dict(IN_STORE["key_access"], readable=False, via=None,
                                                                  note="no read access for the service account"))
_DENIED = dict(IN_STORE, key_readable=False, key_access=dict(IN_STORE["key_access"], readable=False, via="denied"))
_EXPIRED_CERT = _cert([dict(IN_STORE, not_after="2021-01-01T00:00:00.0000000Z")])
_EXPIRED_CERT.update(cer_not_before="2020-01-01T00:00:00.0000000Z", cer_not_after="2021-01-01T00:00:00.0000000Z")
_EXPIRED_KEY = [{"thumbprint": THUMB, "matches_certificate": True,
                 "start": "2019-01-01T00:00:00.0000000Z", "end": "2020-01-01T00:00:00.0000000Z"}]

KNOWN_FAILURES: dict[str, dict[str, dict[str, Any]]] = {
    # The service account has no read access to the key of the certificate CRM uses.
    "key not readable": {
        "server": SERVER, "certificate": _cert([_NO_ACCESS]), "crm": _crm([THUMB], settings=True),
        "entra": _entra([THUMB], [CRM_APP, SPN]),
    },
    # A Deny entry for the service account on the key file: step 02's proof fails while it stands.
    "key access denied": {
        "server": SERVER, "certificate": _cert([_DENIED]), "crm": _crm([THUMB], settings=True),
        "entra": _entra([THUMB], [CRM_APP, SPN]),
    },
    # The package's certificate, in CRM and Entra ID, expired on 2021-01-01.
    "certificate expired": {
        "server": SERVER, "certificate": _EXPIRED_CERT,
        "crm": _crm([THUMB], settings=True, not_after="2021-01-01T00:00:00.0000000Z"),
        "entra": dict(_entra([], [CRM_APP, SPN]), key_credentials=[
            {"thumbprint": THUMB, "start": "2020-01-01T00:00:00Z", "end": "2021-01-01T00:00:00Z"}]),
    },
    # CRM still signs with an old certificate (same subject, in the store) that expired; the
    # package's certificate is not imported yet.
    "crm certificate expired": {
        "server": SERVER,
        "certificate": _cert([dict(IN_STORE, thumbprint=OTHER, not_after="2021-01-01T00:00:00.0000000Z")]),
        "crm": _crm([OTHER], settings=True, not_after="2021-01-01T00:00:00.0000000Z"),
        "entra": _entra([OTHER, THUMB], [CRM_APP, SPN]),
    },
    # The only key credential of the certificate in Entra ID ended on 2020-01-01.
    "credential expired": {
        "server": SERVER, "certificate": _cert([IN_STORE]), "crm": _crm([THUMB], settings=True),
        "entra": dict(_entra([], [CRM_APP, SPN]), key_credentials=copy.deepcopy(_EXPIRED_KEY)),
    },
    # CRM signs with the package's certificate; Entra ID knows only another one.
    "crm differs from entra": {
        "server": SERVER, "certificate": _cert([IN_STORE]), "crm": _crm([THUMB], settings=True),
        "entra": _entra([OTHER], [CRM_APP, SPN]),
    },
    # CRM signs with another certificate than the one Entra ID knows (the package's).
    "crm holds another certificate": {
        "server": SERVER, "certificate": _cert([IN_STORE]), "crm": _crm([OTHER], settings=True),
        "entra": _entra([THUMB], [CRM_APP, SPN]),
    },
    # The SPN for the root domain is missing; one for another domain is there.
    "spn missing": {
        "server": SERVER, "certificate": _cert([IN_STORE]), "crm": _crm([THUMB], settings=True),
        "entra": _entra([THUMB], [CRM_APP, f"{CRM_APP}/*.fabrikam.com"]),
    },
}
STATES.update(KNOWN_FAILURES)


def state(name: str) -> dict[str, dict[str, Any]]:
    return copy.deepcopy(STATES[name])
