"""The benchmark scripts still run against today's API (they time nothing here: speed is theirs to say)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("script,args,expect", [
    ("bench_render.py", ["--runs", "1", "--renders", "3"], "in-process 3 renders"),
    ("bench_gate.py", ["--runs", "1"], "each file read exactly once: True"),
    ("bench_run.py", ["--rounds", "1"], "psbridge / bare"),
])
def test_benchmark_runs(tmp_path: Path, script: str, args: list[str], expect: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert expect in proc.stdout
