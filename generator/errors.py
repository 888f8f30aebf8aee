"""The two kinds of failure the command line tells apart.

`UserError` is bad input (exit 2): the message is one line that names the field or
file and what is wrong, and the CLI prints it without a traceback. `RuntimeFailure`
is a failure of the work itself (exit 1). Neither message may ever contain a secret.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Every exit code psbridge uses, defined once (the README's table is this enum)."""

    OK = 0
    FAILED = 1  # the work failed (a step failed, verification refused, a runtime error)
    USAGE = 2  # bad input or usage; nothing was done or half-written
    CONNECT = 3  # could not connect or authenticate; nothing ran
    UNKNOWN = 4  # the outcome of a step is unknown (timeout, lost connection)
    WOULD_CHANGE = 5  # check: something would change / run --verify: verification failed
    EXPIRING = 6  # check: in place, but something expires within the warning window
    HANGUP = 129  # SIGHUP (128 + 1): a dropped terminal or SSH session, stopped like Ctrl-C
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it
    TERMINATED = 143  # SIGTERM (128 + 15): stopped like Ctrl-C


class UserError(Exception):
    """Invalid input or usage; exit code 2. `problems` holds one line per problem."""

    exit_code = ExitCode.USAGE

    def __init__(self, *problems: str) -> None:
        self.problems: tuple[str, ...] = problems or ("invalid input",)
        super().__init__("\n".join(self.problems))


class RuntimeFailure(Exception):
    """The work failed for a reason other than bad input; exit code 1."""

    exit_code = ExitCode.FAILED


class ConnectFailure(Exception):
    """Could not connect or authenticate; nothing ran (exit 3). The message is one line."""

    exit_code = ExitCode.CONNECT


class Interrupted(Exception):
    """The command was interrupted between steps (Ctrl-C: 130; SIGTERM: 143; SIGHUP: 129). What ran is recorded."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.exit_code = stop_code()


#: The signal that stops the command like Ctrl-C (SIGTERM, SIGHUP), once the command line's handler saw
#: one; None: Ctrl-C or nothing. The handler raises KeyboardInterrupt, so every path that stops a step,
#: records the run's end and releases its locks on Ctrl-C does so on these signals too.
_STOP_SIGNAL: list[int] = []


def stopped_by(signum: int | None) -> None:
    """Remember that `signum` (SIGTERM, SIGHUP) is stopping the command (the CLI's signal handler calls it);
    None forgets it (a new command starts)."""
    _STOP_SIGNAL[:] = [] if signum is None else [signum]


def stop_code() -> ExitCode:
    """The exit code of a stopped command: 128 + the signal that stopped it (130 for Ctrl-C)."""
    return ExitCode(128 + _STOP_SIGNAL[0]) if _STOP_SIGNAL else ExitCode.INTERRUPTED


class CommandFinished(Exception):
    """The command has finished and said why; it ends with `exit_code` and prints nothing more.

    For the outcomes that are not an error to report but a code to return: `check`'s 5 and
    6, `run`'s 1 and 4 after the run's own summary, `diff`'s 1 (the packages differ).
    """

    def __init__(self, exit_code: ExitCode) -> None:
        super().__init__(f"exit {int(exit_code)}")
        self.exit_code = exit_code
