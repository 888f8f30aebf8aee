"""Every command's --help has an example and fits 80 columns; `psbridge completion SHELL`."""

from __future__ import annotations

import click
import pytest

from psbridge.cli import COMPLETION_SHELLS, cli

from support.cli import run_psbridge


def command_paths(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The root and every command and group under it, as the words a user types."""
    out = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            out.extend(command_paths(command, (*prefix, name)))
        else:
            out.append((*prefix, name))
    return out


PATHS = command_paths()


def test_the_loop_sees_every_command() -> None:
    words = {" ".join(p) for p in PATHS}
    assert {"", "run", "check", "diff", "show", "verify", "approve", "keygen", "audit", "audit verify",
            "audit repair", "cert", "cert inspect", "cert new", "cert export-cer", "completion"} <= words


@pytest.mark.parametrize("columns", ["80", "250"])
def test_every_help_has_an_example_and_no_line_over_80_columns(columns: str) -> None:
    problems = []
    for path in PATHS:
        result = run_psbridge(*path, "--help", env={"COLUMNS": columns})
        name = " ".join(("psbridge", *path))
        if result.exit_code != 0:
            problems.append(f"{name}: exit {result.exit_code}: {result.stderr}")
            continue
        text = result.stdout
        if "Example:" not in text and "Examples:" not in text:
            problems.append(f"{name}: no example")
        problems.extend(f"{name}: {len(line)} columns: {line}" for line in text.splitlines() if len(line) > 80)
        # an example is a block of its own: each command line starts with "psbridge" or a variable
        example = text.split("Example", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
        if not example or not all(line.startswith("    ") for line in example):
            problems.append(f"{name}: example is not an indented block: {example}")
    assert problems == []


@pytest.mark.parametrize("shell", COMPLETION_SHELLS)
def test_completion_prints_a_script_for_the_shell(shell: str) -> None:
    result = run_psbridge("completion", shell)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() and "psbridge" in result.stdout and "_PSBRIDGE_COMPLETE" in result.stdout
    marker = {"bash": "complete -o nosort -F", "zsh": "#compdef psbridge", "fish": "complete --no-files --command"}
    assert marker[shell] in result.stdout


def test_completion_refuses_an_unknown_shell() -> None:
    result = run_psbridge("completion", "powershell")
    assert result.exit_code == 2 and "powershell" in result.stderr


def test_the_scripts_callback_completes_commands_and_options() -> None:
    """What the bash script runs on <Tab>: psbridge itself, with _PSBRIDGE_COMPLETE set."""
    result = run_psbridge(env={"_PSBRIDGE_COMPLETE": "bash_complete", "COMP_WORDS": "psbridge ren", "COMP_CWORD": "1"})
    assert result.exit_code == 0 and result.stdout.split() == ["plain,render"]
    result = run_psbridge(env={"_PSBRIDGE_COMPLETE": "bash_complete", "COMP_WORDS": "psbridge render --fo",
                               "COMP_CWORD": "2"})
    assert result.stdout.split() == ["plain,--force"]


def test_the_top_level_help_lists_commands_in_the_order_of_the_workflow() -> None:
    from psbridge.cli import WORKFLOW_ORDER

    help_text = run_psbridge("--help").stdout
    listed = [line.split()[0] for line in help_text.split("Commands:", 1)[1].splitlines() if line.startswith("  ")]
    assert listed == list(WORKFLOW_ORDER)
