"""`psbridge run`: the package's steps over PowerShell Remoting (PSRP) with pypsrp 0.9.x.

The decisions (which steps, what counts as success, events, the run record) live in
generator/runner.py; this module is the I/O: one WSMan connection, one
RunspacePool with one runspace, `$ErrorActionPreference = 'Stop'` set once, then
one pipeline per step. pypsrp is imported only here and only when a run starts,
so the rest of the CLI starts fast.

pypsrp traps handled here (see DOMAIN.md): `invoke()` does not raise when a
pipeline fails, so the state AND the error stream are checked; `with PowerShell()`
hides transport errors, so pipelines are closed in guarded code; the step timeout
is `begin_invoke` + `poll_invoke` against a deadline, then `stop()`.
Secrets travel only as SecureString parameters after a key exchange.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConnectFailure, ExitCode, RuntimeFailure, UserError
from .locks import WorkstationLock, holder_for_server, shell_of
from .package import Package, PackageStep
from .runner import (
    Confirm,
    ContinueCommand,
    Executor,
    PipelineReport,
    Redactor,
    RemoteError,
    RunRecord,
    RunResult,
    RunSettings,
    secrets_needed,
    session_steps,
    event_time,
)
from .secrets import read_secret

AUTHS = ("negotiate", "ntlm", "kerberos", "credssp", "basic", "certificate")
#: Loggers that could print a script, a SOAP body or a message: never let them speak.
QUIET_LOGGERS = ("pypsrp", "requests", "urllib3", "spnego", "psrpcore", "requests_credssp", "krb5", "gssapi")


class NotRecorded(Exception):
    """The run could not be recorded before connecting (the audit log refused its start): nothing ran.

    Carries the log's own error; the caller must not try to log this failure in the same log.
    """

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


@dataclass(frozen=True)
class Connection:
    """How to reach the CRM server's WinRM listener."""

    host: str
    port: int
    transport: str  # "https" | "http"
    auth: str
    username: str | None
    ca_bundle: Path | None
    verify_tls: bool
    configuration_name: str
    connection_timeout: int
    operation_timeout: int
    client_cert: Path | None = None
    client_key: Path | None = None

    @property
    def read_timeout(self) -> int:
        # pypsrp needs the HTTP read timeout above the WSMan OperationTimeout, or a
        # long-polling Receive is cut by requests before the server answers.
        return self.operation_timeout + 10

    def validate(self) -> None:
        """Refuse settings that would send credentials or scripts readable on the wire."""
        problems = []
        if self.transport not in ("https", "http"):
            problems.append(f"--transport: {self.transport!r} is not https or http")
        if self.auth not in AUTHS:
            problems.append(f"--auth: {self.auth!r} is not one of {', '.join(AUTHS)}")
        if self.transport == "http" and self.auth in ("basic", "certificate"):
            problems.append(
                f"--auth {self.auth} over --transport http would send credentials and scripts in clear text; "
                "use --transport https, or negotiate/ntlm/kerberos (encrypted over HTTP)"
            )
        if self.auth == "certificate" and not (self.client_cert and self.client_key):
            problems.append("--auth certificate needs --client-cert and --client-key")
        if self.auth in ("negotiate", "ntlm", "basic", "credssp") and not self.username:
            problems.append(f"--username: required for --auth {self.auth}")
        if not 1 <= self.port <= 65535:
            problems.append(f"--port: {self.port} is not a TCP port")
        if self.operation_timeout < 1 or self.connection_timeout < 1:
            problems.append("--operation-timeout and --connection-timeout must be at least 1 second")
        if self.ca_bundle is not None and not self.ca_bundle.is_file():
            problems.append(f"--ca-bundle: {self.ca_bundle}: no such file")
        if problems:
            raise UserError(*problems)

    def continue_options(self) -> tuple[str, ...]:
        """The options that reproduce this connection in the continue command (no secrets)."""
        opts = ["--host", self.host]
        default_port = 5986 if self.transport == "https" else 5985
        if self.port != default_port:
            opts += ["--port", str(self.port)]
        if self.transport != "https":
            opts += ["--transport", self.transport]
        if self.auth != "negotiate":
            opts += ["--auth", self.auth]
        if self.username:
            opts += ["--username", self.username]
        if self.ca_bundle is not None:
            opts += ["--ca-bundle", str(self.ca_bundle)]
        if not self.verify_tls:
            opts += ["--no-verify-tls"]
        if self.client_cert is not None and self.client_key is not None:
            opts += ["--client-cert", str(self.client_cert), "--client-key", str(self.client_key)]
        if self.configuration_name != "Microsoft.PowerShell":
            opts += ["--configuration-name", self.configuration_name]
        return tuple(opts)


def silence_libraries() -> None:
    """Keep pypsrp, requests, urllib3 and spnego from logging scripts, SOAP bodies or messages."""
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.CRITICAL + 1)
        logger.propagate = False
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())


def describe_connect_error(exc: BaseException, conn: Connection, redact: Callable[[str], str]) -> str:
    """One line for the operator, naming the endpoint and the likely fix, never a secret."""
    import requests
    from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError

    endpoint = f"{conn.transport}://{conn.host}:{conn.port}/wsman"
    text = str(exc)
    if isinstance(exc, AuthenticationError):
        who = conn.username or "the current Kerberos principal"
        return f"authentication failed at {endpoint} for {who} with {conn.auth} (wrong user or password, or auth not enabled)"
    if isinstance(exc, requests.exceptions.SSLError):
        reason = "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in text or "verify failed" in text else "TLS handshake failed"
        return (f"TLS {reason} for {endpoint}; pass the CA that signed the server's certificate with --ca-bundle "
                "(or --no-verify-tls, unsafe)")
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"timed out connecting to {endpoint} after {conn.connection_timeout}s"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"{endpoint} did not answer within {conn.read_timeout}s"
    if isinstance(exc, requests.exceptions.ConnectionError):
        if any(s in text for s in ("NameResolution", "Name or service not known", "getaddrinfo", "nodename nor servname")):
            return f"cannot resolve host name {conn.host!r}"
        if "Connection refused" in text or "ConnectionRefused" in text:
            return f"connection refused by {endpoint} (is WinRM listening on port {conn.port}?)"
        return f"cannot connect to {endpoint}: connection failed"
    if isinstance(exc, WSManFaultError):
        reason = (exc.reason or "").strip().splitlines()[0] if exc.reason else "no reason given"
        return redact(f"WinRM fault {exc.code} from {endpoint}: {reason}")
    if isinstance(exc, WinRMTransportError):
        return f"HTTP {exc.code} from {endpoint}"
    if isinstance(exc, ImportError):
        missing = exc.name or ("requests-credssp" if conn.auth == "credssp" else "a required library")
        return f"--auth {conn.auth} is not available here: {missing} is not installed"
    return redact(f"cannot open a PowerShell session at {endpoint}: {type(exc).__name__}: {text.splitlines()[0] if text else ''}")


def _error_text(record: Any) -> RemoteError:
    """Message, category and script position of a pypsrp ErrorRecord."""
    exception = getattr(record, "exception", None)
    message = getattr(record, "details_message", None) or ""
    if not message and exception is not None:
        props = {**getattr(exception, "extended_properties", {}), **getattr(exception, "adapted_properties", {})}
        message = props.get("Message") or ""
    message = str(message or getattr(record, "message", "") or record)
    line = getattr(record, "invocation_script_line_number", None)
    return RemoteError(
        message=message,
        category=str(getattr(record, "message", "") or ""),
        line=int(line) if isinstance(line, int) and line > 0 else None,
        position=str(getattr(record, "invocation_position_message", "") or ""),
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _information_text(record: Any) -> str:
    """The text of an InformationRecord (Write-Information, and Write-Host in PowerShell 5+).

    Write-Host's MessageData is a HostInformationMessage whose text is its Message property;
    Write-Information's is the object written (usually a string).
    """
    data = getattr(record, "message_data", record)
    if isinstance(data, str):
        return data
    for name in ("adapted_properties", "extended_properties"):
        props = getattr(data, name, None)
        if isinstance(props, dict) and props.get("Message") is not None:
            return _text(props["Message"])
    to_string = getattr(data, "to_string", None)
    if isinstance(to_string, str) and to_string:
        return to_string
    return _text(data)


class PSRPSession:
    """One WSMan connection and one RunspacePool (one runspace) for a whole run."""

    def __init__(self, conn: Connection, password: str | None) -> None:
        self.conn = conn
        self._password = password
        self.pool: Any = None
        self.wsman: Any = None
        self.broken = False

    def open(self, *, exchange_keys: bool) -> None:
        """Connect, authenticate, open the pool, set $ErrorActionPreference once. Raises ConnectFailure."""
        from pypsrp.powershell import RunspacePool
        from pypsrp.wsman import WSMan

        conn = self.conn
        kwargs: dict[str, Any] = {}
        if conn.auth == "certificate":
            kwargs = {"certificate_pem": str(conn.client_cert), "certificate_key_pem": str(conn.client_key)}
        cert_validation: bool | str = str(conn.ca_bundle) if conn.ca_bundle and conn.verify_tls else conn.verify_tls
        self.wsman = WSMan(
            conn.host,
            port=conn.port,
            username=conn.username,
            password=self._password,
            ssl=conn.transport == "https",
            auth=conn.auth,
            cert_validation=cert_validation,
            connection_timeout=conn.connection_timeout,
            read_timeout=conn.read_timeout,
            operation_timeout=conn.operation_timeout,
            encryption="auto",
            no_proxy=True,
            reconnection_retries=0,
            reconnection_backoff=0.5,
            **kwargs,
        )
        self.pool = RunspacePool(self.wsman, configuration_name=conn.configuration_name, min_runspaces=1,
                                 max_runspaces=1)
        self.pool.open()
        if exchange_keys:
            self.pool.exchange_keys()
        report = self.run_step("$ErrorActionPreference = 'Stop'", {}, float(conn.operation_timeout))
        if report.state != "Completed" or report.errors or report.transport_error:
            raise ConnectFailure("the remote session refused to set $ErrorActionPreference = 'Stop'")

    def run_step(self, script: str, parameters: Mapping[str, Any], timeout: float, *,
                 local_scope: bool = False) -> PipelineReport:
        """One pipeline: send the script and its parameters, poll to a deadline, stop on expiry.

        A step runs dot-sourced (its variables, such as step 05's $Certificate, are what later steps
        use); `local_scope` runs a read-only probe in a scope of its own, so that nothing it assigns
        outlives it and changes what a later step sees.
        """
        import xml.etree.ElementTree as ET

        import requests
        from pypsrp.complex_objects import PSInvocationState
        from pypsrp.exceptions import WinRMError
        from pypsrp.powershell import PowerShell

        transport_errors = (requests.exceptions.RequestException, WinRMError, OSError, ET.ParseError)
        ps = PowerShell(self.pool)
        ps.add_script(script, use_local_scope=True if local_scope else None)
        for name, value in parameters.items():
            ps.add_parameter(name, value)
        deadline = time.monotonic() + timeout
        timed_out = interrupted = False
        try:
            ps.begin_invoke()
            while ps.state == PSInvocationState.RUNNING:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                ps.poll_invoke(timeout=max(1, min(math.ceil(remaining), self.conn.operation_timeout)))
        except transport_errors as exc:
            self.broken = True
            return self._report(ps, transport_error=self._transport_text(exc))
        except Exception as exc:  # noqa: BLE001 - a malformed answer: the step's outcome is unknown
            # pypsrp raises whatever its parser trips over (AttributeError, KeyError, ValueError…)
            # on a message it can't read; the session can't be trusted after that.
            self.broken = True
            return self._report(ps, transport_error=f"unreadable answer from the server ({type(exc).__name__})")
        except KeyboardInterrupt:
            # Ctrl-C must not leave the script running unseen on the server: stop it, and
            # report the step as UNKNOWN with the command to continue. The interrupted HTTP
            # request took its connection (and, over HTTP, its NTLM sealing state) with it:
            # drop pypsrp's stale encryption so the stop signal re-authenticates on a new one.
            interrupted = True
            self.wsman.transport.encryption = None
        if timed_out or interrupted:
            try:
                if ps.state == PSInvocationState.RUNNING:
                    ps.stop()
            except transport_errors as exc:
                self.broken = True
                return self._report(ps, timed_out=timed_out, interrupted=interrupted,
                                    transport_error=self._transport_text(exc))
            except KeyboardInterrupt:
                # A second Ctrl-C while the first one stops the pipeline: it may still be running.
                self.broken = True
                return self._report(ps, timed_out=timed_out, interrupted=True,
                                    transport_error="interrupted again while stopping the pipeline")
            report = self._report(ps, timed_out=timed_out, interrupted=interrupted)
        else:
            report = self._report(ps)
        try:
            ps.close()  # TERMINATE: frees the pipeline on the server
        except (*transport_errors, KeyboardInterrupt):
            pass  # the step's outcome is already known; a failed clean-up does not change it
        return report

    @staticmethod
    def _state_name(ps: Any) -> str:
        names = {0: "NotStarted", 1: "Running", 2: "Stopping", 3: "Stopped", 4: "Completed", 5: "Failed",
                 6: "Disconnected"}
        return names.get(int(ps.state), str(ps.state))

    def _report(self, ps: Any, *, timed_out: bool = False, interrupted: bool = False,
                transport_error: str | None = None) -> PipelineReport:
        return PipelineReport(
            state=self._state_name(ps),
            output=[_text(o) for o in ps.output],
            errors=[_error_text(e) for e in ps.streams.error],
            warnings=[_text(getattr(w, "message", w)) for w in ps.streams.warning],
            information=[_information_text(i) for i in getattr(ps.streams, "information", [])],
            timed_out=timed_out,
            interrupted=interrupted,
            transport_error=transport_error,
        )

    @staticmethod
    def _transport_text(exc: BaseException) -> str:
        from pypsrp.exceptions import WSManFaultError

        if isinstance(exc, WSManFaultError):
            return f"WinRM fault {exc.code}: {(exc.reason or '').strip().splitlines()[0] if exc.reason else ''}"
        return type(exc).__name__

    @property
    def shell_id(self) -> str:
        """The id of this run's shell on the server (written into the server's lock file)."""
        return str(getattr(self.pool, "id", "") or "").upper()

    def delete_shell(self, shell_id: str) -> bool:
        """Close another (stale) shell of this configuration by id; False when the server has none such."""
        from pypsrp.exceptions import WSManFaultError
        from pypsrp.wsman import SelectorSet

        selectors = SelectorSet()
        selectors.add_option("ShellId", shell_id)
        try:
            self.wsman.delete(f"http://schemas.microsoft.com/powershell/{self.conn.configuration_name}",
                              selector_set=selectors)
        except WSManFaultError:
            return False
        except Exception as exc:  # noqa: BLE001 - a transport problem: say so, don't crash the run
            raise RuntimeFailure(f"--force-unlock: could not close the stale session {shell_id} "
                                 f"({type(exc).__name__})") from None
        return True

    def close(self) -> None:
        """Delete the shell when the connection is still healthy; always drop the HTTP session."""
        try:
            if self.pool is not None and not self.broken:
                self.pool.close()
        except Exception:  # noqa: BLE001 - clean-up must not mask the run's result
            pass
        finally:
            if self.wsman is not None:
                self.wsman.close()


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
        raise UserError("--o365-user: required, the selected steps connect to Office 365")
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


#: Writes an audit line (outcome, details); raises when the log can't take it. `run_package`
#: calls it with "started" before connecting (nothing is sent unless that line is written)
#: and with "force-unlock" when it closes a stale run's session.
AuditLine = Callable[[str, dict[str, Any]], None]


def run_package(
    package: Package,
    selected: list[PackageStep],
    conn: Connection,
    winrm_password: str | None,
    secrets: StepSecrets,
    settings: RunSettings,
    *,
    emit: Callable[[dict[str, Any]], None],
    confirm: Confirm | None = None,
    from_step: int | None = None,
    approval: dict[str, Any] | None = None,
    audit: AuditLine | None = None,
    force_unlock: bool = False,
    after_success: Callable[[PSRPSession, Redactor], dict[str, Any]] | None = None,
    additional: list[str] | None = None,
) -> RunResult:
    """Record, connect, run the selected steps of the verified package. Raises ConnectFailure (exit 3).

    Every text sent comes from `package` (read once and judged before this call).
    `approval` is what the approval gate found, copied into the record. The run holds
    the workstation lock (PKG/runs/.lock) from before its record is created, and the
    server lock (the package's lock.ps1) from before its first step, to its end. `audit`
    writes the run-start line after the record exists and before the connection opens:
    if either cannot be written, nothing is sent. `after_success` runs in the same
    session when every step succeeded (--verify) and its result is recorded.
    """
    silence_libraries()
    redact = Redactor([*secrets.values(), *([winrm_password] if winrm_password else [])])
    lock_text = package.lock_script  # refuses a package without one before anything else
    additional = list(additional if additional is not None else (package.parameters.crm.additional_servers or []))
    workstation = WorkstationLock(package.path)  # type: ignore[arg-type]
    workstation.acquire(package=package.name, digest=package.digest, host=conn.host)
    try:
        return _locked_run(package, selected, conn, winrm_password, secrets, settings, redact, lock_text, emit=emit,
                           confirm=confirm, from_step=from_step, approval=approval, audit=audit,
                           force_unlock=force_unlock, after_success=after_success, additional=additional)
    finally:
        workstation.release()


def _locked_run(package: Package, selected: list[PackageStep], conn: Connection, winrm_password: str | None,
                secrets: StepSecrets, settings: RunSettings, redact: Redactor, lock_text: str, *,
                emit: Callable[[dict[str, Any]], None], confirm: Confirm | None, from_step: int | None,
                approval: dict[str, Any] | None, audit: AuditLine | None, force_unlock: bool,
                after_success: Callable[[PSRPSession, Redactor], dict[str, Any]] | None,
                additional: list[str]) -> RunResult:
    """`run_package` once the workstation lock is held: record, then each server in turn."""
    record = RunRecord(package.path)  # type: ignore[arg-type]

    ended: dict[tuple[int, str | None], str] = {}  # (step, additional host) -> its end state, for Ctrl-C

    def both(event: dict[str, Any]) -> None:
        # Remote text (output, errors, warnings) is redacted where it enters the events, in
        # the Executor; everything else in an event is built from options that are not secret.
        record.write(event)
        emit(event)
        if event.get("event") == "step-end":
            ended[(event["index"], event.get("host"))] = event.get("state", "")

    main_steps = [s for s in selected if s.spec.runs_on == "main"]
    targets = _targets(selected, conn, additional)
    start = {
        "event": "run-start", "started": event_time(), "tool_version": __version__, "package": package.name,
        "package_digest": package.digest, "host": conn.host, "port": conn.port,
        "transport": conn.transport, "auth": conn.auth, "user": conn.username, "o365_user": secrets.o365_user,
        "configuration_name": conn.configuration_name, "from_step": from_step,
        "steps": [s.index for s in selected], "servers": list(dict.fromkeys(t.host for t, _, _ in targets)),
        "record": str(record.path),
    }
    try:
        both(start)
        if approval is not None:
            both({"event": "approval", **approval})
        if audit is not None:
            audit("started", {"host": conn.host, "user": conn.username, "steps": start["steps"],
                              "servers": start["servers"], "record": start["record"]})
    except Exception as exc:
        # The run could not be recorded (the audit log refused the run-start line): nothing is sent.
        reason = "; ".join(exc.problems) if isinstance(exc, UserError) else str(exc)
        _best_effort(both, {"event": "run-end", "exit_code": int(getattr(exc, "exit_code", ExitCode.FAILED)),
                            "ended": event_time(), "stopped_at": None, "reason": "not-recorded",
                            "summary": [redact(f"not started: the run could not be recorded: {reason}")]})
        record.close()
        raise NotRecorded(exc) from None
    sessions: list[PSRPSession] = []
    main_session: PSRPSession | None = None
    done: list[str] = []  # "<steps> on <host>" for the summary
    succeeded: list[tuple[str, list[str]]] = []
    all_results: list[Any] = []
    try:
        for target, steps, from_server in targets:
            # The main server keeps one session (and its lock, and the session steps' state) for the
            # whole run: a renewal comes back to it after the additional servers.
            reuse = from_server is None and main_session is not None
            session = main_session if reuse else PSRPSession(target, winrm_password)
            assert session is not None
            if not reuse:
                sessions.append(session)
            if from_server is None:
                main_session = session
            outcome = _run_on(session, package, steps, secrets, settings, redact, lock_text, both=both,
                              confirm=confirm, audit=audit, force_unlock=force_unlock, from_server=from_server,
                              nothing_ran=not done, next_server=_after(additional, from_server), main_conn=conn,
                              opened=reuse, exchange_keys=bool(secrets_needed(main_steps if from_server is None
                                                                              else steps)),
                              winrm_password=winrm_password, from_step=from_step)
            all_results += outcome.results
            if outcome.exit_code:
                return _end(both, outcome.exit_code, done and [f"Done before: {'; '.join(done)}."] or [],
                            outcome.summary, stopped_at=outcome.stopped_at, reason=outcome.reason,
                            results=all_results)
            done.append(f"{_step_range(steps)} on {target.host}")
            succeeded.append((target.host, outcome.summary))
        if len(succeeded) == 1:
            lines = succeeded[0][1]
        else:
            lines = [f"On {host}: {line}" for host, summary in succeeded for line in summary]
        code: int = ExitCode.OK
        if after_success is not None:
            if main_session is not None:
                verification = after_success(main_session, redact)
                both({"event": "verify", **verification})
                unverified = _not_in_place(selected, verification)
                if unverified:
                    code = ExitCode.WOULD_CHANGE
                    lines.append("Verification failed: after the run, " + "; ".join(unverified)
                                 + ". The steps succeeded, but the server does not show the change (exit 5).")
            else:
                both({"event": "verify", "skipped": "no step ran on the main server"})
        return _end(both, code, lines, [], stopped_at=None, reason="done" if not code else "unverified",
                    results=all_results)
    except KeyboardInterrupt:
        # Ctrl-C outside a step (a step handles its own; a probe passes it on): the record still
        # says how it ended, and where to continue without sending a finished step again.
        summary, pending = _interrupted_summary(package, targets, ended, conn, settings, from_step, additional)
        both({"event": "run-end", "exit_code": 130, "ended": event_time(), "stopped_at": pending,
              "reason": "interrupted", "summary": summary})
        raise
    except ConnectFailure:
        raise  # its run-end is written where it is raised
    except Exception as exc:
        # Whatever else broke after the start was recorded: the record says how the run ended.
        text = "; ".join(exc.problems) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        _best_effort(both, {"event": "run-end", "exit_code": int(getattr(exc, "exit_code", ExitCode.FAILED)),
                            "ended": event_time(), "stopped_at": None, "reason": "error", "summary": [redact(text)]})
        raise
    finally:
        for session in reversed(sessions):
            session.close()
        record.close()


def _switch_guard(session: PSRPSession, package: Package, conn: Connection, winrm_password: str | None,
                  settings: RunSettings, emit: Callable[[dict[str, Any]], None],
                  redact: Redactor) -> Callable[[PackageStep], list[str] | None] | None:
    """A renewal's guard before its switch (step certificate) on the main server; None for other packages.

    The switch makes CRM sign with the new key on every Web Application server, so each additional
    server must hold the new certificate, with a private key the service account can read, first.
    The guard asks the servers themselves (read-only probes, in sessions of their own) right before
    the switch, whatever the run did before: a resumed run (`--from-step`, `--from-server`, an
    UNKNOWN step) may not have installed it everywhere. It returns the lines of a run that stops
    there, or None.
    """
    from .catalogue import is_renewal

    farm = next((s for s in package.steps if s.spec.runs_on == "additional"), None)
    if farm is None or not is_renewal(package.parameters):
        return None

    def guard(step: PackageStep) -> list[str] | None:
        if step.id != "certificate":
            return None
        expected = str((package.certificate or {}).get("thumbprint") or "").upper() or None
        if expected is None:  # no approved thumbprint: the main server's .cer is the new certificate
            found, _ = run_probes(session, {"certificate": package.probes["certificate"]}, settings.step_timeout,
                                  redact)
            expected = str((found.get("certificate") or {}).get("cer_thumbprint") or "").upper() or None
        problems = farm_not_ready(package, conn, winrm_password, settings.step_timeout, redact, expected)
        emit({"event": "farm-gate", "servers": list(package.parameters.crm.additional_servers or []),
              "certificate": expected, "ready": not problems, "problems": problems})
        if not problems:
            return None
        again = ContinueCommand(str(package.path), conn.continue_options() + settings.options())
        return ([f"Not sent: step {step.index:02d} ({step.id}) would switch CRM to the new certificate, but not "
                 "every additional server holds it:"] + [f"  {line}" for line in problems]
                + [f"Install it there first (step {farm.index:02d} changes nothing where it is in place), then the "
                   "run goes on:", f"  {again.at(farm.index)}"])

    return guard


def _targets(selected: list[PackageStep], conn: Connection,
             additional: list[str]) -> list[tuple[Connection, list[PackageStep], str | None]]:
    """Where each run of consecutive steps goes, in step order: (connection, steps, additional host or None).

    A first setup runs the main server's steps, then the additional servers' step on each of
    them. A renewal installs the certificate on the additional servers before the main server
    switches CRM to it, so the main server comes twice: before and after them.
    """
    segments: list[list[PackageStep]] = []
    for step in selected:
        if segments and segments[-1][0].spec.runs_on == step.spec.runs_on:
            segments[-1].append(step)
        else:
            segments.append([step])
    targets: list[tuple[Connection, list[PackageStep], str | None]] = []
    for steps in segments:
        if steps[0].spec.runs_on == "main":
            targets.append((conn, steps, None))
        else:
            targets += [(replace(conn, host=host), steps, host) for host in additional]
    return targets


def _interrupted_summary(package: Package, targets: list[tuple[Connection, list[PackageStep], str | None]],
                         ended: Mapping[tuple[int, str | None], str], conn: Connection, settings: RunSettings,
                         from_step: int | None, additional: list[str]) -> tuple[list[str], int | None]:
    """What a run interrupted between steps says: the first step not sent, and how to go on.

    Never a command that starts before the run's own --from-step (the steps before it that this
    run sent are session steps; the changing ones succeeded in an earlier run), and none at all
    when continuing would send a state-changing step of this run again (after a --step skip).
    """
    from .runner import resume_advice

    pending = next(((step, host) for _, steps, host in targets for step in steps
                    if (step.index, host) not in ended), None)
    summary = ["interrupted by the operator between steps"]
    if pending is None:
        return summary, None
    step, host = pending
    changed = {index for (index, where), state in ended.items() if state == "ok" and where is None}
    skipped = sorted({(index, s.id) for (index, _), state in ended.items() if state == "skipped"
                      for s in package.steps if s.index == index})
    first = min([step.index] + [i for i, _ in skipped])
    if from_step is not None:  # never before the run's own start
        first = max(first, from_step)
    if first != step.index:  # --from-server goes only with the additional servers' step, from the first one
        farm = next((s.index for s in package.steps if s.spec.runs_on != "main"), None)
        host = additional[0] if first == farm and additional else None
    command = ContinueCommand(str(package.path), conn.continue_options() + settings.options(), from_server=host)
    summary.append(f"Not sent: step {step.index:02d} ({step.id}) and what follows.")
    return summary + resume_advice(package.steps, changed, skipped, first, command), step.index


def _best_effort(both: Callable[[dict[str, Any]], None], event: dict[str, Any]) -> None:
    """Record how a run ended when something already failed; if the record itself is what failed, let it be."""
    try:
        both(event)
    except RuntimeFailure:
        pass


@dataclass
class _HostOutcome:
    exit_code: int
    summary: list[str]
    stopped_at: int | None = None
    reason: str = "done"
    results: list[Any] = field(default_factory=list)


def _run_on(session: PSRPSession, package: Package, steps: list[PackageStep], secrets: StepSecrets,
            settings: RunSettings, redact: Redactor, lock_text: str, *, both: Callable[[dict[str, Any]], None],
            confirm: Confirm | None, audit: AuditLine | None, force_unlock: bool, from_server: str | None,
            nothing_ran: bool, next_server: str | None, main_conn: Connection, opened: bool = False,
            exchange_keys: bool | None = None, winrm_password: str | None = None,
            from_step: int | None = None) -> _HostOutcome:
    """Connect to one server, take its lock, run `steps` there. Raises ConnectFailure only while nothing ran.

    `opened`: the session is the main server's, already open and locked earlier in this run.
    """
    host = session.conn.host
    emit_here = both if from_server is None else (lambda event: both({**event, "host": host}))
    # The main server's options: `run` resolves --host to it (or the approved server) and goes to
    # each additional server itself; --from-server says where to continue.
    continue_command = ContinueCommand(str(package.path), main_conn.continue_options() + settings.options(),
                                       from_server=from_server)
    try:
        if not opened:
            session.open(exchange_keys=bool(secrets_needed(steps)) if exchange_keys is None else exchange_keys)
    except Exception as exc:  # noqa: BLE001 - every connect problem becomes one line
        message = redact(str(exc)) if isinstance(exc, ConnectFailure) else describe_connect_error(exc, session.conn,
                                                                                                 redact)
        if nothing_ran:
            both({"event": "run-end", "exit_code": int(ExitCode.CONNECT), "ended": event_time(), "stopped_at": None,
                  "reason": "connect-failed", "summary": [message]})
            raise ConnectFailure(message) from None
        # Steps already ran elsewhere: this is a failed run (exit 1) that names the host, not "nothing ran".
        return _HostOutcome(ExitCode.FAILED, [f"Stopped: could not connect to {host}: {message}",
                                              "Fix the connection, then continue with:",
                                              f"  {continue_command.at(steps[0].index)}"],
                            stopped_at=steps[0].index, reason="unreachable")
    if force_unlock and not opened:
        _force_unlock(session, lock_text, settings, emit_here, audit, redact)
    locked = None if opened else _take_server_lock(session, lock_text, settings, emit_here, redact)
    if locked is not None:
        if nothing_ran:
            return locked
        # Steps already ran elsewhere in this run: "run this command again" would send them again.
        return _HostOutcome(locked.exit_code, [
            locked.summary[0],
            f"Nothing was sent to {host}. When the other run there has ended, continue with:",
            f"  {continue_command.at(steps[0].index)}",
            f"If it crashed, add --force-unlock to that command to close its stale session on {host} first."],
            steps[0].index, "locked")
    executor = Executor(
        package.steps, steps, lambda step: step_parameters(step, secrets), emit_here, redact, continue_command,
        step_timeout=settings.step_timeout, confirm=confirm, emit_end=False,
        observe=_observer(session, package, settings, emit_here, redact),
        guard=_switch_guard(session, package, main_conn, winrm_password, settings, emit_here, redact)
        if from_server is None else None,
        resume_floor=from_step,
    )
    result = executor.run(session)
    summary = list(result.summary)
    if result.exit_code == ExitCode.UNKNOWN and from_server is not None:
        later = [s.index for s in package.steps if s.index > steps[-1].index]
        if next_server is not None:
            summary += ["or, if it did take effect, continue with the next server:",
                        f"  {replace(continue_command, from_server=next_server).at(steps[0].index)}"]
        elif later:  # a renewal: the main server's steps after the additional servers'
            summary += ["or, if it did take effect, continue on the main server:",
                        f"  {replace(continue_command, from_server=None).at(later[0])}"]
    return _HostOutcome(result.exit_code, summary, result.stopped_at, result.reason, result.results)


def _not_in_place(ran: list[PackageStep], verification: dict[str, Any]) -> list[str]:
    """`step 06 spn is will change (…)` for each state-changing step that ran and the probes don't show in place."""
    changing = {s.id for s in ran if s.changes_state}
    return [f"step {v['index']:02d} {v['id']} is {v['verdict']}" + (f" ({v['detail']})" if v.get("detail") else "")
            for v in verification.get("verdicts", []) if v["id"] in changing and v["verdict"] != "in place"]


def _observer(session: PSRPSession, package: Package, settings: RunSettings,
              emit: Callable[[dict[str, Any]], None], redact: Redactor) -> Callable[[PackageStep, str], None]:
    """Record, with the package's read-only probes, the state a change step is about to change (and did).

    The readings go into the run record as `state` events; `psbridge rollback` takes the
    values it passes to a back-out script from them. A probe that does not answer is
    recorded as null: the run goes on, and the back-out of that step will refuse.
    """
    from .catalogue import BACKOUTS

    def observe(step: PackageStep, when: str) -> None:
        backout = BACKOUTS.get(step.id)
        if backout is None or (when == "after" and backout.script is None):
            return
        probes = {name: package.probes[name] for name in backout.captures}
        readings, notes = run_probes(session, probes, settings.step_timeout, redact)
        emit({"event": "state", "when": when, "index": step.index, "id": step.id, "readings": readings,
              "notes": notes})

    return observe


def _after(hosts: list[str], host: str | None) -> str | None:
    """The additional server after `host` in the list, or None."""
    if host is None or host not in hosts:
        return None
    index = hosts.index(host)
    return hosts[index + 1] if index + 1 < len(hosts) else None


def _step_range(steps: list[PackageStep]) -> str:
    """`steps 01-08` / `step 09`, for summaries."""
    if len(steps) == 1:
        return f"step {steps[0].index:02d}"
    return f"steps {steps[0].index:02d}-{steps[-1].index:02d}"


def _end(both: Callable[[dict[str, Any]], None], code: int, before: list[str], summary: list[str], *,
         stopped_at: int | None, reason: str, results: list[Any]) -> RunResult:
    """The one run-end event of a run (over all its servers) and its result."""
    lines = before + summary
    both({"event": "run-end", "exit_code": int(code), "ended": event_time(), "stopped_at": stopped_at,
          "reason": reason, "summary": lines})
    return RunResult(results, code, lines, reason, stopped_at)


def _take_server_lock(session: PSRPSession, lock_text: str, settings: RunSettings,
                      both: Callable[[dict[str, Any]], None], redact: Redactor) -> _HostOutcome | None:
    """Send lock.ps1; None when this run holds the server's lock, else the finished (refused) run."""
    from .runner import Outcome, classify

    report = session.run_step(lock_text, {"Holder": holder_for_server(), "ShellId": session.shell_id},
                              settings.step_timeout)
    if report.interrupted:
        raise KeyboardInterrupt  # the operator's Ctrl-C, not another run's lock
    if classify(report) is Outcome.OK:
        both({"event": "lock", "state": "held", "output": [redact(o) for o in report.output]})
        return None
    reason = report.errors[0].message if report.errors else (report.transport_error or f"state {report.state}")
    summary = [redact(f"Not started on {session.conn.host}: the server's run lock was not taken: {reason}"),
               "No step was sent. When the other run has ended, run this command again; if it crashed, "
               "add --force-unlock to close its stale session first."]
    code = ExitCode.UNKNOWN if report.transport_error else ExitCode.FAILED
    return _HostOutcome(code, summary, None, "locked")


def _force_unlock(session: PSRPSession, lock_text: str, settings: RunSettings,
                  both: Callable[[dict[str, Any]], None], audit: AuditLine | None, redact: Redactor) -> None:
    """`--force-unlock`: read the server's lock, close the stale session that holds it, record that."""
    from .runner import Outcome, classify

    report = session.run_step(lock_text, {"Inspect": True}, settings.step_timeout)
    if classify(report) is not Outcome.OK:
        raise RuntimeFailure("--force-unlock: could not read the server's lock file")
    text = redact("\n".join(report.output)).strip()
    stale = shell_of(text)
    closed = bool(stale) and stale != session.shell_id and session.delete_shell(stale)  # type: ignore[arg-type]
    details = {"lock": text, "stale_shell": stale, "closed": closed}
    both({"event": "force-unlock", **details})
    if audit is not None:
        audit("force-unlock", details)


# -- psbridge check: read-only probes ---------------------------------------------


#: Told about each probe as it finishes: (probe name, host, answered?), for the live lines of `check`.
Progress = Callable[[str, str, bool], None]


def run_probes(session: PSRPSession, probes: Mapping[str, str], timeout: float,
               redact: Callable[[str], str],
               progress: Progress | None = None) -> tuple[dict[str, dict[str, Any] | None], list[str]]:
    """Send each probe, parse its JSON; a failed probe is None plus a note (never a guess)."""
    from .check import ProbeError, parse_probe_output
    from .runner import Outcome, classify

    answers: dict[str, dict[str, Any] | None] = {}
    notes: list[str] = []
    for name, text in probes.items():
        report = session.run_step(text, {}, timeout, local_scope=True)
        if report.interrupted:
            raise KeyboardInterrupt  # the operator's Ctrl-C during a probe stops the run, not just the probe
        if classify(report) is not Outcome.OK:
            reason = report.errors[0].message if report.errors else (report.transport_error or report.state)
            notes.append(redact(f"probe {name} failed: {reason}"))
            answers[name] = None
        else:
            try:
                answers[name] = parse_probe_output(name, report.output)
            except ProbeError as exc:
                notes.append(str(exc))
                answers[name] = None
        if progress is not None:
            progress(name, session.conn.host, answers[name] is not None)
        if session.broken:
            break
    return answers, notes


def open_session(conn: Connection, winrm_password: str | None, redact: Callable[[str], str],
                 *, exchange_keys: bool) -> PSRPSession:
    """Connect and open the runspace, or raise ConnectFailure with one line."""
    silence_libraries()
    session = PSRPSession(conn, winrm_password)
    try:
        session.open(exchange_keys=exchange_keys)
    except ConnectFailure as exc:
        session.close()
        raise ConnectFailure(redact(str(exc))) from None
    except Exception as exc:  # noqa: BLE001 - every connect problem becomes one line
        session.close()
        raise ConnectFailure(describe_connect_error(exc, conn, redact)) from None
    except KeyboardInterrupt:
        session.close()  # a half-open runspace is not left on the server
        raise
    return session


def check_steps(package: Package, *, entra: bool) -> list[PackageStep] | None:
    """The steps `check` may send besides the probes: the session steps that connect to Entra ID.

    Taken from the catalogue through the verified package: never a step that changes state.
    """
    return session_steps(package.steps, "connect") if entra else None


def check_in_session(session: PSRPSession, package: Package, entra_steps: list[PackageStep] | None,
                     secrets: StepSecrets, timeout: float, redact: Callable[[str], str], *,
                     farm: bool = False, winrm_password: str | None = None) -> Any:
    """Probe the server (and, after the session steps, Entra ID) and judge every step (run --verify).

    `farm`: each additional server is probed too (sessions of their own, with the run's
    connection options), so that the step that ran there is judged, not left "cannot tell".
    """
    from .check import evaluate

    answers, notes = _main_answers(session, package, entra_steps, secrets, timeout, redact)
    per_server: dict[str, Any] | None = None
    if farm and package.parameters.crm.additional_servers:
        per_server, farm_notes = _additional_answers(package, session.conn, winrm_password, timeout, redact)
        notes += farm_notes
    report = evaluate(package.plan, answers, per_server)
    report.notes.extend(notes)
    return _redacted(report, redact)


def _redacted(report: Any, redact: Callable[[str], str]) -> Any:
    """The report with every text that came from the server passed through the redactor.

    Verdict details, before/after and causes quote what the probes read; a server that
    echoes a secret must not get it printed, recorded in runs/ or saved in checks/.
    """
    from dataclasses import replace as copy_with

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    report.verdicts[:] = [copy_with(v, **{f: clean(getattr(v, f)) for f in ("detail", "before", "after", "cause",
                                                                          "fix")})
                          for v in report.verdicts]
    report.notes[:] = [redact(n) for n in report.notes]
    report.readings.update(clean(dict(report.readings)))
    return report


def _main_answers(session: PSRPSession, package: Package, entra_steps: list[PackageStep] | None,
                  secrets: StepSecrets, timeout: float, redact: Callable[[str], str],
                  progress: Progress | None = None) -> tuple[dict[str, dict[str, Any] | None], list[str]]:
    """The main server's probe answers (and Entra ID's, after the session steps), with notes."""
    from .runner import Outcome, classify

    probes = package.probes
    local = {name: text for name, text in probes.items() if name != "entra"}
    answers, notes = run_probes(session, local, timeout, redact, progress)
    if entra_steps is None:
        notes.append("probe entra skipped (--no-entra)")
    elif not session.broken:
        connected = True
        for step in entra_steps:
            report = session.run_step(step.text, step_parameters(step, secrets), timeout)
            if classify(report) is not Outcome.OK:
                reason = report.errors[0].message if report.errors else (report.transport_error or report.state)
                notes.append(redact(f"step {step.index:02d} {step.id} failed, so probe entra did not run: {reason}"))
                connected = False
                break
        if connected:
            more, more_notes = run_probes(session, {"entra": probes["entra"]}, timeout, redact, progress)
            answers.update(more)
            notes += more_notes
    return answers, notes


def _additional_answers(package: Package, conn: Connection, winrm_password: str | None, timeout: float,
                        redact: Callable[[str], str], progress: Progress | None = None,
                        ) -> tuple[dict[str, Any], list[str]]:
    """Each additional server's server and certificate probe answers (None: not reachable), and notes."""
    per_server: dict[str, Any] = {}
    notes: list[str] = []
    for host in package.parameters.crm.additional_servers or []:
        try:
            there = open_session(replace(conn, host=host), winrm_password, redact, exchange_keys=False)
        except ConnectFailure as exc:
            notes.append(f"server {host}: could not connect: {exc}")
            per_server[host] = None
            continue
        try:
            found, probe_notes = run_probes(there, {k: v for k, v in package.probes.items()
                                                    if k in ("server", "certificate")}, timeout, redact, progress)
        finally:
            there.close()
        per_server[host] = found
        notes += [f"server {host}: {note}" for note in probe_notes]
    return per_server, notes


def farm_not_ready(package: Package, conn: Connection, winrm_password: str | None, timeout: float,
                   redact: Callable[[str], str], expected: str | None) -> list[str]:
    """Why CRM must not be switched to `expected` yet: each additional server that does not hold it."""
    from .check import holds_for_switch

    per_server, notes = _additional_answers(package, conn, winrm_password, timeout, redact)
    replaces = package.parameters.certificate.replaces or ""
    problems = [f"{host}: {why}" for host in package.parameters.crm.additional_servers or []
                if (why := holds_for_switch(per_server.get(host), expected, replaces))]
    return [redact(line) for line in problems + (notes if problems else [])]


def check_package(package: Package, conn: Connection, winrm_password: str | None, secrets: StepSecrets, *,
                  entra: bool, timeout: float, progress: Progress | None = None) -> Any:
    """`psbridge check`: connect, probe, judge, disconnect; then each additional server's probes.

    Raises ConnectFailure (exit 3) when the main server can't be reached; an additional
    server that can't be reached is a note and "cannot tell" for its step.
    """
    entra_steps = check_steps(package, entra=entra)
    redact = Redactor([*secrets.values(), *([winrm_password] if winrm_password else [])])
    session = open_session(conn, winrm_password, redact, exchange_keys=bool(secrets_needed(entra_steps or [])))
    try:
        answers, notes = _main_answers(session, package, entra_steps, secrets, timeout, redact, progress)
    finally:
        session.close()
    from .check import evaluate

    per_server, more_notes = _additional_answers(package, conn, winrm_password, timeout, redact, progress)
    notes += more_notes
    report = evaluate(package.plan, answers, per_server)
    report.notes.extend(notes)
    report.readings.update({"main": answers, "additional": per_server})
    return _redacted(report, redact)


# -- psbridge rollback: the reviewed back-out scripts of one recorded run ---------------------


def rollback_package(package: Package, plan: Any, conn: Connection, winrm_password: str | None,
                     secrets: StepSecrets, settings: RunSettings, *, emit: Callable[[dict[str, Any]], None],
                     audit: AuditLine | None = None) -> RunResult:
    """Send the plan's back-out scripts (reverse step order) after the session steps they need.

    Same machinery as `run`: the workstation and server locks, a run record written before
    anything is sent, the audit line first, one pipeline per script, and a stop at the first
    script that does not succeed (nothing after it is sent). Raises ConnectFailure (exit 3).
    """
    from .catalogue import BACKOUTS
    from .runner import Outcome, classify

    silence_libraries()
    redact = Redactor([*secrets.values(), *([winrm_password] if winrm_password else [])])
    lock_text = package.lock_script
    workstation = WorkstationLock(package.path)  # type: ignore[arg-type]
    workstation.acquire(package=package.name, digest=package.digest, host=conn.host, rollback=plan.record)
    record = RunRecord(package.path)  # type: ignore[arg-type]

    def both(event: dict[str, Any]) -> None:
        record.write(event)
        emit(event)

    needs = {need for item in plan.scripted for need in BACKOUTS[item.step.id].needs}
    session_steps = [s for s in package.steps if s.id in needs]
    total = len(session_steps) + len(plan.scripted)
    try:
        both({"event": "run-start", "started": event_time(), "tool_version": __version__, "package": package.name,
              "package_digest": package.digest, "host": conn.host, "port": conn.port, "transport": conn.transport,
              "auth": conn.auth, "user": conn.username, "rollback_of": plan.record,
              "rollback_of_sha256": plan.record_sha256, "record": str(record.path),
              "steps": [s.index for s in session_steps] + [f"undo {i.step.index:02d}" for i in plan.scripted]})
        if audit is not None:
            audit("rollback-started", {"host": conn.host, "of": plan.record, "of_sha256": plan.record_sha256,
                                       "record": str(record.path)})
    except Exception as exc:
        record.close()
        workstation.release()
        raise NotRecorded(exc) from None
    session = PSRPSession(conn, winrm_password)
    try:
        try:
            session.open(exchange_keys=bool(secrets_needed(session_steps)))
        except Exception as exc:  # noqa: BLE001 - every connect problem becomes one line
            message = redact(str(exc)) if isinstance(exc, ConnectFailure) else describe_connect_error(exc, conn, redact)
            both({"event": "run-end", "exit_code": int(ExitCode.CONNECT), "ended": event_time(), "stopped_at": None,
                  "reason": "connect-failed", "summary": [message]})
            raise ConnectFailure(message) from None
        locked = _take_server_lock(session, lock_text, settings, both, redact)
        if locked is not None:
            return _end(both, locked.exit_code, [], locked.summary, stopped_at=None, reason="locked", results=[])
        sends = [(f"{s.id}", s.text, step_parameters(s, secrets), s.index) for s in session_steps]
        sends += [(f"undo-{i.step.id}", i.text, dict(i.parameters), i.step.index) for i in plan.scripted]
        for number, (name, text, parameters, index) in enumerate(sends, start=1):
            both({"event": "step-start", "index": number, "total": total, "id": name, "title": name,
                  "started": event_time()})
            t0 = time.monotonic()
            report = session.run_step(text, parameters, settings.step_timeout)
            outcome = classify(report)
            both({"event": "step-end", "index": number, "total": total, "id": name, "state": outcome.value,
                  "seconds": round(time.monotonic() - t0, 3), "for_step": index,
                  "output": [redact(o) for o in report.output], "information": [redact(i) for i in report.information],
                  "errors": [{"message": redact(e.message), "category": redact(e.category), "line": e.line,
                              "position": redact(e.position)} for e in report.errors],
                  "detail": redact(report.transport_error or "")})
            if outcome is not Outcome.OK:
                code = ExitCode.UNKNOWN if outcome is Outcome.UNKNOWN else ExitCode.FAILED
                return _end(both, code, [], [f"Stopped: {name} did not succeed ({outcome.value}); nothing after it "
                                             "was sent. Fix the cause, then run the same rollback command again: "
                                             "the back-out scripts change nothing that is already undone."],
                            stopped_at=number, reason=outcome.value, results=[])
        done = ", ".join(f"step {i.step.index:02d} {i.step.id}" for i in plan.scripted) or "nothing scripted"
        return _end(both, ExitCode.OK, [f"Backed out: {done}."], [], stopped_at=None, reason="done", results=[])
    finally:
        session.close()
        record.close()
        workstation.release()
