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


# The app trust (trust = "app"): the web probe (CRMWeb\bin and its MSAL files) and the org probe
# (the organization, its database and the PartnerApplicationBase rows), for the parameters of
# tests/support/app_render.py (tenant APP_TENANT, adopted app APP_CLIENT, organization contoso).
# The payload's sha256 are those a plan records in `payload` (MSAL_PAYLOAD, for plans built in tests).
APP_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
APP_CLIENT = "5c3d8e3a-7f1b-4d2a-9a55-0e6b7c1d2f30"
SHAREPOINT_APP = "38616d01-8e81-42dd-82fb-b68f2cecac3a"
SHAREPOINT_PRINCIPAL = "00000003-0000-0ff1-ce00-000000000000"
MSAL_DLL_SHA256 = "d" * 64
MSAL_XML_SHA256 = "e" * 64
MSAL_PAYLOAD = [
    {"file": "payload/Microsoft.Identity.Client.dll", "sha256": MSAL_DLL_SHA256, "size": 1200000,
     "signer": {"subject": "CN=Microsoft Corporation"}},
    {"file": "payload/Microsoft.Identity.Client.xml", "sha256": MSAL_XML_SHA256, "size": 900000,
     "signer": "not signed: documentation file (IntelliSense XML)"},
]
CRMWEB = "C:\\Program Files\\Microsoft Dynamics CRM\\CRMWeb"


def web_answer(dll: str | None = None, xml: str | None = None, *, version: str = "4.11.0.0",
               **changes: Any) -> dict[str, Any]:
    """The web probe's answer: CRMWeb found by IIS and the registry alike, bin writable, the MSAL files
    with these sha256 (None: not in bin)."""
    def file(name: str, digest: str | None, dll_file: bool) -> dict[str, Any]:
        return {"name": name, "present": digest is not None, "sha256": digest, "size": 1 if digest else None,
                "file_version": version if digest and dll_file else None,
                "assembly_version": version if digest and dll_file else None}
    answer = {"probe": "web", "site_found": True, "site_path": CRMWEB, "registry_path": CRMWEB + "\\",
              "paths_agree": True, "crmweb": CRMWEB, "bin": CRMWEB + "\\bin", "bin_writable": True, "problem": None,
              "files": [file("Microsoft.Identity.Client.dll", dll, True),
                        file("Microsoft.Identity.Client.xml", xml, False)]}
    answer.update(changes)
    return answer


def partner_row(app_id: str, tenant: str | None, **changes: Any) -> dict[str, Any]:
    """A PartnerApplicationBase row as sql/partner-applications-read.sql.j2 returns it (GUID text upper-case)."""
    row = {"partner_application_id": app_id, "principal_id": SHAREPOINT_PRINCIPAL.upper(),
           "name": "Microsoft SharePoint Online", "tenant_id": tenant.upper() if tenant else None,
           "organization_id": "0a1b2c3d-0000-4000-8000-000000000001", "organization_known": 1,
           "use_authorization_server": True, "state_code": 0, "status_code": 1, "application_role": 1,
           "row_kind": "microsoft" if app_id == SHAREPOINT_APP else "customer"}
    row.update(changes)
    return row


def org_answer(rows: list[dict[str, Any]], *, client_id: str | None = APP_CLIENT, **changes: Any) -> dict[str, Any]:
    """The org probe's answer: the organization found, SQL Server reached, full rights, one organization row."""
    answer = {"probe": "org", "organization": "contoso", "found": True, "error": None, "sql_server": "sql01",
              "database": "contoso_MSCRM", "version": "9.1.36.12", "client_id": client_id, "app_lookup": "adopted",
              "app_count": None, "sql_reachable": True, "sql_error": None,
              "rights": {"login_name": "CONTOSO\\crmadmin", "database_name": "contoso_MSCRM", "table_found": 1,
                         "can_select": 1, "can_insert": 1, "can_update": 1, "can_delete": 1,
                         "can_read_organizations": 1, "organization_count": 1},
              "rows_read": True, "rows": rows}
    answer.update(changes)
    return answer


APP_STATES: dict[str, dict[str, dict[str, Any]]] = {
    # The server runs the ACS trust with the package's certificate: no PartnerApplicationBase rows
    # of the app trust, no MSAL in bin (the common start of a migration).
    "acs-only server": {
        **copy.deepcopy(STATES["fully configured"]),
        "web": web_answer(), "org": org_answer([]),
    },
    # The migration ran: both rows hold the tenant, both MSAL files are the package's.
    "migrated and configured": {
        **copy.deepcopy(STATES["fully configured"]),
        "web": web_answer(MSAL_DLL_SHA256, MSAL_XML_SHA256),
        "org": org_answer([partner_row(SHAREPOINT_APP, APP_TENANT), partner_row(APP_CLIENT, APP_TENANT)]),
    },
}
STATES.update(APP_STATES)


# The app trust end to end (tests/test_app_trust.py): the app probe's answers, and whole states of a
# server and tenant against a real app package, whose payload sha256 are those of the test MSAL
# (support/msal.py), read from the package's plan.json. The app is APP_CLIENT, adopted (`[app]
# client_id`) or created by the package (`[app] name`, found again by its uniqueName).
SITES_FULL_CONTROL_ROLE_ID = "678536fe-1083-478a-9c59-b99265e6b0d3"
APP_KEY_ID = "3f2a1b4c-5d6e-4f70-8a91-b2c3d4e5f601"
OTHER_KEY_ID = "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"


def app_key(thumbprint: str = THUMB, key_id: str = APP_KEY_ID, end: str = "2036-01-01T00:00:00Z") -> dict[str, Any]:
    """A key credential of the app as the app probe prints it (the package's certificate: THUMB)."""
    return {"key_id": key_id, "type": "AsymmetricX509Cert", "usage": "Verify", "thumbprint": thumbprint,
            "matches_certificate": thumbprint == THUMB, "start": "2026-01-01T00:00:00Z", "end": end}


def app_answer(adopt: bool, keys: list[dict[str, Any]] | None = None, **changes: Any) -> dict[str, Any]:
    """The app probe's answer for the app fully in place (single tenant, service principal, consent,
    the package's certificate as its key credential); `changes` override fields."""
    answer = {"probe": "app", "mode": "adopt" if adopt else "create", "app_found": True, "app_count": 1,
              "app_id": APP_CLIENT, "object_id": "0d9c8b7a-6f5e-4d3c-8b2a-1f0e9d8c7b6a",
              "display_name": "psbridge-contoso-sharepoint", "sign_in_audience": "AzureADMyOrg",
              "unique_name": None if adopt else "psbridge-contoso-sharepoint", "service_principal_found": True,
              "sharepoint_found": True, "sharepoint_role_id": SITES_FULL_CONTROL_ROLE_ID, "role_required": True,
              "consent_granted": True, "owners": [{"display_name": "Admin", "user_principal_name": "admin@contoso.com"}],
              "key_credentials": [app_key()] if keys is None else keys}
    answer.update(changes)
    return answer


def no_app(adopt: bool) -> dict[str, Any]:
    """The app probe's answer when the app is not in the tenant."""
    return app_answer(adopt, [], app_found=False, app_count=0, app_id=None, object_id=None, display_name=None,
                      unique_name=None, service_principal_found=False, role_required=False, consent_granted=False,
                      owners=[])


def _org_of(adopt: bool, rows: list[dict[str, Any]], app_exists: bool) -> dict[str, Any]:
    """The org probe's answer: an adopted app's client id is the parameter's; a created one is found by
    its uniqueName (none yet: no client id, app_count 0)."""
    if adopt:
        return org_answer(rows)
    if app_exists:
        return org_answer(rows, app_lookup="1 application(s) with uniqueName psbridge-contoso-sharepoint", app_count=1)
    return org_answer(rows, client_id=None, app_lookup="0 application(s) with uniqueName psbridge-contoso-sharepoint",
                      app_count=0)


def app_trust_state(name: str, dll: str, xml: str, *, adopt: bool) -> dict[str, dict[str, Any]]:
    """A named state of the server and tenant for an app package whose payload has these sha256.

    - "migrated and configured": the ACS trust and the app trust in place, bin holds the payload;
    - "acs-only server": the ACS trust in place with the package's certificate; no app, no rows, no MSAL;
    - "adopted app without consent": as acs-only, and the adopted app exists without admin consent;
    - "app holds another certificate": migrated, but the app's key credential is another certificate (OTHER);
    - "other msal version in bin": as acs-only, and bin holds Microsoft.Identity.Client 4.61.3.
    """
    configured = copy.deepcopy(STATES["fully configured"])
    both_rows = [partner_row(SHAREPOINT_APP, APP_TENANT), partner_row(APP_CLIENT, APP_TENANT)]
    migrated = {**configured, "web": web_answer(dll, xml), "org": _org_of(adopt, both_rows, True),
                "app": app_answer(adopt)}
    acs_only = {**configured, "web": web_answer(), "org": _org_of(adopt, [], False), "app": no_app(adopt)}
    states = {
        "migrated and configured": migrated,
        "acs-only server": acs_only,
        "adopted app without consent": {**acs_only, "org": _org_of(True, [], True),
                                        "app": app_answer(True, [], consent_granted=False)},
        "app holds another certificate": {**migrated, "app": app_answer(adopt, [app_key(OTHER, OTHER_KEY_ID)])},
        "other msal version in bin": {**acs_only, "web": web_answer("f" * 64, None, version="4.61.3.0")},
    }
    return copy.deepcopy(states[name])
