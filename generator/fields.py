"""The value types of the parameters file: Windows paths, accounts, host names, URLs, GUIDs.

Every value ends up in a script that runs as administrator on a production CRM server, so
each type is strict and its error says what is wrong. Values that are legal in Windows but
dangerous in scripts (apostrophes, typographic quotes, `$`, `;`, `#`, backticks, non-ASCII
letters) are accepted: the quoting function makes them safe. What quote() refuses is refused
here first, in every string (`plain_text`): control characters and line breaks, and invisible
Unicode format characters. An error line quotes a user's value clipped to 80 characters and
escaped (`text.printable`).
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator

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


#: The server-side certificate paths validate and render look at for a UNC path (item 8 of issue 19).
SERVER_CERTIFICATE_PATHS = ("pfx_path", "cer_path")


def second_hop_warnings(certificate: dict[str, object]) -> list[str]:
    """One warning per server-side certificate path on a share (`\\\\server\\share\\x.pfx`).

    Why a warning and not a refusal: setup.ps1 run at the server's own console reads the share
    with the operator's credentials; `psbridge run` reads it over a remote session, where the
    server cannot pass them on (the second hop) and the file looks missing, which misleads.
    """
    out = []
    for name in SERVER_CERTIFICATE_PATHS:
        value = certificate.get(name)
        if isinstance(value, str) and value.startswith("\\\\"):
            out.append(f"certificate.{name}: {printable(value)} is a UNC path: over a remote session (psbridge run, "
                       "check) the server cannot pass your credentials on to the share (the second hop), so the file "
                       "looks missing. Copy it to a local folder on the server and set that path, or connect with "
                       "--auth credssp; setup.ps1 run at the server's console can read it")
    return out


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


def organization_name(value: str) -> str:
    """A CRM organization's unique name (Get-CrmOrganization -Name): letters, digits and '_', from a letter."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", value):
        raise ValueError("must be the organization's unique name: letters, digits and '_', starting with a letter "
                         "(at most 64 characters; Deployment Manager shows it)")
    return value


def app_unique_name(value: str) -> str:
    """The Entra app's display name and `uniqueName` (an alternate key in Graph URLs: kept to a safe alphabet)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}", value):
        raise ValueError("use letters, digits, '.', '_' and '-' (1-120 characters, starting with a letter or digit): "
                         "it is the app's uniqueName, which Graph uses in its URLs")
    return value


def _local_nupkg(value: str) -> str:
    return _local_file(value, (".nupkg",))


OrganizationName = Annotated[str, AfterValidator(organization_name)]
AppUniqueName = Annotated[str, AfterValidator(app_unique_name)]
LocalNupkg = Annotated[str, AfterValidator(_local_nupkg)]


#: A renewal's wait between proving the new key credential in Entra ID and switching CRM to it
#: (`[certificate] switch_after_hours`). Microsoft's "Troubleshooting server-based authentication"
#: says SharePoint may take up to 24 hours to use a new certificate: 24 is the default, 0 is allowed
#: (REVIEW.md then warns), and a week bounds it (a longer wait is a mistake, not a plan).
DEFAULT_SWITCH_AFTER_HOURS = 24
MAX_SWITCH_AFTER_HOURS = 168


def switch_after_hours(value: object) -> int:
    """Whole hours from 0 to a week; a bool, a float or a string is refused, not converted (TOML has integers)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a whole number of hours from 0 to {MAX_SWITCH_AFTER_HOURS}")
    if not 0 <= value <= MAX_SWITCH_AFTER_HOURS:
        raise ValueError(f"must be from 0 to {MAX_SWITCH_AFTER_HOURS} hours (a week), not {value}")
    return value


SwitchAfterHours = Annotated[int, BeforeValidator(switch_after_hours)]


# --------------------------------------------------------------------------- the WinRM connection ([crm])

#: What `psbridge run --transport` accepts; the package's `[crm] transport` takes the same values.
TRANSPORTS = ("https", "http")
#: What `psbridge run --auth` accepts (remote.transport.AUTHS; tests keep the three lists equal).
AUTH_METHODS = ("negotiate", "ntlm", "kerberos", "credssp", "basic", "certificate")


def winrm_user(value: str) -> str:
    """The WinRM user: `DOMAIN\\user`, `user@domain` or a local `user`, as `--username` takes it.

    Only a default (the environment and `--username` override it), but it is written into the
    package and shown to reviewers: one plain account name, no spaces around it, no second `\\`.
    """
    if not value or value != value.strip():
        raise ValueError("must be an account such as CONTOSO\\crmadmin, without spaces around it")
    if len(value) > 256 or value.count("\\") > 1 or value.count("@") > 1:
        raise ValueError("must be one account: DOMAIN\\user, user@domain or user (at most 256 characters)")
    user = value.split("\\")[-1].split("@")[0]
    if not user:
        raise ValueError("the user name is missing (DOMAIN\\user or user@domain)")
    bad = sorted(_FORBIDDEN_IN_ACCOUNT & set(user))
    if bad:
        raise ValueError(f"character {bad[0]!r} is not allowed in a Windows account name")
    return value


def user_principal(value: str) -> str:
    """The Office 365 administrator's sign-in name (a UPN such as admin@contoso.onmicrosoft.com)."""
    local, at, domain = value.partition("@")
    if not at or not local or " " in value or len(value) > 256:
        raise ValueError("must be a user principal name such as admin@contoso.onmicrosoft.com")
    dns_name(domain, what="the domain after '@'")
    return value


def tcp_port(value: int) -> int:
    """A TCP port, 1-65535 (WinRM listens on 5986 for HTTPS, 5985 for HTTP)."""
    if not 1 <= value <= 65535:
        raise ValueError(f"{value} is not a TCP port (1-65535)")
    return value


WinRMUser = Annotated[str, AfterValidator(winrm_user)]
UserPrincipal = Annotated[str, AfterValidator(user_principal)]
