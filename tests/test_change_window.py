"""Issue 21: `[change] window` as an ISO 8601 interval (START/END with offsets), and the warning at
`approve` and `run` when an approval expires before the window ends. Free text stays accepted and is
said to be unchecked."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from psbridge import approvals, clock
from psbridge.catalogue import MSONLINE_STEPS
from psbridge.cli import main
from psbridge.package import read_package
from psbridge.parameters import FREE_WINDOW_NOTE, parse_parameters, parse_window

from support.change_window import with_window, write_params
from support.lab import O365_USER, USER
from support.winrm_peer import Reply
from support.winrm_peer.package import make_package, marker

WINDOW = "2026-12-12T20:00+01:00/2026-12-12T22:00+01:00"


# --------------------------------------------------------------------------- the format


def test_an_iso_interval_with_offsets_is_read_as_start_and_end() -> None:
    window = parse_parameters(with_window(WINDOW)).change.window_interval
    assert window is not None
    assert window.start == datetime(2026, 12, 12, 19, 0, tzinfo=timezone.utc)
    assert window.end == datetime(2026, 12, 12, 21, 0, tzinfo=timezone.utc)
    assert window.describe() == "2026-12-12 20:00 to 22:00 (UTC+01:00), 2026-12-12 19:00 to 2026-12-12 21:00 UTC"
    assert parse_window("2026-12-12T20:00Z/2026-12-13T01:30-05:00").end == datetime(2026, 12, 13, 6, 30,
                                                                                     tzinfo=timezone.utc)


@pytest.mark.parametrize("text", ["2026-12-05 20:00-22:00 CET", "tonight", "Saturday 20:00/22:00", "a/b/c"])
def test_free_text_is_kept_and_not_read_as_an_interval(text: str) -> None:
    params = parse_parameters(with_window(text))
    assert params.change.window == text and params.change.window_interval is None


@pytest.mark.parametrize(("window", "message"), [
    ("2026-12-12T20:00/2026-12-12T22:00+01:00", "change.window: the start '2026-12-12T20:00' has no UTC offset"),
    ("2026-12-12T20:00+01:00/2026-12-12T22:00", "change.window: the end '2026-12-12T22:00' has no UTC offset"),
    ("2026-12-12T22:00+01:00/2026-12-12T20:00+01:00", "change.window: the end '2026-12-12T20:00+01:00' is not "
                                                      "after the start"),
    ("2026-12-12T20:00Z/2026-12-12T20:00Z", "change.window: the end '2026-12-12T20:00Z' is not after the start"),
    ("2026-12-12T20:00+01:00/22:00", "change.window: the end '22:00' is not an ISO 8601 date and time"),
])
def test_validate_refuses_a_bad_interval_in_one_line_naming_the_field(psbridge, tmp_path: Path, window: str,
                                                                       message: str) -> None:
    result = psbridge("validate", write_params(tmp_path, with_window(window)))
    assert result.exit_code == 2, result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith("psbridge: error: ") and message in line, line


def test_validate_notes_that_a_free_text_window_cannot_be_checked(psbridge, tmp_path: Path) -> None:
    free = psbridge("validate", write_params(tmp_path, with_window("Saturday 20:00-22:00 CET")))
    assert free.exit_code == 0, free.stderr
    assert f"psbridge: note: {FREE_WINDOW_NOTE}" in free.stderr
    iso = psbridge("validate", write_params(tmp_path, with_window(WINDOW)))
    assert iso.exit_code == 0 and "free text" not in iso.stderr, iso.stderr
    (tmp_path / "out").mkdir()
    rendered = psbridge("render", write_params(tmp_path, with_window("Saturday 20:00-22:00 CET")), "--out", "out")
    assert rendered.exit_code == 0 and f"psbridge: note: {FREE_WINDOW_NOTE}" in rendered.stderr, rendered.stderr


# --------------------------------------------------------------------------- approve


class FrozenClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def before_window(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    """The clock on 2026-12-10 09:00 UTC, two and a half days before the window's end."""
    frozen = FrozenClock(datetime(2026, 12, 10, 9, 0, tzinfo=timezone.utc))
    monkeypatch.setattr(clock, "utc_now", frozen)
    monkeypatch.setattr(approvals, "utc_now", frozen)
    return frozen


def test_approve_warns_when_the_approval_ends_before_the_window(psbridge, tmp_path: Path, keys: dict[str, Path],
                                                               before_window: FrozenClock) -> None:
    pkg = make_package(tmp_path / "out", change={"window": WINDOW})
    short = psbridge("approve", pkg, "--key", keys["jane"], "--expires", "1d")
    assert short.exit_code == 0, short.stderr
    # one warning, wrapped (test_width_colour checks the width): its words, and the command whole on its own line
    [warning] = [" ".join(part.split()) for part in short.stderr.split("psbridge: ")[1:] if part.startswith("warning")]
    assert short.stderr.splitlines()[-1].strip() == f"psbridge approve {pkg} --key {keys['jane']} --expires 3d"
    assert "psbridge: " + warning == (f"psbridge: warning: the approval by Jane Doe <jane@contoso.com> expires 2026-12-11T09:00:00Z, "
                       f"before the change window ends 2026-12-12T21:00:00Z; to cover the window approve again: "
                       f"psbridge approve {pkg} --key {keys['jane']} --expires 3d")
    # the command it prints is one that covers the window: a second approval, and no warning after it
    before_window.now += timedelta(minutes=5)
    again = psbridge("approve", pkg, "--key", keys["jane"], "--expires", "3d")
    assert again.exit_code == 0 and "warning" not in again.stderr, again.stderr
    assert "nothing added" not in again.stdout and len(list((pkg / "approvals").glob("*.json"))) == 2


def test_approve_is_quiet_for_a_free_text_window_and_for_an_approval_that_covers_it(
        psbridge, tmp_path: Path, keys: dict[str, Path], before_window: FrozenClock) -> None:
    free = make_package(tmp_path / "a", change={"window": "Saturday 20:00-22:00 CET"})
    assert "warning" not in psbridge("approve", free, "--key", keys["jane"], "--expires", "1d").stderr
    covered = make_package(tmp_path / "b", change={"window": WINDOW})
    result = psbridge("approve", covered, "--key", keys["jane"], "--expires", "7d")
    assert result.exit_code == 0 and "warning" not in result.stderr, result.stderr


# --------------------------------------------------------------------------- run


def test_run_warns_about_an_approval_it_relies_on_that_ends_before_the_window(
        tmp_path: Path, http_peer, engine, secrets_env, keys: dict[str, Path], before_window: FrozenClock,
        capsys: pytest.CaptureFixture[str]) -> None:
    pkg = make_package(tmp_path / "output", server="127.0.0.1", change={"window": WINDOW})
    approvals.approve_package(read_package(pkg), keys["jane"], timedelta(hours=30), "", passphrase_reader=lambda: "")
    engine.when(marker(MSONLINE_STEPS[-1]), Reply(output=["5f2e1c1a-0000-4000-8000-000000000001"]))
    code = main(["run", str(pkg), "--port", str(http_peer.port), "--transport", "http", "--auth", "ntlm",
                 "--username", USER, "--o365-user", O365_USER, "--require-approval", "--trusted-keys",
                 str(keys["trusted"])])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    warnings = [line for line in err.splitlines() if "change window" in line]
    assert warnings == [f"psbridge: warning: the approval by Jane Doe <jane@contoso.com> expires 2026-12-11T15:00:00Z, "
                        f"before the change window ends 2026-12-12T21:00:00Z; to cover the window approve again: "
                        f"psbridge approve {pkg} --key '<your key>' --expires 3d"]


def test_the_window_init_writes_is_one_psbridge_can_check(tmp_path: Path) -> None:
    """The parameters file `init` writes shows the window as an ISO interval (the form approve and run can
    check against approvals), with a word on free text, not a free-text example alone."""
    assert main(["init", str(tmp_path / "p.toml")]) == 0
    text = (tmp_path / "p.toml").read_text(encoding="utf-8")
    [example] = [line for line in text.splitlines() if line.startswith("# window = ")]
    window = example.split("=", 1)[1].split("#", 1)[0].strip().strip('"')
    assert parse_window(window) is not None, example
    assert "free text" in text.split("# [change]", 1)[0].rsplit("\n\n", 1)[-1]  # said above the table

