"""The parameters file: the validated model of one S2S configuration.

The TOML keys are the user contract (see README). Validation is strict because every
value ends up in a script that runs as administrator on a production CRM server: an
error names the field (`certificate.pfx_path: …`) and says what is wrong. Values that
are legal in Windows but dangerous in scripts (apostrophes, typographic quotes, `$`,
`;`, `#`, backticks, non-ASCII letters) are accepted here: the quoting function makes
them safe, and refusing them would only push users back to hand-editing.
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

# --------------------------------------------------------------------------- Windows paths

#: Characters Windows forbids in a file or folder name (besides control characters).
_FORBIDDEN_IN_NAME = set('<>:"/\\|?*')
_RESERVED_NAMES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_DRIVE = re.compile(r"^[A-Za-z]:\\")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
MAX_PATH = 259  # MAX_PATH (260) less the terminating NUL; the CRM tools do not use long paths


def _check_name(part: str) -> None:
    """One path component, by the rules of Windows' file systems."""
    if not part:
        raise ValueError("empty path component (two backslashes in a row)")
    if any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in part):
        raise ValueError("contains a control character")
    bad = sorted(_FORBIDDEN_IN_NAME & set(part))
    if bad:
        raise ValueError(f"character {bad[0]!r} is not allowed in a Windows file name ({part!r})")
    if part in {".", ".."}:
        raise ValueError("'.' and '..' are not allowed; give the full path")
    if part[-1] in " .":
        raise ValueError(f"a Windows name cannot end with a space or a dot ({part!r})")
    if part.split(".")[0].upper().rstrip() in _RESERVED_NAMES:
        raise ValueError(f"{part!r} is a reserved device name in Windows")


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
        if not all(_HOST_LABEL.match(label) for label in server.split(".")):
            raise ValueError(f"{server!r} is not a valid server name")
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
    if any(ord(c) < 32 for c in value):
        raise ValueError("contains a control character")
    if domain.upper() != "NT AUTHORITY":
        dns_like = "." in domain
        if not domain or (not dns_like and len(domain) > 15) or _NETBIOS_FORBIDDEN & set(domain) or " " in domain:
            raise ValueError(f"{domain!r} is not a valid domain name (NetBIOS: up to 15 characters, no spaces)")
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
        if not _HOST_LABEL.match(label):
            raise ValueError(f"{label!r} is not a valid DNS label (letters, digits, '-', 1-63 characters)")
    if labels[-1].isdigit():
        raise ValueError(f"{what} must be a DNS name, not an IP address")
    return value


def root_domain(value: str) -> str:
    """`*.` followed by the DNS name where the Dynamics 365 Server is (the article's `*.contoso.com`)."""
    if not value.startswith("*."):
        raise ValueError("must start with '*.' followed by the domain, such as *.contoso.com")
    dns_name(value[2:])
    return value


#: Characters RFC 3986 does not allow anywhere in a URI.
_NOT_IN_URL = set('"<>\\^`{|}')

#: SharePoint Online hosts by cloud: commercial/GCC, GCC High/DoD, 21Vianet.
_SPO_SUFFIXES = (".sharepoint.com", ".sharepoint.us", ".sharepoint.cn")


def sharepoint_site(value: str) -> str:
    """An https SharePoint Online site collection URL on a tenant host (not -admin, not -my)."""
    if any(ord(c) <= 32 or 0x7F <= ord(c) <= 0x9F for c in value):
        raise ValueError("a URL cannot contain spaces or control characters")
    bad = sorted(set(value) & _NOT_IN_URL)
    if bad:
        raise ValueError(f"character {bad[0]!r} is not allowed in a URL (percent-encode it)")
    parts = urlsplit(value)
    if parts.scheme != "https":
        raise ValueError("must be an https:// URL")
    if parts.username or parts.password or parts.port or parts.query or parts.fragment:
        raise ValueError("must be a plain site URL (no user, port, query or fragment)")
    host = (parts.hostname or "").lower()
    tenant = next((host[: -len(s)] for s in _SPO_SUFFIXES if host.endswith(s)), "")
    if not tenant or "." in tenant or not _HOST_LABEL.match(tenant):
        raise ValueError(f"{host or value!r} is not a SharePoint Online host such as contoso.sharepoint.com")
    if tenant.endswith(("-admin", "-my")):
        raise ValueError(f"{host!r} is the admin center or OneDrive; give a site collection URL")
    return value


def guid(value: str) -> str:
    """A GUID in the 8-4-4-4-12 form the wizard and Get-MsolCompanyInformation show."""
    if not re.fullmatch(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}", value):
        raise ValueError("must be a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47")
    return value


def _local_file(value: str, suffixes: tuple[str, ...]) -> str:
    """A path on THIS machine (relative to the parameters file's folder, or absolute)."""
    if not value or not value.strip():
        raise ValueError("must be a path such as ./certs/s2s.pfx")
    if any(ord(c) < 32 or ord(c) == 0x7F for c in value):
        raise ValueError("contains a control character")
    if not value.lower().endswith(suffixes):
        raise ValueError(f"must end with {' or '.join(suffixes)}")
    return value


def _local_pfx(value: str) -> str:
    return _local_file(value, (".pfx", ".p12"))


def _local_cer(value: str) -> str:
    return _local_file(value, (".cer", ".crt", ".pem", ".der"))


LocalPfx = Annotated[str, AfterValidator(_local_pfx)]
LocalCer = Annotated[str, AfterValidator(_local_cer)]
PfxPath = Annotated[str, AfterValidator(_pfx)]
CerPath = Annotated[str, AfterValidator(_cer)]
FolderPath = Annotated[str, AfterValidator(_folder)]
ServiceAccount = Annotated[str, AfterValidator(service_account)]
RootDomain = Annotated[str, AfterValidator(root_domain)]
SiteUrl = Annotated[str, AfterValidator(sharepoint_site)]
Guid = Annotated[str, AfterValidator(guid)]

# --------------------------------------------------------------------------- the model

STRICT = ConfigDict(extra="forbid", str_strip_whitespace=False, frozen=True)


class Certificate(BaseModel):
    """The certificate as CertificateReconfiguration.ps1 sees it: paths ON THE CRM SERVER."""

    model_config = STRICT
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

    @model_validator(mode="after")
    def _one_local_copy(self) -> Certificate:
        if self.local_pfx is not None and self.local_cer is not None:
            raise ValueError("give local_pfx or local_cer, not both")
        return self


def host_name(value: str) -> str:
    """The CRM server's host name (LDH labels; a single label such as crm01 is allowed) or IPv4 address."""
    import ipaddress

    try:
        ipaddress.IPv4Address(value)
        return value
    except ValueError:
        pass
    if not value.isascii() or not re.fullmatch(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?", value):
        raise ValueError("must be a host name such as crm01.contoso.local (letters, digits, '-', dots) or an IPv4 address")
    if len(value) > 253:
        raise ValueError("a host name has at most 253 characters")
    return value


def normalize_host(value: str) -> str:
    """Host names compare case-insensitively and without a trailing dot."""
    return value.rstrip(".").lower()


HostName = Annotated[str, AfterValidator(host_name)]


class Crm(BaseModel):
    model_config = STRICT
    root_domain: RootDomain = Field(description="'*.' + the domain where Dynamics 365 Server is, e.g. *.contoso.com.")
    server: HostName | None = Field(
        None, description="The Dynamics 365 server `run` and `check` connect to (part of what is approved); "
        "they default --host to it and refuse another host.",
    )
    tools_dir: FolderPath = Field(
        "C:\\Program Files\\Microsoft Dynamics CRM\\Tools",
        description="Folder on the CRM server that holds CertificateReconfiguration.ps1.",
    )


class SharePoint(BaseModel):
    model_config = STRICT
    sites: list[SiteUrl] = Field(min_length=1, description="SharePoint Online site collection URLs, one tenant.")
    tenant_id: Guid | None = Field(None, description="Office 365 tenant ID; step 08 stops when the tenant differs.")

    @model_validator(mode="after")
    def _one_tenant(self) -> SharePoint:
        """The article: several sites are only possible within one Office 365 tenant."""
        hosts = {(urlsplit(s).hostname or "").lower() for s in self.sites}
        if len(hosts) > 1:
            raise ValueError(f"all sites must be on one SharePoint Online tenant; found {', '.join(sorted(hosts))}")
        seen: set[str] = set()
        for site in self.sites:
            key = site.rstrip("/").lower()
            if key in seen:
                raise ValueError(f"site listed twice: {site}")
            seen.add(key)
        return self


def thumbprint(value: str) -> str:
    """A SHA-1 certificate thumbprint: 40 hexadecimal digits (as Windows shows it, spaces removed)."""
    if not re.fullmatch(r"[0-9A-Fa-f]{40}", value):
        raise ValueError("must be a certificate thumbprint: 40 hexadecimal digits")
    return value


Thumbprint = Annotated[str, AfterValidator(thumbprint)]


class Graph(BaseModel):
    """Profile graph: how `psbridge run` signs in to Microsoft Graph on the server (no browser there)."""

    model_config = STRICT
    client_id: Guid | None = Field(None, description="App registration for app-only sign-in with a certificate.")
    tenant_id: Guid | None = Field(None, description="Tenant of the app registration (app-only sign-in).")
    certificate_thumbprint: Thumbprint | None = Field(
        None, description="Thumbprint of the app's certificate in the server's certificate store."
    )
    remove_expired_credentials: bool = Field(
        False, description="Step 06 also removes expired key credentials of the CRM service principal."
    )

    @model_validator(mode="after")
    def _app_only_complete(self) -> Graph:
        """App-only sign-in needs all three values; a part of them is a mistake, not a choice."""
        given = [self.client_id, self.tenant_id, self.certificate_thumbprint]
        if any(given) and not all(given):
            raise ValueError("app-only sign-in needs client_id, tenant_id and certificate_thumbprint together")
        return self


class Parameters(BaseModel):
    """Everything the sequence needs, except secrets (they never live in this file)."""

    model_config = STRICT
    name: str = Field(
        pattern=r"^[a-z0-9](?:[a-z0-9-]{0,62})$",
        description="Package name: lowercase letters, digits and '-'; names the output folder.",
    )
    profile: Literal["msonline", "graph"] = Field(
        "msonline", description="msonline: the article's sequence; graph: the same with Microsoft Graph PowerShell."
    )
    certificate: Certificate
    crm: Crm
    sharepoint: SharePoint
    graph: Graph | None = Field(None, description="Profile graph only: sign-in for psbridge run.")

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


def _message(error: dict[str, Any]) -> str:
    """One pydantic error as `field.path: what is wrong`."""
    loc = tuple(error["loc"])
    where = ".".join(str(p) for p in loc) or "(file)"
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        key = str(loc[-1]).lower()
        if any(word in key for word in _SECRET_WORDS):
            return f"{where}: {SECRET_HINT}"
        import difflib  # only on this error path: keeps `render` start-up short

        close = difflib.get_close_matches(str(loc[-1]), _known_fields(Parameters, loc), n=1)
        return f"{where}: unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "missing":
        return f"{where}: required"
    if kind == "string_pattern_mismatch" and loc == ("name",):
        return "name: use lowercase letters, digits and '-' (1-63 characters, starting with a letter or digit)"
    if kind == "literal_error":
        return f"{where}: {msg.replace('Input should be', 'must be')}"
    return f"{where}: {msg.removeprefix('Value error, ')}"


def parse_parameters(data: dict[str, Any]) -> Parameters:
    """Validate a parsed parameters mapping; every problem is reported at once."""
    try:
        return Parameters.model_validate(data)
    except ValidationError as exc:
        raise UserError(*(_message(e) for e in exc.errors(include_url=False))) from None


def load_parameters(path: Path) -> Parameters:
    """Read and validate a parameters file (TOML)."""
    import tomllib
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_parameters(data)
    except UserError as exc:
        raise UserError(*(f"{path}: {p}" for p in exc.problems)) from None


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
