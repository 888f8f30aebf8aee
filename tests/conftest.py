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


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def run_psbridge(*args: str | os.PathLike[str], cwd: Path | None = None, env: dict[str, str] | None = None,
                 input: str | None = None) -> Result:
    """Run `python -m generator ARGS` in a child process, as a user would run `psbridge`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PSBRIDGE_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "generator", *map(str, args)],
        cwd=cwd, env=full_env, input=input if input is not None else "", capture_output=True, text=True, timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def call_psbridge(*args: str | os.PathLike[str], cwd: Path, env: dict[str, str] | None = None,
                  input: str | None = None) -> Result:
    """Call the console entry point `generator.cli.main(argv)` in this process.

    Same code path as the installed command (argument parsing, exit-code mapping, error
    lines), without the cost of a new interpreter per call.
    """
    from generator.cli import main

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

    Pass `subprocess=True` to run it as a separate `python -m generator` process.
    """

    def run(*args: str | os.PathLike[str], env: dict[str, str] | None = None, input: str | None = None,
            cwd: Path | None = None, subprocess: bool = False) -> Result:
        runner = run_psbridge if subprocess else call_psbridge
        return runner(*args, cwd=cwd or tmp_path, env=env, input=input)

    return run
