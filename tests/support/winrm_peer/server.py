"""HTTP(S) front of the peer: authentication, WinRM message encryption, keep-alive.

Basic auth is checked per request. NTLM/Negotiate uses pyspnego as the acceptor
(users from the file named by NTLM_USER_FILE); its context lives on the TCP
connection, as with a real WinRM listener, which is why HTTP/1.1 keep-alive is on.
Over plain HTTP an authenticated NTLM connection must send `multipart/encrypted`
bodies (AllowUnencrypted=false, the Windows default); over HTTPS the channel
binding (tls-server-end-point) is checked. Nagle is disabled, or every
request/response pair waits for a delayed ACK.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import ssl
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import spnego
import spnego.channel_bindings

from .engine import Engine
from .wsman import Drop, Unauthorized, WSManService

BOUNDARY = b"--Encrypted Boundary"
SPNEGO_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"


def unwrap(context: Any, body: bytes) -> bytes:
    """Decrypt a `multipart/encrypted` WinRM body (MS-WSMV 2.2.9.1.1)."""
    parts = [p for p in re.split(rb"--Encrypted Boundary\r\n", body) if p]
    message = b""
    for i in range(0, len(parts), 2):
        header, payload = parts[i], parts[i + 1]
        expected = int(header.split(b"Length=")[1].split(b"\r\n")[0])
        payload = re.sub(rb"--Encrypted Boundary--\r\n$", b"", payload)
        payload = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
        header_len = struct.unpack("<i", payload[:4])[0]
        plain = context.unwrap_winrm(payload[4 : 4 + header_len], payload[4 + header_len :])
        if len(plain) != expected:
            raise ValueError("encrypted length mismatch")
        message += plain
    return message


def wrap(context: Any, message: bytes) -> bytes:
    """Encrypt a response body the way WinRM does."""
    result = context.wrap_winrm(message)
    length = len(message) + result.padding_length
    return b"".join([
        BOUNDARY, b"\r\n",
        f"\tContent-Type: {SPNEGO_PROTOCOL}\r\n".encode(),
        f"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={length}\r\n".encode(),
        BOUNDARY, b"\r\n",
        b"\tContent-Type: application/octet-stream\r\n",
        struct.pack("<i", len(result.header)), result.header, result.data,
        BOUNDARY, b"--\r\n",
    ])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: "_HTTPServer"

    def setup(self) -> None:
        super().setup()
        self.auth_context: Any = None
        self.authenticated_user: str | None = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet in tests
        return

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        peer = self.server.peer
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") != "/wsman":
            self._reply(404, b"", close=True)
            return
        if peer.service.revoked:
            self._unauthorized(close=False)
            return

        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        out_token: bytes | None = None
        basic_ok = False
        if scheme.lower() == "basic" and "basic" in peer.auth:
            user, _, password = base64.b64decode(token).decode("utf-8", "replace").partition(":")
            if peer.users.get(user) != password:
                self._unauthorized(close=True)
                return
            basic_ok = True
            self.authenticated_user = user
        elif scheme.lower() in ("negotiate", "ntlm", "kerberos") and "negotiate" in peer.auth:
            if self.auth_context is None or self.auth_context.complete:
                self.auth_context = spnego.server(
                    protocol="negotiate", channel_bindings=peer.channel_bindings
                )
                self.authenticated_user = None
            try:
                out_token = self.auth_context.step(base64.b64decode(token))
            except Exception:  # noqa: BLE001 - any acceptor failure is a rejected logon
                self.auth_context = None
                peer._count_auth_failure()
                self._unauthorized(close=True)
                return
            if not self.auth_context.complete:
                self._reply(401, b"", headers={"WWW-Authenticate": f"Negotiate {base64.b64encode(out_token or b'').decode()}"})
                return
            self.authenticated_user = str(self.auth_context.client_principal)
        elif scheme:
            self._unauthorized(close=True)
            return

        ntlm_ok = self.auth_context is not None and self.auth_context.complete
        if not (basic_ok or ntlm_ok):
            self._unauthorized(close=False)
            return

        extra = {"WWW-Authenticate": f"Negotiate {base64.b64encode(out_token).decode()}"} if out_token else {}
        content_type = self.headers.get("Content-Type", "")
        encrypted = content_type.startswith("multipart/encrypted")
        if not body:
            # The empty request that completes the NTLM handshake before message encryption.
            self._reply(200, b"", headers=extra)
            return
        if encrypted:
            if not ntlm_ok:
                self._reply(400, b"", close=True)
                return
            try:
                soap = unwrap(self.auth_context, body)
            except Exception:  # noqa: BLE001 - garbage or a wrong key
                self._reply(400, b"", close=True)
                return
            peer._count_encrypted()
        elif not self.server.tls and not peer.allow_unencrypted:
            # AllowUnencrypted=false: plaintext SOAP over HTTP is refused, as on Windows.
            self._reply(400, b"", close=True)
            return
        else:
            soap = body

        try:
            response = peer.service.handle(soap)
        except Drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        except Unauthorized:
            self.auth_context = None
            self._unauthorized(close=False)
            return

        if encrypted:
            payload = wrap(self.auth_context, response.body)
            headers = {
                "Content-Type": f'multipart/encrypted;protocol="{SPNEGO_PROTOCOL}";boundary="Encrypted Boundary"',
                **extra,
            }
        else:
            payload = response.body
            headers = {"Content-Type": "application/soap+xml;charset=UTF-8", **extra}
        self._reply(response.status, payload, headers=headers)

    def _unauthorized(self, *, close: bool) -> None:
        offers = []
        if "negotiate" in self.server.peer.auth:
            offers.append("Negotiate")
        if "basic" in self.server.peer.auth:
            offers.append('Basic realm="WSMAN"')
        self._reply(401, b"", headers={"WWW-Authenticate": ", ".join(offers)}, close=close)

    def _reply(self, status: int, body: bytes, *, headers: dict[str, str] | None = None, close: bool = False) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, peer: "WinRMPeer", tls: ssl.SSLContext | None, address: tuple[str, int]) -> None:
        self.peer = peer
        self.tls = tls
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (dropped connection, Ctrl-C) is an expected event here.
        if isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError)):
            return
        super().handle_error(request, client_address)

    def get_request(self) -> tuple[Any, Any]:
        request, address = super().get_request()
        self.peer._count_connection()
        return request, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs in the connection's thread, so a client that refuses
        # the certificate cannot stall the accept loop.
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                self.peer._count_tls_failure()
                return
        super().finish_request(request, client_address)


class WinRMPeer:
    """A WinRM listener on 127.0.0.1 that speaks PSRP through psrpcore; not PowerShell.

    Args:
        engine: decides what each pipeline answers and records what arrived.
        users: user -> password, for Basic and (through NTLM_USER_FILE) NTLM.
        auth: the schemes offered: any of "negotiate", "basic".
        tls: an `ssl.SSLContext` with the server certificate, for HTTPS.
        cert_der: the server certificate (DER) for the channel binding check.
    """

    def __init__(
        self,
        engine: Engine,
        users: dict[str, str],
        *,
        auth: tuple[str, ...] = ("negotiate",),
        tls: ssl.SSLContext | None = None,
        cert_der: bytes | None = None,
        allow_unencrypted: bool = False,
        max_wait: float = 20.0,
        address: tuple[str, int] = ("127.0.0.1", 0),
    ) -> None:
        if not address[0].startswith("127."):
            raise ValueError("the test peer listens on the loopback range only")
        self.engine = engine
        self.users = users
        self.auth = auth
        self.allow_unencrypted = allow_unencrypted
        self.service = WSManService(engine, max_wait=max_wait)
        self.channel_bindings = None
        if tls is not None and cert_der is not None:
            digest = hashlib.sha256(cert_der).digest()
            self.channel_bindings = spnego.channel_bindings.GssChannelBindings(
                application_data=b"tls-server-end-point:" + digest
            )
        self._stats_lock = threading.Lock()
        self.connections = 0
        self.encrypted_requests = 0
        self.auth_failures = 0
        self.tls_failures = 0
        self._server = _HTTPServer(self, tls, address)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="winrm-peer", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> "WinRMPeer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.service.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "WinRMPeer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def shell_ids(self) -> set[str]:
        """Ids of the shells open on the peer now (upper case, as WinRM shows them)."""
        return {shell_id.upper() for shell_id in list(self.service.shells)}

    def _count_connection(self) -> None:
        with self._stats_lock:
            self.connections += 1

    def _count_encrypted(self) -> None:
        with self._stats_lock:
            self.encrypted_requests += 1

    def _count_auth_failure(self) -> None:
        with self._stats_lock:
            self.auth_failures += 1

    def _count_tls_failure(self) -> None:
        with self._stats_lock:
            self.tls_failures += 1
