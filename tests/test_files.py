"""psbridge.files: bounded reads of regular files only, and writes that are whole, private from the start, or absent."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from psbridge import files
from psbridge.errors import UserError
from psbridge.files import digest_of, listing_of, read_regular, sha256_hex, write_file, write_files

WHY = "a parameters file is a few KiB"


def refusal(path: Path, limit: int = 64, follow_symlinks: bool = True) -> str:
    """The one-line error `read_regular` raises for `path` (label `params`), read in a thread that must end."""
    outcome: list[BaseException | bytes] = []
    worker = threading.Thread(target=lambda: outcome.append(_read(path, limit, follow_symlinks)), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), f"read_regular({path}) blocked"
    [caught] = outcome
    assert isinstance(caught, UserError), caught
    [line] = caught.problems
    assert line.startswith("params: ") and "\n" not in line
    return line


def _read(path: Path, limit: int = 64, follow_symlinks: bool = True) -> BaseException | bytes:
    try:
        return read_regular(path, "params", limit=limit, too_large=WHY, follow_symlinks=follow_symlinks)
    except UserError as exc:
        return exc


# --------------------------------------------------------------------------- moved from test_hostile_input.py


def test_a_clean_error_for_stat_of_every_kind() -> None:
    """The file-type words used in messages exist for every kind stat can report."""
    from psbridge.files import file_kind

    assert file_kind(stat.S_IFIFO) == "a FIFO"
    assert file_kind(stat.S_IFDIR) == "a folder"
    assert file_kind(stat.S_IFCHR) == "a character device"
    assert file_kind(stat.S_IFBLK) == "a block device"
    assert file_kind(stat.S_IFSOCK) == "a socket"


# --------------------------------------------------------------------------- read_regular


def test_read_regular_returns_the_bytes_up_to_the_limit_inclusive(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_bytes(b"x" * 64)
    assert read_regular(path, "params", limit=64, too_large=WHY) == b"x" * 64
    path.write_bytes(b"")
    assert read_regular(path, "params", limit=64, too_large=WHY) == b""


@pytest.mark.parametrize("limit,said", [(64, "64 bytes"), (1024, "1 KiB"), (64 * 1024, "64 KiB"), (1 << 20, "1 MiB"),
                                        (1536, "1536 bytes")])
def test_one_byte_over_the_limit_is_refused_saying_the_limit_and_why(tmp_path: Path, limit: int, said: str) -> None:
    path = tmp_path / "p.toml"
    path.write_bytes(b"x" * (limit + 1))
    line = refusal(path, limit=limit)
    assert line == f"params: larger than {said} ({limit + 1} bytes); {WHY}"


def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    assert refusal(tmp_path / "nope.toml") == "params: cannot read: not found"


def test_permission_denied_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated: the suite may run as root, who reads any file."""
    path = tmp_path / "p.toml"
    path.write_text("x")

    def denied(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(files.os, "open", denied)
    assert refusal(path) == "params: cannot read: permission denied"


def test_a_fifo_is_refused_without_blocking_or_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "p.toml"
    os.mkfifo(fifo)
    assert refusal(fifo) == "params: not a regular file (a FIFO)"


def test_a_link_to_a_fifo_is_refused_as_the_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "p.toml").symlink_to(tmp_path / "fifo")
    assert refusal(tmp_path / "p.toml") == "params: not a regular file (a FIFO)"


def test_a_folder_and_a_device_are_refused(tmp_path: Path) -> None:
    assert refusal(tmp_path) == "params: not a regular file (a folder)"
    assert refusal(Path("/dev/null")) == "params: not a regular file (a character device)"


def test_a_link_is_followed_unless_links_are_refused(tmp_path: Path) -> None:
    (tmp_path / "real.toml").write_bytes(b"name = 'x'\n")
    (tmp_path / "p.toml").symlink_to(tmp_path / "real.toml")
    assert read_regular(tmp_path / "p.toml", "params", limit=64, too_large=WHY) == b"name = 'x'\n"
    line = refusal(tmp_path / "p.toml", follow_symlinks=False)
    assert line == "params: is a symbolic link; links are not followed here"


# --------------------------------------------------------------------------- write_file


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o400])
def test_write_file_writes_the_bytes_with_exactly_the_mode(tmp_path: Path, mode: int) -> None:
    target = tmp_path / "k.key"
    write_file(target, b"secret", mode, overwrite=False)
    assert target.read_bytes() == b"secret"
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert os.listdir(tmp_path) == ["k.key"], "no temporary file is left behind"


def test_write_file_without_overwrite_refuses_an_existing_name_and_keeps_it(tmp_path: Path) -> None:
    target = tmp_path / "k.key"
    target.write_bytes(b"old")
    with pytest.raises(UserError) as caught:
        write_file(target, b"new", 0o600, overwrite=False)
    assert caught.value.problems == (f"{target}: exists; use --force to replace it",)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["k.key"]


def test_write_file_without_overwrite_refuses_a_dangling_link(tmp_path: Path) -> None:
    target = tmp_path / "k.key"
    target.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="exists; use --force"):
        write_file(target, b"new", 0o600, overwrite=False)
    assert not (tmp_path / "elsewhere").exists()


def test_write_file_with_overwrite_replaces_the_file_not_its_bytes_in_place(tmp_path: Path) -> None:
    """A reader that opened the old file still reads the whole old file: the new one is renamed into place."""
    target = tmp_path / "k.key"
    target.write_bytes(b"old contents")
    os.chmod(target, 0o644)
    with target.open("rb") as reader:
        write_file(target, b"new", 0o600, overwrite=True)
        assert reader.read() == b"old contents"
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_write_file_refuses_a_folder_and_a_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(UserError) as caught:
        write_file(tmp_path / "d", b"x", 0o600, overwrite=True)
    assert caught.value.problems == (f"{tmp_path / 'd'}: is a folder",)
    with pytest.raises(UserError) as caught:
        write_file(tmp_path / "missing" / "k.key", b"x", 0o600, overwrite=False)
    assert caught.value.problems[0].startswith(f"{tmp_path / 'missing'}: cannot write: ")


# --------------------------------------------------------------------------- write_files


def test_write_files_writes_all_with_the_mode_and_makes_private_folders(tmp_path: Path) -> None:
    pfx, cer = tmp_path / "certs" / "s2s.pfx", tmp_path / "certs" / "s2s.cer"
    assert write_files([(pfx, b"P"), (cer, b"C")], 0o600, overwrite=False) == [pfx, cer]
    assert (pfx.read_bytes(), cer.read_bytes()) == (b"P", b"C")
    assert {stat.S_IMODE(p.stat().st_mode) for p in (pfx, cer)} == {0o600}
    assert stat.S_IMODE((tmp_path / "certs").stat().st_mode) & 0o077 == 0


def test_write_files_refuses_before_writing_when_any_target_is_taken(tmp_path: Path) -> None:
    pfx, cer, key = tmp_path / "s2s.pfx", tmp_path / "s2s.cer", tmp_path / "s2s.key"
    cer.write_bytes(b"old cer")
    key.write_bytes(b"old key")
    with pytest.raises(UserError) as caught:
        write_files([(pfx, b"P"), (cer, b"C"), (key, b"K")], 0o600, overwrite=False)
    assert caught.value.problems == (f"{cer}: exists; use --force to replace it",
                                     f"{key}: exists; use --force to replace it")
    assert not pfx.exists()
    assert (cer.read_bytes(), key.read_bytes()) == (b"old cer", b"old key")


def test_write_files_removes_what_it_wrote_when_a_later_file_fails(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_bytes(b"a file where a folder is needed")
    first, second = tmp_path / "s2s.pfx", tmp_path / "blocker" / "s2s.cer"
    with pytest.raises(UserError) as caught:
        write_files([(first, b"P"), (second, b"C")], 0o600, overwrite=False)
    assert caught.value.problems[0].startswith(f"{tmp_path / 'blocker'}: cannot create folder: ")
    assert not first.exists(), "all or nothing: the first file is removed again"
    assert sorted(os.listdir(tmp_path)) == ["blocker"]


def test_write_files_with_overwrite_replaces_every_target(tmp_path: Path) -> None:
    pfx, cer = tmp_path / "s2s.pfx", tmp_path / "s2s.cer"
    pfx.write_bytes(b"old")
    cer.write_bytes(b"old")
    write_files([(pfx, b"P2"), (cer, b"C2")], 0o644, overwrite=True)
    assert (pfx.read_bytes(), cer.read_bytes()) == (b"P2", b"C2")
    assert stat.S_IMODE(cer.stat().st_mode) == 0o644


# --------------------------------------------------------------------------- sha256, listing, digest


def test_sha256_hex_is_lower_case_hex_sha256() -> None:
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256_hex(b"abc") == hashlib.sha256(b"abc").hexdigest()


def test_listing_is_every_file_with_its_sha256_in_path_order() -> None:
    listing = listing_of({"steps/02.ps1": b"two", "REVIEW.md": b"r", "plan.json": b"{}", "a.ps1": b""})
    assert list(listing) == ["REVIEW.md", "a.ps1", "plan.json", "steps/02.ps1"]
    assert listing["steps/02.ps1"] == hashlib.sha256(b"two").hexdigest()


def test_digest_is_the_sha256_of_what_sha256sum_prints(tmp_path: Path) -> None:
    """An outside tool agrees: `sha256sum` over the files in listing order, hashed, is the digest."""
    content = {"plan.json": b'{"steps": []}', "REVIEW.md": b"# Review\n", "steps/01-session.ps1": b"Write-Output 1\n"}
    for rel, data in content.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    listing = listing_of(content)
    printed = subprocess.run(["sha256sum", *listing], cwd=tmp_path, capture_output=True, check=True).stdout
    assert digest_of(listing) == hashlib.sha256(printed).hexdigest()


def test_the_digest_changes_with_any_byte_or_name() -> None:
    base = {"plan.json": b"{}", "setup.ps1": b"x"}
    digest = digest_of(listing_of(base))
    assert digest_of(listing_of({**base, "setup.ps1": b"y"})) != digest
    assert digest_of(listing_of({"plan.json": b"{}", "setup2.ps1": b"x"})) != digest
    assert digest_of(listing_of({**base, "extra": b""})) != digest
    assert digest_of(listing_of(dict(reversed(base.items())))) == digest, "the order given does not matter"
