"""Shared fixtures and hooks only: helper functions and constants live in the `support` package (tests/support/)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from support.cli import CHECKOUT, Result, call_psbridge, run_psbridge
from support.lab import FARM, O365_PASSWORD, PFX_PASSWORD, WINRM_PASSWORD
from support.winrm_peer import Engine, WinRMPeer, make_pki
from support.winrm_peer.package import make_package

#: Jinja's compiled-template cache would go to ~/.cache: tests keep it in a folder of their own.
_CACHE = __import__("tempfile").mkdtemp(prefix="psbridge-test-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config._psbridge_output = _snapshot(CHECKOUT / "output")  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The suite never writes outside its temporary folders: the checkout's output/ is as it was."""
    import shutil

    shutil.rmtree(_CACHE, ignore_errors=True)
    before = getattr(session.config, "_psbridge_output", None)
    after = _snapshot(CHECKOUT / "output")
    if before is not None and after != before:
        changed = sorted(set(after) ^ set(before) | {k for k in after if before.get(k) != after[k]})
        print(f"\nFAILED: the test suite wrote into the checkout's output/: {', '.join(changed)}")
        session.exitstatus = 1


@pytest.fixture
def psbridge(tmp_path: Path) -> Callable[..., Result]:
    """`psbridge(*args)` runs the command in-process, in the test's temporary folder.

    Pass `subprocess=True` to run it as a separate `python -m psbridge` process.
    """

    def run(*args: str | os.PathLike[str], env: dict[str, str] | None = None, input: str | None = None,
            cwd: Path | None = None, subprocess: bool = False) -> Result:
        runner = run_psbridge if subprocess else call_psbridge
        return runner(*args, cwd=cwd or tmp_path, env=env, input=input)

    return run


# --------------------------------------------------------------------------- packages, keys, the WinRM peer


@pytest.fixture(autouse=True)
def _audit_log_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's audit log lives in its temporary folder, never in the user's or the checkout's."""
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("PSBRIDGE_AUDIT_LOG", str(log))
    return log


@pytest.fixture(autouse=True)
def _no_ca_bundle_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (Debian images set them) are not the test's:
    psbridge warns of them over https, and a test that wants one sets it itself."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    """The contoso package (profile msonline), rendered by psbridge into tmp/output/contoso."""
    return make_package(tmp_path / "output")


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Approver keys made by `psbridge keygen`: jane and bob are trusted, mallory is not."""
    root = tmp_path_factory.mktemp("keys")
    for who, ident in (("jane", "Jane Doe <jane@contoso.com>"), ("bob", "Bob Roe <bob@contoso.com>"),
                       ("mallory", "Mallory <mallory@evil.example>")):
        result = run_psbridge("keygen", "--out", root / who, "--name", ident, "--no-passphrase",
                              env={"PSBRIDGE_AUDIT_LOG": str(root / "audit.jsonl")})
        assert result.exit_code == 0, result.stderr
    trusted = root / "trusted"
    trusted.mkdir()
    for who in ("jane", "bob"):
        (trusted / f"{who}.pub.json").write_bytes(next((root / who).glob("*.pub.json")).read_bytes())
    return {
        "jane": root / "jane" / "jane-doe.key", "bob": root / "bob" / "bob-roe.key",
        "mallory": root / "mallory" / "mallory.key", "trusted": trusted,
    }


@pytest.fixture
def ntlm_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    users = tmp_path / "ntlm-users"
    users.write_text(f"CONTOSO:crmadmin:{WINRM_PASSWORD}\n", encoding="utf-8")
    monkeypatch.setenv("NTLM_USER_FILE", str(users))
    return {"crmadmin": WINRM_PASSWORD}


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSBRIDGE_WINRM_PASSWORD", WINRM_PASSWORD)
    monkeypatch.setenv("PSBRIDGE_PFX_PASSWORD", PFX_PASSWORD)
    monkeypatch.setenv("PSBRIDGE_O365_PASSWORD", O365_PASSWORD)


@pytest.fixture
def engine() -> Engine:
    return Engine()


@pytest.fixture
def http_peer(engine: Engine, ntlm_users: dict[str, str]):
    with WinRMPeer(engine, ntlm_users, max_wait=5) as peer:
        yield peer


@pytest.fixture
def pki(tmp_path: Path):
    return make_pki(tmp_path / "pki")


@pytest.fixture
def farm(http_peer: WinRMPeer, ntlm_users: dict[str, str]):
    """One peer (and engine) per additional server (FARM), on the main peer's port."""
    peers = []
    for address in FARM:
        farm_engine = Engine()
        peer = WinRMPeer(farm_engine, ntlm_users, max_wait=5, address=(address, http_peer.port)).start()
        peers.append((peer, farm_engine))
    yield peers
    for peer, _ in peers:
        peer.stop()


@pytest.fixture
def https_peer(engine: Engine, ntlm_users: dict[str, str], pki):
    with WinRMPeer(engine, ntlm_users, tls=pki.server_context(), cert_der=pki.cert_der, max_wait=5) as peer:
        yield peer


@pytest.fixture(scope="session")
def signed_msal(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A test MSAL 4.11.0 .nupkg whose DLL a test CA signed (tests/support/msal.py)."""
    from support.msal import make_signed_msal

    return make_signed_msal(tmp_path_factory.mktemp("msal"))


@pytest.fixture
def msal_package(signed_msal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The test .nupkg beside the test's parameters files (where `init`'s `msal_package` points), its test
    CA trusted for this test only: an app-trust file that `init` wrote validates and renders."""
    from support.msal import trust_test_root, write_nupkg

    trust_test_root(monkeypatch, signed_msal)
    write_nupkg(tmp_path / "parameters.toml", signed_msal)
    return signed_msal
