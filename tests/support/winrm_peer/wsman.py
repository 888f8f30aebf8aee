"""WS-Management Shell operations for PowerShell remoting, on top of psrpcore's server classes.

Serves what pypsrp 0.9.x sends: Create (the pool's first PSRP fragments in
`creationXml`), Receive (pool-level and per command, long-polled up to the
request's OperationTimeout, then WSManFault 0x80338029), Command (the client
chooses the CommandId, the pipeline's first fragment is in `rsp:Arguments`),
Send, Signal (PowerShell ctrl_c = stop, Terminate = close), Delete and Get.
psrpcore is sans-IO and not thread-safe, so each shell has one lock; requests
from several connections may touch one shell.
"""

from __future__ import annotations

import base64
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from psrpcore import (
    CreatePipelineEvent,
    PSRPPayload,
    ServerPipeline,
    ServerRunspacePool,
    StreamType,
)
from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    InvocationInfo,
    NETException,
    PSInvocationState,
)

from .engine import Engine, ErrorSpec, RecordedPipeline, Reply, decode_value

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wst": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "wsmanfault": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "pwsh": "http://schemas.microsoft.com/powershell",
}
for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)

ACTION = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
SHELL_ACTION = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
PS_CTRL_C = "powershell/signal/ctrl_c"
TERMINATE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/Terminate"
DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
RUNNING = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"

ERROR_OPERATION_TIMEDOUT = 0x80338029
ERROR_SHELL_NOT_FOUND = 0x8033805B
#: Stand-in code for "no such session configuration"; the value Windows uses is not claimed here.
ERROR_NO_CONFIGURATION = 0x80338012
CONFIGURATION_PREFIX = "http://schemas.microsoft.com/powershell/"


class Drop(Exception):
    """Close the TCP connection without answering (a scripted lost connection)."""


class Unauthorized(Exception):
    """Answer 401 (a scripted credential revocation)."""


@dataclass
class Response:
    status: int
    body: bytes


@dataclass
class _Pipe:
    server: ServerPipeline
    record: RecordedPipeline | None = None
    drop_next: bool = False
    garbage_next: bool = False


#: A PSRP fragment header (object 1, fragment 0, start+end, 24 bytes) around a message whose
#: destination, type and ids are nonsense: what a broken or hostile server might send.
GARBAGE = (1).to_bytes(8, "big") + (0).to_bytes(8, "big") + b"\x03" + (24).to_bytes(4, "big") + b"\xde\xad\xbe\xef" * 6


@dataclass
class Shell:
    shell_id: str
    resource_uri: str
    pool: ServerRunspacePool
    lock: threading.Condition = field(default_factory=threading.Condition)
    #: Outgoing PSRP payloads by destination: None = the pool, else the pipeline id.
    outbox: dict[uuid.UUID | None, list[bytes]] = field(default_factory=dict)
    pipes: dict[uuid.UUID, _Pipe] = field(default_factory=dict)


def _el(tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    prefix, name = tag.split(":")
    element = ET.Element(f"{{{NS[prefix]}}}{name}", attrib)
    if text is not None:
        element.text = text
    return element


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    child = _el(tag, text, **attrib)
    parent.append(child)
    return child


def _timeout_seconds(text: str | None, default: float = 20.0) -> float:
    match = re.fullmatch(r"PT(\d+(?:\.\d+)?)S", (text or "").strip())
    return float(match.group(1)) if match else default


def _category(name: str) -> ErrorCategory:
    try:
        return ErrorCategory[name]
    except KeyError:
        return ErrorCategory.NotSpecified


def _error_record(spec: ErrorSpec, script: str) -> ErrorRecord:
    lines = script.splitlines() or [""]
    line_text = spec.line_text or lines[min(max(spec.line, 1), len(lines)) - 1]
    invocation = InvocationInfo(
        ScriptLineNumber=spec.line,
        Line=line_text,
        OffsetInLine=1,
        PositionMessage=f"At line:{spec.line} char:1\n+ {line_text}",
        ScriptName="",
        InvocationName="",
        HistoryId=1,
        PipelineLength=0,
        PipelinePosition=0,
        ExpectingInput=False,
    )
    record = ErrorRecord(
        Exception=NETException(Message=spec.message),
        CategoryInfo=ErrorCategoryInfo(Category=_category(spec.category), Reason="RuntimeException"),
        FullyQualifiedErrorId=spec.error_id,
        InvocationInfo=invocation,
    )
    record.serialize_extended_info = True
    return record


class WSManService:
    """The shells of one peer and the SOAP operations on them."""

    def __init__(
        self, engine: Engine, max_wait: float = 20.0, configurations: frozenset[str] = frozenset({"Microsoft.PowerShell"})
    ) -> None:
        self.engine = engine
        self.configurations = configurations
        self.max_wait = max_wait
        self.shells: dict[str, Shell] = {}
        self._lock = threading.Lock()
        self._seq = 0
        self.revoked = False
        self.closing = threading.Event()

    # -- entry point -------------------------------------------------------
    def handle(self, request: bytes) -> Response:
        """Answer one SOAP envelope. Raises Drop/Unauthorized for scripted failures."""
        if self.revoked:
            raise Unauthorized()
        envelope = ET.fromstring(request)
        header = envelope.find("s:Header", NS)
        body = envelope.find("s:Body", NS)
        if header is None or body is None:
            return self._fault("", "", 0x80338000, "Malformed envelope", sender=True)
        action = (header.findtext("wsa:Action", "", NS) or "").strip()
        message_id = (header.findtext("wsa:MessageID", "", NS) or "").strip()
        resource_uri = (header.findtext("wsman:ResourceURI", "", NS) or "").strip()
        selectors = {
            s.attrib.get("Name", ""): (s.text or "")
            for s in header.findall("wsman:SelectorSet/wsman:Selector", NS)
        }
        timeout = min(_timeout_seconds(header.findtext("wsman:OperationTimeout", None, NS)), self.max_wait)

        if action == ACTION + "Create":
            return self._create(message_id, resource_uri, body)
        shell = self._shell(selectors.get("ShellId", ""))
        if shell is None:
            return self._fault(
                action, message_id, ERROR_SHELL_NOT_FOUND,
                "The request for the Windows Remote Shell failed because the shell was not found on the server.",
            )
        handlers = {
            SHELL_ACTION + "Receive": lambda: self._receive(shell, message_id, body, timeout),
            SHELL_ACTION + "Command": lambda: self._command(shell, message_id, body),
            SHELL_ACTION + "Send": lambda: self._send(shell, message_id, body),
            SHELL_ACTION + "Signal": lambda: self._signal(shell, message_id, body),
            ACTION + "Delete": lambda: self._delete(shell, message_id),
            ACTION + "Get": lambda: self._get(shell, message_id),
        }
        handler = handlers.get(action)
        if handler is None:
            return self._fault(action, message_id, 0x80338115, f"Unsupported action {action}", sender=True)
        return handler()

    # -- operations --------------------------------------------------------
    def _create(self, message_id: str, resource_uri: str, body: ET.Element) -> Response:
        shell_el = body.find("rsp:Shell", NS)
        creation = body.find("rsp:Shell/pwsh:creationXml", NS)
        if shell_el is None or creation is None:
            return self._fault(ACTION + "Create", message_id, 0x80338000, "Missing creationXml", sender=True)
        name = resource_uri[len(CONFIGURATION_PREFIX):] if resource_uri.startswith(CONFIGURATION_PREFIX) else ""
        if name not in self.configurations:
            return self._fault(
                ACTION + "Create", message_id, ERROR_NO_CONFIGURATION,
                f"The WS-Management service cannot process the request. Cannot find the {name or resource_uri} "
                "session configuration in the WSMan: drive on the 127.0.0.1 computer.",
            )
        shell_id = shell_el.attrib.get("ShellId") or str(uuid.uuid4()).upper()
        shell = Shell(shell_id, resource_uri, ServerRunspacePool())
        with shell.lock:
            self._feed(shell, None, base64.b64decode(creation.text or ""))
        with self._lock:
            self.shells[shell_id.upper()] = shell

        out = _el("s:Body")
        created = _sub(out, "wst:ResourceCreated")
        _sub(created, "wsa:Address", "http://127.0.0.1/wsman")
        ref = _sub(created, "wsa:ReferenceParameters")
        _sub(ref, "wsman:ResourceURI", resource_uri)
        selector_set = _sub(ref, "wsman:SelectorSet")
        _sub(selector_set, "wsman:Selector", shell_id, Name="ShellId")
        shell_info = _sub(out, "rsp:Shell")
        _sub(shell_info, "rsp:ShellId", shell_id)
        _sub(shell_info, "rsp:ResourceUri", resource_uri)
        _sub(shell_info, "rsp:Owner", "peer")
        _sub(shell_info, "rsp:InputStreams", "stdin pr")
        _sub(shell_info, "rsp:OutputStreams", "stdout")
        return self._ok(ACTION + "CreateResponse", message_id, out)

    def _receive(self, shell: Shell, message_id: str, body: ET.Element, timeout: float) -> Response:
        stream = body.find("rsp:Receive/rsp:DesiredStream", NS)
        command_id = stream.attrib.get("CommandId") if stream is not None else None
        target = uuid.UUID(command_id) if command_id else None
        deadline = time.monotonic() + timeout
        with shell.lock:
            pipe = shell.pipes.get(target) if target else None
            if pipe is not None and pipe.drop_next:
                raise Drop()
            if pipe is not None and pipe.garbage_next:
                pipe.garbage_next = False
                shell.outbox.setdefault(target, []).insert(0, GARBAGE)
            while not shell.outbox.get(target):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closing.is_set() or self._shell(shell.shell_id) is None:
                    break
                shell.lock.wait(min(remaining, 0.2))
            if self._shell(shell.shell_id) is None:
                return self._fault(
                    SHELL_ACTION + "Receive", message_id, ERROR_SHELL_NOT_FOUND,
                    "The request for the Windows Remote Shell failed because the shell was not found on the server.",
                )
            payloads = shell.outbox.pop(target, [])
            if not payloads:
                return self._fault(
                    SHELL_ACTION + "Receive", message_id, ERROR_OPERATION_TIMEDOUT,
                    "The WS-Management service cannot complete the operation within the time specified in "
                    "OperationTimeout.",
                )
            done = pipe is not None and pipe.server.state in (
                PSInvocationState.Completed, PSInvocationState.Failed, PSInvocationState.Stopped
            )

        out = _el("s:Body")
        response = _sub(out, "rsp:ReceiveResponse")
        for payload in payloads:
            attrib = {"Name": "stdout"}
            if command_id:
                attrib["CommandId"] = command_id
            _sub(response, "rsp:Stream", base64.b64encode(payload).decode(), **attrib)
        if command_id:
            _sub(response, "rsp:CommandState", None, CommandId=command_id, State=DONE if done else RUNNING)
        return self._ok(SHELL_ACTION + "ReceiveResponse", message_id, out)

    def _command(self, shell: Shell, message_id: str, body: ET.Element) -> Response:
        line = body.find("rsp:CommandLine", NS)
        if line is None:
            return self._fault(SHELL_ACTION + "Command", message_id, 0x80338000, "Missing CommandLine", sender=True)
        command_id = line.attrib.get("CommandId") or str(uuid.uuid4()).upper()
        pipeline_id = uuid.UUID(command_id)
        data = b"".join(base64.b64decode(a.text or "") for a in line.findall("rsp:Arguments", NS))
        with shell.lock:
            # The pipeline must exist before its first fragment is processed.
            shell.pipes[pipeline_id] = _Pipe(ServerPipeline(shell.pool, pipeline_id))
            self._feed(shell, pipeline_id, data)
        out = _el("s:Body")
        response = _sub(out, "rsp:CommandResponse")
        _sub(response, "rsp:CommandId", command_id.upper())
        return self._ok(SHELL_ACTION + "CommandResponse", message_id, out)

    def _send(self, shell: Shell, message_id: str, body: ET.Element) -> Response:
        with shell.lock:
            for stream in body.findall("rsp:Send/rsp:Stream", NS):
                command_id = stream.attrib.get("CommandId")
                target = uuid.UUID(command_id) if command_id else None
                self._feed(shell, target, base64.b64decode(stream.text or ""))
        return self._ok(SHELL_ACTION + "SendResponse", message_id, _el("s:Body"))

    def _signal(self, shell: Shell, message_id: str, body: ET.Element) -> Response:
        signal = body.find("rsp:Signal", NS)
        code = (signal.findtext("rsp:Code", "", NS) if signal is not None else "").strip()
        command_id = signal.attrib.get("CommandId", "") if signal is not None else ""
        with shell.lock:
            pipe = shell.pipes.get(uuid.UUID(command_id)) if command_id else None
            if pipe is not None:
                if code == PS_CTRL_C:
                    if pipe.server.state == PSInvocationState.Running:
                        pipe.server.stop()
                        if pipe.record is not None:
                            pipe.record.stopped = True
                        self._drain(shell)
                elif code == TERMINATE:
                    if pipe.server.state == PSInvocationState.Running:
                        pipe.server.stop()
                    pipe.server.close()
                    shell.pipes.pop(pipe.server.pipeline_id, None)
                    shell.outbox.pop(pipe.server.pipeline_id, None)
            shell.lock.notify_all()
        return self._ok(SHELL_ACTION + "SignalResponse", message_id, _el("s:Body"))

    def _delete(self, shell: Shell, message_id: str) -> Response:
        with self._lock:
            self.shells.pop(shell.shell_id.upper(), None)
        with shell.lock:
            shell.lock.notify_all()
        return self._ok(ACTION + "DeleteResponse", message_id, _el("s:Body"))

    def _get(self, shell: Shell, message_id: str) -> Response:
        out = _el("s:Body")
        info = _sub(out, "rsp:Shell")
        _sub(info, "rsp:ShellId", shell.shell_id)
        _sub(info, "rsp:State", "Connected")
        return self._ok(ACTION + "GetResponse", message_id, out)

    # -- PSRP --------------------------------------------------------------
    def _feed(self, shell: Shell, target: uuid.UUID | None, data: bytes) -> None:
        """Give PSRP fragments to the pool, act on each complete message, queue the answers."""
        shell.pool.receive_data(PSRPPayload(data, StreamType.default, target))
        while True:
            event = shell.pool.next_event()
            if event is None:
                break
            if isinstance(event, CreatePipelineEvent):
                self._run(shell, event)
        self._drain(shell)

    def _drain(self, shell: Shell) -> None:
        while True:
            payload = shell.pool.data_to_send()
            if payload is None:
                break
            shell.outbox.setdefault(payload.pipeline_id, []).append(payload.data)
        shell.lock.notify_all()

    def _run(self, shell: Shell, event: CreatePipelineEvent) -> None:
        pipe = shell.pipes[event.pipeline_id]
        commands = []
        for command in event.pipeline.commands:
            params = {str(name): decode_value(value) for name, value in command.parameters if name is not None}
            commands.append((str(command.command_text), bool(command.is_script), params))
        local_scope = [bool(getattr(command, "use_local_scope", False)) for command in event.pipeline.commands]
        with self._lock:
            self._seq += 1
            seq = self._seq
        record = RecordedPipeline(seq, shell.shell_id, str(event.pipeline_id).upper(), commands,
                                  local_scope=local_scope)
        pipe.record = record
        reply: Reply = self.engine.receive(record)

        server = pipe.server
        server.start()
        for value in reply.output:
            server.write_output(value)
        for message in reply.warnings:
            server.write_warning(message)
        for message in reply.information:
            server.write_information(message, "psbridge-peer")
        for spec in reply.errors:
            err = _error_record(spec, record.script)
            server.write_error(
                err.Exception, err.CategoryInfo, fully_qualified_error_id=err.FullyQualifiedErrorId,
                invocation_info=err.InvocationInfo,
            )
        if reply.unauthorized:
            self.revoked = True
        if reply.drop:
            pipe.drop_next = True
        if reply.garbage:
            pipe.garbage_next = True
        if reply.delete_shell:
            with self._lock:
                self.shells.pop(shell.shell_id.upper(), None)
        if reply.hang or reply.drop or reply.delete_shell or reply.unauthorized or reply.garbage:
            return
        if reply.terminating is not None:
            # psrpcore has no public "fail" for a server pipeline; this is how pwsh reports a
            # terminating error: PipelineState Failed carrying the ErrorRecord.
            server._change_state(PSInvocationState.Failed, _error_record(reply.terminating, record.script))
        else:
            server.complete()

    # -- envelopes ---------------------------------------------------------
    def _shell(self, shell_id: str) -> Shell | None:
        with self._lock:
            return self.shells.get(shell_id.upper())

    @staticmethod
    def _envelope(action: str, message_id: str, body: ET.Element) -> bytes:
        envelope = _el("s:Envelope")
        header = _sub(envelope, "s:Header")
        _sub(header, "wsa:Action", action)
        _sub(header, "wsa:MessageID", f"uuid:{str(uuid.uuid4()).upper()}")
        _sub(header, "wsa:RelatesTo", message_id)
        _sub(header, "wsa:To", "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous")
        envelope.append(body)
        return ET.tostring(envelope, encoding="utf-8", xml_declaration=False)

    def _ok(self, action: str, message_id: str, body: ET.Element) -> Response:
        return Response(200, self._envelope(action, message_id, body))

    def _fault(self, action: str, message_id: str, code: int, message: str, *, sender: bool = False) -> Response:
        body = _el("s:Body")
        fault = _sub(body, "s:Fault")
        code_el = _sub(fault, "s:Code")
        _sub(code_el, "s:Value", "s:Sender" if sender else "s:Receiver")
        subcode = _sub(code_el, "s:Subcode")
        _sub(subcode, "s:Value", "w:TimedOut" if code == ERROR_OPERATION_TIMEDOUT else "w:InternalError")
        reason = _sub(fault, "s:Reason")
        _sub(reason, "s:Text", message, **{"{http://www.w3.org/XML/1998/namespace}lang": "en-US"})
        detail = _sub(fault, "s:Detail")
        wsman_fault = _sub(detail, "wsmanfault:WSManFault", None, Code=str(code), Machine="127.0.0.1")
        _sub(wsman_fault, "wsmanfault:Message", message)
        return Response(500, self._envelope("http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", message_id, body))

