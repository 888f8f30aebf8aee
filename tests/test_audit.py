"""The hash-chained audit log: format, tamper evidence and concurrent writers.

Tampering is checked through the real `psbridge audit verify`, which must name the first
broken line; concurrency uses two real processes appending at once.
"""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from psbridge import audit
from psbridge.errors import RuntimeFailure

LINES = 6


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """A log with LINES good lines, as approve/verify would leave it."""
    path = tmp_path / "audit.jsonl"
    for n in range(LINES):
        audit.append(path, audit.Head("verify", "contoso", f"{n:064x}", None, "verified"), attempt=n)
    return path


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def broken_line(psbridge, path: Path) -> int:
    """Run `psbridge audit verify` and return the line number it reports as broken."""
    result = psbridge("audit", "verify", path)
    assert result.exit_code == 1, result.stdout + result.stderr
    marker = f"{path}: line "
    assert marker in result.stderr, result.stderr
    return int(result.stderr.split(marker, 1)[1].split(":", 1)[0])


def test_format_genesis_chain_and_mode(log: Path) -> None:
    raw = lines_of(log)
    entries = [json.loads(line) for line in raw]
    assert list(entries[0]) == list(audit.FIELDS)
    assert entries[0]["prev"] == "0" * 64
    for before, entry in zip(raw, entries[1:]):
        assert entry["prev"] == hashlib.sha256(before.rstrip(b"\n")).hexdigest()
    first = dict(entries[0])
    claimed = first.pop("sha256")
    assert claimed == hashlib.sha256(audit.canonical(first)).hexdigest()
    assert entries[2]["details"] == {"attempt": 2} and entries[2]["action"] == "verify"
    assert entries[0]["time"].endswith("Z") and entries[0]["actor"]
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_audit_verify_counts_good_lines(psbridge, log: Path) -> None:
    result = psbridge("audit", "verify", log)
    assert result.exit_code == 0, result.stderr
    head = hashlib.sha256(lines_of(log)[-1].rstrip(b"\n")).hexdigest()
    assert f"{LINES} good line(s); head {head}" in result.stdout


def test_audit_verify_default_path_and_missing_file(psbridge, tmp_path: Path) -> None:
    missing = psbridge("audit", "verify")
    assert missing.exit_code == 2 and "output/audit.jsonl: audit log not found" in missing.stderr
    audit.append(tmp_path / "output" / "audit.jsonl", audit.Head("render", "contoso", None, None, "rendered"))
    assert "1 good line(s)" in psbridge("audit", "verify").stdout


@pytest.mark.parametrize("index", range(LINES))
def test_editing_a_line_is_detected_at_that_line(psbridge, log: Path, index: int) -> None:
    raw = lines_of(log)
    raw[index] = raw[index].replace(b'"outcome":"verified"', b'"outcome":"refused!"')
    write_lines(log, raw)
    assert broken_line(psbridge, log) == index + 1


@pytest.mark.parametrize("index", range(LINES - 1))
def test_editing_a_line_and_its_own_hash_is_detected_at_the_next_line(psbridge, log: Path, index: int) -> None:
    raw = lines_of(log)
    entry = json.loads(raw[index])
    entry["outcome"] = "refused"
    entry.pop("sha256")
    entry["sha256"] = hashlib.sha256(audit.canonical(entry)).hexdigest()
    raw[index] = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
    write_lines(log, raw)
    assert broken_line(psbridge, log) == index + 2


@pytest.mark.parametrize("index", range(LINES - 1))
def test_deleting_a_line_is_detected(psbridge, log: Path, index: int) -> None:
    raw = lines_of(log)
    del raw[index]
    write_lines(log, raw)
    assert broken_line(psbridge, log) == index + 1


def test_deleting_the_last_line_is_detected_against_a_recorded_head(psbridge, log: Path) -> None:
    head = psbridge("audit", "verify", log).stdout.rsplit("head ", 1)[1].strip()
    write_lines(log, lines_of(log)[:-1])
    assert psbridge("audit", "verify", log).exit_code == 0  # a shorter chain is still a chain...
    result = psbridge("audit", "verify", log, "--head", head)  # ...but not one that reaches the recorded head
    assert result.exit_code == 1 and "lines removed from the end" in result.stderr
    audit.append(log, audit.Head("verify", "contoso", None, None, "verified"))
    assert psbridge("audit", "verify", log, "--head", "0" * 64).exit_code == 0  # genesis is always reached


@pytest.mark.parametrize("index", range(LINES - 1))
def test_reordering_lines_is_detected(psbridge, log: Path, index: int) -> None:
    raw = lines_of(log)
    raw[index], raw[index + 1] = raw[index + 1], raw[index]
    write_lines(log, raw)
    assert broken_line(psbridge, log) == index + 1


def test_inserted_line_is_detected(psbridge, log: Path) -> None:
    raw = lines_of(log)
    raw.insert(3, raw[1])
    write_lines(log, raw)
    assert broken_line(psbridge, log) == 4


@pytest.mark.parametrize("damage", [b"not json\n", b'{"time":"x"}\n', b"[]\n"])
def test_garbage_line_is_detected(psbridge, log: Path, damage: bytes) -> None:
    raw = lines_of(log)
    raw[2] = damage
    write_lines(log, raw)
    assert broken_line(psbridge, log) == 3


def test_torn_last_line_is_reported_and_not_appended_to(psbridge, log: Path) -> None:
    log.write_bytes(log.read_bytes() + b'{"time":"2026')
    assert broken_line(psbridge, log) == LINES + 1
    with pytest.raises(RuntimeFailure, match="torn line .*psbridge audit repair"):
        audit.append(log, audit.Head("verify", "contoso", None, None, "verified"))


def test_bad_head_argument_is_exit_2(psbridge, log: Path) -> None:
    result = psbridge("audit", "verify", log, "--head", "xyz")
    assert result.exit_code == 2 and "--head" in result.stderr


@pytest.mark.parametrize("key", ["password", "PfxPassword", "key_passphrase", "client_secret", "credential"])
def test_secret_like_details_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="never logged"):
        audit.append(tmp_path / "a.jsonl", audit.Head("run", "contoso", None, None, "ok"), **{key: "hunter2"})
    with pytest.raises(ValueError):
        audit.append(tmp_path / "a.jsonl", audit.Head("run", "contoso", None, None, "ok"), inputs={key: "hunter2"})
    assert not (tmp_path / "a.jsonl").exists() or b"hunter2" not in (tmp_path / "a.jsonl").read_bytes()


def test_record_takes_name_and_digest_from_the_package_read_once(tmp_path: Path) -> None:
    from psbridge.package import read_package
    from support.winrm_peer.package import make_package

    package = read_package(make_package(tmp_path))
    entry = audit.record(tmp_path / "a.jsonl", "render", package, "rendered", params="contoso.toml")
    assert (entry["package"], entry["digest"]) == ("contoso", package.digest)
    failed = audit.record(tmp_path / "a.jsonl", "render", None, "error", problems=["bad"])
    assert (failed["package"], failed["digest"]) == (None, None)
    assert audit.verify(tmp_path / "a.jsonl").good_lines == 2


WRITER = """
import sys
from psbridge import audit
path, who = sys.argv[1], sys.argv[2]
for n in range(500):
    audit.append(path, audit.Head("verify", "contoso", None, None, "verified"), writer=who, n=n)
"""


def test_two_processes_appending_500_lines_each_leave_1000_chained_lines(psbridge, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    started = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), who]) for who in ("a", "b")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert time.monotonic() - started < 20
    entries = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert len(entries) == 1000
    for who in ("a", "b"):
        assert [e["details"]["n"] for e in entries if e["details"]["writer"] == who] == list(range(500))
    check = audit.verify(path)
    assert check.ok and check.good_lines == 1000
    assert "1000 good line(s)" in psbridge("audit", "verify", path).stdout


def test_render_is_audited_and_refused_input_is_recorded_only_in_an_existing_log(psbridge, tmp_path: Path) -> None:
    from psbridge.package import read_package

    (tmp_path / "bad.toml").write_text("not = [valid\n")
    assert psbridge("render", "bad.toml").exit_code == 2
    assert not (tmp_path / "output").exists()  # refused input leaves nothing behind
    assert psbridge("render", "--example").exit_code == 0
    assert psbridge("render", "--example").exit_code == 2  # exists, no --force
    entries = [json.loads(line) for line in (tmp_path / "output" / "audit.jsonl").read_text().splitlines()]
    assert [(e["action"], e["outcome"]) for e in entries] == [("render", "rendered"), ("render", "error")]
    assert entries[0]["package"] == "contoso"
    assert entries[0]["digest"] == read_package(tmp_path / "output" / "contoso").digest
    assert "already exists" in entries[1]["details"]["problems"][0]
    assert psbridge("render", "--example", "--force", "--audit-log", "elsewhere.jsonl").exit_code == 0
    assert json.loads((tmp_path / "elsewhere.jsonl").read_text())["outcome"] == "rendered"
