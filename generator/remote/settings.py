"""Where the WinRM connection's settings come from: option > environment > the package's `[crm]` > default.

Transport, port and auth are approved with the package (like `[crm] server`): the package's
value, which an option may only repeat. The WinRM user and the Office 365 user are defaults
there, overridden by PSBRIDGE_USERNAME / PSBRIDGE_O365_USER and then by the options. No click
here: the command line (cli.options) hands in what it parsed.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from ..errors import UserError

#: Where the WinRM user and the Office 365 user come from when no option gives them (before the package).
USERNAME_ENV = "PSBRIDGE_USERNAME"
O365_USER_ENV = "PSBRIDGE_O365_USER"


class PackageConnection(Protocol):
    """The connection settings a package's `[crm]` table carries (parameters.Crm)."""

    server: str | None
    transport: str | None
    port: int | None
    auth: str | None
    username: str | None
    o365_user: str | None


def from_environment(name: str) -> str | None:
    """An environment variable's value; unset and empty are the same (nothing given)."""
    return os.environ.get(name) or None


def approved_value(option: str, given: Any, package_value: Any, default: Any) -> Any:
    """A setting approved with the package: the package's value; an option may repeat it, never change it.

    Why: transport, port and auth are part of what the board approved (like `[crm] server`): a
    different value on the command line is refused, not silently used. A package without the
    key keeps today's behaviour: the option, else its default.
    """
    if package_value is None:
        return default if given is None else given
    if given is not None and given != package_value:
        raise UserError(f"{option} {given}: the package is approved for [crm] {option.removeprefix('--')} = "
                        f"{package_value}; leave {option} out (or change [crm] {option.removeprefix('--')}, render and "
                        "approve again)")
    return package_value


def implied_options(host: str, crm: PackageConnection | None) -> tuple[tuple[str, str], ...]:
    """The option values a command on this package gets without giving them (the package and the defaults).

    A printed continue command leaves these out (remote.advice.RunSettings.trim): it repeats only
    what differs, so `psbridge run PKG --from-step 7` is the whole command when the package and
    the environment carry the connection.
    """
    transport = getattr(crm, "transport", None) or "https"
    implied = [("--host", host) if getattr(crm, "server", None) else None,
               ("--transport", transport),
               ("--port", str(getattr(crm, "port", None) or (5986 if transport == "https" else 5985))),
               ("--auth", getattr(crm, "auth", None) or "negotiate")]
    # Only the package's users are implied: a user PSBRIDGE_USERNAME / PSBRIDGE_O365_USER gave is repeated,
    # since a new shell without the variable would otherwise connect as the package's user.
    user = getattr(crm, "username", None)
    office = getattr(crm, "o365_user", None)
    implied += [("--username", user) if user else None, ("--o365-user", office) if office else None]
    return tuple(pair for pair in implied if pair is not None)
