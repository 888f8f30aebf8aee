"""A server that accepts the TCP connection and never answers: the wait follows --connection-timeout.

Before, the first HTTP exchange waited for pypsrp's read timeout (operation timeout + 10 = 30 s by
default) whatever --connection-timeout said. The listener here is a real socket on the loopback
interface, served by a thread that accepts and then holds the connection open without a byte.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from psbridge.cli import main
from support.lab import O365_USER, USER


class SilentServer:
    """Accepts every connection on 127.0.0.1 and never sends anything (until closed)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(conn)  # held open, never answered

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def _args(command: str, pkg: object, port: int, transport: str, *extra: str) -> list[str]:
    return [command, str(pkg), *(["--yes"] if command == "run" else []), "--host", "127.0.0.1", "--port", str(port),
            "--transport", transport, "--auth", "ntlm", "--username", USER, "--o365-user", O365_USER,
            "--connection-timeout", "2", *(["--no-verify-tls"] if transport == "https" else []), *extra]


@pytest.mark.parametrize(("command", "transport"), [("run", "http"), ("run", "https"), ("check", "http")])
def test_silent_server_ends_within_the_connection_timeout(pkg, secrets_env, silent, capsys, command, transport):
    started = time.monotonic()
    code = main(_args(command, pkg, silent.port, transport))
    seconds = time.monotonic() - started
    out, err = capsys.readouterr()
    assert silent.accepted, "the client never connected: the test proves nothing"
    assert code == 3, (out, err)
    # The hidden default was 30 s (and pypsrp retries a Receive up to 5 times); 2 s plus slack is far below.
    assert seconds < 15, f"took {seconds:.1f}s with --connection-timeout 2"
    last = err.strip().splitlines()[-1]
    assert last.startswith("psbridge: could not connect: "), err
    assert f"127.0.0.1:{silent.port}" in last and "2s" in last and "--connection-timeout" in last, last


class _Transport:
    """pypsrp's _TransportHTTP as FirstAnswer sees it: a read timeout and a request function."""

    def __init__(self, outcome: BaseException | None = None) -> None:
        self.read_timeout = 30
        self.seen: list[int] = []
        self.outcome = outcome

    def _send_request(self, request: object, timeout: object = None) -> bytes:
        self.seen.append(self.read_timeout)
        if self.outcome is not None:
            raise self.outcome
        return b"answer"


def test_first_answer_bounds_only_the_first_wait():
    from psbridge.remote.transport import FirstAnswer

    transport = _Transport()
    first = FirstAnswer(transport, 2)
    assert transport.read_timeout == 2 and not first.answered
    assert transport._send_request("create") == b"answer"
    assert first.answered and transport.read_timeout == 30  # a long-polling Receive gets the normal wait
    transport._send_request("receive")
    assert transport.seen == [2, 30]


def test_an_http_error_is_an_answer_and_a_timeout_is_not():
    import requests

    from psbridge.remote.transport import FirstAnswer

    silent = _Transport(requests.exceptions.ReadTimeout("no answer"))
    first = FirstAnswer(silent, 2)
    with pytest.raises(requests.exceptions.ReadTimeout):
        silent._send_request("create")
    assert not first.answered and silent.read_timeout == 2
    refused = _Transport(RuntimeError("HTTP 401"))
    first = FirstAnswer(refused, 2)
    with pytest.raises(RuntimeError):
        refused._send_request("create")
    assert first.answered and refused.read_timeout == 30


def test_a_connection_timeout_above_the_read_timeout_does_not_lengthen_it():
    from psbridge.remote.transport import FirstAnswer

    transport = _Transport()
    FirstAnswer(transport, 120)
    assert transport.read_timeout == 30
