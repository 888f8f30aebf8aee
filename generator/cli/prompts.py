"""Where psbridge asks a person something: secrets, each step of `run --step`, and "run it?".

The library never prompts by itself: `secrets.read_secret` calls the prompt installed
here (`install_prompt`), and `run`'s executor calls `ask_step` it is handed.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Literal

import click

from .. import secrets
from ..errors import RuntimeFailure, UserError

if TYPE_CHECKING:
    from ..package import PackageStep


def prompt_hidden(what: str, confirm: bool) -> str:
    """A hidden prompt on the terminal, the one place psbridge asks a person for a secret."""
    answer: str = click.prompt(what, hide_input=True, confirmation_prompt=confirm, default="", show_default=False)
    return answer


def install_prompt() -> None:
    """Let `secrets.read_secret` ask on the terminal (the library itself never prompts)."""
    secrets.PROMPT = prompt_hidden


def ask_step(step: PackageStep) -> Literal["y", "n", "q"]:
    """`--step`: ask before each step, like Ansible's --step (y = run, n = skip, q = quit)."""
    while True:
        # No default: a state-changing step runs only on an explicit "y". Ctrl-C or end of input
        # at the prompt is an interruption between steps (recorded, exit 130), not an error.
        try:
            answer = click.prompt(f"Run step {step.index:02d} {step.id} ({step.title})? [y/n/q]").strip().lower()
        except click.exceptions.Abort:
            raise KeyboardInterrupt from None
        if answer in ("y", "yes"):
            return "y"
        if answer in ("n", "no"):
            return "n"
        if answer in ("q", "quit"):
            return "q"


def has_terminal() -> bool:
    """Whether there is a person to ask: stdin is a terminal."""
    return sys.stdin is not None and sys.stdin.isatty()


def confirm_or_refuse(question: str, *, no_terminal: str, refused: str) -> None:
    """Ask [y/N] on stderr; without a terminal refuse with `no_terminal` (exit 2), on "no" with `refused` (exit 1)."""
    if not has_terminal():
        raise UserError(no_terminal)
    if not click.confirm(question, default=False, err=True):
        raise RuntimeFailure(refused)
