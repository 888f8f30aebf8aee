"""The benchmark scripts still run against today's API (they time nothing here: speed is theirs to say)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _env(tmp_path: Path) -> dict[str, str]:
    """A bare environment whose home, caches and temporary files are all in the test's folder."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "TMPDIR": str(tmp_path)}


@pytest.mark.parametrize("script,args,expect", [
    ("bench_render.py", ["--runs", "1", "--renders", "3"], "in-process 3 renders"),
    ("bench_gate.py", ["--runs", "1"], "each file read exactly once: True"),
    ("bench_run.py", ["--rounds", "1"], "psbridge / bare"),
])
def test_benchmark_runs(tmp_path: Path, script: str, args: list[str], expect: str) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert expect in proc.stdout


@pytest.mark.slow
def test_bench_commands_builds_both_sides_and_prints_the_table(tmp_path: Path) -> None:
    """Two fresh venvs (base commit and this checkout), one round of every command, the table; exit 0."""
    proc = subprocess.run([sys.executable, str(BENCH / "bench_commands.py"), "--rounds", "1"], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path, env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("psbridge whole-process timings: base 04d24de (04d24de) vs current")
    header = lines.index(next(line for line in lines if line.startswith("command ")))
    assert lines[header].split() == ["command", "base", "ms", "current", "ms", "ratio", "verdict"]
    row = re.compile(r"^(.+?)\s+(\d+\.\d)\s+(\d+\.\d)\s+(\d+\.\d{3})\s+(ok|over 1\.10)$")
    rows = [row.match(line) for line in lines[header + 1:]]
    assert all(rows), lines[header + 1:]
    assert [m.group(1) for m in rows] == ["render example", "render farm-renewal", "check", "run --yes"]  # type: ignore[union-attr]
    for m in rows:
        base, current, ratio = (float(m.group(i)) for i in (2, 3, 4))  # type: ignore[union-attr]
        assert base > 0 and current > 0 and ratio == pytest.approx(current / base, abs=0.002)
    assert not list(tmp_path.glob("psbridge-bench-*")), "the work folder (both venvs) is removed at the end"


def _bench_commands() -> ModuleType:
    """benchmarks/bench_commands.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_commands", BENCH / "bench_commands.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bench_commands_table_judges_each_ratio_against_the_limit() -> None:
    table = _bench_commands().table
    samples = {"check": {"base": [0.2, 0.1, 0.3], "current": [0.22, 0.5, 0.1]},  # medians 200 / 220 ms
               "run --yes": {"base": [0.4], "current": [0.44]}}
    rows, over = table(samples, 1.10)
    assert rows[1].split() == ["check", "200.0", "220.0", "1.100", "ok"] and not over
    rows, over = table(samples, 1.05)
    assert rows[1].split() == ["check", "200.0", "220.0", "1.100", "over", "1.05"] and over
    assert rows[2].split()[-3:] == ["1.100", "over", "1.05"]
