"""Render benchmark: cold `psbridge render --example` against the import floor, and 1,000 in-process renders.

Run:  python benchmarks/bench_render.py [--runs 21] [--renders 1000]

The floor is `python -c "import click, jinja2, pydantic"`, measured in the same run,
interleaved with the CLI runs so that machine noise hits both alike. Figures are medians;
the ratio is what to compare across machines. Targets (issue 2): CLI <= 1.5x the floor;
1,000 renders <= 2 s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _time(cmd: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def cold_cli(runs: int) -> tuple[float, float, float]:
    """Medians of: the CLI, the floor, and the floor plus psbridge's pydantic model module.

    The third figure splits the gap: `import pydantic` is lazy and builds no model, while
    validating parameters needs pydantic's model machinery and builds the models.
    """
    exe = shutil.which("psbridge") or ""
    cli = [exe] if exe else [sys.executable, "-m", "psbridge"]
    floor = [sys.executable, "-c", "import click, jinja2, pydantic"]
    models = [sys.executable, "-c", "import click, jinja2, pydantic; import psbridge.parameters"]
    cli_times, floor_times, model_times = [], [], []
    with tempfile.TemporaryDirectory() as work:
        render = cli + ["render", "--example", "--force", "--audit-log", str(Path(work) / "audit.jsonl")]
        _time(render, work)  # warm the OS file cache and the template cache once
        for _ in range(runs):
            floor_times.append(_time(floor, work))
            model_times.append(_time(models, work))
            cli_times.append(_time(render, work))
    return statistics.median(cli_times), statistics.median(floor_times), statistics.median(model_times)


def in_process(renders: int) -> tuple[float, float]:
    from psbridge.parameters import example
    from psbridge.render import render_package
    from psbridge.writer import write_package

    params = example()
    render_package(params)  # compile the templates once, as a long-running caller would
    start = time.perf_counter()
    for _ in range(renders):
        render_package(params)
    total = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as out:
        package = render_package(params)
        start = time.perf_counter()
        for i in range(100):
            write_package(package, Path(out), force=True)
        write_each = (time.perf_counter() - start) / 100
    return total, write_each


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--renders", type=int, default=1000)
    args = ap.parse_args()
    cli, floor, models = cold_cli(args.runs)
    print(f"cold CLI  psbridge render --example: median {cli * 1000:7.1f} ms")
    print(f"floor     import click, jinja2, pydantic: median {floor * 1000:7.1f} ms")
    print(f"floor + psbridge.parameters (pydantic models): median {models * 1000:7.1f} ms ({models / floor:.2f}x)")
    print(f"ratio     {cli / floor:.2f}x the floor (target <= 1.50x)   [{args.runs} interleaved runs each]")
    total, write_each = in_process(args.renders)
    print(f"in-process {args.renders} renders: {total:.3f} s ({total / args.renders * 1000:.2f} ms each; target <= 2 s)")
    print(f"writing one package to disk: {write_each * 1000:.2f} ms")


if __name__ == "__main__":
    main()
