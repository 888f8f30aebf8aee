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
from .powershell import quote
from .text import clip, code_point, is_invisible, printable

# --------------------------------------------------------------------------- Windows paths

#: Characters Windows forbids in a file or folder name (besides control characters).
_FORBIDDEN_IN_NAME = set('<>:"/\\|?*')
_RESERVED_NAMES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_DRIVE = re.compile(r"[A-Za-z]:\\")  # used with .match: a prefix
#: One DNS label (letters, digits, '-'; 1-63; no '-' at either end). Always used with
#: fullmatch: `$` would also match before a trailing line break.
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
MAX_PATH = 259  # MAX_PATH (260) less the terminating NUL; the CRM tools do not use long paths

# --------------------------------------------------------------------------- every string

#: What quote() refuses: C0 and C1 controls, DEL, U+2028 and U+2029.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def show(value: str) -> str:
    """A user's value as an error line quotes it: clipped to 80 characters, escaped, in quotes."""
    return f"'{printable(clip(value))}'"


def _label(ch: str) -> str:
    """`U+2028 LINE SEPARATOR`, or just `U+000A` for a character Unicode does not name."""
    label = code_point(ch)
    return label.split(" <", 1)[0]


def plain_text(value: str) -> str:
    """Refuse what no field may hold: what quote() refuses, and invisible format characters.

    Runs before each field's own rules, so that `*.contoso.com\\n` is reported as the
    line break it is (not as a bad DNS label), and so that nothing `validate` accepts can
    make `render` fail in quote().
    """
    control = _CONTROL.search(value)
    if control:
        raise ValueError(f"contains a control character or line break ({_label(control.group(0))})")
    if not value.isprintable():  # False for every Cf character; True for nearly all values
        hidden = next((ch for ch in value if is_invisible(ch)), None)
        if hidden is not None:
            code, _, name = code_point(hidden).partition(" ")
            raise ValueError(f"contains the invisible character {code} ({name})")
    try:
        quote(value)
    except ValueError:  # quote() refuses more than _CONTROL: keep validation its superset
        raise ValueError("cannot be written into a PowerShell script") from None
    return value


def _check_name(part: str) -> None:
    """One path component, by the rules of Windows' file systems."""
    if not part:
        raise ValueError("empty path component (two backslashes in a row)")
    plain_text(part)
    bad = sorted(_FORBIDDEN_IN_NAME & set(part))
    if bad:
        raise ValueError(f"character {bad[0]!r} is not allowed in a Windows file name ({show(part)})")
    if part in {".", ".."}:
        raise ValueError("'.' and '..' are not allowed; give the full path")
    if part[-1] in " .":
        raise ValueError(f"a Windows name cannot end with a space or a dot ({show(part)})")
    if part.split(".")[0].upper().rstrip() in _RESERVED_NAMES:
        raise ValueError(f"{show(part)} is a reserved device name in Windows")


def windows_path(value: str, *, suffixes: tuple[str, ...] = ()) -> str:
    """An absolute Windows path: `C:\\…` or `\\\\server\\share\\…`, with backslashes."""
    if not isinstance(value, str) or not value:
        raise ValueError("must be a Windows path such as C:\\folder\\file")
    if "/" in value:
        raise ValueError("use backslashes (\\) in Windows paths")
    if len(value) > MAX_PATH:
        raise ValueError(f"longer than {MAX_PATH} characters")
    if value.startswith("\\\\"):
        if value.startswith(("\\\\?\\", "\\\\.\\")):
            raise ValueError("device paths (\\\\?\\ or \\\\.\\) are not supported; use C:\\… or \\\\server\\share\\…")
        parts = value[2:].split("\\")
        if len(parts) < 3:
            raise ValueError("a UNC path needs \\\\server\\share\\ and a file or folder")
        server, names = parts[0], parts[1:]
        if not all(_HOST_LABEL.fullmatch(label) for label in server.split(".")):
            raise ValueError(f"{show(server)} is not a valid server name")
    elif _DRIVE.match(value):
        names = value[3:].split("\\")
        if names == [""]:
            raise ValueError("a drive root is not a file or folder")
    else:
        raise ValueError("must be an absolute Windows path (C:\\… or \\\\server\\share\\…)")
    if names and names[-1] == "" and not suffixes:
        names = names[:-1]  # a folder may end with a backslash
    for part in names:
        _check_name(part)
    if suffixes and not value.lower().endswith(suffixes):
        raise ValueError(f"must end with {' or '.join(suffixes)}")
    return value


def _pfx(value: str) -> str:
    return windows_path(value, suffixes=(".pfx",))


def _cer(value: str) -> str:
    return windows_path(value, suffixes=(".cer",))


def _folder(value: str) -> str:
    return windows_path(value)


# --------------------------------------------------------------------------- accounts, DNS, URLs

#: sAMAccountName may not contain these (Microsoft: "User Naming Attributes").
_FORBIDDEN_IN_ACCOUNT = set('"/\\[]:;|=,+*?<>@')
_NETBIOS_FORBIDDEN = set('\\/:*?"<>|')


def service_account(value: str) -> str:
    """`DOMAIN\\user` (user may end in `$` for a managed service account) or `Network Service`."""
    if value.lower() == "network service":
        return value
    if value.count("\\") != 1:
        raise ValueError("must be DOMAIN\\user or Network Service")
    domain, user = value.split("\\")
    plain_text(value)
    if domain.upper() != "NT AUTHORITY":
        dns_like = "." in domain
        if not domain or (not dns_like and len(domain) > 15) or _NETBIOS_FORBIDDEN & set(domain) or " " in domain:
            raise ValueError(f"{show(domain)} is not a valid domain name (NetBIOS: up to 15 characters, no spaces)")
    if not user or len(user) > 256:
        # AD's schema allows 256; the 20-character pre-Windows 2000 limit is not enforced
        # because the article's own example (CRMWebApplicationService) is longer.
        raise ValueError("the user name must have 1 to 256 characters")
    bad = sorted(_FORBIDDEN_IN_ACCOUNT & set(user))
    if bad:
        raise ValueError(f"character {bad[0]!r} is not allowed in a Windows account name")
    if user.strip(". ") == "":
        raise ValueError("the user name cannot consist only of dots and spaces")
    return value


def dns_name(value: str, *, what: str = "domain") -> str:
    """A DNS name of at least two LDH labels (IDNs as xn-- punycode), TLD not numeric."""
    if not value.isascii():
        raise ValueError(f"{what} must be ASCII; write international names in punycode (xn--…)")
    labels = value.rstrip(".").split(".")
    if len(labels) < 2:
        raise ValueError(f"{what} needs at least two labels, such as contoso.com")
    if len(value) > 253:
        raise ValueError(f"{what} is longer than 253 characters")
    for label in labels:
        if not _HOST_LABEL.fullmatch(label):
            raise ValueError(f"{show(label)} is not a valid DNS label (letters, digits, '-', 1-63 characters)")
    if labels[-1].isdigit():
        raise ValueError(f"{what} must be a DNS name, not an IP address")
    return value


def host_name(value: str) -> str:
    """The CRM server `psbridge run` connects to: a DNS host name or an IPv4 address.

    A name is one or more LDH labels (a single label such as `crm01` is allowed: WinRM
    inside a domain often uses it), at most 253 characters, ASCII (international names
    in punycode), an optional trailing dot; its last label is not numeric, so that
    `10.0.0.256` is not taken for a name. Digits-and-dots must be a dotted-quad IPv4
    address. IPv6 literals, ports, schemes and paths are refused: the value is compared
    with `--host` (normalize_host), and one spelling per server keeps that comparison exact.
    """
    import ipaddress

    if not value:
        raise ValueError("must be a host name such as crm01.contoso.local (or an IPv4 address)")
    if "/" in value or "@" in value:
        raise ValueError("give the host name only, without https://, a user or a path")
    if ":" in value:
        try:
            ipaddress.IPv6Address(value.strip("[]"))
        except ValueError:
            raise ValueError("give the host name only, without a port (psbridge run takes --port)") from None
        raise ValueError("IPv6 addresses are not supported; give the DNS name or an IPv4 address")
    if not value.isascii():
        raise ValueError("must be ASCII; write international names in punycode (xn--…)")
    name = value.removesuffix(".")
    if len(name) > 253:
        raise ValueError("host name is longer than 253 characters")
    labels = name.split(".")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            raise ValueError(f"{show(value)} is not a valid IPv4 address (four numbers 0-255, no leading zeros)") from None
        return value
    for label in labels:
        if not _HOST_LABEL.fullmatch(label):
            raise ValueError(f"{show(label)} is not a valid DNS label (letters, digits, '-', 1-63 characters)")
    if labels[-1].isdigit():
        raise ValueError("the last label of a DNS name cannot be numeric")
    return value


def normalize_host(value: str) -> str:
    """A host name as compared: lowercase, without the trailing dot (`CRM01.Contoso.Local.`)."""
    return value.lower().removesuffix(".")


def root_domain(value: str) -> str:
    """`*.` followed by the DNS name where the Dynamics 365 Server is (the article's `*.contoso.com`)."""
    if not value.startswith("*."):
        raise ValueError("must start with '*.' followed by the domain, such as *.contoso.com")
    dns_name(value[2:])
    return value


#: Characters RFC 3986 does not allow anywhere in a URI.
_NOT_IN_URL = set('"<>\\^`{|}')

#: SharePoint Online hosts by cloud: commercial/GCC, GCC High, 21Vianet, DoD. Only the clouds
#: of catalogue.CLOUDS are accepted; the others are recognised to say why they are refused.
_SPO_SUFFIXES = (".sharepoint.com", ".sharepoint.us", ".sharepoint.cn", ".sharepoint-mil.us")


def sharepoint_site(value: str) -> str:
    """An https SharePoint Online site collection URL on a tenant host (not -admin, not -my)."""
    plain_text(value)
    if " " in value:
        raise ValueError("a URL cannot contain spaces (percent-encode them as %20)")
    bad = sorted(set(value) & _NOT_IN_URL)
    if bad:
        raise ValueError(f"character {bad[0]!r} is not allowed in a URL (percent-encode it)")
    try:  # urlsplit and .port raise ValueError quoting the whole input: not for an error line
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError("is not a valid URL (check the host name and any ':' or brackets)") from None
    if parts.scheme != "https":
        raise ValueError("must be an https:// URL")
    if parts.username or parts.password or port or ":" in parts.netloc or parts.query or parts.fragment:
        raise ValueError("must be a plain site URL (no user, port, query or fragment)")
    host = (parts.hostname or "").lower()
    tenant = next((host[: -len(s)] for s in _SPO_SUFFIXES if host.endswith(s)), "")
    if not tenant or "." in tenant or not _HOST_LABEL.fullmatch(tenant):
        raise ValueError(f"{show(host or value)} is not a SharePoint Online host such as contoso.sharepoint.com")
    if tenant.endswith(("-admin", "-my")):
        raise ValueError(f"{show(host)} is the admin center or OneDrive; give a site collection URL")
    from .catalogue import UNDOCUMENTED_CLOUDS, cloud_for_host

    if cloud_for_host(host) is None:
        cloud = next((name for suffix, name in UNDOCUMENTED_CLOUDS.items() if host.endswith(suffix)), "this cloud")
        raise ValueError(f"{show(host)} is in {cloud}, for which Microsoft documents no S2S metadata URL "
                         "(S2SDefaultAuthorizationServerMetadataUrl); psbridge configures only the commercial cloud "
                         "(.sharepoint.com, GCC included) and GCC High (.sharepoint.us)")
    return value


_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


def guid(value: str) -> str:
    """A GUID in the 8-4-4-4-12 form the wizard and Get-MsolCompanyInformation show."""
    if not _GUID.fullmatch(value):
        # Registry exports and some PowerShell output write {GUID}: say what to change.
        hint = " (remove the braces)" if _GUID.fullmatch(value.removeprefix("{").removesuffix("}")) else ""
        raise ValueError(f"must be a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47{hint}")
    return value


def _local_file(value: str, suffixes: tuple[str, ...]) -> str:
    """A path on THIS machine (relative to the parameters file's folder, or absolute)."""
    if not value or not value.strip():
        raise ValueError("must be a path such as ./certs/s2s.pfx")
    plain_text(value)
    if not value.lower().endswith(suffixes):
        raise ValueError(f"must end with {' or '.join(suffixes)}")
    return value


def _local_pfx(value: str) -> str:
    return _local_file(value, (".pfx", ".p12"))


def _local_cer(value: str) -> str:
    return _local_file(value, (".cer", ".crt", ".pem", ".der"))


def thumbprint(value: str) -> str:
    """A SHA-1 certificate thumbprint: 40 hexadecimal digits (as Windows shows it, spaces removed)."""
    if not re.fullmatch(r"[0-9A-Fa-f]{40}", value):
        raise ValueError("must be a certificate thumbprint: 40 hexadecimal digits")
    return value


Thumbprint = Annotated[str, AfterValidator(thumbprint)]


LocalPfx = Annotated[str, AfterValidator(_local_pfx)]
LocalCer = Annotated[str, AfterValidator(_local_cer)]
PfxPath = Annotated[str, AfterValidator(_pfx)]
CerPath = Annotated[str, AfterValidator(_cer)]
FolderPath = Annotated[str, AfterValidator(_folder)]
ServiceAccount = Annotated[str, AfterValidator(service_account)]
RootDomain = Annotated[str, AfterValidator(root_domain)]
HostName = Annotated[str, AfterValidator(plain_text), AfterValidator(host_name)]
#: A list item: the model-wide check sees the list, not its items, so each site checks itself.
SiteUrl = Annotated[str, AfterValidator(plain_text), AfterValidator(sharepoint_site)]
Guid = Annotated[str, AfterValidator(guid)]

# --------------------------------------------------------------------------- the model

STRICT = ConfigDict(extra="forbid", str_strip_whitespace=False, frozen=True)


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
    additional_servers: list[HostName] | None = Field(
        None,
        description="Optional: the other servers with the Web Application Server role (host names). "
        "CertificateReconfiguration.ps1 must run on each of them too, without -updateCrm: `run` does that "
        "in step 09 after the main sequence, one server after the other.",
    )

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
        None, description="The approved change window, free text such as 2026-12-05 20:00-22:00 CET: one line, "
        f"at most {CHANGE_LINE_MAX} characters.",
    )

    @model_validator(mode="after")
    def _not_empty(self) -> Change:
        """An empty [change] table says nothing and would show an empty section: refuse it."""
        if self.ticket is None and self.summary is None and self.window is None:
            raise ValueError("give ticket, summary or window (or leave the [change] table out)")
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
    certificate: Certificate
    crm: Crm
    sharepoint: SharePoint
    graph: Graph | None = Field(None, description="Profile graph only: sign-in for psbridge run.")
    change: Change | None = Field(
        None, description="Optional change ticket, summary and window: shown in REVIEW.md and the report, "
        "the ticket on every audit line about the package.",
    )

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


def _message(error: dict[str, Any]) -> str:
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
        raise UserError(f"{shown}: not valid TOML: {printable(clip(str(exc), 200))}") from None
    try:
        return parse_parameters(data)
    except UserError as exc:
        raise UserError(*(f"{shown}: {p}" for p in exc.problems)) from None


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
