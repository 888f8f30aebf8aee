"""Shared fixtures: run the real `psbridge` command and parse PowerShell with a real grammar."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
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


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def run_psbridge(*args: str | os.PathLike[str], cwd: Path | None = None, env: dict[str, str] | None = None,
                 input: str | None = None) -> Result:
    """Run `python -m psbridge ARGS` in a child process, as a user would run `psbridge`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PSBRIDGE_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "psbridge", *map(str, args)],
        cwd=cwd, env=full_env, input=input if input is not None else "", capture_output=True, text=True, timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def call_psbridge(*args: str | os.PathLike[str], cwd: Path, env: dict[str, str] | None = None,
                  input: str | None = None) -> Result:
    """Call the console entry point `psbridge.cli.main(argv)` in this process.

    Same code path as the installed command (argument parsing, exit-code mapping, error
    lines), without the cost of a new interpreter per call.
    """
    from psbridge.cli import main

    saved_env = dict(os.environ)
    saved = (sys.stdin, sys.stdout, sys.stderr, os.getcwd())
    out, err = io.StringIO(), io.StringIO()
    try:
        for key in [k for k in os.environ if k.startswith("PSBRIDGE_")]:
            del os.environ[key]
        os.environ.update(env or {})
        os.chdir(cwd)
        sys.stdin, sys.stdout, sys.stderr = io.StringIO(input or ""), out, err
        code = main([str(a) for a in args])
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved[:3]
        os.chdir(saved[3])
        os.environ.clear()
        os.environ.update(saved_env)
    return Result(code, out.getvalue(), err.getvalue())


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

sys.path.insert(0, str(Path(__file__).parent))  # winrm_peer, certfactory

from winrm_peer import Engine, WinRMPeer, make_pki  # noqa: E402
from winrm_peer.package import make_package  # noqa: E402

USER = "CONTOSO\\crmadmin"
WINRM_PASSWORD = "Winrm-P@ss w0rd;$x`'\"1"
PFX_PASSWORD = "Pfx$ecret`; 'quoted' \"dq\" 2"
O365_USER = "admin@contoso.onmicrosoft.com"
O365_PASSWORD = "O365-Pa55!word<&>"
SECRETS = (WINRM_PASSWORD, PFX_PASSWORD, O365_PASSWORD)


@pytest.fixture(autouse=True)
def _audit_log_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's audit log lives in its temporary folder, never in the user's or the checkout's."""
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("PSBRIDGE_AUDIT_LOG", str(log))
    return log


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


#: The additional servers of a farm in the tests: each its own loopback peer on the main peer's port.
FARM = ["127.0.0.2", "127.0.0.3"]


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


def assert_no_secrets(*blobs: bytes | str) -> None:
    """None of the test secrets, not even JSON-escaped, in any of `blobs`."""
    import json

    for blob in blobs:
        data = blob.encode("utf-8") if isinstance(blob, str) else blob
        for secret in SECRETS:
            assert secret.encode("utf-8") not in data
            assert json.dumps(secret)[1:-1].encode("utf-8") not in data


# --------------------------------------------------------------------------- check against the peer

#: The certificate the check tests' packages record (thumbprint as in tests/probe_states.py).
CHECK_THUMB = "A" * 40


def write_check_package(root: Path, profile: str = "msonline", approved: str | None = CHECK_THUMB,
                        not_after: str = "2036-01-01T00:00:00Z") -> Path:
    """The example package for the loopback server, with a local certificate's facts (unless approved=None)."""
    import copy

    from psbridge.parameters import EXAMPLE, parse_parameters
    from psbridge.render import render_package
    from psbridge.writer import write_package

    data = copy.deepcopy(EXAMPLE)
    data["profile"] = profile
    data["crm"]["server"] = "127.0.0.1"  # the loopback peer: run and check connect to the approved server
    facts = {"source": "certs/s2s.pfx", "subject": "CN=crm.contoso.com", "thumbprint": approved, "sha256": "0" * 64,
             "serial": "01", "issuer": "CN=crm.contoso.com", "not_before": "2026-01-01T00:00:00Z",
             "not_after": not_after, "self_signed": True, "warnings": []}
    return write_package(render_package(parse_parameters(data), facts if approved else None), root / "out")


def answer_probes(engine: Engine, answers: dict) -> None:  # type: ignore[type-arg]
    """Make the peer answer each probe script with its JSON (None: leave the default empty answer)."""
    import json

    from winrm_peer import Reply

    for name, answer in answers.items():
        if answer is not None:
            engine.when(f"# psbridge probe: {name} ", Reply(output=[json.dumps(answer)]))


def _peer_options(peer: WinRMPeer) -> list[str]:
    """The loopback peer over HTTP with NTLM (message encryption), as the test users."""
    return ["--host", "127.0.0.1", "--port", str(peer.port), "--transport", "http",
            "--auth", "ntlm", "--username", USER, "--o365-user", O365_USER]


def check_args(pkg: Path, peer: WinRMPeer, *extra: str) -> list[str]:
    """`psbridge check` against the loopback peer."""
    return ["check", str(pkg), *_peer_options(peer), *extra]


def run_args(pkg: Path, peer: WinRMPeer, *extra: str) -> list[str]:
    """`psbridge run --yes` against the loopback peer."""
    return ["run", str(pkg), "--yes", *_peer_options(peer), *extra]


def review_section(review: str, title: str) -> list:  # type: ignore[type-arg]
    """REVIEW.md's block nodes after the level-2 heading `title`, up to the next one (markdown-it)."""
    from markdown_it import MarkdownIt
    from markdown_it.tree import SyntaxTreeNode

    nodes = SyntaxTreeNode(MarkdownIt("commonmark").enable("table").parse(review)).children
    start = next(i for i, n in enumerate(nodes) if n.type == "heading" and n.tag == "h2"
                 and n.children[0].content == title)
    out = []
    for node in nodes[start + 1:]:
        if node.type == "heading" and node.tag == "h2":
            break
        out.append(node)
    return out

