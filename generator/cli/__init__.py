"""The `psbridge` command: a thin click layer over the public API.

Each command parses its options (click's types check them), calls one function of the
package and prints the result (`output`). Commands end by returning or by raising:
`UserError` (exit 2), `RuntimeFailure` (1), `ConnectFailure` (3), `Interrupted` (130)
or `CommandFinished` (the command has said everything; its exit code). `main` is the one
place that turns these into exit codes and prints the one error line, without a
traceback; every code is an `errors.ExitCode`. Heavy libraries (cryptography, pydantic, jinja2, pypsrp) are imported
inside the commands that need them, so that `--help` and completion start fast.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

import click

from .. import __version__

from ..errors import CommandFinished, ConnectFailure, ExitCode, Interrupted, RuntimeFailure, UserError, stop_code, stopped_by
from . import approvals, audit, cert, check, evidence, packages, rollback, run, runs
from .options import CONTEXT
from .output import safe, stop_status_lines
from .packages import COMPLETION_SHELLS
from .prompts import install_prompt

__all__ = ["COMPLETION_SHELLS", "cli", "main"]


#: `psbridge --help` lists the commands in the order of the workflow, not alphabetically.
WORKFLOW_ORDER = ("init", "validate", "render", "report", "keygen", "approve", "verify", "show", "diff", "check",
                  "run", "rollback", "runs", "audit", "cert", "schema", "completion")


class _WorkflowGroup(click.Group):
    """A group whose help lists its commands in the workflow's order (any other command last)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        known = [name for name in WORKFLOW_ORDER if name in self.commands]
        return known + sorted(set(self.commands) - set(known))


def _no_color(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """--no-color or NO_COLOR (https://no-color.org: set and not empty): click.echo drops every colour.

    Colour is only ever shown on a terminal (click.echo drops it on a pipe) and never in --json output.
    """
    if value or os.environ.get("NO_COLOR"):
        ctx.color = False


@click.group(cls=_WorkflowGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="psbridge", message="%(prog)s %(version)s")
@click.option("--no-color", is_flag=True, expose_value=False, callback=_no_color,
              help="No colour on the terminal (as NO_COLOR does). Put it before the command.")
def cli() -> None:
    """Configure server-based authentication between Dynamics 365 CE (on-premises) and
    SharePoint Online: validate parameters, render the article's PowerShell sequence as a
    reviewable package, and run it on the CRM server.

    \b
    Examples:
      psbridge render --example      # the article's values -> output/contoso/
      psbridge completion bash       # shell completion (see: completion --help)
    """


for _command in (
    *packages.COMMANDS, cert.cert, *approvals.COMMANDS, *evidence.COMMANDS, audit.audit_group,
    run.run, check.check, rollback.rollback, *runs.COMMANDS,
):
    cli.add_command(_command)


#: Signals that stop psbridge as Ctrl-C does: a dropped SSH session (SIGHUP), a service manager (SIGTERM).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _stop(signum: int, frame: FrameType | None) -> None:
    """Stop like Ctrl-C: the running step is stopped and UNKNOWN, the run's end recorded, its locks released."""
    stopped_by(signum)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the command and turn its exception into an exit code without a traceback."""
    install_prompt()
    stopped_by(None)
    # Signal handlers can only be set in the main thread (an embedding program may call main elsewhere).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _stop) for sig in STOP_SIGNALS} if main_thread else {}
    try:
        return _main(argv)
    finally:
        stop_status_lines()  # a command that ended inside a step leaves no status line drawing
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: list[str] | None) -> int:
    """`main` without the signal handlers."""
    try:
        # With standalone_mode=False click returns the code of its own exits (--help, --version: 0).
        code = cli.main(args=argv, prog_name="psbridge", standalone_mode=False)
        return int(code) if isinstance(code, int) else ExitCode.OK
    except UserError as exc:
        for problem in exc.problems:
            click.echo(f"psbridge: error: {safe(problem)}", err=True)
        return UserError.exit_code
    except RuntimeFailure as exc:
        click.echo(f"psbridge: failed: {safe(exc)}", err=True)
        return RuntimeFailure.exit_code
    except ConnectFailure as exc:
        click.echo(f"psbridge: could not connect: {safe(exc)}", err=True)
        return ConnectFailure.exit_code
    except Interrupted as exc:  # between steps: what ran is recorded
        click.echo(f"psbridge: {safe(exc)}", err=True)
        return exc.exit_code
    except CommandFinished as exc:
        return exc.exit_code
    except click.ClickException as exc:  # click's own usage errors (exit 2)
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:  # click turns an interruption at a prompt into Abort
        if stop_code() != ExitCode.INTERRUPTED:  # SIGTERM or SIGHUP, not the operator's answer
            click.echo("psbridge: interrupted", err=True)
            return stop_code()
        click.echo("psbridge: aborted", err=True)
        return ExitCode.FAILED
    except KeyboardInterrupt:
        click.echo("psbridge: interrupted", err=True)
        return stop_code()
