"""The risks of a package, heaviest first: the one list REVIEW.md and the report both show.

Before issue 21 REVIEW.md's "Irreversible and risky parts" was template text and the report
had no risk list at all; two copies would drift. Here each risk is data: a short title (the
brief at the top of REVIEW.md and page one of the report list the titles) and its full text
as parts, each either prose psbridge wrote or a value from the parameters. REVIEW.md shows a
value as a code span (`render.risk_markdown`), the report as escaped `<code>`: no value can change
either document's structure.

The order is the weight: what the change cannot take back or what may make it useless comes
first (the ACS retirement while the ACS trust is chosen, then the app trust's reach, the
wizard that cannot be undone, the shared service principal), then what needs care.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .parameters import ACS_RETIRED_ON, ACS_RETIREMENT, ACS_RETIREMENT_PAGE, Parameters

#: A part of a risk's text: ("text", prose), ("strong", prose) or ("value", a value from the parameters).
Part = tuple[str, str]


@dataclass(frozen=True)
class Risk:
    """One risk: `key` (stable, for tests and anchors), a one-line `title`, and its full text in `parts`."""

    key: str
    title: str
    parts: tuple[Part, ...]


def _t(text: str) -> Part:
    return ("text", text)


def _v(value: Any) -> Part:
    return ("value", str(value))


def _b(text: str) -> Part:
    return ("strong", text)


def package_risks(params: Parameters, constants: Mapping[str, str], numbers: Mapping[str, str]) -> list[Risk]:
    """The package's risks, heaviest first (see the module's docstring for the order).

    `constants` are the layout's (cloud, metadata URL, environments); `numbers` each step's number
    by id, as the package numbers them (a renewal renumbers the steps).
    """
    risks = [_acs(params, numbers)]
    if params.app_trust:
        risks += _app(params, numbers)
    risks.append(Risk("wizard", "The wizard cannot be undone (no client-based authentication again)", (
        _t("After server-based SharePoint integration is enabled (the wizard), the organization cannot\nrevert to "
           "client-based authentication: the Microsoft Dynamics CRM List Component can no longer\nbe used."),)))
    risks.append(Risk("shared-principal", "Entra ID: the CRM service principal is shared by the tenant", (
        _t(f"Step {numbers['spn']} adds a credential and an SPN to the Dynamics CRM service principal in Entra ID, "
           "which\nevery Dynamics 365 (on-premises) deployment of the tenant that uses server-based integration\n"
           "shares."),)))
    if params.certificate.replaces and "retire-previous" in numbers:
        risks.append(Risk("retire-previous", "The replaced certificate's credential is removed", (
            _t(f"Step {numbers['retire-previous']} removes the key credential of "), _v(params.certificate.replaces),
            _t(": a deployment (a test or standby farm) that still signs with it is cut off. Confirm that none does "
               "before approving."))))
    risks.append(Risk("private-key", "The service account gets the certificate's private key", (
        _t(f"Step {numbers['certificate']} grants the service account "), _v(params.certificate.service_account),
        _t(" access to the\ncertificate's private key and makes the certificate the CRM's S2S token issuer."))))
    risks.append(_cloud(params, constants, numbers))
    host = _tenant_host(params)
    risks.append(Risk("one-tenant", "All sites must be in one Office 365 tenant", (
        _t("To connect several organizations of one deployment to more than one SharePoint Online site,\nall the "
           "sites must be in the same Office 365 tenant. This package's sites are all on\n"), _v(host), _t("."))))
    risks.append(Risk("order", "The steps run in order; an error stops the run", (
        _t("The steps must run in the order given. When a command returns an error, the cause must be\nfixed before "
           "the next command runs; `setup.ps1` and `psbridge run` stop at the first error."),)))
    return risks


def _acs(params: Parameters, numbers: Mapping[str, str]) -> Risk:
    """The ACS retirement: the heaviest risk while the ACS trust is chosen, context for the app trust."""
    if params.app_trust:
        return Risk("acs", f"Azure ACS retired on {ACS_RETIRED_ON}: the app trust is added, ACS settings stay", (
            _b("Azure ACS and the app trust."), _t(" Microsoft retired Azure ACS for SharePoint Online on "),
            _v(ACS_RETIRED_ON), _t(f'\n("{ACS_RETIREMENT}", '), _v(ACS_RETIREMENT_PAGE),
            _t(f"). This package keeps the article's ACS settings (step {numbers['crm-settings']})\nand adds "
               "Microsoft's app steps, which SharePoint Online honours instead (see \"The app trust\" above).")))
    return Risk("acs", f"Azure ACS retired on {ACS_RETIRED_ON}: SharePoint Online may not honour this trust", (
        _b(f"Azure ACS was retired on {_code(ACS_RETIRED_ON)}."),
        _t(f" The article's trust goes through Azure Access Control Services: step {numbers['crm-settings']} points "
           f'CRM at the ACS principal and metadata URL. Microsoft: "{ACS_RETIREMENT}" ("Retirement announcement for '
           'Azure ACS", '), _v(ACS_RETIREMENT_PAGE),
        _t("). The trust this package configures may no longer be honoured by SharePoint Online. Render the package "
           'with `trust = "app"` instead: it adds Microsoft\'s "Configure Azure app for SharePoint access" steps for '
           "CE (on-premises) 9.1.")))


def _code(text: str) -> str:
    """A constant psbridge writes inside strong text, as REVIEW.md has always shown it (a code span)."""
    return f"`{text}`"


def _app(params: Parameters, numbers: Mapping[str, str]) -> list[Risk]:
    """The app trust's reach (every site of the tenant) and its outage (CRMWeb\\bin recycles)."""
    sites: list[Part] = []
    for i, site in enumerate(params.sharepoint.sites):
        sites += [_v(site)] + ([_t(", ")] if i < len(params.sharepoint.sites) - 1 else [])
    return [
        Risk("full-control", "Sites.FullControl.All: full control of every site of the tenant", (
            _b("Sites.FullControl.All is full control of every site collection in the tenant"), _t(", not only "),
            *sites, _t(". Whoever holds the private key of the S2S certificate ("), _v(params.certificate.pfx_path),
            _t(" on the server) holds that control."))),
        Risk("outage", "CRMWeb\\bin is written: the CRM web application recycles", (
            _t(f"Step {numbers['msal-assembly']} writes Microsoft.Identity.Client.dll and .xml into CRMWeb\\bin: "),
            _b("writing into CRMWeb\\bin recycles the CRM web application"), _t(": a short outage, inside the change "
                                                                               "window."))),
    ]


def _cloud(params: Parameters, constants: Mapping[str, str], numbers: Mapping[str, str]) -> Risk:
    """The cloud the site's host decides, and the documented values psbridge takes for it."""
    parts: list[Part] = [_t("The site's host decides the cloud ("), _v(constants["cloud"]),
                         _t(f"): step {numbers['crm-settings']} sets the S2S metadata URL\n"), _v(constants["metadata_url"])]
    if params.profile == "graph":
        parts += [_t(f" and step {numbers['connect']} connects to Microsoft Graph with\n`-Environment` "),
                  _v(constants["graph_environment"])]
    elif constants.get("azure_environment", "AzureCloud") != "AzureCloud":
        parts += [_t(f" and step {numbers['connect']} connects with\n`-AzureEnvironment` "),
                  _v(constants["azure_environment"])]
    parts.append(_t(". psbridge uses only values Microsoft documents:\nthe article's for the commercial cloud (GCC "
                    'included), and for GCC High (.sharepoint.us) the\nmetadata URL of "Connect Dynamics 365 Customer '
                    'Engagement (on-premises) to Exchange Online"\nand Graph\'s USGov environment; it refuses 21Vianet '
                    "and DoD sites, for which no metadata URL is\ndocumented."))
    return Risk("cloud", f"The cloud follows the sites' host: {constants['cloud']}", tuple(parts))


def _tenant_host(params: Parameters) -> str:
    """The host of the first site: the tenant every site must share."""
    from urllib.parse import urlsplit

    return (urlsplit(params.sharepoint.sites[0]).hostname or "").lower()
