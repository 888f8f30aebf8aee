"""The parameters file: the validated model of one S2S configuration.

The TOML keys are the user contract (see README). Validation is strict because every
value ends up in a script that runs as administrator on a production CRM server: an
error names the field (`certificate.pfx_path: …`) and says what is wrong. Values that
are legal in Windows but dangerous in scripts (apostrophes, typographic quotes, `$`,
`;`, `#`, backticks, non-ASCII letters) are accepted here: the quoting function makes
them safe, and refusing them would only push users back to hand-editing.

What quote() refuses is refused here first, in every string field: control characters
and line breaks (a value of a rendered script must be one line), and invisible Unicode
format characters (zero-width spaces, bidi overrides: a reviewer cannot see them). An
error line quotes a user's value clipped to 80 characters and escaped (`text.printable`),
so that a 5 MB value or a key holding an ANSI escape still gives one short, inert line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import UserError
from .fields import (
    tcp_port,
    CerPath,
    FolderPath,
    Guid,
    HostName,
    AppUniqueName,
    LocalCer,
    LocalNupkg,
    LocalPfx,
    OrganizationName,
    PfxPath,
    RootDomain,
    ServiceAccount,
    SiteUrl,
    SwitchAfterHours,
    Thumbprint,
    UserPrincipal,
    WinRMUser,
    DEFAULT_SWITCH_AFTER_HOURS,
    normalize_host,
    plain_text,
    show,
)
from .text import clip, printable

# --------------------------------------------------------------------------- the model

STRICT = ConfigDict(extra="forbid", str_strip_whitespace=False, frozen=True)

#: A TCP port as TOML writes it: an integer (not "5986", not true).
Port = Annotated[int, Field(strict=True), AfterValidator(tcp_port)]


class _Strict(BaseModel):
    """A table of the parameters file: unknown keys refused, every string plain text.

    The check runs before each field's own validation (and for Literal fields too), so a
    string field added later is covered without anyone remembering to add it.
    """

    model_config = STRICT

    @field_validator("*", mode="before")
    @classmethod
    def _plain_strings(cls, value: Any) -> Any:
        if isinstance(value, str):
            plain_text(value)
        return value


class Certificate(_Strict):
    """The certificate as CertificateReconfiguration.ps1 sees it: paths ON THE CRM SERVER."""

    pfx_path: PfxPath = Field(description="Path of the PFX on the CRM server, e.g. C:\\Personalcertfile.pfx.")
    cer_path: CerPath = Field(description="Path of the public certificate (.cer) on the CRM server.")
    service_account: ServiceAccount = Field(
        description="Account of the CRM web application service: DOMAIN\\user or Network Service."
    )
    certificate_type: Literal["S2STokenIssuer", "AlternativeS2STokenIssuer"] = Field(
        "S2STokenIssuer", description="S2STokenIssuer; AlternativeS2STokenIssuer is for key rollover."
    )
    store_find_type: Literal["FindBySubjectDistinguishedName"] = Field(
        "FindBySubjectDistinguishedName", description="How CRM finds the certificate in LocalMachine\\My."
    )
    local_pfx: LocalPfx | None = Field(
        None,
        description="Optional local copy of the PFX (relative to this file's folder): checked by validate/render, "
        "its thumbprint and dates go into the package. Password from PSBRIDGE_PFX_PASSWORD or a prompt.",
    )
    local_cer: LocalCer | None = Field(
        None, description="Optional local copy of the public certificate instead of local_pfx (no private-key check)."
    )
    replaces: Thumbprint | None = Field(
        None,
        description="A renewal: the thumbprint of the S2S certificate CRM uses now (40 hexadecimal digits). The "
        "package then adds the new key credential first, switches CRM, verifies, and retires the old credential.",
    )
    local_replaced: LocalCer | None = Field(
        None,
        description="A renewal: optional local copy of the certificate `replaces` names (relative to this file's "
        "folder); REVIEW.md then says when it expires. Its thumbprint must be `replaces`.",
    )

    switch_after_hours: SwitchAfterHours | None = Field(
        None,
        description=f"A renewal: hours between the new key credential's read-back in Entra ID and the switch of "
        f"CRM to the new certificate (default {DEFAULT_SWITCH_AFTER_HOURS}, 0 to 168; SharePoint may take up to 24 "
        "hours to use a new certificate). `run` stops before the switch until they have passed.",
        json_schema_extra={"minimum": 0, "maximum": 168},
    )

    @model_validator(mode="before")
    @classmethod
    def _renewal_waits_by_default(cls, data: Any) -> Any:
        """A renewal without switch_after_hours waits the default: stored explicitly, so plan.json records
        (and the approvals cover) the wait the package runs with, not a default a later psbridge could change."""
        if isinstance(data, dict) and data.get("replaces") is not None and data.get("switch_after_hours") is None:
            return {**data, "switch_after_hours": DEFAULT_SWITCH_AFTER_HOURS}
        return data

    @field_validator("switch_after_hours")
    @classmethod
    def _only_a_renewal_waits(cls, value: int | None, info: ValidationInfo) -> int | None:
        """Refused without `replaces`: a first setup has no switch, and an approved value that does nothing
        would mislead the reviewer. (When `replaces` itself is invalid, its own error is the one shown.)"""
        if value is not None and "replaces" in info.data and info.data["replaces"] is None:
            raise ValueError("only a renewal waits before its switch: give replaces too, or remove switch_after_hours")
        return value

    @model_validator(mode="after")
    def _one_local_copy(self) -> Certificate:
        if self.local_pfx is not None and self.local_cer is not None:
            raise ValueError("give local_pfx or local_cer, not both")
        if self.local_replaced is not None and self.replaces is None:
            raise ValueError("local_replaced is a copy of the certificate a renewal replaces: give replaces too")
        return self


class Crm(_Strict):
    root_domain: RootDomain = Field(description="'*.' + the domain where Dynamics 365 Server is, e.g. *.contoso.com.")
    tools_dir: FolderPath | None = Field(
        None,
        description="Folder on the CRM server that holds CertificateReconfiguration.ps1. Left out: the steps read "
        "the CRM install folder from the registry (HKLM:\\SOFTWARE\\Microsoft\\MSCRM, CRM_Server_InstallDir) and "
        "use its Tools folder (C:\\Program Files\\Microsoft Dynamics CRM\\Tools or, on newer installs, "
        "C:\\Program Files\\Dynamics 365\\Tools).",
    )
    server: HostName | None = Field(
        None,
        description="Optional: the CRM server psbridge run and check connect to; they default --host to it and "
        "refuse another host. A DNS host name (one or more labels of letters, digits and '-', ASCII/punycode, "
        "at most 253 characters, e.g. crm01.contoso.local or crm01) or an IPv4 address; no IPv6, port or URL. "
        "Compared case-insensitively, ignoring a trailing dot.",
    )
    transport: Literal["https", "http"] | None = Field(
        None,
        description="Optional: how run, check and rollback reach the server's WinRM listener. Approved with the "
        "package like server: --transport may repeat it, another value is refused. Left out: --transport "
        "(default https).",
    )
    port: Port | None = Field(
        None,
        description="Optional: the WinRM port (1-65535). Approved with the package: --port may repeat it, another "
        "port is refused. Left out: --port (default 5986 for https, 5985 for http).",
    )
    auth: Literal["negotiate", "ntlm", "kerberos", "credssp", "basic", "certificate"] | None = Field(
        None,
        description="Optional: the WinRM authentication method. Approved with the package: --auth may repeat it, "
        "another method is refused. Left out: --auth (default negotiate).",
    )
    username: WinRMUser | None = Field(
        None,
        description="Optional default WinRM user, e.g. CONTOSO\\crmadmin (never its password). PSBRIDGE_USERNAME "
        "and then --username override it.",
    )
    o365_user: UserPrincipal | None = Field(
        None,
        description="Optional default Office 365 administrator for the steps that connect, e.g. "
        "admin@contoso.onmicrosoft.com (never its password). PSBRIDGE_O365_USER and then --o365-user override it.",
    )
    organization: OrganizationName | None = Field(
        None,
        description='The organization\'s unique name (Get-CrmOrganization -Name); required for trust = "app": its '
        "SQL server and organization database come from Get-CrmOrganization on the server.",
    )
    additional_servers: list[HostName] | None = Field(
        None,
        description="Optional: the other servers with the Web Application Server role (host names). "
        "CertificateReconfiguration.ps1 must run on each of them too, without -updateCrm: `run` does that "
        "in step 09 after the main sequence, one server after the other.",
    )

    @model_validator(mode="after")
    def _no_clear_text_credentials(self) -> Crm:
        """What `run` would refuse anyway (remote.transport.Connection.validate), refused before it is approved."""
        if self.transport == "http" and self.auth in ("basic", "certificate"):
            raise ValueError(f'auth = "{self.auth}" over transport = "http" would send credentials and scripts in '
                             'clear text: use transport = "https", or auth = "negotiate", "ntlm" or "kerberos"')
        return self

    @model_validator(mode="after")
    def _distinct_servers(self) -> Crm:
        """Each additional server once, and never the main server (its certificate step is step 02)."""
        if not self.additional_servers:
            return self
        seen: set[str] = set()
        main = normalize_host(self.server) if self.server else None
        for host in self.additional_servers:
            key = normalize_host(host)
            if key == main:
                raise ValueError(f"additional_servers: {host} is the main server (crm.server)")
            if key in seen:
                raise ValueError(f"additional_servers: {host} is listed twice")
            seen.add(key)
        return self


class SharePoint(_Strict):
    sites: list[SiteUrl] = Field(min_length=1, description="SharePoint Online site collection URLs, one tenant.")
    tenant_id: Guid | None = Field(None, description="Office 365 tenant ID; step 08 stops when the tenant differs.")

    @model_validator(mode="after")
    def _one_tenant(self) -> SharePoint:
        """The article: several sites are only possible within one Office 365 tenant."""
        hosts = {(urlsplit(s).hostname or "").lower() for s in self.sites}
        if len(hosts) > 1:
            raise ValueError(f"all sites must be on one SharePoint Online tenant; found {', '.join(sorted(hosts))}")
        seen: dict[str, int] = {}
        for number, site in enumerate(self.sites, 1):
            key = site.rstrip("/").lower()
            if key in seen:
                raise ValueError(f"site listed twice: {show(site)} (sites[{seen[key]}] and sites[{number}])")
            seen[key] = number
        return self



#: The package name; it names a folder, so it is kept to what every file system accepts.
_PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def package_name(value: str) -> str:
    """1-63 lowercase letters, digits and '-', starting with a letter or digit (fullmatch, not `$`)."""
    if not _PACKAGE_NAME.fullmatch(value):
        raise ValueError("use lowercase letters, digits and '-' (1-63 characters, starting with a letter or digit)")
    return value


PackageName = Annotated[str, AfterValidator(package_name)]


class Graph(_Strict):
    """Profile graph: how `psbridge run` signs in to Microsoft Graph on the server (no browser there)."""

    client_id: Guid | None = Field(None, description="App registration for app-only sign-in with a certificate.")
    tenant_id: Guid | None = Field(None, description="Tenant of the app registration (app-only sign-in).")
    certificate_thumbprint: Thumbprint | None = Field(
        None, description="Thumbprint of the app's certificate in the server's certificate store."
    )

    @model_validator(mode="after")
    def _app_only_complete(self) -> Graph:
        """App-only sign-in needs all three values; a part of them is a mistake, not a choice."""
        given = [self.client_id, self.tenant_id, self.certificate_thumbprint]
        if any(given) and not all(given):
            raise ValueError("app-only sign-in needs client_id, tenant_id and certificate_thumbprint together")
        return self


#: Longest [change] ticket and window (one line), and summary (one paragraph), in characters.
CHANGE_LINE_MAX = 100
CHANGE_SUMMARY_MAX = 500


def _change_text(limit: int) -> Any:
    """A [change] value: not blank, at most `limit` characters (plain_text has already run)."""

    def check(value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty; leave the key out instead")
        if len(value) > limit:
            raise ValueError(f"longer than {limit} characters ({len(value)})")
        return value

    return AfterValidator(check)


ChangeLine = Annotated[str, _change_text(CHANGE_LINE_MAX)]
ChangeSummary = Annotated[str, _change_text(CHANGE_SUMMARY_MAX)]


class Change(_Strict):
    """Optional: the change this package is for. REVIEW.md, the report and every audit line
    about the package show it; nothing in a script uses it."""

    ticket: ChangeLine | None = Field(
        None, description=f"The change ticket, e.g. CHG-1234: one line, at most {CHANGE_LINE_MAX} characters. "
        "Every audit line about the package carries it.",
    )
    summary: ChangeSummary | None = Field(
        None, description=f"What the change is for: one paragraph (no line breaks), at most {CHANGE_SUMMARY_MAX} "
        "characters.",
    )
    window: ChangeLine | None = Field(
        None, description="The approved change window as an ISO 8601 interval with UTC offsets, "
        "START/END such as 2026-12-12T20:00+01:00/2026-12-12T22:00+01:00 (approve and run then warn about "
        "approvals that expire before END), or free text such as 2026-12-05 20:00-22:00 CET, which psbridge "
        f"shows but cannot check: one line, at most {CHANGE_LINE_MAX} characters.",
    )

    @field_validator("window")
    @classmethod
    def _window_interval(cls, value: str | None) -> str | None:
        """A value that starts like an ISO 8601 interval must be a whole, checkable one; anything else is free text."""
        if value is not None:
            parse_window(value)  # raises ValueError naming what is wrong
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Change:
        """An empty [change] table says nothing and would show an empty section: refuse it."""
        if self.ticket is None and self.summary is None and self.window is None:
            raise ValueError("give ticket, summary or window (or leave the [change] table out)")
        return self

    @property
    def window_interval(self) -> ChangeWindow | None:
        """The window as start and end when it is an ISO 8601 interval; None for free text or no window."""
        return parse_window(self.window) if self.window is not None else None


@dataclass(frozen=True)
class ChangeWindow:
    """A machine-readable change window: both ends aware (with a UTC offset), end after start."""

    start: datetime
    end: datetime

    def describe(self) -> str:
        """`2026-12-12 20:00 to 22:00 (UTC+01:00)`, and the same in UTC: what REVIEW.md and the report show."""
        same_day = self.start.date() == self.end.date() and self.start.utcoffset() == self.end.utcoffset()
        end = self.end.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M")
        local = f"{self.start:%Y-%m-%d %H:%M} to {end}" + (
            f" ({_offset(self.start)})" if same_day else f" ({_offset(self.start)} / {_offset(self.end)})")
        utc_start, utc_end = self.start.astimezone(timezone.utc), self.end.astimezone(timezone.utc)
        return f"{local}, {utc_start:%Y-%m-%d %H:%M} to {utc_end:%Y-%m-%d %H:%M} UTC"


def _offset(moment: datetime) -> str:
    """`UTC+01:00` for a moment's offset."""
    text = moment.strftime("%z")
    return f"UTC{text[:3]}:{text[3:5]}" if text else "UTC"


#: Free text cannot be compared with approvals: what validate, render and the report say about it.
FREE_WINDOW_NOTE = ("change.window is free text, so psbridge cannot check that approvals cover it; write it as "
                    "START/END in ISO 8601 with offsets (2026-12-12T20:00+01:00/2026-12-12T22:00+01:00) to have "
                    "approve and run warn about approvals that expire first")


def parse_window(value: str) -> ChangeWindow | None:
    """`START/END` (ISO 8601, each with a UTC offset, END after START) -> ChangeWindow; None for free text.

    A value is read as an interval when it has one `/` and the part before it is an ISO 8601
    date-time (datetime.fromisoformat): then the whole must be right, or ValueError says what is
    not. Anything else (`Saturday 20:00-22:00 CET`) is free text, shown but not checked.
    """
    first, slash, second = value.strip().partition("/")
    if not slash or "/" in second:
        return None
    try:
        start = datetime.fromisoformat(first.strip())
    except ValueError:
        return None
    try:
        end = datetime.fromisoformat(second.strip())
    except ValueError:
        raise ValueError(f"the end {second.strip()!r} is not an ISO 8601 date and time "
                         "(write START/END, e.g. 2026-12-12T20:00+01:00/2026-12-12T22:00+01:00)") from None
    for name, moment, text in (("start", start, first), ("end", end, second)):
        if moment.tzinfo is None:
            raise ValueError(f"the {name} {text.strip()!r} has no UTC offset (write e.g. 2026-12-12T20:00+01:00, "
                             "or Z for UTC)")
        try:
            moment.astimezone(timezone.utc)  # what REVIEW.md and the report show: year 1 or 9999 can't be in UTC
        except OverflowError:
            raise ValueError(f"the {name} {text.strip()!r} is out of range in UTC") from None
    if end <= start:
        raise ValueError(f"the end {second.strip()!r} is not after the start {first.strip()!r}")
    return ChangeWindow(start, end)


#: Microsoft, "Retirement announcement for Azure ACS" (learn.microsoft.com/sharepoint/dev/sp-add-ins/
#: retirement-announcement-for-azure-acs): what validate, render, REVIEW.md and the report quote.
ACS_RETIREMENT = ("Azure ACS will stop working for new tenants as of November 1st, 2024 and it will stop working for "
                  "existing tenants and will be fully retired as of April 2nd, 2026")
ACS_RETIRED_ON = "2026-04-02"
ACS_RETIREMENT_PAGE = "https://learn.microsoft.com/sharepoint/dev/sp-add-ins/retirement-announcement-for-azure-acs"


def acs_retirement_warning(params: Parameters) -> str | None:
    """The one line validate and render print for a package of the ACS trust; None for the app trust.

    Why: Microsoft retired Azure ACS for SharePoint Online; an operator who renders the article's
    trust today must hear, before approving anything, that SharePoint may no longer honour it.
    """
    if params.app_trust:
        return None
    return (f'trust = "acs": Microsoft retired Azure ACS for SharePoint Online on {ACS_RETIRED_ON} '
            f'("{ACS_RETIREMENT}", {ACS_RETIREMENT_PAGE}); the trust this package configures may no longer '
            'be honoured: use trust = "app"')


def _trust_schema(schema: dict[str, Any]) -> None:
    """The file takes "acs" or "app"; "acs" is kept as the default (None), so its plan.json is unchanged."""
    schema.pop("anyOf", None)
    schema.update({"type": "string", "enum": ["acs", "app"], "default": "acs"})


class App(_Strict):
    """trust = "app": the Entra app registration that SharePoint Online trusts, and the MSAL assembly.

    Adopt an existing app by `client_id`, or let the package create one found again by `name`
    (its display name and Graph `uniqueName`, which is immutable: an adopted app has none).
    """

    client_id: Guid | None = Field(None, description="Adopt this existing app registration (its application id).")
    name: AppUniqueName | None = Field(
        None, description="Create the app with this display name and uniqueName (found again by it on a re-run).",
    )
    msal_package: LocalNupkg = Field(
        description="Path of Microsoft.Identity.Client.4.11.0.nupkg on this machine (relative to this file's folder): "
        "render checks it and puts lib/net45's .dll and .xml into the package; psbridge cannot download it.",
    )

    @model_validator(mode="after")
    def _adopt_or_create(self) -> App:
        if (self.client_id is None) == (self.name is None):
            raise ValueError("give client_id (adopt an existing app) or name (create one), not both and not neither")
        return self


class Parameters(_Strict):
    """Everything the sequence needs, except secrets (they never live in this file)."""

    name: PackageName = Field(
        description="Package name: lowercase letters, digits and '-'; names the output folder.",
        # JSON Schema patterns are searched, not matched: anchor them (ECMA-262 `$` is the end).
        json_schema_extra={"pattern": f"^{_PACKAGE_NAME.pattern}$"},
    )
    profile: Literal["msonline", "graph"] = Field(
        "msonline", description="msonline: the article's sequence; graph: the same with Microsoft Graph PowerShell."
    )
    trust: Literal["app"] | None = Field(
        None,
        description='"app": the article\'s steps plus Microsoft\'s Entra app steps for SharePoint Online ("Configure '
        'Azure app for SharePoint access"); "acs" (the default): the article\'s Azure ACS trust alone, which '
        f"Microsoft retired on {ACS_RETIRED_ON}.",
        json_schema_extra=_trust_schema,
    )
    certificate: Certificate
    crm: Crm
    sharepoint: SharePoint
    app: App | None = Field(None, description='trust = "app" only: the app registration and the MSAL package.')
    graph: Graph | None = Field(None, description="Profile graph only: sign-in for psbridge run.")
    change: Change | None = Field(
        None, description="Optional change ticket, summary and window: shown in REVIEW.md and the report, "
        "the ticket on every audit line about the package.",
    )

    @field_validator("trust", mode="before")
    @classmethod
    def _acs_is_the_default(cls, value: Any) -> Any:
        """`trust = "acs"` is today's package: stored as the default, so its plan.json is unchanged."""
        if value == "acs":
            return None
        if value not in (None, "app"):
            raise ValueError('must be "acs" or "app"')
        return value

    @model_validator(mode="after")
    def _app_trust_complete(self) -> Parameters:
        """The app trust needs Graph, the organization, the tenant and the [app] table; [app] needs the app trust."""
        if self.trust != "app":
            if self.app is not None:
                raise ValueError('the [app] table belongs to trust = "app"')
            return self
        problems = []
        if self.profile != "graph":
            problems.append('trust = "app" runs on Microsoft Graph: set profile = "graph" (MSOnline is retired)')
        if self.crm.organization is None:
            problems.append('trust = "app" needs crm.organization (the organization\'s unique name)')
        if self.sharepoint.tenant_id is None:
            problems.append('trust = "app" needs sharepoint.tenant_id (the app\'s tenant, written into the '
                            "organization database)")
        if self.app is None:
            problems.append('trust = "app" needs an [app] table (client_id or name, and msal_package)')
        hosts = {(urlsplit(s).hostname or "").lower() for s in self.sharepoint.sites}
        if any(not h.endswith(".sharepoint.com") for h in hosts):
            problems.append('trust = "app": Microsoft documents the app steps for the commercial cloud '
                            "(.sharepoint.com) only; a .sharepoint.us site is refused")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _one_tenant_everywhere(self) -> Parameters:
        """A Graph tenant given in the parameters is the SharePoint tenant (issue 19 item 2).

        Why: the app-only sign-in (graph.tenant_id) and the tenant step 04 compares and step 08
        checks (sharepoint.tenant_id) must be one; otherwise the run signs in to one tenant and
        writes the certificate where SharePoint never looks.
        """
        graph = self.graph.tenant_id if self.graph is not None else None
        sharepoint = self.sharepoint.tenant_id
        if graph is not None and sharepoint is not None and str(graph).lower() != str(sharepoint).lower():
            raise ValueError(f"graph.tenant_id ({graph}) differs from sharepoint.tenant_id ({sharepoint}): both name "
                             "the tenant of the SharePoint site; give the same tenant ID")
        return self

    @property
    def app_trust(self) -> bool:
        """Whether the package adds Microsoft's Entra app steps (trust = "app")."""
        return self.trust == "app"

    @field_validator("graph")
    @classmethod
    def _graph_only_with_graph(cls, value: Graph | None, info: ValidationInfo) -> Graph | None:
        if value is not None and info.data.get("profile") != "graph":
            raise ValueError('the [graph] table belongs to profile = "graph"')
        return value


# --------------------------------------------------------------------------- loading and errors

_SECRET_WORDS = ("password", "passwd", "secret", "token", "passphrase", "credential", "pwd")
SECRET_HINT = (
    "secrets do not belong in the parameters file: psbridge reads the PFX password from "
    "PSBRIDGE_PFX_PASSWORD, the Office 365 password from PSBRIDGE_O365_PASSWORD, or prompts"
)


def _known_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed at `loc`, for a did-you-mean hint."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


#: A TOML bare key: shown as it is; any other key is shown quoted and escaped.
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]{1,80}")


def _location(loc: tuple[Any, ...]) -> str:
    """`sharepoint.sites[1]`: dotted keys, list positions counted from 1 as a user counts.

    Keys come from the user's file: a key that is not a plain bare key is shown quoted,
    clipped and escaped, so that `"a\\nb" = 1` still gives one line.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part + 1}]"
            continue
        key = str(part)
        shown = key if _BARE_KEY.fullmatch(key) else f'"{printable(clip(key))}"'
        out += f".{shown}" if out else shown
    return out or "(file)"


#: Keys earlier versions accepted: refused with what replaced them (not "unknown key" or the secret hint).
_REMOVED_KEYS: dict[tuple[str, ...], str] = {
    ("graph", "remove_expired_credentials"): "unknown key (removed: step 06 never removes other credentials; "
    "it replaces only a credential of this certificate that ends before the certificate does)",
}


def _message(error: Any) -> str:
    """One pydantic error as `field.path: what is wrong`, on one line of bounded length."""
    loc = tuple(error["loc"])
    where = _location(loc)
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        if tuple(map(str, loc)) in _REMOVED_KEYS:
            return f"{where}: {_REMOVED_KEYS[tuple(map(str, loc))]}"
        if any(word in key.lower() for word in _SECRET_WORDS):
            return f"{where}: {SECRET_HINT}"
        close = []
        if len(key) <= 80:  # no did-you-mean for a key no one typed by hand
            import difflib  # only on this error path: keeps `render` start-up short

            close = difflib.get_close_matches(key, _known_fields(Parameters, loc), n=1)
        return f"{where}: unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "missing":
        return f"{where}: required"
    if kind in ("int_type", "int_parsing"):
        return f"{where}: must be a whole number such as 5986, without quotes"
    if kind == "literal_error":
        msg = msg.replace("Input should be", "must be")
    # Validators clip what they quote; pydantic's own texts do not quote the input. Clip
    # and escape anyway, so that no message can ever be long or span lines.
    return f"{where}: {printable(clip(msg.removeprefix('Value error, '), 400))}"


def parse_parameters(data: dict[str, Any]) -> Parameters:
    """Validate a parsed parameters mapping; every problem is reported at once."""
    try:
        return Parameters.model_validate(data)
    except ValidationError as exc:
        raise UserError(*(_message(e) for e in exc.errors(include_url=False))) from None


#: Largest parameters file read: a real one is a few kilobytes.
MAX_FILE_BYTES = 1024 * 1024

def _read_regular_file(path: Path, shown: str) -> bytes:
    """The bytes of a parameters file: a regular file of at most 1 MiB (see files.read_regular)."""
    from .files import read_regular

    return read_regular(path, shown, limit=MAX_FILE_BYTES, too_large="a parameters file is a few kilobytes")


def load_parameters(path: Path) -> Parameters:
    """Read and validate a parameters file (TOML); every failure is a UserError naming the file."""
    import tomllib

    shown = printable(str(path))
    raw = _read_regular_file(path, shown)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{shown}: not UTF-8 text") from None
    except RecursionError:
        raise UserError(f"{shown}: not valid TOML: arrays or tables nested too deeply") from None
    except ValueError as exc:  # TOMLDecodeError, and int()'s limit on very long integers
        from .toml_hints import single_quotes_hint

        hint = single_quotes_hint(raw.decode("utf-8"), str(exc))
        raise UserError(f"{shown}: not valid TOML: {printable(clip(str(exc), 200))}{hint}") from None
    try:
        return parse_parameters(data)
    except UserError as exc:
        from .toml_hints import escaped_path_hint

        text = raw.decode("utf-8")
        raise UserError(*(f"{shown}: {p}{escaped_path_hint(text, p)}" for p in exc.problems)) from None


EXAMPLE: dict[str, Any] = {
    "name": "contoso",
    "profile": "msonline",
    "certificate": {
        "pfx_path": "C:\\Personalcertfile.pfx",
        "cer_path": "C:\\Personalcertfile.cer",
        "service_account": "contoso\\CRMWebApplicationService",
        "certificate_type": "S2STokenIssuer",
        "store_find_type": "FindBySubjectDistinguishedName",
    },
    "crm": {"root_domain": "*.contoso.com", "tools_dir": "C:\\Program Files\\Microsoft Dynamics CRM\\Tools"},
    "sharepoint": {"sites": ["https://contoso.sharepoint.com/sites/salesteam"]},
}


def example() -> Parameters:
    """The article's contoso values: the built-in example of `render --example`."""
    return parse_parameters(EXAMPLE)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the parameters file (what `psbridge schema` prints)."""
    return Parameters.model_json_schema()
