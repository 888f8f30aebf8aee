"""The options several commands share, each group handed to the command as one object.

`--audit-log`, the WinRM connection options (`run`, `check`, `rollback`) and the
`--require-approval` gate's options. A shared group reaches the command as one
parameter (`connection: ConnectionOptions`, `approval: ApprovalOptions`) so that the
commands do not repeat a dozen parameters. Turning the parsed values into the library's
objects (`remote.Connection`, `approvals.ApprovalPolicy`) happens here, after click has
checked each value's type; the library checks what only it can judge.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import UserError
from ..remote.settings import O365_USER_ENV, USERNAME_ENV, PackageConnection, approved_value, from_environment

if TYPE_CHECKING:
    from ..approvals import ApprovalPolicy
    from ..remote.gate import PreparedRun
    from ..remote.transport import Connection

#: Help is wrapped to the terminal, at most 80 columns; examples (`\b` blocks) are written to fit.
CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 80}

F = TypeVar("F", bound=Callable[..., Any])
Command = Callable[..., None]


def audit_log_option(func: F) -> F:
    """`--audit-log PATH` for every command that acts on a package (see audit.resolve_log)."""
    return click.option(
        "--audit-log", "audit_log", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="Hash-chained audit log (default: PSBRIDGE_AUDIT_LOG, else audit.jsonl beside the packages).",
    )(func)


def _hex_head(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A head hash is 64 hex digits (what `audit verify` prints); anything else is bad input."""
    import re

    if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise UserError("--head: a 64-digit hex sha256 (the head `psbridge audit verify` printed)")
    return value.lower() if value is not None else None


def audit_head_option(func: F) -> F:
    """`--head SHA256` for rollback: believe the audit log only up to a head recorded elsewhere."""
    return click.option(
        "--head", "head", metavar="SHA256", default=None, callback=_hex_head,
        help="Audit-log head recorded elsewhere (the change ticket): its chain is verified up to it and "
             "no line after it is believed.",
    )(func)


def package_log(audit_log: Path | None, package_dir: Path) -> Path:
    """The audit log of a command on PACKAGE_DIR: --audit-log, else the default beside the packages."""
    from ..audit import resolve_log

    return resolve_log(audit_log, near=Path(os.path.abspath(package_dir)).parent)


def gather(cls: type[Any], name: str) -> Callable[[Command], Command]:
    """A decorator handing the options named like the fields of dataclass `cls` to the command as one `cls`.

    The command is then called with `name=cls(...)` instead of one parameter per option;
    click still parses and checks every option (put it below `@click.command`).
    """
    keys = [f.name for f in fields(cls)]

    def decorate(func: Command) -> Command:
        @functools.wraps(func)
        def command(**kwargs: Any) -> None:
            kwargs[name] = cls(**{key: kwargs.pop(key) for key in keys})
            func(**kwargs)

        return command

    return decorate


def _gathered(cls: type[Any], name: str, options: tuple[Callable[[Command], Command], ...]) -> Callable[[Command], Command]:
    """A decorator adding `options` to a command and handing their values to it as one `cls` named `name`."""

    def decorate(func: Command) -> Command:
        command = gather(cls, name)(func)
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


# --------------------------------------------------------------------------- the WinRM connection

#: The auth methods of remote.AUTHS, spelled out here so that `--help` does not import the
#: PSRP layer; tests/test_run_logic.py keeps the two equal (and test_connection_settings.py the
#: parameters file's `[crm] auth`).
_AUTHS = ("negotiate", "ntlm", "kerberos", "credssp", "basic", "certificate")
_CONNECTION_OPTIONS: tuple[Callable[[Command], Command], ...] = (
    click.option("--host", help="The Dynamics 365 server (default: the package's [crm] server; another host is refused)."),
    click.option("--port", type=int, help="WinRM port (default: the package's [crm] port, else 5986 for https, "
                                          "5985 for http; another port than the package's is refused)."),
    click.option("--transport", type=click.Choice(["https", "http"]), default=None,
                 help="Default: the package's [crm] transport, else https (another value than the package's is "
                      "refused)."),
    click.option("--auth", type=click.Choice(list(_AUTHS)), default=None,
                 help="Default: the package's [crm] auth, else negotiate (another method than the package's is "
                      "refused)."),
    click.option("--username", help=f"WinRM user, e.g. CONTOSO\\crmadmin (default: {USERNAME_ENV}, else the "
                                     "package's [crm] username). Password: PSBRIDGE_WINRM_PASSWORD or a prompt."),
    click.option("--ca-bundle", type=click.Path(dir_okay=False, path_type=Path), help="PEM file of the CA(s) to trust for HTTPS."),
    click.option("--no-verify-tls", is_flag=True, help="Do not verify the server's certificate (unsafe; warned)."),
    click.option("--client-cert", type=click.Path(dir_okay=False, path_type=Path), help="PEM client certificate for --auth certificate."),
    click.option("--client-key", type=click.Path(dir_okay=False, path_type=Path), help="PEM key for --client-cert."),
    click.option("--configuration-name", default="Microsoft.PowerShell", show_default=True, help="PSSession configuration (JEA endpoint)."),
    click.option("--connection-timeout", type=int, default=30, show_default=True, help="Seconds to wait for the TCP/TLS connection and the server's first answer."),
    click.option("--operation-timeout", type=int, default=20, show_default=True, help="WSMan OperationTimeout in seconds (long-poll length)."),
    click.option("--o365-user", help=f"Office 365 admin for the steps that connect (default: {O365_USER_ENV}, else "
                                     "the package's [crm] o365_user; password: PSBRIDGE_O365_PASSWORD or a prompt)."),
)


@dataclass(frozen=True)
class ConnectionOptions:
    """The connection options as parsed: the host and the package's settings are only known once it is read.

    Where each setting comes from (README, "Where settings come from"): an option, else the
    environment (PSBRIDGE_USERNAME, PSBRIDGE_O365_USER), else the package's `[crm]` table, else
    the default; transport, port and auth are approved with the package: its value, which an
    option may only repeat.
    """

    host: str | None
    port: int | None
    transport: str | None
    auth: str | None
    username: str | None
    ca_bundle: Path | None
    no_verify_tls: bool
    client_cert: Path | None
    client_key: Path | None
    configuration_name: str
    connection_timeout: int
    operation_timeout: int
    o365_user: str | None

    def to(self, host: str, crm: PackageConnection | None = None) -> Connection:
        """The validated connection to `host` (the package's server, or --host when it names none).

        `crm` is the package's `[crm]` table: transport, port and auth come from it when it names
        them (another value given as an option is refused), the WinRM user from it when neither
        --username nor PSBRIDGE_USERNAME gives one.
        """
        from ..remote.transport import Connection

        transport = approved_value("--transport", self.transport, getattr(crm, "transport", None), "https")
        auth = approved_value("--auth", self.auth, getattr(crm, "auth", None), "negotiate")
        port = approved_value("--port", self.port, getattr(crm, "port", None), 5986 if transport == "https" else 5985)
        conn = Connection(
            host=host, port=port, transport=transport, auth=auth, username=self.winrm_user(crm),
            ca_bundle=self.ca_bundle, verify_tls=not self.no_verify_tls,
            configuration_name=self.configuration_name, connection_timeout=self.connection_timeout,
            operation_timeout=self.operation_timeout, client_cert=self.client_cert, client_key=self.client_key,
        )
        conn.validate()
        _warn_of_ca_variables(conn)
        return conn

    def winrm_user(self, crm: PackageConnection | None = None) -> str | None:
        """The WinRM user: --username, else PSBRIDGE_USERNAME, else the package's [crm] username."""
        return self.username or from_environment(USERNAME_ENV) or getattr(crm, "username", None)

    def office_user(self, crm: PackageConnection | None = None) -> str | None:
        """The Office 365 user: --o365-user, else PSBRIDGE_O365_USER, else the package's [crm] o365_user."""
        return self.o365_user or from_environment(O365_USER_ENV) or getattr(crm, "o365_user", None)


def implied_audit_log(package_dir: Path) -> tuple[tuple[str, str], ...]:
    """`--audit-log` at its default place beside the packages, which a continue command need not repeat.

    A log named by PSBRIDGE_AUDIT_LOG (or the option) is repeated: the next shell may not have
    the variable, and the chain must go on in the same log.
    """
    from ..audit_place import ENV_AUDIT_LOG

    return () if os.environ.get(ENV_AUDIT_LOG) else (("--audit-log", str(package_log(None, package_dir))),)


def connected(connection: ConnectionOptions, prepared: PreparedRun,
              refuse: Callable[[Exception], None] | None = None) -> Connection:
    """The connection a gated command uses (`ConnectionOptions.to` with the package's `[crm]`).

    A refused option (another transport, port or auth than the package's) is handed to
    `refuse` first, so that the audit log records the attempt like a refused host.
    """
    try:
        return connection.to(prepared.host, prepared.package.parameters.crm)
    except UserError as exc:
        if refuse is not None:
            refuse(exc)
        raise


#: The WinRM connection options that `run`, `check` and `rollback` share: the command gets `connection`.
connection_options = _gathered(ConnectionOptions, "connection", _CONNECTION_OPTIONS)


# --------------------------------------------------------------------------- the approval gate

_APPROVAL_OPTIONS: tuple[Callable[[Command], Command], ...] = (
    click.option("--require-approval", is_flag=True,
                 help="Only a package psbridge renders byte for byte from its plan.json, approved by enough people."),
    click.option("--trusted-keys", type=click.Path(file_okay=False, path_type=Path),
                 help="Folder of the approvers' .pub.json files (with --require-approval)."),
    click.option("--min-approvals", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Distinct trusted people who must have approved."),
    click.option("--forbid-self-approval", is_flag=True, help="The operator's own approval (--key) does not count."),
    click.option("--key", "operator_key", type=click.Path(dir_okay=False, path_type=Path),
                 help="The operator's approval key or .pub.json (with --forbid-self-approval)."),
    click.option("--forbid-key", "forbid_keys", multiple=True, metavar="PUBKEY",
                 help="A key (.pub.json, key file or fingerprint) whose person may not approve; repeatable."),
)


@dataclass(frozen=True)
class ApprovalOptions:
    """The --require-approval gate's options as parsed."""

    require_approval: bool
    trusted_keys: Path | None
    min_approvals: int
    forbid_self_approval: bool
    operator_key: Path | None
    forbid_keys: tuple[str, ...]

    def policy(self) -> ApprovalPolicy | None:
        """The ApprovalPolicy of the options, or None without --require-approval."""
        from ..approvals import ApprovalPolicy

        if not self.require_approval:
            if self.trusted_keys or self.forbid_self_approval or self.forbid_keys:
                raise UserError("--trusted-keys, --forbid-self-approval and --forbid-key need --require-approval")
            return None
        if self.trusted_keys is None:
            raise UserError("--require-approval: needs --trusted-keys DIR")
        if self.forbid_self_approval and self.operator_key is None:
            raise UserError("--forbid-self-approval: needs --key (the operator's key or .pub.json)")
        forbid = tuple(self.forbid_keys) + ((str(self.operator_key),) if self.forbid_self_approval and self.operator_key else ())
        _warn_of_private_keys(self.trusted_keys)
        return ApprovalPolicy(self.trusted_keys, self.min_approvals, forbid)


def _warn_of_ca_variables(conn: Connection) -> None:
    """One warning per CA bundle variable set (https, no --ca-bundle): psbridge ignores it (transport.trusted_cas)."""
    from ..remote.transport import ignored_ca_variables

    if conn.transport == "https" and conn.verify_tls and conn.ca_bundle is None:
        for name in ignored_ca_variables():
            click.echo(f"psbridge: warning: {name} is ignored: psbridge trusts only the CAs --ca-bundle names", err=True)


def _warn_of_private_keys(trusted_keys: Path) -> None:
    """One warning line when the board's trusted-keys folder holds a private key (it is for public keys)."""
    from ..keys import private_key_notice
    from .output import safe

    notice = private_key_notice(trusted_keys)
    if notice is not None:
        click.echo(f"psbridge: warning: {safe(notice)}", err=True)


#: The --require-approval gate's options, shared by `run`, `check` and `rollback`: the command gets `approval`.
approval_options = _gathered(ApprovalOptions, "approval", _APPROVAL_OPTIONS)
