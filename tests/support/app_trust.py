"""App-trust packages (`trust = "app"`) of the loopback server, for the end-to-end tests of the app trust.

`app_parameters` is the article's example as an app package (profile graph, the organization, the
tenant, `[app]`) on the loopback peer (crm.server 127.0.0.1, the farm's additional servers when
asked); `write_parameters` writes it as the TOML file an operator edits; `write_app_package`
renders and writes it as `psbridge render` does, with the test MSAL payload (support/msal.py) and
the local certificate's facts the check tests' packages record (support/packages.py).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .msal import NUPKG_NAME, SignedMsal
from .packages import CHECK_THUMB, check_facts
from .probe_states import APP_CLIENT, APP_TENANT

#: The display name and Graph uniqueName of the app a created-app package registers.
APP_NAME = "psbridge-contoso-sharepoint"


def app_parameters(*, adopt: bool = False, farm: Sequence[str] = (), replaces: str | None = None,
                   msal_package: str = NUPKG_NAME) -> dict[str, Any]:
    """The example's parameters as an app package of the loopback server (a created app, or APP_CLIENT adopted)."""
    from psbridge.parameters import EXAMPLE

    data = copy.deepcopy(EXAMPLE)
    data.update(profile="graph", trust="app")
    data["crm"].update(server="127.0.0.1", organization="contoso")
    if farm:
        data["crm"]["additional_servers"] = list(farm)
    data["sharepoint"]["tenant_id"] = APP_TENANT
    data["app"] = {"msal_package": msal_package, **({"client_id": APP_CLIENT} if adopt else {"name": APP_NAME})}
    if replaces:
        data["certificate"]["replaces"] = replaces
    return data


def _toml_value(value: Any) -> str:
    """A TOML string, boolean or array of strings (JSON's string escapes are TOML's basic-string escapes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def toml_text(data: dict[str, Any]) -> str:
    """The parameters as a TOML file: top-level keys first, then one table per mapping."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for table, values in data.items():
        if isinstance(values, dict):
            lines += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def write_parameters(path: Path, data: dict[str, Any]) -> Path:
    """Write the parameters file an operator would hand to `psbridge validate` and `psbridge render`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(toml_text(data), encoding="utf-8")
    return path


def write_app_package(root: Path, msal: SignedMsal, *, adopt: bool = False, farm: Sequence[str] = (),
                      replaces: str | None = None, approved: str | None = CHECK_THUMB) -> Path:
    """The app package of the loopback server, rendered with `msal`'s payload and written under root/out."""
    from psbridge.parameters import parse_parameters
    from psbridge.render import render_package
    from psbridge.writer import write_package

    params = parse_parameters(app_parameters(adopt=adopt, farm=farm, replaces=replaces))
    facts = check_facts(approved) if approved else None
    return write_package(render_package(params, facts, None, msal.payload), root / "out")


def payload_digests(pkg: Path) -> dict[str, str]:
    """File name (Microsoft.Identity.Client.dll, .xml) -> the sha256 plan.json records for it."""
    plan = json.loads((pkg / "plan.json").read_text(encoding="utf-8"))
    return {entry["file"].rsplit("/", 1)[-1]: entry["sha256"] for entry in plan["payload"]}
