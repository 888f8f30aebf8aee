"""The audit log under faults: torn tails, full disks, file-size limits, symlinks, FIFOs.

Every test uses real files under tmp_path. File-size limits are real `RLIMIT_FSIZE` limits
set in a child interpreter; FIFOs are real `os.mkfifo` FIFOs. Only errors the kernel will
not produce on demand (ENOSPC, EIO from fsync) are injected by replacing `os.write` /
`os.fsync` for one call. The rule under test throughout: nothing already recorded is
lost, and every failure is one line that names the file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from psbridge import audit
from psbridge.errors import RuntimeFailure, UserError

LINES = 3
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    for n in range(LINES):
        audit.append(path, audit.Head("verify", "contoso", None, None, "verified"), attempt=n)
    return path


def entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def child(code: str, *args: str | os.PathLike[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `python -c code args` with the project importable, no bytecode written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSBRIDGE_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-B", "-c", code, *map(str, args)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def one_line(text: str) -> str:
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# --------------------------------------------------------------------------- no click in the library


def test_the_library_does_not_import_click(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom pathlib import Path\nfrom psbridge import audit\n"
        "p = Path(sys.argv[1])\n"
        "e = audit.append(p, audit.Head('render', 'contoso', None, None, 'rendered'))\n"
        "audit.record(p, 'run', None, 'ok')\n"
        "assert audit.verify(p).ok and audit.head_of(e)\n"
        "audit.resolve_log(None, near=p.parent)\n"
        "assert 'click' not in sys.modules, 'click imported'\n"
    )
    proc = child(code, tmp_path / "audit.jsonl")
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- where the log lives


def test_resolve_log_explicit_then_environment_then_near_then_output(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PSBRIDGE_AUDIT_LOG", raising=False)
    assert audit.resolve_log(None, near=None) == Path("output/audit.jsonl")
    assert audit.resolve_log(None, near=tmp_path / "out") == tmp_path / "out" / "audit.jsonl"
    assert audit.resolve_log(tmp_path / "x.jsonl", near=tmp_path / "out") == tmp_path / "x.jsonl"
    monkeypatch.setenv("PSBRIDGE_AUDIT_LOG", "")
    assert audit.resolve_log(None, near=tmp_path) == tmp_path / "audit.jsonl"  # empty: not set
    monkeypatch.setenv("PSBRIDGE_AUDIT_LOG", str(tmp_path / "org.jsonl"))
    assert audit.resolve_log(None, near=tmp_path / "out") == tmp_path / "org.jsonl"
    assert audit.resolve_log(None, near=None) == tmp_path / "org.jsonl"
    assert audit.resolve_log(tmp_path / "x.jsonl", near=None) == tmp_path / "x.jsonl"  # the option wins


def test_without_option_or_environment_the_log_is_next_to_the_packages(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PSBRIDGE_AUDIT_LOG", raising=False)
    log = audit.resolve_log(None, near=tmp_path / "out")
    audit.record(log, "run", None, "refused")
    assert entries(tmp_path / "out" / "audit.jsonl")[0]["outcome"] == "refused"


def test_audit_verify_uses_the_environment_log(psbridge, tmp_path: Path) -> None:
    org = tmp_path / "org" / "audit.jsonl"
    audit.append(org, audit.Head("render", "contoso", None, None, "rendered"))
    result = psbridge("audit", "verify", env={"PSBRIDGE_AUDIT_LOG": str(org)})
    assert result.exit_code == 0 and f"{org}: 1 good line(s)" in result.stdout, result.stderr


# --------------------------------------------------------------------------- the head after a write


def test_head_of_an_appended_line_is_what_verify_prints_and_the_next_prev(psbridge, log: Path) -> None:
    entry = audit.append(log, audit.Head("approve", "contoso", None, None, "approved"))
    head = audit.head_of(entry)
    raw_last = log.read_bytes().splitlines()[-1]
    assert head == hashlib.sha256(raw_last).hexdigest() == audit.head_of(raw_last + b"\n")
    assert audit.verify(log).head == head
    assert psbridge("audit", "verify", log).stdout.strip().endswith(f"head {head}")
    assert audit.append(log, audit.Head("run", "contoso", None, None, "ok"))["prev"] == head


# --------------------------------------------------------------------------- torn tails and repair


@pytest.mark.parametrize("stray", [b"x", b'{"time":"2026-', b"y" * 10_000])
def test_a_torn_tail_names_its_size_and_the_repair_command(log: Path, stray: bytes) -> None:
    log.write_bytes(log.read_bytes() + stray)
    with pytest.raises(RuntimeFailure) as caught:
        audit.append(log, audit.Head("verify", "contoso", None, None, "verified"))
    assert str(caught.value) == (
        f"audit log {log} ends with a torn line ({len(stray)} bytes); repair it with: psbridge audit repair {log}"
    )
    assert log.read_bytes().endswith(stray)  # nothing touched


def test_audit_verify_of_a_torn_tail_points_at_repair(psbridge, log: Path) -> None:
    log.write_bytes(log.read_bytes() + b"x")
    result = psbridge("audit", "verify", log)
    assert result.exit_code == 1
    line = one_line(result.stderr)
    assert f"line {LINES + 1}:" in line and f"psbridge audit repair {log}" in line


@pytest.mark.parametrize("stray", [b"x", b'{"time":"2026-01-01T00:00:00.000000Z","action":"ru'])
def test_repair_cuts_exactly_the_torn_bytes_keeps_them_and_chains_a_repair_line(psbridge, log: Path,
                                                                                stray: bytes) -> None:
    good = log.read_bytes()
    log.write_bytes(good + stray)
    result = psbridge("audit", "repair", log)
    assert result.exit_code == 0, result.stderr
    data = log.read_bytes()
    assert data.startswith(good) and data.count(b"\n") == LINES + 1  # every recorded line kept, one added
    last = entries(log)[-1]
    assert (last["action"], last["outcome"]) == ("audit-repair", "repaired")
    assert last["details"]["removed_bytes"] == len(stray)
    assert last["details"]["removed_sha256"] == hashlib.sha256(stray).hexdigest()
    sides = sorted(log.parent.glob("audit.jsonl.torn-*"))
    assert len(sides) == 1 and sides[0].read_bytes() == stray
    assert stat.S_IMODE(sides[0].stat().st_mode) == 0o600
    assert last["details"]["kept_in"] == sides[0].name
    assert sides[0].name in result.stdout and str(len(stray)) in result.stdout
    check = audit.verify(log)
    assert check.ok and check.good_lines == LINES + 1
    assert f"head {check.head}" in result.stdout
    audit.append(log, audit.Head("verify", "contoso", None, None, "verified"))  # unjammed
    assert audit.verify(log).good_lines == LINES + 2


def test_repair_of_a_log_that_is_only_a_torn_line(psbridge, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"time":')
    assert psbridge("audit", "repair", path).exit_code == 0
    (only,) = entries(path)
    assert only["action"] == "audit-repair" and only["prev"] == audit.GENESIS
    assert audit.verify(path).ok


def test_repair_of_a_good_log_changes_nothing(psbridge, log: Path) -> None:
    before = log.read_bytes()
    result = psbridge("audit", "repair", log)
    assert result.exit_code == 0 and "nothing to repair" in result.stdout, result.stderr
    assert log.read_bytes() == before and not list(log.parent.glob("*.torn-*"))


@pytest.mark.parametrize("torn", [b"", b"x"])
def test_repair_refuses_a_chain_broken_elsewhere_and_changes_nothing(psbridge, log: Path, torn: bytes) -> None:
    raw = log.read_bytes().splitlines(keepends=True)
    raw[1] = raw[1].replace(b'"verified"', b'"refused!"')
    log.write_bytes(b"".join(raw) + torn)
    before = log.read_bytes()
    result = psbridge("audit", "repair", log)
    assert result.exit_code == 1
    line = one_line(result.stderr)
    assert str(log) in line and "line 2:" in line
    assert log.read_bytes() == before and not list(log.parent.glob("*.torn-*"))


def test_repair_of_a_missing_log_is_a_usage_error(psbridge, tmp_path: Path) -> None:
    result = psbridge("audit", "repair", tmp_path / "nope.jsonl")
    assert result.exit_code == 2 and "nope.jsonl" in one_line(result.stderr)
    assert not (tmp_path / "nope.jsonl").exists()


# --------------------------------------------------------------------------- failed appends are taken back

LIMITED = """
import resource, signal, sys
from psbridge import audit
from psbridge.errors import RuntimeFailure
path, extra, dfl = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "dfl"
if dfl:  # as an embedding application might leave it: the default action kills the process
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
size = len(open(path, "rb").read())
resource.setrlimit(resource.RLIMIT_FSIZE, (size + extra, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    audit.append(path, audit.Head("run", "contoso", None, None, "ok"), note="n" * 200)
except RuntimeFailure as exc:
    print(exc)
    sys.exit(1)
print("appended")
"""


@pytest.mark.parametrize(("extra", "disposition"), [(10, "ign"), (0, "ign"), (10, "dfl"), (0, "dfl")])
def test_a_file_size_limit_leaves_the_log_as_it_was(log: Path, extra: int, disposition: str) -> None:
    """RLIMIT_FSIZE: a short write (extra > 0) or EFBIG/SIGXFSZ (extra == 0), in a real child."""
    before = log.read_bytes()
    proc = child(LIMITED, log, str(extra), disposition)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)  # not killed by SIGXFSZ
    message = one_line(proc.stdout)
    assert str(log) in message and "nothing was recorded" in message
    assert log.read_bytes() == before
    audit.append(log, audit.Head("run", "contoso", None, None, "ok"))  # the next command is not jammed
    assert audit.verify(log).good_lines == LINES + 1


@pytest.mark.parametrize(("call", "code"), [("write", errno.ENOSPC), ("write", errno.EIO), ("fsync", errno.EIO),
                                            ("fsync", errno.ENOSPC)])
def test_an_os_error_while_appending_is_taken_back(monkeypatch, log: Path, call: str, code: int) -> None:
    before = log.read_bytes()
    real = getattr(os, call)
    armed = []

    def failing(fd: int, *rest: object) -> object:
        if call == "write":  # write for real, then fail: as good as a partial write
            real(fd, rest[0][:7])  # type: ignore[index]
        armed.append(fd)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, call, failing)
    with pytest.raises(RuntimeFailure) as caught:
        audit.append(log, audit.Head("run", "contoso", None, None, "ok"))
    monkeypatch.undo()
    assert armed and log.read_bytes() == before
    assert str(log) in str(caught.value) and os.strerror(code) in str(caught.value)
    assert "\n" not in str(caught.value)
    audit.append(log, audit.Head("run", "contoso", None, None, "ok"))
    assert audit.verify(log).ok


# --------------------------------------------------------------------------- what the log file may be


def test_a_symlinked_log_is_refused_and_its_target_untouched(tmp_path: Path, log: Path) -> None:
    link = tmp_path / "link.jsonl"
    link.symlink_to(log)
    before = log.read_bytes()
    with pytest.raises(RuntimeFailure, match="symbolic link") as caught:
        audit.append(link, audit.Head("run", "contoso", None, None, "ok"))
    assert str(link) in str(caught.value)
    assert log.read_bytes() == before


def test_a_dangling_symlink_does_not_create_its_target(tmp_path: Path) -> None:
    link = tmp_path / "audit.jsonl"
    link.symlink_to(tmp_path / "elsewhere.jsonl")
    with pytest.raises(RuntimeFailure, match="symbolic link"):
        audit.append(link, audit.Head("run", "contoso", None, None, "ok"))
    assert not (tmp_path / "elsewhere.jsonl").exists()


def test_a_fifo_log_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "audit.jsonl"
    os.mkfifo(fifo)
    code = (
        "import sys\nfrom psbridge import audit\nfrom psbridge.errors import RuntimeFailure, UserError\n"
        "try:\n    audit.append(sys.argv[1], audit.Head('run', 'contoso', None, None, 'ok'))\n"
        "except RuntimeFailure as exc:\n    print(exc)\n"
        "try:\n    audit.verify(sys.argv[1])\n"
        "except UserError as exc:\n    print(exc)\n"
    )
    try:
        proc = child(code, fifo, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("opening a FIFO as the audit log hung")
    assert proc.returncode == 0, proc.stderr
    messages = proc.stdout.splitlines()
    assert len(messages) == 2 and all(str(fifo) in m and "not a regular file" in m for m in messages), proc.stdout


def test_a_fifo_given_to_audit_verify_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "audit.jsonl"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSBRIDGE_")}
    try:
        proc = subprocess.run([sys.executable, "-m", "psbridge", "audit", "verify", str(fifo)], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("audit verify of a FIFO hung")
    assert proc.returncode == 2 and "not a regular file" in one_line(proc.stderr)


def test_a_folder_as_the_log_is_refused(tmp_path: Path) -> None:
    (tmp_path / "audit.jsonl").mkdir()
    with pytest.raises(RuntimeFailure) as caught:
        audit.append(tmp_path / "audit.jsonl", audit.Head("run", "contoso", None, None, "ok"))
    assert str(tmp_path / "audit.jsonl") in str(caught.value) and "\n" not in str(caught.value)


def test_an_existing_readable_log_is_tightened_to_0600(log: Path) -> None:
    log.chmod(0o644)
    audit.append(log, audit.Head("run", "contoso", None, None, "ok"))
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    log.chmod(0o666)
    log.write_bytes(log.read_bytes() + b"x")
    with pytest.raises(RuntimeFailure, match="torn"):  # tightened even when the append is refused
        audit.append(log, audit.Head("run", "contoso", None, None, "ok"))
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_a_log_under_a_file_is_one_clean_line(psbridge, tmp_path: Path) -> None:
    (tmp_path / "somefile").write_text("not a folder\n")
    for target in (tmp_path / "somefile" / "audit.jsonl", tmp_path / "somefile" / "deeper" / "audit.jsonl"):
        with pytest.raises(RuntimeFailure) as caught:
            audit.append(target, audit.Head("run", "contoso", None, None, "ok"))
        assert str(target) in str(caught.value) and "somefile" in str(caught.value)
    result = psbridge("render", "--example", "--audit-log", "somefile/audit.jsonl")
    assert result.exit_code == 1
    assert "somefile/audit.jsonl" in one_line(result.stderr)
    assert (tmp_path / "somefile").read_text() == "not a folder\n"


# --------------------------------------------------------------------------- hostile content


def test_deeply_nested_json_is_a_broken_line_not_a_crash(psbridge, log: Path) -> None:
    log.write_bytes(log.read_bytes() + b"[" * 100_000 + b"\n")
    check = audit.verify(log)
    assert (check.ok, check.broken_line, check.problem) == (False, LINES + 1, "not valid JSON")
    result = psbridge("audit", "verify", log)
    assert result.exit_code == 1 and f"line {LINES + 1}: not valid JSON" in one_line(result.stderr)


def test_verify_of_a_folder_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a regular file"):
        audit.verify(tmp_path)


def test_an_interrupt_while_syncing_is_taken_back_and_let_through(monkeypatch, log: Path) -> None:
    before = log.read_bytes()

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        audit.append(log, audit.Head("run", "contoso", None, None, "ok"))
    monkeypatch.undo()
    assert log.read_bytes() == before


def test_verify_reads_through_a_symlink_but_repair_refuses_one(psbridge, tmp_path: Path, log: Path) -> None:
    link = tmp_path / "current.jsonl"
    link.symlink_to(log)
    assert psbridge("audit", "verify", link).exit_code == 0  # reading through a link writes nothing
    log.write_bytes(log.read_bytes() + b"x")
    before = log.read_bytes()
    result = psbridge("audit", "repair", link)
    assert result.exit_code == 2 and "symbolic link" in one_line(result.stderr)
    assert log.read_bytes() == before


def test_repair_and_append_from_two_processes_form_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit.append(path, audit.Head("render", "contoso", None, None, "rendered"))
    path.write_bytes(path.read_bytes() + b'{"torn')
    writer = (
        "import sys\nfrom psbridge import audit\nfrom psbridge.errors import RuntimeFailure\n"
        "ok = 0\nfor n in range(200):\n"
        "    try:\n        audit.append(sys.argv[1], audit.Head('verify', 'contoso', None, None, 'verified'), n=n); ok += 1\n"
        "    except RuntimeFailure as exc:\n        assert 'torn line' in str(exc), exc\n"
        "print(ok)\n"
    )
    proc = subprocess.Popen([sys.executable, "-B", "-c", writer, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    done = audit.repair(path)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and done.removed_bytes == len(b'{"torn')
    check = audit.verify(path)
    assert check.ok and check.good_lines == 2 + int(out)
    assert [e["action"] for e in entries(path)].count("audit-repair") == 1


# --------------------------------------------------------------------------- repair cuts only a true torn tail (issue 20, item 7)


@pytest.mark.parametrize("joined", [1, 2, 3])
def test_repair_refuses_complete_lines_whose_newlines_were_removed(psbridge, log: Path, joined: int) -> None:
    """Removing the newlines of the last `joined` lines makes them look like one torn tail; they are
    complete, correctly chained entries, so repair must not delete them (verify would then be clean)."""
    raw = log.read_bytes().splitlines(keepends=True)
    keep, glued = raw[:LINES - joined], raw[LINES - joined:]
    log.write_bytes(b"".join(keep) + b"".join(line.rstrip(b"\n") for line in glued))
    before = log.read_bytes()
    result = psbridge("audit", "repair", log)
    assert result.exit_code == 1, result.stdout
    line = one_line(result.stderr)
    assert str(log) in line and "complete" in line and "newline" in line
    for glued_line in glued:  # every complete entry is named by its head hash
        assert hashlib.sha256(glued_line.rstrip(b"\n")).hexdigest() in line
    assert log.read_bytes() == before and not list(log.parent.glob("*.torn-*"))


def test_repair_refuses_a_complete_entry_hidden_after_garbage(psbridge, log: Path) -> None:
    """A garbage byte in front of glued complete lines does not make them a torn tail."""
    raw = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(raw[:-1]) + b"x" + raw[-1].rstrip(b"\n"))
    before = log.read_bytes()
    result = psbridge("audit", "repair", log)
    assert result.exit_code == 1 and "complete" in one_line(result.stderr)
    assert log.read_bytes() == before


@pytest.mark.parametrize("reshape", ["spaced", "keys reordered", "indented"])
def test_repair_refuses_complete_entries_reformatted_as_well_as_glued(psbridge, log: Path, reshape: str) -> None:
    """A complete entry is its fields and its own sha256 (taken over canonical JSON), not the exact bytes
    `append` wrote: the glued lines re-serialised (a space after the brace, keys in another order, an
    indent) are still complete entries, and repair cut them as a torn tail, then verify was clean."""
    raw = log.read_bytes().splitlines()
    dumps = {"spaced": lambda e: "{ " + json.dumps(e)[1:],
             "keys reordered": lambda e: json.dumps(e, sort_keys=True, separators=(",", ":")),
             "indented": lambda e: json.dumps(e, indent=1).replace("\n", " ")}[reshape]
    glued = [dumps(json.loads(line)).encode() for line in raw[1:]]
    log.write_bytes(raw[0] + b"\n" + b"".join(glued))
    before = log.read_bytes()
    result = psbridge("audit", "repair", log)
    assert result.exit_code == 1, result.stdout
    line = one_line(result.stderr)
    assert "complete" in line and f"hold {len(glued)} complete" in line
    assert log.read_bytes() == before and not list(log.parent.glob("*.torn-*"))


def test_repair_names_the_removed_bytes_by_their_hash(psbridge, log: Path) -> None:
    stray = b'{"time":"2026-01-01T00:00:00.000000Z","action":"ru'
    log.write_bytes(log.read_bytes() + stray)
    result = psbridge("audit", "repair", log)
    assert result.exit_code == 0, result.stderr
    assert hashlib.sha256(stray).hexdigest() in result.stdout
