"""Per-step cost of `psbridge run` against the loopback WinRM/PSRP peer.

Three ways to send the same 8 step scripts (with the same SecureString/PSCredential
parameters where the step takes them) over NTLM with message encryption on HTTP:

* psbridge: psbridge.remote.run_package, i.e. the executor with its events, run
  record, redaction, step timeout polling and pipeline clean-up;
* bare: a plain pypsrp loop in one runspace (PowerShell(pool).invoke(), then close());
* execute_ps: pypsrp's Client.execute_ps per step (a new runspace pool every call;
  secrets cannot even be passed as SecureStrings that way).

A step's time is the interval between two consecutive step completions in one
session (steps 2..8), so pool opening and key exchange are excluded for the first
two; execute_ps pays its pool per call by design. Medians over all rounds.
The peer runs in a child process so its CPU time does not compete with the client
for the GIL; absolute figures are loopback figures, the ratios are what matters. Run:  .venv/bin/python benchmarks/bench_run.py [--rounds N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from pypsrp.client import Client  # noqa: E402
from pypsrp.powershell import PowerShell, RunspacePool  # noqa: E402
from pypsrp.wsman import WSMan  # noqa: E402

from psbridge.remote.transport import Connection  # noqa: E402
from psbridge.remote.inputs import StepSecrets, step_parameters  # noqa: E402
from psbridge.remote.action import Audited  # noqa: E402
from psbridge.remote.advice import RunSettings  # noqa: E402
from psbridge.remote.context import RemoteContext  # noqa: E402
from psbridge.remote.run import run_package  # noqa: E402
from psbridge.remote.servers import RunOptions  # noqa: E402
from psbridge.remote.gate import GateRequest, prepare  # noqa: E402
from support.winrm_peer import Engine, WinRMPeer  # noqa: E402
from support.winrm_peer.package import make_package  # noqa: E402

USER, PASSWORD = "CONTOSO\\bench", "Bench-Passw0rd!"
SECRETS = StepSecrets(pfx_password="Pfx-Secret-1", o365_user="admin@contoso.com", o365_password="O365-Secret-2")


def intervals(stamps: list[float]) -> list[float]:
    return [b - a for a, b in zip(stamps, stamps[1:])]


def psbridge_round(pkg: Path, conn: Connection) -> list[float]:
    prepared = prepare(GateRequest(pkg, conn.host))
    stamps: list[float] = []

    def emit(event: dict[str, Any]) -> None:
        if event["event"] == "step-end":
            stamps.append(time.perf_counter())

    ctx = RemoteContext(prepared.package, conn, PASSWORD, SECRETS, RunSettings(), emit)
    done = run_package(ctx, RunOptions(prepared.selected, prepared.additional), Audited(pkg.parent / "audit.jsonl", "run"))
    assert done.result.exit_code == 0, done.result.summary
    return intervals(stamps)


def _send(pool: Any, text: str, parameters: dict[str, Any]) -> None:
    ps = PowerShell(pool)
    ps.add_script(text)
    for name, value in parameters.items():
        ps.add_parameter(name, value)
    ps.invoke()
    assert ps.state == 4 and not ps.streams.error
    ps.close()


def bare_round(pkg: Path, port: int) -> list[float]:
    """The same pipelines psbridge sends (steps, and the state probes around each change), by hand."""
    from psbridge.catalogue import BACKOUTS

    prepared = prepare(GateRequest(pkg, "127.0.0.1"))
    selected, probes = prepared.selected, prepared.package.probes
    wsman = WSMan("127.0.0.1", port=port, username=USER, password=PASSWORD, ssl=False, auth="ntlm", no_proxy=True)
    stamps: list[float] = []
    with RunspacePool(wsman) as pool:
        pool.exchange_keys()
        setup = PowerShell(pool)
        setup.add_script("$ErrorActionPreference = 'Stop'")
        setup.invoke()
        for step in selected:
            backout = BACKOUTS.get(step.id) if step.changes_state else None
            for name in backout.captures if backout else ():
                _send(pool, probes[name], {})
            _send(pool, step.text, step_parameters(step, SECRETS))
            for name in backout.captures if backout and backout.script else ():
                _send(pool, probes[name], {})
            stamps.append(time.perf_counter())
    return intervals(stamps)


def execute_ps_round(pkg: Path, port: int) -> list[float]:
    selected = prepare(GateRequest(pkg, "127.0.0.1")).selected
    client = Client("127.0.0.1", port=port, username=USER, password=PASSWORD, ssl=False, auth="ntlm", no_proxy=True)
    times = []
    for step in selected[1:]:
        t0 = time.perf_counter()
        client.execute_ps(step.text)
        times.append(time.perf_counter() - t0)
    return times


def serve_peer(port_out: Any, stop: Any) -> None:
    """Child process: run the peer until told to stop."""
    with WinRMPeer(Engine(), {"bench": PASSWORD}) as peer:
        port_out.send(peer.port)
        stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        users = Path(tmp) / "users"
        users.write_text(f"CONTOSO:bench:{PASSWORD}\n")
        os.environ["NTLM_USER_FILE"] = str(users)
        pkg = make_package(Path(tmp))
        parent, child = multiprocessing.Pipe()
        stop = multiprocessing.Event()
        server = multiprocessing.Process(target=serve_peer, args=(child, stop), daemon=True)
        server.start()
        try:
            port = parent.recv()
            conn = Connection("127.0.0.1", port, "http", "ntlm", USER, None, True, "Microsoft.PowerShell", 30, 20)
            samples: dict[str, list[float]] = {"psbridge": [], "bare": [], "execute_ps": []}
            psbridge_round(pkg, conn), bare_round(pkg, port)  # warm up imports and caches
            for _ in range(args.rounds):  # interleaved so drift hits all three alike
                # per round, the mean time per step: the state probes around a change fall in
                # different intervals for the two loops, so only whole-run means compare fairly
                samples["psbridge"].append(statistics.fmean(psbridge_round(pkg, conn)))
                samples["bare"].append(statistics.fmean(bare_round(pkg, port)))
                samples["execute_ps"].append(statistics.fmean(execute_ps_round(pkg, port)))
        finally:
            stop.set()
            server.join(timeout=10)
    med = {k: statistics.median(v) * 1000 for k, v in samples.items()}
    print(f"median over {args.rounds} rounds of the mean time per step (7 step intervals, with the state probes "
          "around the changes), NTLM + message encryption over HTTP, loopback")
    for name in ("bare", "psbridge", "execute_ps"):
        print(f"  {name:<11} {med[name]:7.2f} ms")
    print(f"  psbridge / bare        {med['psbridge'] / med['bare']:.3f}x  (target <= 1.10x)")
    print(f"  execute_ps / psbridge  {med['execute_ps'] / med['psbridge']:.2f}x")


if __name__ == "__main__":
    main()
