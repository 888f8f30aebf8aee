"""The loopback peer itself, exercised with plain pypsrp (no psbridge code).

These pin down the protocol behaviour psbridge's executor relies on, so a change in
the peer that would make the run tests pass for the wrong reason shows up here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from pypsrp.client import Client
from pypsrp.complex_objects import PSCredential, PSInvocationState
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.serializer import TaggedValue
from pypsrp.wsman import WSMan

from support.winrm_peer import CredentialValue, Engine, ErrorSpec, Reply, SecureValue, WinRMPeer, make_pki

PASSWORD = "Peer-Passw0rd!"


@pytest.fixture
def users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    path = tmp_path / "ntlm-users"
    path.write_text(f"DOM:alice:{PASSWORD}\n", encoding="utf-8")
    monkeypatch.setenv("NTLM_USER_FILE", str(path))
    return {"alice": PASSWORD}


@pytest.fixture
def peer(engine: Engine, users: dict[str, str]):
    with WinRMPeer(engine, users, max_wait=3) as p:
        yield p


def wsman(peer: WinRMPeer, **kwargs) -> WSMan:
    options = dict(username="DOM\\alice", password=PASSWORD, ssl=False, auth="ntlm", no_proxy=True,
                   operation_timeout=2, read_timeout=10)
    options.update(kwargs)
    return WSMan("127.0.0.1", port=peer.port, **options)


def run(pool: RunspacePool, script: str, **params) -> PowerShell:
    ps = PowerShell(pool)
    ps.add_script(script)
    for name, value in params.items():
        ps.add_parameter(name, value)
    ps.invoke()
    return ps


def test_ntlm_session_is_encrypted_and_kept_alive(peer, engine):
    engine.when("out", Reply(output=["text", 42, True]))
    with RunspacePool(wsman(peer)) as pool:
        results = [run(pool, "out").output for _ in range(3)]
    assert results == [["text", 42, True]] * 3
    assert peer.connections == 1  # NTLM is bound to the TCP connection: one for the whole session
    assert peer.encrypted_requests >= 9  # Create/Receive/Command/.../Delete all multipart/encrypted
    assert len({p.shell_id for p in engine.pipelines}) == 1


def test_plaintext_over_http_is_refused(peer, engine):
    with pytest.raises(WinRMTransportError) as info:
        RunspacePool(wsman(peer, encryption="never")).open()
    assert info.value.code == 400
    assert engine.pipelines == []


def test_basic_over_https_with_a_verified_certificate(engine, users, tmp_path):
    pki = make_pki(tmp_path / "pki")
    with WinRMPeer(engine, users, auth=("basic",), tls=pki.server_context(), cert_der=pki.cert_der) as p:
        conn = WSMan("127.0.0.1", port=p.port, username="alice", password=PASSWORD, ssl=True, auth="basic",
                     cert_validation=str(pki.ca_pem), no_proxy=True)
        with RunspacePool(conn) as pool:
            assert run(pool, "x").state == PSInvocationState.COMPLETED
        bad = WSMan("127.0.0.1", port=p.port, username="alice", password="nope", ssl=True, auth="basic",
                    cert_validation=str(pki.ca_pem), no_proxy=True)
        with pytest.raises(AuthenticationError):
            RunspacePool(bad).open()
        untrusted = WSMan("127.0.0.1", port=p.port, username="alice", password=PASSWORD, ssl=True, auth="basic",
                          no_proxy=True)
        with pytest.raises(requests.exceptions.SSLError):
            RunspacePool(untrusted).open()
    assert [x.script for x in engine.pipelines] == ["x"]


def test_ntlm_over_https_checks_channel_binding(engine, users, tmp_path):
    pki = make_pki(tmp_path / "pki")
    with WinRMPeer(engine, users, tls=pki.server_context(), cert_der=pki.cert_der) as p:
        conn = WSMan("127.0.0.1", port=p.port, username="DOM\\alice", password=PASSWORD, ssl=True, auth="negotiate",
                     cert_validation=str(pki.ca_pem), no_proxy=True)
        with RunspacePool(conn) as pool:
            assert run(pool, "y").state == PSInvocationState.COMPLETED
        assert p.encrypted_requests == 0


def test_wrong_password_is_401(peer, engine):
    with pytest.raises(AuthenticationError):
        RunspacePool(wsman(peer, password="wrong")).open()
    assert peer.auth_failures == 1 and engine.pipelines == []


def test_error_records_match_pwsh_semantics(peer, engine):
    engine.when("soft", Reply(output=["before"], errors=[ErrorSpec("soft fail", "ObjectNotFound", line=2)]))
    engine.when("hard", Reply(terminating=ErrorSpec("hard fail", "InvalidData", line=1)))
    with RunspacePool(wsman(peer)) as pool:
        soft = run(pool, "first\nsoft")
        hard = run(pool, "hard")
    # A non-terminating error: COMPLETED and had_errors False; only the error stream tells.
    assert soft.state == PSInvocationState.COMPLETED and soft.had_errors is False
    assert soft.output == ["before"]
    [record] = soft.streams.error
    assert record.exception.adapted_properties["Message"] == "soft fail"
    assert record.message.startswith("ObjectNotFound") and record.invocation_script_line_number == 2
    assert record.invocation_line == "soft"
    # A terminating error: FAILED, had_errors True, the record carried by the state message.
    assert hard.state == PSInvocationState.FAILED and hard.had_errors is True
    assert hard.streams.error[0].exception.adapted_properties["Message"] == "hard fail"


def test_secure_string_and_credential_are_decrypted_with_the_session_key(peer, engine):
    with RunspacePool(wsman(peer)) as pool:
        pool.exchange_keys()
        run(pool, "param($P, $C)", P=TaggedValue("SS", "s3cr3t"), C=PSCredential(username="u@x", password="pw2"),
            Plain="visible")
    [pipe] = engine.pipelines
    assert pipe.parameters == {"P": SecureValue("s3cr3t"), "C": CredentialValue("u@x", "pw2"), "Plain": "visible"}


def test_large_script_arrives_whole_through_send(peer, engine):
    script = "# big\r\n" + ("Write-Output 'x' # padding padding padding\r\n" * 20000)
    with RunspacePool(wsman(peer)) as pool:
        assert len(script) > pool.connection.max_payload_size  # needs Command + Send fragments
        assert run(pool, script).state == PSInvocationState.COMPLETED
    assert engine.pipelines[0].script == script


def test_hang_then_stop(peer, engine):
    engine.when("wait", Reply(hang=True))
    with RunspacePool(wsman(peer)) as pool:
        ps = PowerShell(pool)
        ps.add_script("wait")
        ps.begin_invoke()
        ps.poll_invoke(timeout=1)  # long-poll ends in OperationTimeout, which pypsrp swallows
        assert ps.state == PSInvocationState.RUNNING
        ps.stop()
        assert run(pool, "after").state == PSInvocationState.COMPLETED
    assert [p.stopped for p in engine.pipelines] == [True, False]


def test_dropped_connection(peer, engine):
    engine.when("drop", Reply(drop=True))
    pool = RunspacePool(wsman(peer))
    pool.open()
    ps = PowerShell(pool)
    ps.add_script("drop")
    with pytest.raises(requests.exceptions.ConnectionError):
        ps.invoke()


def test_deleted_shell(peer, engine):
    engine.when("gone", Reply(delete_shell=True))
    pool = RunspacePool(wsman(peer))
    pool.open()
    ps = PowerShell(pool)
    ps.add_script("gone")
    with pytest.raises(WSManFaultError) as info:
        ps.invoke()
    assert info.value.code == 0x8033805B


def test_revoked_credentials_answer_401(peer, engine):
    engine.when("revoke", Reply(unauthorized=True))
    pool = RunspacePool(wsman(peer))
    pool.open()
    ps = PowerShell(pool)
    ps.add_script("revoke")
    with pytest.raises(AuthenticationError):
        ps.invoke()


def test_client_execute_ps_opens_a_pool_per_call(peer, engine):
    client = Client("127.0.0.1", port=peer.port, username="DOM\\alice", password=PASSWORD, ssl=False, auth="ntlm",
                    no_proxy=True)
    engine.when(lambda p: p.parameters.get("Command") == "one", Reply(output=["1"]))
    out, streams, had_errors = client.execute_ps("one")
    client.execute_ps("two")
    assert (out, had_errors) == ("1", False)
    # What people write first: a new pool per call, the script wrapped in Invoke-Expression.
    assert len({p.shell_id for p in engine.pipelines}) == 2
    assert engine.pipelines[0].commands == [
        ("Invoke-Expression", False, {"Command": "one"}),
        ("Out-String", False, {"Stream": None}),  # a switch
    ]
