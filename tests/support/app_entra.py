"""Parameters of an app-trust package (profile graph, trust app, an [app] section): created or adopted app,
first setup or renewal, one server or a farm. Shared by test_app_entra.py and test_signout.py."""

from __future__ import annotations

import copy
from typing import Any

from psbridge.parameters import EXAMPLE

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
REPLACED = "0123456789ABCDEF0123456789ABCDEF01234567"


def app_data(adopt: bool = False, renewal: bool = False, farm: bool = False) -> dict[str, Any]:
    """Parameters of an app-trust package: the example, profile graph, trust app, and [app]."""
    data = copy.deepcopy(EXAMPLE)
    data.update(profile="graph", trust="app")
    data["crm"]["organization"] = "contoso"
    data["sharepoint"]["tenant_id"] = TENANT
    data["app"] = {"msal_package": "Microsoft.Identity.Client.4.11.0.nupkg",
                   **({"client_id": CLIENT_ID} if adopt else {"name": "psbridge-contoso"})}
    if renewal:
        data["certificate"]["replaces"] = REPLACED
    if farm:
        data["crm"].update(server="crm01.contoso.local", additional_servers=["crmfe2.contoso.local"])
        data["crm"].pop("tools_dir", None)
    return data
