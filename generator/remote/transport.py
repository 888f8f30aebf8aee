"""The pypsrp transport: one WSMan connection and one RunspacePool (one runspace) for a whole run.

pypsrp is imported only here, and only when a session opens, so the rest of the CLI starts
fast. Its traps are handled here (see DOMAIN.md): `invoke()` does not raise when a pipeline
fails, so the state AND the error stream are checked; `with PowerShell()` hides transport
errors, so pipelines are closed in guarded code; the step timeout is `begin_invoke` +
`poll_invoke` against a deadline, then `stop()`. `$ErrorActionPreference = 'Stop'` is set
once per session. Secrets travel only as SecureString parameters after a key exchange.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConnectFailure, RuntimeFailure, UserError
from .executor import PipelineReport, RemoteError

AUTHS = ("negotiate", "ntlm", "kerberos", "credssp", "basic", "certificate")
#: Loggers that could print a script, a SOAP body or a message: never let them speak.
QUIET_LOGGERS = ("pypsrp", "requests", "urllib3", "spnego", "psrpcore", "requests_credssp", "krb5", "gssapi")

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
        return _authentication_failed(endpoint, conn)
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
            return _not_resolved(conn.host, text)
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


def _authentication_failed(endpoint: str, conn: Connection) -> str:
    """The failed login, naming where the password came from and what to do next (never the password)."""
    if conn.username is None:
        return (f"authentication failed at {endpoint} for the current Kerberos principal with {conn.auth} (kinit, "
                "or give --username and PSBRIDGE_WINRM_PASSWORD)")
    from ..secrets import source_of

    source = source_of("PSBRIDGE_WINRM_PASSWORD")
    fix = ("set it to that user's password, or unset it to be asked" if source != "the prompt"
           else "run again and type that user's password")
    return (f"authentication failed at {endpoint} for {conn.username} with {conn.auth} (wrong user or password, or "
            f"auth not enabled); the password came from {source}: {fix}")


#: The resolver's own words in a requests/urllib3 error: `[Errno -2] Name or service not known`.
_RESOLVER_REASON = re.compile(r"\[Errno -?\d+\] ([^'\")\]]{1,80})")


def _not_resolved(host: str, text: str) -> str:
    """A DNS failure: the name that was looked up, what the resolver said, and the command to look again."""
    found = _RESOLVER_REASON.search(text)
    reason = found.group(1).strip() if found else "no address found"
    return f"cannot resolve host name {host!r} (DNS: {reason}); check [crm] server or --host, then: nslookup {host}"


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


class FirstAnswer:
    """Bounds the wait for the server's first HTTP answer by --connection-timeout, then steps aside.

    pypsrp waits for every answer up to its read timeout (the operation timeout + 10 s, 30 s by
    default), so a listener that accepts the connection and never answers held the operator for
    that hidden time whatever --connection-timeout said. Until the first answer arrives, the read
    timeout is --connection-timeout; from then on it is the normal one, which a long-polling
    Receive needs.
    """

    def __init__(self, transport: Any, seconds: int) -> None:
        self.transport = transport
        self.seconds = seconds
        self.answered = False
        self._normal = transport.read_timeout
        self._send = transport._send_request
        transport.read_timeout = min(seconds, self._normal)
        transport._send_request = self._send_request

    def _send_request(self, request: Any, timeout: Any = None) -> bytes:
        """pypsrp's own request, after which (answered or refused) the normal read timeout is back."""
        import requests

        try:
            answer = self._send(request, timeout=timeout)
        except (requests.exceptions.Timeout, requests.exceptions.ConnectionError):
            raise  # no answer yet
        except BaseException:
            self._step_aside()  # an HTTP error (401, 500...) is an answer too
            raise
        self._step_aside()
        return answer

    def _step_aside(self) -> None:
        """The normal read timeout and pypsrp's own request function, back for the rest of the session."""
        if not self.answered:
            self.answered = True
            self.transport.read_timeout = self._normal
            self.transport._send_request = self._send


#: Variables through which requests (under pypsrp) would take its trusted CAs from the environment.
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def trusted_cas(conn: Connection) -> bool | str:
    """What requests' `verify` gets: --ca-bundle's path, else requests' default bundle by path, or False.

    Why a path and never True: given True, pypsrp lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace the
    trusted CAs, so whoever sets a variable could make psbridge trust their server. Only --ca-bundle
    widens trust (`ignored_ca_variables` names what was set, for a warning).
    """
    if not conn.verify_tls:
        return False
    if conn.ca_bundle is not None:
        return str(conn.ca_bundle)
    from requests.certs import where  # requests' own default bundle (certifi's), named by its path

    return str(where())


def ignored_ca_variables() -> list[str]:
    """The CA bundle variables set in the environment, which psbridge does not honour (see `trusted_cas`)."""
    return [name for name in CA_BUNDLE_VARIABLES if os.environ.get(name)]


class PSRPSession:
    """One WSMan connection and one RunspacePool (one runspace) for a whole run."""

    def __init__(self, conn: Connection, password: str | None) -> None:
        self.conn = conn
        self._password = password
        self.pool: Any = None
        self.wsman: Any = None
        self.broken = False
        #: Held while a pipeline runs: the server lock's heartbeat (serverlock.HeartbeatKeeper) sends only
        #: when no pipeline does, so the one runspace never has two pipelines at once.
        self.gate = threading.RLock()
        #: Called, holding `gate`, before each pipeline: the server lock's heartbeat when one is due
        #: (serverlock.HeartbeatKeeper sets it while it holds this session's lock), so a heartbeat goes
        #: with every pipeline the run sends, probes back to back included.
        self.before_pipeline: Callable[[], None] | None = None

    def open(self, *, exchange_keys: bool) -> None:
        """Connect, authenticate, open the pool, set $ErrorActionPreference once. Raises ConnectFailure."""
        import requests
        from pypsrp.powershell import RunspacePool
        from pypsrp.wsman import WSMan

        conn = self.conn
        kwargs: dict[str, Any] = {}
        if conn.auth == "certificate":
            kwargs = {"certificate_pem": str(conn.client_cert), "certificate_key_pem": str(conn.client_key)}
        cert_validation = trusted_cas(conn)
        self.wsman = WSMan(
            conn.host,
            port=conn.port,
            username=conn.username,
            password=self._password,
            ssl=conn.transport == "https",
            auth=conn.auth,
            # pypsrp hands it to requests' `verify`, which takes a CA bundle's path as well as a bool.
            cert_validation=cert_validation,  # type: ignore[arg-type]  # pypsrp's hint says bool; see the line above
            connection_timeout=conn.connection_timeout,
            read_timeout=conn.read_timeout,
            operation_timeout=conn.operation_timeout,
            encryption="auto",
            no_proxy=True,
            reconnection_retries=0,
            reconnection_backoff=0.5,
            **kwargs,
        )
        first = FirstAnswer(self.wsman.transport, conn.connection_timeout)
        self.pool = RunspacePool(self.wsman, configuration_name=conn.configuration_name, min_runspaces=1,
                                 max_runspaces=1)
        try:
            self.pool.open()
        except requests.exceptions.ReadTimeout:  # connected (a connect timeout says so itself), then silence
            if first.answered:
                raise
            raise ConnectFailure(
                f"{conn.transport}://{conn.host}:{conn.port}/wsman accepted the connection but did not answer "
                f"within {conn.connection_timeout}s (--connection-timeout)") from None
        if exchange_keys:
            self.pool.exchange_keys()
        report = self.run_step("$ErrorActionPreference = 'Stop'", {}, float(conn.operation_timeout))
        if report.state != "Completed" or report.errors or report.transport_error:
            raise ConnectFailure("the remote session refused to set $ErrorActionPreference = 'Stop'")

    def run_step(self, script: str, parameters: Mapping[str, Any], timeout: float, *,
                 local_scope: bool = False) -> PipelineReport:
        """One pipeline at a time on this session (see `gate`), after `before_pipeline`; `_run_step` says
        what it does."""
        with self.gate:
            hook = self.before_pipeline
            if hook is not None:
                self.before_pipeline = None  # the hook's own pipeline (a heartbeat) does not call it again
                try:
                    hook()
                finally:
                    self.before_pipeline = hook
            return self._run_step(script, parameters, timeout, local_scope=local_scope)

    def _run_step(self, script: str, parameters: Mapping[str, Any], timeout: float, *,
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


