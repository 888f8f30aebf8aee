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


# --------------------------------------------------------------------------- parameters and packages


def _atomic_write_text(path: Path, text: str, *, force: bool) -> None:
    """Write `text` to `path` via a temporary file and a rename: never a half-written file."""
    import os
    import tempfile

    if path.exists() and not force:
        raise UserError(f"{path}: already exists; use --force to overwrite it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"{parent}: no such folder")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@cli.command(context_settings=CONTEXT)
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="parameters.toml")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: Path, force: bool) -> None:
    """Write a commented parameters file with the article's example values.

    \b
    Example:
      psbridge init contoso.toml
    """
    from importlib.resources import files

    text = files("generator.templates").joinpath("parameters.toml").read_text(encoding="utf-8")
    _atomic_write_text(path, text, force=force)
    click.echo(f"wrote {path}: edit it, then run: psbridge validate {path}")


@cli.command(context_settings=CONTEXT)
@click.argument("params", type=click.Path(dir_okay=False, path_type=Path))
def validate(params: Path) -> None:
    """Check a parameters file; list every problem (exit 2) or say it is valid (exit 0).

    \b
    Example:
      psbridge validate contoso.toml
    """
    from .parameters import load_parameters

    parameters = load_parameters(params)
    click.echo(f"{params}: valid ({parameters.name}, profile {parameters.profile})")


@cli.command(context_settings=CONTEXT)
def schema() -> None:
    """Print the JSON Schema of the parameters file.

    \b
    Example:
      psbridge schema > psbridge.schema.json
    """
    import json

    from .parameters import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@cli.command(context_settings=CONTEXT)
@click.argument("params", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--example", is_flag=True, help="Use the built-in example (the article's contoso values).")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("output"),
    show_default=True, help="Folder in which the package folder <name>/ is written.",
)
@click.option("--force", is_flag=True, help="Replace an existing package (its runs/ and approvals/ are kept).")
def render(params: Path | None, example: bool, out_dir: Path, force: bool) -> None:
    """Render the PowerShell sequence into a reviewable package OUT/<name>/.

    \b
    Examples:
      psbridge render --example
      psbridge render contoso.toml --out packages --force
    """
    from .parameters import example as example_parameters
    from .parameters import load_parameters
    from .render import render_package

    if example == (params is not None):
        raise UserError("render: give either a parameters file or --example")
    parameters = example_parameters() if example else load_parameters(params)  # type: ignore[arg-type]
    package = render_package(parameters)
    target = package.write(out_dir, force=force)
    steps = sum(1 for f in package.files if f.startswith("steps/"))
    click.echo(f"wrote {target}/ ({steps} steps): review {target / 'REVIEW.md'}")


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
