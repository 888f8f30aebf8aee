"""Whole-process `render`, `check` and `run` timings: this checkout against a base commit, built in the same run.

Run:  .venv/bin/python benchmarks/bench_commands.py [--base 04d24de] [--rounds 7] [--fail-over 1.10]

Both sides are built here: the base commit from `git archive REV`, the current side from the
checkout's working tree (tracked and untracked, not ignored, files), each `pip install`ed
(non-editable) into a fresh venv of its own; the installed `psbridge` console scripts are then
timed as whole processes (interpreter start, imports, the work, exit). The base commit may still
have the import name `generator`: only its console script is used.

* render: `psbridge render --example --out DIR --force` (the article's ACS example, the same on every
  version; `init` writes the app trust since 0.3.0, which needs Microsoft's MSAL .nupkg to render) and
  `psbridge render PARAMS` of a farm + renewal variant (additional servers, `replaces`).
* check / run: each side renders the loopback package with its own psbridge; one loopback WinRM
  peer of the test suite (NTLM with message encryption over HTTP) answers the probes as a fresh
  server, so `check` reads every probe and exits 5 and `run --yes` sends all 8 steps and exits 0.

Jinja cache: warm for both sides. Each side has its own XDG_CACHE_HOME, warmed (with the OS file
cache) by one untimed run of every command before timing. Each round times every command once per
side, the side that goes first alternating by round so that machine noise hits both alike.
Figures are medians over the rounds; ratio = current / base, target <= 1.10. Exit 0 whatever the
ratios, unless --fail-over X is given (then 1 when a ratio exceeds X); 1 also when a command does
not exit as expected (the timing would mean nothing); 2 for a bad --base.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASE = "04d24de"
TARGET = 1.10

USER, WINRM_PASSWORD = "CONTOSO\\bench", "Bench-Passw0rd!"
#: Secrets reach psbridge through its environment variables only, never argv.
SECRET_ENV = {"PSBRIDGE_WINRM_PASSWORD": WINRM_PASSWORD, "PSBRIDGE_O365_PASSWORD": "O365-Bench-Secret-2",
              "PSBRIDGE_PFX_PASSWORD": "Pfx-Bench-Secret-1"}

#: The example with the loopback peer as its CRM server: `run` and `check` connect only to the package's server.
LOOPBACK_TOML = """\
name = "loopback"
profile = "msonline"
[certificate]
pfx_path = 'C:\\certs\\s2s.pfx'
cer_path = 'C:\\certs\\s2s.cer'
service_account = 'contoso\\CRMWebApplicationService'
[crm]
root_domain = "*.contoso.com"
server = "127.0.0.1"
[sharepoint]
sites = ["https://contoso.sharepoint.com/sites/salesteam"]
"""

#: A renewal (`replaces`) on a farm (two additional Web Application servers), with a change ticket.
FARM_RENEWAL_TOML = """\
name = "fabrikam"
profile = "msonline"
[certificate]
pfx_path = 'C:\\certs\\s2s-2027.pfx'
cer_path = 'C:\\certs\\s2s-2027.cer'
service_account = 'fabrikam\\CRMWebApplicationService'
replaces = "0123456789ABCDEF0123456789ABCDEF01234567"
[crm]
root_domain = "*.fabrikam.com"
server = "crm01.fabrikam.local"
additional_servers = ["crmfe2.fabrikam.local", "crmfe3.fabrikam.local"]
[sharepoint]
sites = ["https://fabrikam.sharepoint.com/sites/salesteam", "https://fabrikam.sharepoint.com/sites/service"]
[change]
ticket = "CHG-2027"
window = "2027-01-09 20:00-22:00 CET"
"""


class BenchError(Exception):
    """The benchmark cannot produce a meaningful figure (bad input, failed build, unexpected exit)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Side:
    """One built psbridge: its console script and the environment (own cache, own audit log) it runs in."""

    name: str
    work: Path
    script: Path = field(init=False)
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.script = self.work / "venv" / "bin" / "psbridge"
        base = {k: v for k, v in os.environ.items() if not k.startswith("PSBRIDGE_")}
        self.env = {**base, **SECRET_ENV, "XDG_CACHE_HOME": str(self.work / "cache"),
                    "PSBRIDGE_AUDIT_LOG": str(self.work / "audit.jsonl")}


@dataclass
class Command:
    """A timed command: argv after `psbridge` ({pkg}, {out} and {port} filled per side) and its expected exit."""

    label: str
    argv: list[str]
    expect: int


def _git(*args: str) -> bytes:
    """`git -C ROOT ARGS` (the benchmark compares commits of this checkout)."""
    proc = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True)
    if proc.returncode != 0:
        raise BenchError(f"git {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}", 2)
    return proc.stdout


def export_base(rev: str, dest: Path) -> str:
    """The tree of commit REV in DEST (git archive: no worktree to clean up); its short hash."""
    short = _git("rev-parse", "--short", f"{rev}^{{commit}}").decode().strip()
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=_git("archive", "--format=tar", short), check=True)
    return short


def export_current(dest: Path) -> None:
    """The checkout's working tree as it is (uncommitted edits included), copied so pip's build/ stays out of it."""
    names = [n for n in _git("ls-files", "-z", "-co", "--exclude-standard").decode().split("\0") if n]
    for name in names:
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())


def build(side: Side, source: Path) -> None:
    """A fresh venv with SOURCE installed (non-editable; pip may reuse its cache)."""
    venv = side.work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    proc = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(source)], capture_output=True,
                          text=True)
    if proc.returncode != 0 or not side.script.is_file():
        raise BenchError(f"{side.name}: pip install {source} failed: {proc.stderr.strip()[-1000:]}")


def psbridge(side: Side, argv: list[str], cwd: Path) -> tuple[int, str, float]:
    """Run SIDE's console script as a whole process: exit code, stderr and wall time in seconds."""
    start = time.perf_counter()
    proc = subprocess.run([str(side.script), *argv], cwd=cwd, env=side.env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stderr, time.perf_counter() - start


def timed(side: Side, command: Command, values: dict[str, str]) -> float:
    """One run of COMMAND on SIDE; refuses an unexpected exit code (the timing would mean nothing)."""
    argv = [a.format(**values) for a in command.argv]
    code, err, seconds = psbridge(side, argv, side.work)
    if code != command.expect:
        tail = " | ".join(err.strip().splitlines()[-3:])
        raise BenchError(f"{side.name} `psbridge {command.label}` exited {code}, expected {command.expect}: {tail}")
    return seconds


def prepare_inputs(sides: list[Side], work: Path) -> None:
    """The parameters files, and each side's loopback package by its own render."""
    (work / "farm-renewal.toml").write_text(FARM_RENEWAL_TOML, encoding="utf-8")
    (work / "loopback.toml").write_text(LOOPBACK_TOML, encoding="utf-8")
    for side in sides:
        render = Command("render loopback.toml", ["render", str(work / "loopback.toml"), "--out",
                                                  str(side.work / "packages"), "--force"], 0)
        timed(side, render, {})


def commands(work: Path) -> list[Command]:
    """What is timed: the two renders, then check and run against the peer ({port} filled in later)."""
    peer = ["--host", "127.0.0.1", "--port", "{port}", "--transport", "http", "--auth", "ntlm",
            "--username", USER, "--o365-user", "admin@contoso.onmicrosoft.com"]
    return [
        Command("render example", ["render", "--example", "--out", "{out}", "--force"], 0),
        Command("render farm-renewal", ["render", str(work / "farm-renewal.toml"), "--out", "{out}", "--force"], 0),
        Command("check", ["check", "{pkg}", *peer], 5),
        Command("run --yes", ["run", "{pkg}", "--yes", *peer], 0),
    ]


def _support_dirs() -> list[str]:
    """Where the test suite keeps the peer and the probe states: tests/support (after the move), else tests."""
    return [str(d) for d in (ROOT / "tests" / "support", ROOT / "tests") if d.is_dir()]


@contextmanager
def loopback_peer(work: Path) -> Iterator[int]:
    """The test suite's WinRM peer, answering the probes as a fresh server (check: exit 5); yields its port.

    It runs on a thread of this process, which only waits for the timed child processes meanwhile.
    """
    sys.path[:0] = _support_dirs()
    from probe_states import STATES
    from winrm_peer import Engine, Reply, WinRMPeer

    users = work / "ntlm-users"
    users.write_text(f"CONTOSO:bench:{WINRM_PASSWORD}\n", encoding="utf-8")
    os.environ["NTLM_USER_FILE"] = str(users)
    engine = Engine()
    for name, answer in STATES["fresh server"].items():
        engine.when(f"# psbridge probe: {name} ", Reply(output=[json.dumps(answer)]))
    with WinRMPeer(engine, {"bench": WINRM_PASSWORD}) as peer:
        yield peer.port


def measure(sides: list[Side], work: Path, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per command and side: one untimed warm-up each, then ROUNDS rounds alternating which side goes first."""
    samples: dict[str, dict[str, list[float]]] = {}
    with loopback_peer(work) as port:
        values = {s.name: {"port": str(port), "pkg": str(s.work / "packages" / "loopback"),
                           "out": str(s.work / "rendered")} for s in sides}
        todo = commands(work)
        for command in todo:
            for side in sides:
                timed(side, command, values[side.name])  # warms the Jinja cache, pyc and OS file caches
        for i in range(rounds):
            order = sides if i % 2 == 0 else sides[::-1]
            for command in todo:
                for side in order:
                    seconds = timed(side, command, values[side.name])
                    samples.setdefault(command.label, {}).setdefault(side.name, []).append(seconds)
    return samples


def table(samples: dict[str, dict[str, list[float]]], limit: float) -> tuple[list[str], bool]:
    """The printed rows (medians in ms, ratio current/base, verdict) and whether any ratio exceeds LIMIT."""
    rows = [f"{'command':<22}{'base ms':>10}{'current ms':>12}{'ratio':>8}  verdict"]
    over = False
    for label, by_side in samples.items():
        base, current = (statistics.median(by_side[n]) * 1000 for n in ("base", "current"))
        ratio = round(current / base, 3)  # judged as printed: 1.100 is within 1.10
        over |= ratio > limit
        verdict = "ok" if ratio <= limit else f"over {limit:.2f}"
        rows.append(f"{label:<22}{base:>10.1f}{current:>12.1f}{ratio:>8.3f}  {verdict}")
    return rows, over


def run(args: argparse.Namespace) -> int:
    """Build both sides, time them, print the table; the exit code (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="psbridge-bench-") as tmp:
        work = Path(tmp)
        base_src, current_src = work / "src-base", work / "src-current"
        short = export_base(args.base, base_src)
        export_current(current_src)
        sides = [Side("base", work / "base"), Side("current", work / "current")]
        with ThreadPoolExecutor(2) as pool:  # the two pip installs are independent: build them side by side
            list(pool.map(build, sides, [base_src, current_src]))
        prepare_inputs(sides, work)
        samples = measure(sides, work, args.rounds)
    limit = args.fail_over if args.fail_over is not None else TARGET
    rows, over = table(samples, limit)
    print(f"psbridge whole-process timings: base {short} ({args.base}) vs current (working tree of {ROOT})")
    print(f"median of {args.rounds} round(s), order alternating per round; Jinja cache warm (own XDG_CACHE_HOME "
          "per side, one untimed warm-up run of every command); check/run: loopback peer, NTLM over HTTP")
    print("\n".join(rows))
    return 1 if args.fail_over is not None and over else 0


def main() -> None:
    """Parse the options and run; a BenchError is one line on stderr, not a traceback."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=DEFAULT_BASE, help=f"commit to compare against (default {DEFAULT_BASE})")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7; 1 for a smoke run)")
    parser.add_argument("--fail-over", type=float, default=None, metavar="RATIO",
                        help="exit 1 when a ratio current/base exceeds RATIO (e.g. 1.10)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    try:
        sys.exit(run(args))
    except BenchError as exc:
        print(f"bench_commands: {exc}", file=sys.stderr)
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
