"""The secrets the selected steps take, and how they travel: SecureString and PSCredential only.

Exactly the secrets the selected steps declare (`catalogue.Step.inputs`) are read, from an
environment variable or a hidden prompt (`secrets.read_secret`), never from the command line;
they reach the server only as PSRP SecureString/PSCredential parameters after a key exchange.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..package import Package, PackageStep
from ..secrets import read_secret
from .transport import Connection


def secrets_needed(steps: Iterable[PackageStep]) -> set[str]:
    """Secret kinds the selected steps take, so nothing else is asked for."""
    return {kind for step in steps for kind in step.inputs.values()}


@dataclass
class StepSecrets:
    pfx_password: str | None = None
    o365_user: str | None = None
    o365_password: str | None = None
    graph_token: str | None = None

    def values(self) -> list[str]:
        return [v for v in (self.pfx_password, self.o365_password, self.graph_token) if v]


def read_step_secrets(needed: set[str], o365_user: str | None) -> StepSecrets:
    """Ask for exactly the secrets the selected steps take (environment variable or hidden prompt)."""
    if "o365_credential" in needed and not o365_user:
        raise UserError("--o365-user: required, the selected steps connect to Office 365 (or set "
                        "PSBRIDGE_O365_USER, or [crm] o365_user in the parameters)")
    secrets = StepSecrets()
    if "pfx_password" in needed:
        secrets.pfx_password = read_secret("PSBRIDGE_PFX_PASSWORD", "PFX password", stdin_flag=None)
    if "o365_credential" in needed:
        secrets.o365_user = o365_user
        secrets.o365_password = read_secret("PSBRIDGE_O365_PASSWORD", f"Office 365 password for {o365_user}",
                                            stdin_flag=None)
    if "graph_token" in needed:
        secrets.graph_token = read_secret("PSBRIDGE_GRAPH_TOKEN", "Microsoft Graph access token", stdin_flag=None)
    return secrets


def read_winrm_password(conn: Connection) -> str | None:
    """The WinRM password when the auth method takes one (Kerberos: only with an explicit user)."""
    if conn.auth in ("negotiate", "ntlm", "basic", "credssp"):
        return read_secret("PSBRIDGE_WINRM_PASSWORD", f"WinRM password for {conn.username}", stdin_flag=None)
    if conn.auth == "kerberos" and conn.username:
        return read_secret("PSBRIDGE_WINRM_PASSWORD", f"WinRM password for {conn.username}", stdin_flag=None,
                           allow_empty=True) or None
    return None


def step_parameters(step: PackageStep, secrets: StepSecrets) -> dict[str, Any]:
    """The step's secret parameters as PSRP values: SecureString and PSCredential, never plain strings."""
    from pypsrp.complex_objects import PSCredential
    from pypsrp.serializer import TaggedValue

    params: dict[str, Any] = {}
    for name, kind in step.inputs.items():
        if kind == "pfx_password":
            params[name] = TaggedValue("SS", secrets.pfx_password)
        elif kind == "o365_credential":
            params[name] = PSCredential(username=secrets.o365_user, password=secrets.o365_password)
        elif kind == "graph_token":
            params[name] = TaggedValue("SS", secrets.graph_token)
    return params


def payload_parameters(step: PackageStep, package: Package) -> dict[str, str]:
    """The package files the step takes (`Step.payload`): base64 text and sha256 of each, as plain strings.

    The bytes come from `package.payload`, read once with the package, their Authenticode signature
    verified again and their facts compared with plan.json's: what is judged is what is sent. Not
    secrets (Microsoft's published assembly): plain string parameters. {} for every other step,
    and for every step of a package of the ACS trust (it carries no payload).
    """
    import base64

    from ..payload import PAYLOAD_PARAMETERS

    names = getattr(getattr(step, "spec", None), "payload", ())
    if not names:
        return {}
    payload = package.payload
    if payload is None:  # a package of the ACS trust carries no payload: its steps take none
        return {}
    params: dict[str, str] = {}
    for name in names:
        parameter = PAYLOAD_PARAMETERS[name]
        params[parameter] = base64.b64encode(payload.files[name]).decode("ascii")
        params[f"{parameter}Sha256"] = payload.sha256[name]
    return params
