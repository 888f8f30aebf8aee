"""Running the real `psbridge` command from a test, and the arguments that point it at the loopback peer."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .lab import O365_USER, USER
from .winrm_peer import WinRMPeer

#: The checkout the tests run from (README.md, benchmarks/, output/).
CHECKOUT = Path(__file__).resolve().parent.parent.parent


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
