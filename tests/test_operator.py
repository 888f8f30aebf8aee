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
