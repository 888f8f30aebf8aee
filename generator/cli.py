"""The `psbridge` command: a thin click layer over the public API.

Each command parses its options, calls one function of the package and prints the
result. Failures become exit codes here and nowhere else: 0 ok, 1 runtime failure,
2 invalid input or usage (one line per problem, no traceback). Heavy libraries
(cryptography, pypsrp) are imported inside the commands that need them, so that
`render` starts fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .errors import RuntimeFailure, UserError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="psbridge", message="%(prog)s %(version)s")
def cli() -> None:
    """Configure server-based authentication between Dynamics 365 CE (on-premises) and
    SharePoint Online: validate parameters, render the article's PowerShell sequence as a
    reviewable package, and run it on the CRM server.

    \b
    Example:
      psbridge render --example        # the article's contoso values -> output/contoso/
    """


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the command and turn failures into exit codes without tracebacks."""
    try:
        cli.main(args=argv, prog_name="psbridge", standalone_mode=False)
    except UserError as exc:
        for problem in exc.problems:
            click.echo(f"psbridge: error: {problem}", err=True)
        return UserError.exit_code
    except RuntimeFailure as exc:
        click.echo(f"psbridge: failed: {exc}", err=True)
        return RuntimeFailure.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("psbridge: aborted", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("psbridge: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover - `python -m generator.cli`
    sys.exit(main())
