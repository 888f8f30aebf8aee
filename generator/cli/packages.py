"""Parameters and packages: init, validate, schema, completion, render."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import RuntimeFailure, UserError
from .auditing import audit_failure
from .options import CONTEXT, audit_log_option
from .output import echo_wrapped, print_audit_head, safe

if TYPE_CHECKING:
    from ..parameters import Parameters

#: Certificate facts as certificates.local_certificate returns them (plan.json's `certificate`).
Facts = dict[str, Any]


@click.command(context_settings=CONTEXT)
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="parameters.toml")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: Path, force: bool) -> None:
    """Write a commented parameters file with the article's example values.

    validate and render warn while the file still holds them.

    \b
    Example:
      psbridge init contoso.toml
    """
    from importlib.resources import files

    from ..files import write_file

    text = files("psbridge.templates").joinpath("parameters.toml").read_text(encoding="utf-8")
    # The header's commands name this file; a name that can't be shown on one comment line isn't.
    shown = shlex.quote(str(path)) if str(path).isprintable() else "<this file>"
    text = text.replace("{file}", shown).replace('\nname = "contoso"\n', f'\nname = "{package_name_for(path)}"\n', 1)
    if not path.parent.is_dir():
        raise UserError(f"{path.parent}: no such folder")
    write_file(path, text.encode("utf-8"), 0o644, overwrite=force)
    click.echo(f"wrote {path}: edit it, then run: psbridge validate {path}")


@click.command(context_settings=CONTEXT)
@click.argument("params", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object (warnings stay on stderr).")
def validate(params: Path, as_json: bool) -> None:
    """Check a parameters file; list every problem (exit 2) or say it is valid (exit 0).

    \b
    Example:
      psbridge validate contoso.toml
    """
    from ..parameters import load_parameters

    parameters = load_parameters(params)
    _replaced_certificate(parameters, params.parent, _local_certificate(parameters, params.parent))
    from ..payload import payload_for

    payload_for(parameters, params.parent)  # a bad .nupkg fails here (exit 2), not at render
    _warn_if_article_values(parameters, params)
    _warn_if_unc(parameters)
    _warn_if_acs(parameters)  # a valid file of the ACS trust: valid, and retired
    if as_json:
        click.echo(json.dumps({"file": str(params), "valid": True, "name": parameters.name,
                               "profile": parameters.profile, "trust": parameters.trust or "acs"}))
        return
    click.echo(f"{params}: valid ({parameters.name}, profile {parameters.profile})")


#: The Microsoft article's example values (what `init` writes): field -> value, compared
#: case-insensitively. A file that still holds one renders a package for contoso.com. (The
#: article's certificate paths are left out: they may well be the real ones.)
ARTICLE_VALUES = {
    "name": "contoso",
    "certificate.service_account": "contoso\\CRMWebApplicationService",
    "crm.root_domain": "*.contoso.com",
    "sharepoint.sites": "https://contoso.sharepoint.com/sites/salesteam",
}


def package_name_for(path: Path) -> str:
    """The package name `init` writes: the file's stem as a package name (`fabrikam.toml`: fabrikam), or
    the article's `contoso` when nothing of the stem is one."""
    import re

    name = re.sub(r"[^a-z0-9-]+", "-", path.stem.lower()).strip("-")[:63].strip("-")
    return name if re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", name) else "contoso"


def article_values(parameters: Parameters) -> list[str]:
    """The fields of `parameters` that still hold the article's example values."""
    held = []
    for field, example in ARTICLE_VALUES.items():
        value: object = parameters
        for part in field.split("."):
            value = getattr(value, part)
        values = value if isinstance(value, list) else [value]
        if any(str(v).rstrip("/").casefold() == example.casefold() for v in values):
            held.append(field)
    return held


def _warn_if_article_values(parameters: Parameters, path: Path) -> None:
    """One line on stderr when a parameters file still holds the article's placeholder values."""
    held = article_values(parameters)
    if held:
        echo_wrapped(f"{safe(path)} still holds the article's example values ({', '.join(held)}): replace them "
                     "with yours", "psbridge: warning: ", err=True)


def _warn_if_unc(parameters: Parameters) -> None:
    """One line on stderr per server-side certificate path on a share (the second hop over remoting)."""
    from ..fields import second_hop_warnings

    for line in second_hop_warnings(parameters.certificate.model_dump()):
        click.echo(f"psbridge: warning: {line}", err=True)


def _warn_if_acs(parameters: Parameters) -> None:
    """One line on stderr while the parameters choose the ACS trust, which Microsoft retired (quote and date)."""
    from ..parameters import FREE_WINDOW_NOTE, acs_retirement_warning

    line = acs_retirement_warning(parameters)
    if line:
        click.echo(f"psbridge: warning: {line}", err=True)
    if parameters.change and parameters.change.window and not parameters.change.window_interval:  # issue 21
        click.echo(f"psbridge: note: {FREE_WINDOW_NOTE}", err=True)


def _local_certificate(parameters: Parameters, base_dir: Path) -> Facts | None:
    """`[certificate] local_pfx/local_cer` checked (errors refuse, warnings are printed): its facts or None."""
    local = parameters.certificate
    if not (local.local_pfx or local.local_cer):
        return None  # no cryptography import when there is nothing to read
    from ..certificates import PFX_PASSWORD_ENV, local_certificate
    from ..secrets import read_secret

    facts, warnings = local_certificate(
        parameters, base_dir,
        lambda: read_secret(PFX_PASSWORD_ENV, "PFX password (certificate.local_pfx)", stdin_flag=None, allow_empty=True),
    )
    for warning in warnings:
        click.echo(f"psbridge: warning: {warning}", err=True)
    return facts


def _replaced_certificate(parameters: Parameters, base_dir: Path, new: Facts | None) -> Facts | None:
    """A renewal's `[certificate] local_replaced` checked against `replaces` (and the new subject): its facts or None."""
    if not parameters.certificate.local_replaced:
        return None
    from ..certificates import replaced_certificate

    facts: Facts | None = replaced_certificate(parameters, base_dir, new)
    return facts


@click.command(context_settings=CONTEXT)
def schema() -> None:
    """Print the JSON Schema of the parameters file.

    \b
    Example:
      psbridge schema > psbridge.schema.json
    """
    from ..parameters import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


#: The shells click can complete, in the order `completion --help` lists them.
COMPLETION_SHELLS = ("bash", "zsh", "fish")


@click.command("completion", context_settings=CONTEXT)
@click.argument("shell", type=click.Choice(COMPLETION_SHELLS))
@click.pass_context
def completion_command(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL (bash 4.4+, zsh or fish).

    The script completes commands, options and file names by calling psbridge with
    _PSBRIDGE_COMPLETE set; load it from your shell's start-up file.

    \b
    Examples:
      eval "$(psbridge completion bash)"        # add this line to ~/.bashrc
      eval "$(psbridge completion zsh)"         # add this line to ~/.zshrc
      psbridge completion fish > ~/.config/fish/completions/psbridge.fish
    """
    from click.shell_completion import get_completion_class

    complete = get_completion_class(shell)
    if complete is None:  # pragma: no cover - click.Choice admits only the shells above
        raise UserError(f"completion: no completion for {shell}")
    root = ctx.find_root().command  # the `psbridge` group, which the script completes
    click.echo(complete(root, {}, "psbridge", "_PSBRIDGE_COMPLETE").source())


@click.command(context_settings=CONTEXT)
@click.argument("params", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--example", is_flag=True, help="Use the built-in example (the article's contoso values).")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("output"),
    show_default=True, help="Folder in which the package folder <name>/ is written.",
)
@click.option("--force", is_flag=True, help="Replace an existing package (its runs/ and approvals/ are kept).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as one JSON object.")
@audit_log_option
def render(params: Path | None, example: bool, out_dir: Path, force: bool, as_json: bool,
           audit_log: Path | None) -> None:
    """Render the PowerShell sequence into a reviewable package OUT/<name>/.

    \b
    Examples:
      psbridge render --example
      psbridge render contoso.toml --out packages --force
    """
    from .. import audit
    from ..package import Package
    from ..parameters import example as example_parameters
    from ..parameters import load_parameters
    from ..payload import payload_for
    from ..render import render_package
    from ..writer import write_package

    source = str(params) if params is not None else "--example"
    log = audit.resolve_log(audit_log, near=out_dir)
    try:
        if example == (params is not None):
            raise UserError("render: give either a parameters file or --example")
        if params is None:
            parameters, facts, replaced, payload = example_parameters(), None, None, None
        else:
            parameters = load_parameters(params)
            _warn_if_article_values(parameters, params)
            _warn_if_unc(parameters)
            facts = _local_certificate(parameters, params.parent)
            replaced = _replaced_certificate(parameters, params.parent, facts)
            payload = payload_for(parameters, params.parent)
        rendered = render_package(parameters, facts, replaced, payload)
        target = write_package(rendered, out_dir, force=force)
    except (UserError, RuntimeFailure) as exc:
        if log.is_file():  # refused input leaves no new files behind on a fresh checkout
            audit_failure(log, "render", exc, params=source)
        raise
    steps = sum(1 for f in rendered.files if f.startswith("steps/"))
    package = Package(rendered.files, target)
    entry = audit.record(log, "render", package, "rendered", params=source, steps=steps, force=force)
    _warn_if_acs(parameters)  # once the render is done and recorded: a refused render says one thing, why
    if as_json:
        from ..audit import head_of

        click.echo(json.dumps({"package": str(target), "name": package.name, "digest": package.digest,
                               "steps": steps, "review": str(target / "REVIEW.md"), "audit_log": str(log),
                               "audit_head": head_of(entry)}))
        return
    click.echo(f"wrote {target}/ ({steps} steps): review {target / 'REVIEW.md'}")
    print_audit_head(log, entry)


#: The commands of this module, as `psbridge` adds them.
COMMANDS = (init, validate, schema, completion_command, render)
