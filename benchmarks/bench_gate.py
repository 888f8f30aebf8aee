"""What the gate of `run --require-approval` costs, and proof that it reads each file once.

Renders the contoso package, approves it with a fresh key, then calls the same library
function `psbridge run --require-approval` calls before it asks for any secret
(`runner.prepare` with an ApprovalPolicy). Counts, per package file, how often its bytes
were read from disk and how often those bytes were hashed, and times the gate against
`package.read_package` alone (the floor: reading and hashing the folder once).

    python benchmarks/bench_gate.py --runs 31
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from psbridge import files as files_module  # noqa: E402
from psbridge import package as package_module  # noqa: E402
from psbridge.approvals import ApprovalPolicy  # noqa: E402
from psbridge.cli import main as psbridge  # noqa: E402
from psbridge.remote.gate import GateRequest, prepare  # noqa: E402
from support.winrm_peer.package import make_package  # noqa: E402


def setup(tmp: Path) -> tuple[Path, ApprovalPolicy]:
    """An approved package for server 127.0.0.1 and the policy that accepts it."""
    os.environ["PSBRIDGE_AUDIT_LOG"] = str(tmp / "audit.jsonl")
    os.environ["PSBRIDGE_KEY_PASSPHRASE"] = "bench-passphrase-1"
    pkg = make_package(tmp / "out", server="127.0.0.1")
    assert psbridge(["keygen", "--out", str(tmp / "keys"), "--name", "Bench <bench@contoso.com>"]) == 0
    key = next((tmp / "keys").glob("*.key"))
    assert psbridge(["approve", str(pkg), "--key", str(key)]) == 0
    trusted = tmp / "trusted"
    trusted.mkdir()
    for pub in (tmp / "keys").glob("*.pub.json"):
        (trusted / pub.name).write_bytes(pub.read_bytes())
    return pkg, ApprovalPolicy(trusted, 1)


def count_reads_and_hashes(pkg: Path, policy: ApprovalPolicy) -> tuple[dict[str, int], dict[str, int]]:
    """(package file -> reads from disk, package file -> hashes of the bytes read) during one gate."""
    reads: collections.Counter[str] = collections.Counter()
    hashed: collections.Counter[int] = collections.Counter()
    real_read, real_hash = package_module.read_regular, files_module.sha256_hex

    def read(path: Path, label: str, **options: object) -> bytes:
        reads[Path(os.path.relpath(path, pkg)).as_posix()] += 1
        return real_read(path, label, **options)  # type: ignore[arg-type]

    def sha(data: bytes) -> str:
        hashed[id(data)] += 1
        return real_hash(data)

    # package.read_files reads each file; files.listing_of hashes each file's bytes.
    package_module.read_regular, files_module.sha256_hex = read, sha  # type: ignore[assignment]
    try:
        prepared = prepare(GateRequest(pkg, None, policy=policy))
    finally:
        package_module.read_regular, files_module.sha256_hex = real_read, real_hash  # type: ignore[assignment]
    hashes = {rel: hashed[id(data)] for rel, data in prepared.package.files.items()}
    return dict(reads), hashes


def median_ms(fn, runs: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=31)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pkg, policy = setup(Path(tmp))
        reads, hashes = count_reads_and_hashes(pkg, policy)
        print(f"package files: {len(reads)}")
        print(f"  reads from disk per file:   {sorted(set(reads.values()))}  (each file read exactly once: "
              f"{set(reads.values()) == {1}})")
        print(f"  hashes of the bytes read:   {sorted(set(hashes.values()))}  (each hashed exactly once: "
              f"{set(hashes.values()) == {1}})")
        prepare(GateRequest(pkg, None, policy=policy))  # warm: templates compiled, modules imported
        floor = median_ms(lambda: package_module.read_package(pkg).digest, args.runs)
        gate = median_ms(lambda: prepare(GateRequest(pkg, None, policy=policy)), args.runs)
    print(f"median of {args.runs}: read+hash the folder {floor:.2f} ms; the whole gate (read, catalogue check, "
          f"re-render, approvals, host) {gate:.2f} ms: {gate / floor:.1f}x")


if __name__ == "__main__":
    main()
