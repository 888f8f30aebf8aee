"""The two kinds of failure the command line tells apart.

`UserError` is bad input (exit 2): the message is one line that names the field or
file and what is wrong, and the CLI prints it without a traceback. `RuntimeFailure`
is a failure of the work itself (exit 1). Neither message may ever contain a secret.
"""

from __future__ import annotations


class UserError(Exception):
    """Invalid input or usage; exit code 2. `problems` holds one line per problem."""

    exit_code = 2

    def __init__(self, *problems: str) -> None:
        self.problems: tuple[str, ...] = problems or ("invalid input",)
        super().__init__("\n".join(self.problems))


class RuntimeFailure(Exception):
    """The work failed for a reason other than bad input; exit code 1."""

    exit_code = 1
