"""The operator's day (issue 21): one meaning for `--out`, the package's runs and `rollback --last`,
`audit verify` on a package folder, and keygen's separate destinations for the private and public key.
"""

from __future__ import annotations

import json
from pathlib import Path

from psbridge.cli import main

from support.cli import check_args
from support.packages import answer_probes, write_check_package
from support.probe_states import state


# --------------------------------------------------------------------------- check --save (and --out, deprecated)


def test_check_save_keeps_the_evidence_without_a_warning(tmp_path, engine, http_peer, secrets_env, capsys) -> None:
    pkg = write_check_package(tmp_path)
    answer_probes(engine, state("fully configured"))
    assert main([*check_args(pkg, http_peer), "--save"]) == 0
    err = capsys.readouterr().err
    [saved] = list((pkg / "checks").glob("*.json"))
    assert json.loads(saved.read_text())["exit_code"] == 0
    assert "deprecated" not in err


def test_check_out_still_saves_but_warns_once(tmp_path, engine, http_peer, secrets_env, capsys) -> None:
    pkg = write_check_package(tmp_path)
    answer_probes(engine, state("fully configured"))
    target = tmp_path / "evidence.json"
    assert main([*check_args(pkg, http_peer), "--out", str(target)]) == 0
    err = capsys.readouterr().err
    assert json.loads(target.read_text())["exit_code"] == 0
    warnings = [line for line in err.splitlines() if "deprecated" in line]
    assert warnings == ["psbridge: warning: --out is deprecated for check: use --save"]


def test_check_save_and_out_together_is_bad_input(tmp_path, engine, http_peer, secrets_env, capsys) -> None:
    pkg = write_check_package(tmp_path)
    assert main([*check_args(pkg, http_peer), "--save", "--out"]) == 2
    err = capsys.readouterr().err
    assert "--save and --out" in err and "Traceback" not in err
    assert engine.pipelines == [] and not (pkg / "checks").exists()


def test_check_help_names_save_not_out() -> None:
    from click.testing import CliRunner

    from psbridge.cli import cli

    text = CliRunner().invoke(cli, ["check", "--help"]).output
    assert "--save [FILE.json]" in text and "--out" not in text


# --------------------------------------------------------------------------- psbridge runs, rollback --last

from support.rollback_runs import _rollback_args, _run  # noqa: E402 - the run the rollback tests make


def _last_args(pkg: Path, peer, log: Path) -> list[str]:  # noqa: ANN001 - the peer fixture
    return ["rollback", *check_args(pkg, peer)[1:], "--last", "--yes", "--audit-log", str(log)]


def _runs(pkg: Path, log: Path, capsys) -> list[dict]:  # noqa: ANN001 - capsys
    capsys.readouterr()
    assert main(["runs", str(pkg), "--json", "--audit-log", str(log)]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_runs_lists_the_run_then_rollback_last_backs_it_out_and_only_once(tmp_path, http_peer, engine, secrets_env,
                                                                         capsys, keys) -> None:
    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys)
    capsys.readouterr()
    assert main(["runs", str(pkg), "--audit-log", str(log)]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert " ok " in line and " run " in line and "not rolled back" in line and record.name in line
    [listed] = _runs(pkg, log, capsys)
    assert listed["outcome"] == "ok" and listed["changed"] and listed["vouched"] and not listed["rollback"]

    before = len(engine.pipelines)
    assert main(_last_args(pkg, http_peer, log)) == 0
    out = " ".join(capsys.readouterr().out.split())  # lines wrap at 100 columns: the words, in order
    assert f"rollback: the last run that changed something: {record}" in out
    assert any(p.script.startswith("# psbridge back-out of step") for p in engine.pipelines[before:])

    run, back = _runs(pkg, log, capsys)
    assert run["record"] == str(record) and run["rolled_back_by"] == back["record"]
    assert back["rollback"] and back["outcome"] == "ok" and back["rolled_back_by"] is None

    for argv in (_last_args(pkg, http_peer, log), _rollback_args(pkg, http_peer, record, log)):
        sent = len(engine.pipelines)
        assert main(argv) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert f"{record} was already backed out by {back['record']}; nothing sent" in out
        assert len(engine.pipelines) == sent  # nothing sent
    assert [l["action"] for l in map(json.loads, log.read_text().splitlines())][-1] == "rollback"


def test_a_rollback_record_the_audit_log_does_not_vouch_for_hides_no_run(tmp_path, http_peer, engine, secrets_env,
                                                                        capsys, keys) -> None:
    from psbridge.files import sha256_hex

    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys)
    start = json.loads(record.read_text().splitlines()[0])
    forged = {**start, "started": "2999-01-01T00:00:00.000Z", "rollback_of": str(record),
              "rollback_of_sha256": sha256_hex(record.read_bytes())}
    end = {"event": "run-end", "exit_code": 0, "ended": "2999-01-01T00:00:01.000Z", "reason": "ok"}
    (pkg / "runs" / "forged.jsonl").write_text(json.dumps(forged) + "\n" + json.dumps(end) + "\n")
    run, fake = _runs(pkg, log, capsys)
    assert run["rolled_back_by"] is None and fake["rollback"] and not fake["vouched"]
    before = len(engine.pipelines)
    assert main(_last_args(pkg, http_peer, log)) == 0
    assert "already backed out" not in capsys.readouterr().out
    assert any(p.script.startswith("# psbridge back-out of step") for p in engine.pipelines[before:])


def test_rollback_last_without_a_vouched_change_sends_nothing(tmp_path, http_peer, engine, secrets_env, capsys,
                                                             keys) -> None:
    log = tmp_path / "audit.jsonl"
    pkg = write_check_package(tmp_path)
    assert main(["approve", str(pkg), "--key", str(keys["jane"]), "--audit-log", str(log)]) == 0
    assert main(_last_args(pkg, http_peer, log)) == 2
    err = capsys.readouterr().err
    assert "rollback --last: no run of this package that the audit log vouches for changed anything" in err
    assert engine.pipelines == []
    assert main(["runs", str(pkg), "--audit-log", str(log)]) == 0
    assert "no run records" in capsys.readouterr().out


def test_rollback_takes_run_or_last_not_both(tmp_path, http_peer, engine, secrets_env, capsys, keys) -> None:
    log = tmp_path / "audit.jsonl"
    pkg, record = _run(tmp_path, http_peer, engine, log, keys)
    before = len(engine.pipelines)
    for argv in ([*_rollback_args(pkg, http_peer, record, log), "--last"],
                 ["rollback", *check_args(pkg, http_peer)[1:], "--yes", "--audit-log", str(log)]):
        assert main(argv) == 2
        assert "give --run RECORD or --last (one of them)" in capsys.readouterr().err
    assert len(engine.pipelines) == before


# --------------------------------------------------------------------------- audit verify on a folder


def _logged_package(tmp_path: Path, keys) -> tuple[Path, Path]:  # noqa: ANN001 - the keys fixture
    """A package in tmp/packages/ approved into the default log beside it (no PSBRIDGE_AUDIT_LOG)."""
    pkg = write_check_package(tmp_path / "packages")
    assert main(["approve", str(pkg), "--key", str(keys["jane"])]) == 0
    return pkg, pkg.parent / "audit.jsonl"


def test_audit_verify_takes_a_package_folder_or_a_packages_folder(tmp_path, keys, capsys, monkeypatch) -> None:
    monkeypatch.delenv("PSBRIDGE_AUDIT_LOG", raising=False)
    pkg, log = _logged_package(tmp_path, keys)
    assert log.is_file()
    capsys.readouterr()
    for target in (pkg, pkg.parent, log):
        assert main(["audit", "verify", str(target)]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"{log}: ") and "good line(s); head " in out, (target, out)


def test_audit_verify_of_a_folder_follows_the_environment_and_audit_log(tmp_path, keys, capsys, monkeypatch) -> None:
    monkeypatch.delenv("PSBRIDGE_AUDIT_LOG", raising=False)
    pkg, log = _logged_package(tmp_path, keys)
    shared = tmp_path / "shared" / "audit.jsonl"
    monkeypatch.setenv("PSBRIDGE_AUDIT_LOG", str(shared))
    assert main(["approve", str(pkg), "--key", str(keys["jane"])]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", str(pkg)]) == 0
    assert capsys.readouterr().out.startswith(f"{shared}: 1 good line(s)")
    assert main(["audit", "verify", str(pkg), "--audit-log", str(log)]) == 0
    assert capsys.readouterr().out.startswith(f"{log}: ")
    assert main(["audit", "verify", str(log), "--audit-log", str(shared)]) == 2
    assert "give the log as PATH or as --audit-log, not both" in capsys.readouterr().err


def test_init_recommends_one_audit_log_for_all_folders(tmp_path) -> None:
    assert main(["init", str(tmp_path / "p.toml")]) == 0
    text = (tmp_path / "p.toml").read_text(encoding="utf-8")
    head = text.split("\nname = ", 1)[0]
    assert "PSBRIDGE_AUDIT_LOG" in head and "psbridge audit verify PACKAGE_DIR" in head


# --------------------------------------------------------------------------- keygen: the private key apart from the board's


def test_keygen_puts_the_private_key_and_the_boards_public_key_apart(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PSBRIDGE_KEY_PASSPHRASE", raising=False)
    assert main(["keygen", "--key-out", "mine", "--pub-out", "board", "--name", "Jane Doe <jane@contoso.com>",
                 "--no-passphrase"]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "board").iterdir()) == ["jane-doe.pub.json"]
    assert (tmp_path / "mine" / "jane-doe.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "mine" / "jane-doe.pub.json").read_bytes() == (tmp_path / "board" / "jane-doe.pub.json").read_bytes()
    assert "public key:  board/jane-doe.pub.json" in out and "private key: mine/jane-doe.key" in out
    pkg = write_check_package(tmp_path / "changes")
    assert main(["approve", str(pkg), "--key", "mine/jane-doe.key"]) == 0
    capsys.readouterr()
    assert main(["verify", str(pkg), "--trusted-keys", "board"]) == 0
    assert "private key" not in capsys.readouterr().err


def test_keygen_defaults_the_private_key_to_home_and_the_public_key_to_here(tmp_path, monkeypatch, capsys) -> None:
    home, here = tmp_path / "home", tmp_path / "here"
    here.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(here)
    monkeypatch.delenv("PSBRIDGE_KEY_PASSPHRASE", raising=False)
    assert main(["keygen", "--name", "jane@contoso.com", "--no-passphrase"]) == 0
    keys = home / ".psbridge" / "keys"
    assert (keys / "jane-contoso-com.key").is_file() and keys.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in here.iterdir()) == ["jane-contoso-com.pub.json"]


def test_keygen_out_still_writes_both_and_refuses_a_mix(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PSBRIDGE_KEY_PASSPHRASE", raising=False)
    assert main(["keygen", "--out", "both", "--name", "jane@contoso.com", "--no-passphrase"]) == 0
    assert sorted(p.name for p in (tmp_path / "both").iterdir()) == ["jane-contoso-com.key", "jane-contoso-com.pub.json"]
    assert main(["keygen", "--out", "x", "--key-out", "y", "--name", "jo@contoso.com", "--no-passphrase"]) == 2
    assert "--out DIR (both files) or --key-out/--pub-out, not both" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_keygen_refuses_an_existing_board_key_before_writing_anything(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PSBRIDGE_KEY_PASSPHRASE", raising=False)
    (tmp_path / "board").mkdir()
    (tmp_path / "board" / "jane-contoso-com.pub.json").write_text("{}")
    assert main(["keygen", "--key-out", "mine", "--pub-out", "board", "--name", "jane@contoso.com",
                 "--no-passphrase"]) == 2
    assert "board/jane-contoso-com.pub.json: exists; use --force" in capsys.readouterr().err
    assert not (tmp_path / "mine").exists()


def test_verify_and_require_approval_warn_of_a_private_key_in_the_trusted_folder(
        tmp_path, monkeypatch, engine, http_peer, secrets_env, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PSBRIDGE_KEY_PASSPHRASE", raising=False)
    assert main(["keygen", "--out", "board", "--name", "Jane Doe <jane@contoso.com>", "--no-passphrase"]) == 0
    (tmp_path / "board" / "renamed.txt").write_bytes((tmp_path / "board" / "jane-doe.key").read_bytes())
    pkg = write_check_package(tmp_path / "changes")
    assert main(["approve", str(pkg), "--key", "board/jane-doe.key"]) == 0
    capsys.readouterr()
    assert main(["verify", str(pkg), "--trusted-keys", "board"]) == 0
    # verify wraps it at 100 columns (test_width_colour): one warning, these words
    warnings = ["psbridge: " + " ".join(part.split()) for part in capsys.readouterr().err.split("psbridge: ")[1:]
                if "private key" in part]
    assert warnings == ["psbridge: warning: --trusted-keys board: holds private key file(s) jane-doe.key, "
                        "renamed.txt: keep private keys out of the board's folder (keygen --key-out DIR --pub-out DIR)"]
    answer_probes(engine, state("fully configured"))
    assert main([*check_args(pkg, http_peer), "--require-approval", "--trusted-keys", "board"]) == 0
    assert sum("holds private key file(s)" in line for line in capsys.readouterr().err.splitlines()) == 1


def test_init_names_every_password_variable_a_run_reads(tmp_path: Path) -> None:
    """With the WinRM user in [crm], the file says where that user's password comes from, as README does."""
    assert main(["init", str(tmp_path / "p.toml")]) == 0
    head = (tmp_path / "p.toml").read_text(encoding="utf-8").split("\nname = ", 1)[0]
    for variable in ("PSBRIDGE_WINRM_PASSWORD", "PSBRIDGE_O365_PASSWORD", "PSBRIDGE_PFX_PASSWORD"):
        assert variable in head, variable
