"""Where secrets come from: an environment variable, standard input, or a hidden prompt.

Never from a command-line flag (process argument lists are visible to every user of
the machine) and never from the parameters file. A secret read here is kept in memory
only as long as the command needs it and is never echoed, logged or put in an error.
"""

from __future__ import annotations

import os
import sys

from collections.abc import Callable

from .errors import UserError

#: How to ask a person for a secret: (what, confirm) -> the text typed, hidden. The command line
#: sets it (prompting belongs to the CLI); None means nobody can be asked, and a missing secret
#: is an input error naming the variable to set.
Prompt = Callable[[str, bool], str]
PROMPT: Prompt | None = None


def read_secret(
    env_var: str,
    what: str,
    *,
    from_stdin: bool = False,
    confirm: bool = False,
    allow_empty: bool = False,
    stdin_flag: str | None = "--password-stdin",
) -> str:
    """Return the secret named `what`, from `env_var`, stdin (first line) or a hidden prompt.

    Prompting is only done on a terminal: in a pipeline or CI a missing secret is an
    input error that names the variable to set, instead of a hang.
    """
    value: str | None
    if from_stdin:
        line = sys.stdin.readline()
        value = line.rstrip("\r\n") if line else ""
    elif env_var in os.environ:
        value = os.environ[env_var]
    elif PROMPT is not None and sys.stdin is not None and sys.stdin.isatty():
        value = PROMPT(what, confirm)
    else:
        alternative = f" or pass {stdin_flag}" if stdin_flag else ""
        raise UserError(f"{what}: not given; set {env_var}{alternative} (no terminal to prompt on)")
    if not value and not allow_empty:
        raise UserError(f"{what}: empty")
    return value


def source_of(env_var: str) -> str:
    """Where `read_secret(env_var, …)` took (or takes) the secret from, for an error line; never the secret.

    Why: after "authentication failed" the operator's first question is which password was
    used: a stale exported variable is the usual cause, and only its name helps.
    """
    if env_var in os.environ:
        return env_var
    return "the prompt"
