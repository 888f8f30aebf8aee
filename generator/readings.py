"""The probes' answers as typed values: what `check` and the back-outs read from them.

A probe prints one JSON object (templates/probes/). These models read it leniently, as the
dict code before them did: ConvertTo-Json writes a one-element array as the element and an
empty one as null (`as_list`); unknown keys are ignored; a value of the wrong type reads as
missing (a flag that is not a boolean is "cannot tell", a thumbprint that is not 40 hex
digits is unknown). The raw dicts stay where they are evidence (`check --out`, run records):
these models are built from them and never written back.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .thumbprint import Thumbprint


def as_list(value: Any) -> list[Any]:
    """ConvertTo-Json writes a one-element array as the element itself, and an empty one as null."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def parse_time(value: Any) -> _dt.datetime | None:
    """A probe's timestamp (round-trip format `o`, or the older `yyyy-MM-ddTHH:mm:ssZ`) in UTC.

    .NET writes seven fractional digits; Python reads at most six, so the rest is cut.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")
    try:
        parsed = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed.astimezone(_dt.timezone.utc)


def _text(value: Any) -> str | None:
    """A value shown in a message: None stays None, anything else as text."""
    return None if value is None else value if isinstance(value, str) else str(value)


def _flag(value: Any) -> bool | None:
    """A probe's yes/no that may be unknown: only a JSON boolean is an answer."""
    return value if isinstance(value, bool) else None


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in as_list(value) if isinstance(v, dict)]


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


@dataclass(frozen=True)
class ServerReading:
    """The server probe: PowerShell edition and version, elevation, snap-in, modules, the files."""

    edition: str | None = None
    version: str | None = None
    elevated: bool = False
    snapin: bool = False
    modules: Mapping[str, bool] = field(default_factory=dict)
    #: Whether the probe reported the CRM install folder at all (older probes did not).
    reports_tools_dir: bool = False
    tools_dir: bool = False
    tools_script: bool = False
    pfx_file: bool = False
    cer_file: bool = False
    execution_policy: str | None = None
    #: CertificateReconfiguration.ps1's Authenticode status (Get-AuthenticodeSignature), None when not read.
    script_signature: str | None = None
    #: Whether its signer is in Trusted Publishers (None: not read).
    script_trusted: bool | None = None
    #: Whether it carries the downloaded mark (a Zone.Identifier stream; None: not read).
    script_downloaded: bool | None = None

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> ServerReading:
        return cls(_text(raw.get("edition")), _text(raw.get("version")), bool(raw.get("elevated")),
                   bool(raw.get("snapin")), {str(k): bool(v) for k, v in _mapping(raw.get("modules")).items()},
                   "tools_dir" in raw, bool(raw.get("tools_dir")), bool(raw.get("tools_script")),
                   bool(raw.get("pfx_file")), bool(raw.get("cer_file")), _text(raw.get("execution_policy")),
                   _text(raw.get("script_signature")), _flag(raw.get("script_trusted")),
                   _flag(raw.get("script_downloaded")))


@dataclass(frozen=True)
class StoreEntry:
    """A certificate in LocalMachine\\My with the .cer's subject: its key and who can read it."""

    thumbprint: Thumbprint | None = None
    has_private_key: bool | None = None
    not_after: _dt.datetime | None = None
    #: Whether the service account can read the private key (None: cannot tell).
    key_readable: bool | None = None
    #: The probe's account of the key's access (key_file, key_store, readable, via, note), as printed.
    key_access: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> StoreEntry:
        return cls(Thumbprint.of(raw.get("thumbprint")), _flag(raw.get("has_private_key")),
                   parse_time(raw.get("not_after")), _flag(raw.get("key_readable")), _mapping(raw.get("key_access")))


@dataclass(frozen=True)
class CertificateReading:
    """The certificate probe: the server's .cer and the certificates with its subject in the store."""

    cer_thumbprint: Thumbprint | None = None
    cer_subject: str | None = None
    cer_not_after: _dt.datetime | None = None
    store: tuple[StoreEntry, ...] = ()

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> CertificateReading:
        return cls(Thumbprint.of(raw.get("cer_thumbprint")), _text(raw.get("cer_subject")),
                   parse_time(raw.get("cer_not_after")), tuple(StoreEntry.of(e) for e in _dicts(raw.get("store"))))

    def entry(self, thumbprint: str | None) -> StoreEntry | None:
        """The store's certificate with this thumbprint, or None."""
        return next((e for e in self.store if thumbprint and e.thumbprint == thumbprint), None)


@dataclass(frozen=True)
class CrmCertificate:
    """A certificate CRM's configuration database holds for the type (thumbprint, NotAfter if printed)."""

    thumbprint: Thumbprint
    not_after: _dt.datetime | None = None


@dataclass(frozen=True)
class CrmReading:
    """The crm probe: CRM's S2S certificate(s) of the type, and its ServerSettings."""

    certificate_type: str | None = None
    certificates: tuple[CrmCertificate, ...] = ()
    #: ServerSettings name -> value as printed (the back-out compares and restores them).
    server_settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> CrmReading:
        return cls(_text(raw.get("certificate_type")), _crm_certificates(raw), _mapping(raw.get("server_settings")))

    @property
    def thumbprints(self) -> list[Thumbprint]:
        return [c.thumbprint for c in self.certificates]

    def setting(self, name: str) -> str:
        """A ServerSettings value as text ("" when unset)."""
        return str(self.server_settings.get(name) or "")


def _crm_certificates(raw: Mapping[str, Any]) -> tuple[CrmCertificate, ...]:
    """`certificates` (with NotAfter), or the older `thumbprints` only."""
    dated = [(Thumbprint.of(c.get("thumbprint")), c) for c in _dicts(raw.get("certificates")) if c.get("thumbprint")]
    if dated:
        return tuple(CrmCertificate(t, parse_time(c.get("not_after"))) for t, c in dated if t is not None)
    found = (Thumbprint.of(t) for t in as_list(raw.get("thumbprints")))
    return tuple(CrmCertificate(t) for t in found if t is not None)


@dataclass(frozen=True)
class KeyCredential:
    """A key credential of the Dynamics CRM service principal, as the entra probe read it."""

    key_id: str | None = None
    type: str | None = None
    usage: str | None = None
    #: SHA-1 of the key (computed by the probe); None when it could not be read.
    thumbprint: Thumbprint | None = None
    #: Whether the key is the package's certificate (compared with the .cer's raw data); None: not compared.
    matches_certificate: bool | None = None
    end: _dt.datetime | None = None
    #: The end date as the probe printed it (shown in messages).
    end_text: str | None = None
    #: Graph returned it without its key (the probe printed key_sha256 null and no thumbprint): a legacy
    #: credential whose certificate cannot be told; the steps keep it by its key id and never stop for it.
    keyless: bool = False

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> KeyCredential:
        thumbprint = Thumbprint.of(raw.get("thumbprint"))
        keyless = "key_sha256" in raw and raw.get("key_sha256") is None and thumbprint is None
        return cls(_text(raw.get("key_id")), _text(raw.get("type")), _text(raw.get("usage")),
                   thumbprint, _flag(raw.get("matches_certificate")),
                   parse_time(raw.get("end")), _text(raw.get("end") or None), keyless)

    def is_certificate(self, expected: str | None) -> bool:
        """Whether this is the package's certificate: the probe's comparison of the key, else the thumbprint.

        The probe compares the key itself with the .cer's raw data, as Microsoft's
        ConfigureCrmServerSideSync.ps1 does; Graph's customKeyIdentifier is never used (its
        bytes are the text of the thumbprint, not the thumbprint).
        """
        if self.matches_certificate is not None:
            return self.matches_certificate
        return self.thumbprint is not None and self.thumbprint == expected


@dataclass(frozen=True)
class EntraReading:
    """The entra probe: the Dynamics CRM service principal's names and key credentials, the tenant."""

    service_principal_found: bool = False
    service_principal_names: tuple[str, ...] = ()
    key_credentials: tuple[KeyCredential, ...] = ()
    #: Whether some key credential was not an object (then the set of thumbprints is unknown).
    malformed_keys: bool = False
    tenant_id: str = ""

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> EntraReading:
        keys = as_list(raw.get("key_credentials"))
        return cls(bool(raw.get("service_principal_found")),
                   tuple(str(n) for n in as_list(raw.get("service_principal_names"))),
                   tuple(KeyCredential.of(k) for k in keys if isinstance(k, dict)),
                   not all(isinstance(k, dict) for k in keys), str(raw.get("tenant_id") or ""))

    def has_name(self, name: str) -> bool:
        return name.lower() in (n.lower() for n in self.service_principal_names)


# --- the app trust's Entra app (probe `app`, trust = "app" only) ---------------------------------


@dataclass(frozen=True)
class AppOwner:
    """An owner of the app registration as the app probe printed it (a user, a service principal...)."""

    display_name: str | None = None
    user_principal_name: str | None = None

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> AppOwner:
        return cls(_text(raw.get("display_name")), _text(raw.get("user_principal_name")))

    def describe(self) -> str:
        """`Name (upn)`, or whichever is known."""
        if self.display_name and self.user_principal_name:
            return f"{self.display_name} ({self.user_principal_name})"
        return self.display_name or self.user_principal_name or "(unnamed owner)"


@dataclass(frozen=True)
class AppReading:
    """The app probe: the app registration of the app trust (found by client id, or by uniqueName for
    an app psbridge creates), its service principal, SharePoint's role and consent, owners, key credentials.

    A flag that the probe could not read is None ("cannot tell"), never False.
    """

    #: "adopt" (`[app] client_id`) or "create" (`[app] name`), as the probe was rendered.
    mode: str | None = None
    app_found: bool | None = None
    #: How many applications the client id / uniqueName matched (more than one: refused by the step).
    app_count: int | None = None
    app_id: str | None = None
    object_id: str | None = None
    display_name: str | None = None
    sign_in_audience: str | None = None
    unique_name: str | None = None
    service_principal_found: bool | None = None
    #: Whether the SharePoint Online service principal is in the tenant, and the id of its
    #: application role Sites.FullControl.All as its appRoles say (None: not found).
    sharepoint_found: bool | None = None
    sharepoint_role_id: str | None = None
    #: requiredResourceAccess holds SharePoint's Sites.FullControl.All as an application role.
    role_required: bool | None = None
    #: The app's service principal holds an appRoleAssignment of that role (admin consent).
    consent_granted: bool | None = None
    owners: tuple[AppOwner, ...] = ()
    key_credentials: tuple[KeyCredential, ...] = ()
    malformed_keys: bool = False

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> AppReading:
        keys = as_list(raw.get("key_credentials"))
        count = raw.get("app_count")
        return cls(
            _text(raw.get("mode")), _flag(raw.get("app_found")),
            count if isinstance(count, int) and not isinstance(count, bool) else None,
            _text(raw.get("app_id") or None), _text(raw.get("object_id") or None),
            _text(raw.get("display_name") or None), _text(raw.get("sign_in_audience") or None),
            _text(raw.get("unique_name") or None), _flag(raw.get("service_principal_found")),
            _flag(raw.get("sharepoint_found")), _text(raw.get("sharepoint_role_id") or None),
            _flag(raw.get("role_required")), _flag(raw.get("consent_granted")),
            tuple(AppOwner.of(o) for o in _dicts(raw.get("owners"))),
            tuple(KeyCredential.of(k) for k in keys if isinstance(k, dict)),
            not all(isinstance(k, dict) for k in keys),
        )

    def owner_text(self) -> str:
        """The owners, for a verdict's detail ("no owners" when the app has none)."""
        return ", ".join(o.describe() for o in self.owners) or "no owners"


def _app_reading(raw: Mapping[str, Any] | None) -> AppReading | None:
    """The app probe's reading, or None (an ACS package, or the probe did not answer)."""
    return AppReading.of(raw) if raw is not None else None


@dataclass(frozen=True)
class Readings:
    """What a step's verdict reads: the plan, the main server's probe answers (None: no answer), now."""

    plan: Mapping[str, Any]
    server: ServerReading | None
    certificate: CertificateReading | None
    crm: CrmReading | None
    entra: EntraReading | None
    now: _dt.datetime
    #: The app trust's probes (None: not in the package, or no answer).
    web: WebReading | None = None
    org: OrgReading | None = None
    #: The app trust's Entra app (probe `app`); None in an ACS package or when the probe did not answer.
    app: AppReading | None = None

    @classmethod
    def of(cls, plan: Mapping[str, Any], answers: Mapping[str, dict[str, Any] | None],
           now: _dt.datetime) -> Readings:
        server, cert, crm, entra = (answers.get(n) for n in ("server", "certificate", "crm", "entra"))
        return cls(plan, ServerReading.of(server) if server is not None else None,
                   CertificateReading.of(cert) if cert is not None else None,
                   CrmReading.of(crm) if crm is not None else None,
                   EntraReading.of(entra) if entra is not None else None, now,
                   web=WebReading.of(web) if (web := answers.get("web")) is not None else None,
                   org=OrgReading.of(org) if (org := answers.get("org")) is not None else None,
                   app=_app_reading(answers.get("app")))


# --------------------------------------------------------------------------- the app trust: web, org

#: The MSAL files Microsoft's page has copied into CRMWeb\bin.
MSAL_FILES: tuple[str, str] = ("Microsoft.Identity.Client.dll", "Microsoft.Identity.Client.xml")


def _int(value: Any) -> int | None:
    """A probe's number: only a JSON integer (not a boolean) is one."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bit(value: Any) -> bool | None:
    """SQL's 1/0 (HAS_PERMS_BY_NAME, a BIT) as a flag; NULL or anything else is "cannot tell"."""
    if isinstance(value, bool):
        return value
    return {1: True, 0: False}.get(value) if isinstance(value, int) else None


@dataclass(frozen=True)
class BinFile:
    """One MSAL file in CRMWeb\\bin as the web probe read it."""

    name: str
    present: bool = False
    sha256: str | None = None
    size: int | None = None
    file_version: str | None = None
    #: The DLL's assembly version (AssemblyName.GetAssemblyName, which does not load it).
    assembly_version: str | None = None

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> BinFile:
        digest = _text(raw.get("sha256"))
        return cls(str(raw.get("name") or ""), raw.get("present") is True,
                   digest.lower() if digest and re.fullmatch(r"[0-9A-Fa-f]{64}", digest) else None,
                   _int(raw.get("size")), _text(raw.get("file_version")), _text(raw.get("assembly_version")))


@dataclass(frozen=True)
class WebReading:
    """The web probe: where CRMWeb is (IIS site and the MSCRM registry value), its bin, the MSAL files there."""

    site_found: bool | None = None
    site_path: str | None = None
    registry_path: str | None = None
    #: Whether the registry's WebSitePath and the IIS site agree (None: the registry has no value).
    paths_agree: bool | None = None
    crmweb: str | None = None
    bin: str | None = None
    bin_writable: bool | None = None
    #: Why CRMWeb could not be told (the probe's own words), or None.
    problem: str | None = None
    files: tuple[BinFile, ...] = ()

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> WebReading:
        return cls(_flag(raw.get("site_found")), _text(raw.get("site_path")), _text(raw.get("registry_path")),
                   _flag(raw.get("paths_agree")), _text(raw.get("crmweb")), _text(raw.get("bin")),
                   _flag(raw.get("bin_writable")), _text(raw.get("problem")),
                   tuple(BinFile.of(f) for f in _dicts(raw.get("files"))))

    def file(self, name: str) -> BinFile | None:
        """The probe's reading of one MSAL file in bin (None: the probe did not report it)."""
        return next((f for f in self.files if f.name.lower() == name.lower()), None)


@dataclass(frozen=True)
class PartnerRow:
    """A PartnerApplicationBase row of sql/partner-applications-read.sql.j2 (GUIDs lower-case)."""

    partner_application_id: str | None = None
    principal_id: str | None = None
    name: str | None = None
    tenant_id: str | None = None
    organization_known: bool | None = None
    row_kind: str | None = None

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> PartnerRow:
        def low(key: str) -> str | None:
            value = _text(raw.get(key))
            return value.strip().lower() if value is not None else None
        return cls(low("partner_application_id"), low("principal_id"), _text(raw.get("name")), low("tenant_id"),
                   _bit(raw.get("organization_known")), _text(raw.get("row_kind")))


@dataclass(frozen=True)
class OrgRights:
    """sql/partner-applications-rights.sql.j2's row: the login's rights on PartnerApplicationBase."""

    login_name: str | None = None
    table_found: bool | None = None
    can_select: bool | None = None
    can_insert: bool | None = None
    can_update: bool | None = None
    can_delete: bool | None = None
    organization_count: int | None = None

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> OrgRights:
        return cls(_text(raw.get("login_name")), _bit(raw.get("table_found")), _bit(raw.get("can_select")),
                   _bit(raw.get("can_insert")), _bit(raw.get("can_update")), _bit(raw.get("can_delete")),
                   _int(raw.get("organization_count")))


@dataclass(frozen=True)
class OrgReading:
    """The org probe: the organization (Get-CrmOrganization), its SQL Server and database, the rights, the rows."""

    organization: str | None = None
    found: bool | None = None
    sql_server: str | None = None
    database: str | None = None
    version: str | None = None
    #: The client id the rows were read for (None: a created app's id is not known to the probe).
    client_id: str | None = None
    #: A created app: how many applications Entra ID holds with its uniqueName (None: not looked up).
    app_count: int | None = None
    #: False: the connection to SQL Server failed (a second hop, most often); None: not tried.
    sql_reachable: bool | None = None
    sql_error: str | None = None
    error: str | None = None
    rights: OrgRights | None = None
    #: None when the rows were not read (no organization, no connection, an error).
    rows: tuple[PartnerRow, ...] | None = None

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> OrgReading:
        rights = raw.get("rights")
        client = _text(raw.get("client_id"))
        return cls(_text(raw.get("organization")), _flag(raw.get("found")), _text(raw.get("sql_server")),
                   _text(raw.get("database")), _text(raw.get("version")), client.lower() if client else None, _int(raw.get("app_count")),
                   _flag(raw.get("sql_reachable")), _text(raw.get("sql_error")), _text(raw.get("error")),
                   OrgRights.of(rights) if isinstance(rights, dict) else None,
                   tuple(PartnerRow.of(r) for r in _dicts(raw.get("rows"))) if raw.get("rows_read") is True else None)

    def row(self, partner_application_id: str) -> PartnerRow | None:
        """The row with this PartnerApplicationId, or None (absent, or the rows were not read)."""
        wanted = partner_application_id.lower()
        return next((r for r in self.rows or () if r.partner_application_id == wanted), None)
