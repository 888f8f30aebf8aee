"""The app trust's server-side scripts, rendered for tests before a whole app package renders.

An app package (`trust = "app"`) needs the Entra app steps' templates and the payload wiring,
which other branches add; until they are merged, `render_package` of an app package stops at
their missing templates. These helpers render what this branch owns through the project's own
Jinja environment: every step of the package (`render.render_steps`), the `web` and `org`
probes and the partner-applications back-out, with the texts the package would hold.
"""

from __future__ import annotations

import copy
from typing import Any

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "5c3d8e3a-7f1b-4d2a-9a55-0e6b7c1d2f30"


def app_data(*, adopt: bool = False, farm: bool = False) -> dict[str, Any]:
    """The example's parameters with the graph profile and the app trust (a created app, or an adopted one)."""
    from psbridge.parameters import EXAMPLE

    data = copy.deepcopy(EXAMPLE)
    data["profile"] = "graph"
    data["trust"] = "app"
    data["crm"]["organization"] = "contoso"
    data["sharepoint"]["tenant_id"] = TENANT
    data["app"] = {"msal_package": "msal/microsoft.identity.client.4.11.0.nupkg"}
    data["app"].update({"client_id": CLIENT} if adopt else {"name": "psbridge-contoso-sharepoint"})
    if farm:
        data["crm"].update(server="crm01.contoso.local", additional_servers=["crmfe2.contoso.local"])
    return data


def render_app(data: dict[str, Any]) -> Any:
    """A `render.Rendered` with the steps, the web and org probes and the partner-applications back-out."""
    from psbridge.catalogue import constants_for, steps_for
    from psbridge.parameters import parse_parameters
    from psbridge.render import Rendered, Trusted, _crlf_bom, _environments, render_steps

    params = parse_parameters(data)
    env, _ = _environments()
    numbers = {s.id: Trusted(f"{s.index:02d}") for s in steps_for(params)}
    files = {r.step.file: r.data for r in render_steps(params)}
    for name in ("web", "org"):
        text = env.get_template(f"probes/{name}.ps1.j2").render(p=params, c=constants_for(params), modules=())
        files[f"probes/{name}.ps1"] = _crlf_bom(text)
    rollback = env.get_template("steps/partner-applications/rollback.ps1.j2").render(
        p=params, c=constants_for(params), n=numbers)
    files["rollback/11-partner-applications.ps1"] = _crlf_bom(rollback)
    return Rendered(params.name, files)


def texts(data: dict[str, Any]) -> dict[str, str]:
    """Each rendered script's text (BOM removed, LF line ends)."""
    return {path: raw[3:].decode("utf-8").replace("\r\n", "\n") for path, raw in render_app(data).files.items()}
