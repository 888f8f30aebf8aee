"""Real packages for run tests and the benchmark: rendered by psbridge from the catalogue.

`make_package` renders parameters with the public API and writes the package the way
`psbridge render` does, so ids, kinds, needs, inputs and texts are exactly what `run`
sees in production. `marker(step)` is a line unique to each step's text (its header),
so the peer's rules can tell steps apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psbridge.catalogue import Step, catalogue
from psbridge.parameters import parse_parameters
from psbridge.render import render_package
from psbridge.writer import write_package


def marker(step: Step) -> str:
    """The first line of a step's text up to its id: `# psbridge step 02/08: certificate -`."""
    return f"# psbridge step {step.index:02d}/{len(catalogue('msonline')):02d}: {step.id} -"


def parameters_for(name: str = "contoso", *, profile: str = "msonline", server: str | None = None,
                   **tables: dict[str, Any]) -> dict[str, Any]:
    """A parameters mapping like `psbridge init` writes, with `tables` merged in (e.g. crm={...})."""
    data: dict[str, Any] = {
        "name": name, "profile": profile,
        "certificate": {"pfx_path": "C:\\certs\\s2s.pfx", "cer_path": "C:\\certs\\s2s.cer",
                        "service_account": f"{name}\\CRMWebApplicationService"},
        "crm": {"root_domain": f"*.{name}.com", **({"server": server} if server else {})},
        "sharepoint": {"sites": [f"https://{name}.sharepoint.com/sites/salesteam"]},
    }
    for table, values in tables.items():
        data[table] = {**data.get(table, {}), **values}
    return data


def make_package(root: Path, name: str = "contoso", *, certificate: dict[str, Any] | None = None,
                 **options: Any) -> Path:
    """Render and write ROOT/NAME/ (see `parameters_for` for the options); return the folder."""
    params = parse_parameters(parameters_for(name, **options))
    return write_package(render_package(params, certificate), root)
