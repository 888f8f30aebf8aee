"""The `psbridge` command: a thin click layer over the public API.

Each command parses its options, calls one function of the package and prints the
result. Failures become exit codes here and nowhere else: 0 ok, 1 runtime failure,
2 invalid input or usage (one line per problem, no traceback). Heavy libraries
(cryptography, pypsrp) are imported inside the commands that need them, so that
`render` starts fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from . import __version__
from .clock import format_time
from .errors import ConnectFailure, ExitCode, Interrupted, RuntimeFailure, UserError
from .expiry import EXPIRY_WARNING_DAYS
from .text import printable

#: Help is wrapped to the terminal, at most 80 columns; examples (`\b` blocks) are written to fit.
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 80}


def _prompt_hidden(what: str, confirm: bool) -> str:
    """A hidden prompt on the terminal, the one place psbridge asks a person for a secret."""
    return click.prompt(what, hide_input=True, confirmation_prompt=confirm, default="", show_default=False)


def _install_prompt() -> None:
    from . import secrets

    secrets.PROMPT = _prompt_hidden


def audit_log_option(func):  # type: ignore[no-untyped-def]
    """`--audit-log PATH` for every command that acts on a package (see audit.resolve_log)."""
    return click.option(
        "--audit-log", "audit_log", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="Hash-chained audit log (default: PSBRIDGE_AUDIT_LOG, else audit.jsonl beside the packages).",
    )(func)


def _package_log(audit_log: Path | None, package_dir: Path) -> Path:
    from .audit import resolve_log

    return resolve_log(audit_log, near=Path(os.path.abspath(package_dir)).parent)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="psbridge", message="%(prog)s %(version)s")
def cli() -> None:
    """Configure server-based authentication between Dynamics 365 CE (on-premises) and
    SharePoint Online: validate parameters, render the article's PowerShell sequence as a
    reviewable package, and run it on the CRM server.

    \b
    Examples:
      psbridge render --example      # the article's values -> output/contoso/
      psbridge completion bash       # shell completion (see: completion --help)
    """


# --------------------------------------------------------------------------- parameters and packages


@cli.command(context_settings=CONTEXT)
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="parameters.toml")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: Path, force: bool) -> None:
    """Write a commented parameters file with the article's example values.

    validate and render warn while the file still holds them.

    \b
    Example:
      psbridge init contoso.toml
    """
    import shlex
    from importlib.resources import files

    text = files("psbridge.templates").joinpath("parameters.toml").read_text(encoding="utf-8")
    # The header's commands name this file; a name that can't be shown on one comment line isn't.
    shown = shlex.quote(str(path)) if str(path).isprintable() else "<this file>"
    text = text.replace("{file}", shown)
    from .files import write_file

    if not path.parent.is_dir():
        raise UserError(f"{path.parent}: no such folder")
    write_file(path, text.encode("utf-8"), 0o644, overwrite=force)
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
    _replaced_certificate(parameters, params.parent, _local_certificate(parameters, params.parent))
    _warn_if_article_values(parameters, params)
    click.echo(f"{params}: valid ({parameters.name}, profile {parameters.profile})")


#: The Microsoft article's example values (what `init` writes): field -> value, compared
#: case-insensitively. A file that still holds one renders a package for contoso.com. (The
#: article's certificate paths are left out: they may well be the real ones.)
ARTICLE_VALUES = {
    "certificate.service_account": "contoso\\CRMWebApplicationService",
    "crm.root_domain": "*.contoso.com",
    "sharepoint.sites": "https://contoso.sharepoint.com/sites/salesteam",
}


def article_values(parameters: object) -> list[str]:
    """The fields of `parameters` that still hold the article's example values."""
    held = []
    for field, example in ARTICLE_VALUES.items():
        table, key = field.split(".")
        value = getattr(getattr(parameters, table), key)
        values = value if isinstance(value, list) else [value]
        if any(str(v).rstrip("/").casefold() == example.casefold() for v in values):
            held.append(field)
    return held


def _warn_if_article_values(parameters: object, path: Path) -> None:
    """One line on stderr when a parameters file still holds the article's placeholder values."""
    held = article_values(parameters)
    if held:
        click.echo(f"psbridge: warning: {_safe(path)} still holds the article's example values "
                   f"({', '.join(held)}): replace them with yours", err=True)


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


#: The shells click can complete, in the order `completion --help` lists them.
COMPLETION_SHELLS = ("bash", "zsh", "fish")


@cli.command("completion", context_settings=CONTEXT)
@click.argument("shell", type=click.Choice(COMPLETION_SHELLS))
def completion_command(shell: str) -> None:
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
    click.echo(complete(cli, {}, "psbridge", "_PSBRIDGE_COMPLETE").source())


@cli.command(context_settings=CONTEXT)
@click.argument("params", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--example", is_flag=True, help="Use the built-in example (the article's contoso values).")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("output"),
    show_default=True, help="Folder in which the package folder <name>/ is written.",
)
@click.option("--force", is_flag=True, help="Replace an existing package (its runs/ and approvals/ are kept).")
@audit_log_option
def render(params: Path | None, example: bool, out_dir: Path, force: bool, audit_log: Path | None) -> None:
    """Render the PowerShell sequence into a reviewable package OUT/<name>/.

    \b
    Examples:
      psbridge render --example
      psbridge render contoso.toml --out packages --force
    """
    from . import audit
    from .package import Package
    from .parameters import example as example_parameters
    from .parameters import load_parameters
    from .render import render_package
    from .writer import write_package

    source = str(params) if params is not None else "--example"
    log = audit.resolve_log(audit_log, near=out_dir)
    try:
        if example == (params is not None):
            raise UserError("render: give either a parameters file or --example")
        parameters = example_parameters() if example else load_parameters(params)  # type: ignore[arg-type]
        if params is not None:
            _warn_if_article_values(parameters, params)
        facts = _local_certificate(parameters, params.parent) if params else None
        replaced = _replaced_certificate(parameters, params.parent, facts) if params else None
        rendered = render_package(parameters, facts, replaced)
        target = write_package(rendered, out_dir, force=force)
    except (UserError, RuntimeFailure) as exc:
        if log.is_file():  # refused input leaves no new files behind on a fresh checkout
            _audit_failure(log, "render", exc, params=source)
        raise
    steps = sum(1 for f in rendered.files if f.startswith("steps/"))
    entry = audit.record(log, "render", Package(rendered.files, target), "rendered", params=source, steps=steps,
                         force=force)
    click.echo(f"wrote {target}/ ({steps} steps): review {target / 'REVIEW.md'}")
    _print_audit_head(log, entry)


# --------------------------------------------------------------------------- cert
# `cryptography` is imported inside these commands (via generator.certificates) so that
# the CLI starts fast for everything else.

PFX_PASSWORD_HELP = "Read the PFX password from the first line of stdin (else PSBRIDGE_PFX_PASSWORD, else a prompt)."


@cli.group(context_settings=CONTEXT)
def cert() -> None:
    """Inspect, check, create and export the S2S certificate (no openssl needed).

    \b
    Example:
      psbridge cert new --subject "CN=crm.contoso.com, O=Contoso" --out certs/
    """


def _local_certificate(parameters: object, base_dir: Path) -> dict | None:  # type: ignore[type-arg]
    """`[certificate] local_pfx/local_cer` checked (errors refuse, warnings are printed): its facts or None."""
    local = parameters.certificate  # type: ignore[attr-defined]
    if not (local.local_pfx or local.local_cer):
        return None  # no cryptography import when there is nothing to read
    from .certificates import PFX_PASSWORD_ENV, local_certificate
    from .secrets import read_secret

    facts, warnings = local_certificate(
        parameters, base_dir,
        lambda: read_secret(PFX_PASSWORD_ENV, "PFX password (certificate.local_pfx)", stdin_flag=None, allow_empty=True),
    )
    for warning in warnings:
        click.echo(f"psbridge: warning: {warning}", err=True)
    return facts


def _replaced_certificate(parameters: object, base_dir: Path, new: dict | None) -> dict | None:  # type: ignore[type-arg]
    """A renewal's `[certificate] local_replaced` checked against `replaces` (and the new subject): its facts or None."""
    if not parameters.certificate.local_replaced:  # type: ignore[attr-defined]
        return None
    from .certificates import replaced_certificate

    return replaced_certificate(parameters, base_dir, new)


def _pfx_password(path: Path, password_stdin: bool) -> str | None:
    from .certificates import PFX_PASSWORD_ENV, is_pfx_path
    from .secrets import read_secret

    if not is_pfx_path(path):
        return None
    return read_secret(PFX_PASSWORD_ENV, f"Password for {path.name}", from_stdin=password_stdin, allow_empty=True)


@cert.command("inspect", context_settings=CONTEXT)
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the facts and findings as JSON.")
@click.option("--password-stdin", is_flag=True, help=PFX_PASSWORD_HELP)
def cert_inspect(file: Path, as_json: bool, password_stdin: bool) -> None:
    """Show FILE (.pfx/.p12, or .cer/.crt/.pem/.der) and judge it as the S2S certificate.

    Exit 0 when the certificate is usable (warnings allowed), 1 when it has an error
    finding (expired, not yet valid, no or wrong private key, RSA < 2048 bits), 2 when
    FILE cannot be read as a certificate.

    \b
    Example:
      PSBRIDGE_PFX_PASSWORD=… psbridge cert inspect certs/crm.contoso.com.pfx
    """
    import json

    from .certificates import describe, inspect_file

    info = inspect_file(file, _pfx_password(file, password_stdin))
    if as_json:
        click.echo(json.dumps(info.to_dict(), indent=2, ensure_ascii=False))
    else:
        for line in describe(info):
            click.echo(line)
    if info.errors:
        raise RuntimeFailure(f"{file}: not usable as the S2S certificate ({len(info.errors)} error finding(s))")


@cert.command("new", context_settings=CONTEXT)
@click.option("--subject", help='Subject in Windows order, e.g. "CN=crm.contoso.com, O=Contoso".')
@click.option("--like", "like", type=click.Path(dir_okay=False, path_type=Path), metavar="OLD",
              help="Renew OLD (.pfx/.p12 or .cer/.crt/.pem/.der): copy its subject, key size and validity length.")
@click.option("--like-password-stdin", is_flag=True,
              help="Read OLD's PFX password from the first line of stdin (else PSBRIDGE_LIKE_PFX_PASSWORD, else a prompt).")
@click.option("--days", type=int, default=None, help="Validity in days (1-3650).  [default: 365, or OLD's]")
@click.option("--key-size", type=click.Choice(["2048", "3072", "4096"]), default=None,
              help="RSA key size.  [default: 2048, or OLD's]")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for <name>.pfx and <name>.cer.")
@click.option("--name", help="File name without extension (default: from the CN).")
@click.option("--legacy-pfx", is_flag=True, help="3DES/SHA-1 PFX for Windows Server 2016 and older (default: AES-256/SHA-256).")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@click.option("--password-stdin", is_flag=True, help=PFX_PASSWORD_HELP)
def cert_new(subject: str | None, like: Path | None, like_password_stdin: bool, days: int | None, key_size: str | None,
             out_dir: Path, name: str | None, legacy_pfx: bool, force: bool, as_json: bool, password_stdin: bool) -> None:
    """Create a self-signed certificate for evaluation: <name>.pfx and <name>.cer (mode 0600).

    RSA, SHA-256, key usage digitalSignature + keyEncipherment, EKU serverAuth +
    clientAuth (as New-SelfSignedCertificate makes them). The PFX password comes from
    PSBRIDGE_PFX_PASSWORD, --password-stdin or a prompt (asked twice), never a flag.
    The default PFX encryption (AES-256) is imported by Windows Server 2019 and later;
    for Windows Server 2016 pass --legacy-pfx.

    --like OLD renews a certificate: the same subject (RDN for RDN, so
    FindBySubjectDistinguishedName finds it), key size (at least 2048) and validity
    length; --days and --key-size override them. OLD.pfx's password comes from
    PSBRIDGE_LIKE_PFX_PASSWORD, --like-password-stdin or a prompt; a .cer needs none.

    \b
    Examples:
      psbridge cert new --subject "CN=crm.contoso.com, O=Contoso" \\
          --days 730 --out certs/
      psbridge cert new --like certs/crm.contoso.com.cer --out certs/2027/
    """
    import dataclasses
    import json

    from . import certificates as certs
    from . import newcert
    from .secrets import read_secret

    from .dn import parse_subject

    if subject is not None and like is not None:
        raise UserError("--subject and --like: give one; --like copies the subject of the certificate it renews")
    if subject is None and like is None:
        raise UserError("cert new: give --subject, or --like with the certificate to renew")
    if like_password_stdin and like is None:
        raise UserError("--like-password-stdin: needs --like")
    if like_password_stdin and password_stdin:
        raise UserError(f"--password-stdin and --like-password-stdin: stdin holds one password; give the other in "
                        f"{certs.PFX_PASSWORD_ENV} or {certs.LIKE_PFX_PASSWORD_ENV}")
    template = None
    if like is not None:
        like_password = None
        if certs.is_pfx_path(like):
            like_password = read_secret(certs.LIKE_PFX_PASSWORD_ENV, f"Password for {like.name} (--like, the old PFX)",
                                        from_stdin=like_password_stdin, allow_empty=True,
                                        stdin_flag="--like-password-stdin")
        template = newcert.like_certificate(
            like, like_password, days=days, key_size=int(key_size) if key_size else None,
            password_hint=f"set {certs.LIKE_PFX_PASSWORD_ENV} or pass --like-password-stdin",
        )
        for warning in template.warnings:
            click.echo(f"psbridge: warning: {_safe(warning)}", err=True)
        name_obj, days, size = template.subject, template.days, template.key_size
    else:
        name_obj, days, size = parse_subject(subject), 365 if days is None else days, int(key_size or 2048)  # type: ignore[arg-type]
    stem = newcert.check_stem(name) if name else newcert.default_file_stem(name_obj)
    pfx_path, cer_path = out_dir / f"{stem}.pfx", out_dir / f"{stem}.cer"
    if like is not None and any(os.path.abspath(p) == os.path.abspath(like) for p in (pfx_path, cer_path)):
        raise UserError(f"--like: {like} would be replaced by the new certificate; give another --name or --out")
    if not force:
        taken = [str(p) for p in (pfx_path, cer_path) if p.exists()]
        if taken:
            raise UserError(*(f"{p}: exists; pass --force to overwrite" for p in taken))
    password = read_secret(certs.PFX_PASSWORD_ENV, "PFX password", from_stdin=password_stdin, confirm=True)
    made = newcert.create_self_signed(name_obj, password, days=days, key_size=size, legacy_pfx=legacy_pfx)
    from .files import write_files

    write_files([(pfx_path, made.pfx), (cer_path, made.cer)], 0o600, overwrite=force)
    info = dataclasses.replace(made.info, path=str(pfx_path))
    if not password.isascii():
        click.echo("psbridge: warning: the PFX password has non-ASCII characters; Windows may not open the PFX with it", err=True)
    renews = None
    if template is not None:
        renews = {"file": template.path, "thumbprint": template.thumbprint, "subject": template.subject_text,
                  "days": template.days, "key_size": template.key_size}
        # The same subject: an outage-free renewal (`[certificate] replaces`) refuses it while OLD is
        # in LocalMachine\My (two certificates of one subject: "Private key not found").
        click.echo(_safe(f"psbridge: note: the new certificate has the subject of {template.path}; while that one is "
                         "in use, a renewal package ([certificate] replaces) needs another subject: cert new "
                         "--subject (README: Renewing the certificate)"), err=True)
    if as_json:
        document = {"pfx": str(pfx_path), "cer": str(cer_path), "certificate": info.to_dict()}
        if renews is not None:
            document["like"] = renews
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        click.echo(f"Wrote {pfx_path} and {cer_path}")
        if renews is not None:
            click.echo(_safe(f"Renews {renews['file']} (thumbprint {renews['thumbprint']}): the same subject, "
                             f"{renews['days']} days, RSA {renews['key_size']} bits"))
        for line in certs.describe(info):
            click.echo(line)


@cert.command("export-cer", context_settings=CONTEXT)
@click.argument("pfx", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The .cer (DER) to write.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--password-stdin", is_flag=True, help=PFX_PASSWORD_HELP)
def cert_export_cer(pfx: Path, out: Path, force: bool, password_stdin: bool) -> None:
    """Write the public certificate of PFX as a DER .cer: the file the article's step 5 imports.

    \b
    Example:
      psbridge cert export-cer certs/crm.pfx -o certs/crm.cer
    """
    from .certificates import export_cer

    if not force and out.exists():
        raise UserError(f"{out}: exists; pass --force to overwrite")
    info = export_cer(pfx, _pfx_password(pfx, password_stdin), out, force=force)
    click.echo(f"Wrote {out}: {info.subject or '(empty subject)'}, thumbprint {info.thumbprint}")
    for finding in info.findings:
        click.echo(f"psbridge: {finding.level}: {pfx}: {finding.message}", err=True)


# --------------------------------------------------------------------------- approvals, show, diff, audit


def _audit_failure(log: Path, action: str, exc: Exception, package: object = None, **details: object) -> None:
    """Log a refused or failed action before its error propagates; the audit trail shows attempts too."""
    problems = exc.problems if isinstance(exc, UserError) else (str(exc),)
    _record_attempt(log, action, package, "error", problems=list(problems), **details)


def _record_attempt(log: Path, action: str, package: object, outcome: str, **details: object) -> None:
    """Log a refused attempt; if the log itself fails, say so without hiding the refusal's own error."""
    from . import audit

    try:
        audit.record(log, action, package, outcome, **details)
    except (UserError, RuntimeFailure) as failure:
        for line in failure.problems if isinstance(failure, UserError) else (str(failure),):
            click.echo(f"psbridge: warning: the refusal was not recorded: {_safe(line)}", err=True)


def _print_audit_head(log: Path, entry: dict) -> None:  # type: ignore[type-arg]
    """After each audit write, the new head hash: quote it in the change ticket."""
    from .audit import head_of

    click.echo(f"audit: {log} head {head_of(entry)}")


def _read_package(package_dir: Path, log: Path, action: str):  # type: ignore[no-untyped-def]
    """Read the package folder once; a folder that is not a package is logged, then refused (exit 2)."""
    from .package import read_package

    try:
        return read_package(package_dir)
    except UserError as exc:
        _audit_failure(log, action, exc, folder=str(package_dir))
        raise


@cli.command("keygen", context_settings=CONTEXT)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for <name>.key (private, 0600) and <name>.pub.json (public).")
@click.option("--name", required=True, help='Approver identity, e.g. "Jane Doe <jane@contoso.com>".')
@click.option("--no-passphrase", "no_passphrase", is_flag=True,
              help="Write the private key UNENCRYPTED (anyone who can read the file can approve as you).")
@click.option("--passphrase", "ask_passphrase", is_flag=True,
              help="Kept for old scripts; does nothing (keys are always encrypted unless --no-passphrase).")
@click.option("--force", is_flag=True, help="Replace existing key files.")
def keygen_command(out_dir: Path, name: str, no_passphrase: bool, ask_passphrase: bool, force: bool) -> None:
    """Create an Ed25519 key pair for an approver.

    The private key is encrypted with a passphrase (OpenSSH key format, bcrypt-pbkdf) from
    PSBRIDGE_KEY_PASSPHRASE or, on a terminal, a hidden prompt asked twice. Without a
    terminal and without the variable, keygen refuses unless --no-passphrase is given.
    Give the .pub.json file to whoever keeps the board's trusted-keys folder; keep the
    .key file to yourself.

    \b
    Example:
      psbridge keygen --out ~/.psbridge --name "Jane Doe <jane@contoso.com>"
    """
    import os

    from . import keys
    from .secrets import read_secret

    keys.check_identity(name)  # before asking for a passphrase that would be wasted
    passphrase: str | None = None
    if no_passphrase:
        if ask_passphrase:
            raise UserError("--no-passphrase and --passphrase: choose one")
        if keys.PASSPHRASE_ENV in os.environ:
            raise UserError(f"--no-passphrase: {keys.PASSPHRASE_ENV} is set too; unset it or drop --no-passphrase")
    elif keys.PASSPHRASE_ENV in os.environ or (sys.stdin is not None and sys.stdin.isatty()):
        passphrase = read_secret(keys.PASSPHRASE_ENV, "key passphrase", confirm=True, stdin_flag=None)
    else:
        raise UserError(f"key passphrase: not given; set {keys.PASSPHRASE_ENV}, or pass --no-passphrase "
                        "for an unencrypted key (no terminal to prompt on)")
    made = keys.generate_keypair(out_dir, name, passphrase, force=force)
    if not made.encrypted:
        click.echo(f"psbridge: warning: {made.private_key} is NOT encrypted (--no-passphrase): "
                   "anyone who can read it can approve as you", err=True)
    click.echo(f"private key: {made.private_key} ({'encrypted' if made.encrypted else 'NOT encrypted'}, mode 0600)")
    click.echo(f"public key:  {made.public_key}")
    click.echo(f"fingerprint: {made.fingerprint}")


@cli.command("approve", context_settings=CONTEXT)
@click.argument("package_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Your private key from psbridge keygen (its .pub.json must be next to it).")
@click.option("--expires", default="7d", show_default=True, help="Validity: Nd, Nh or Nm (minutes), at most 90d.")
@click.option("--comment", default="", help="Why / change ticket; signed with the approval.")
@audit_log_option
def approve_command(package_dir: Path, key_path: Path, expires: str, comment: str, audit_log: Path | None) -> None:
    """Sign the package's digest and add the approval under PACKAGE_DIR/approvals/.

    The package must be exactly what this psbridge renders from its plan.json. An
    encrypted key's passphrase comes from PSBRIDGE_KEY_PASSPHRASE or a hidden prompt.
    Approving again with the same key while your approval is still valid adds nothing.

    \b
    Example:
      psbridge approve output/contoso --key ~/.psbridge/jane-doe.key \\
          --expires 3d --comment "CHG-1234"
    """
    from . import approvals, audit

    log = _package_log(audit_log, package_dir)
    package = _read_package(package_dir, log, "approve")
    try:
        result = approvals.approve_package(package, key_path, approvals.parse_validity(expires), comment)
    except (UserError, RuntimeFailure) as exc:
        _audit_failure(log, "approve", exc, package, key=str(key_path))
        raise
    rec = result.record
    entry = audit.record(log, "approve", package, "approved" if result.created else "already-approved",
                         approver=rec["approver"], fingerprint=rec["fingerprint"], file=result.path.name,
                         expires_at=rec["expires_at"], comment=rec["comment"])
    if result.created:
        click.echo(f"approved {_safe(rec['package'])} digest {rec['digest']}")
        click.echo(f"  by {_safe(rec['approver'])} (key {rec['fingerprint']}), expires {rec['expires_at']}")
        click.echo(f"  {result.path}")
    else:
        click.echo(f"already approved by {_safe(rec['approver'])} until {rec['expires_at']} ({result.path}); "
                   "nothing added")
    _print_audit_head(log, entry)


@cli.command("verify", context_settings=CONTEXT)
@click.argument("package_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--trusted-keys", "trusted_keys", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of approvers' *.pub.json files whose approvals count.")
@click.option("--min-approvals", default=1, show_default=True, type=click.IntRange(min=1),
              help="Distinct trusted people who must have approved the current digest.")
@click.option("--forbid-key", "forbid_keys", multiple=True, metavar="PUBKEY",
              help="A key (.pub.json, key file or sha256 fingerprint) whose person may not approve; repeatable.")
@audit_log_option
def verify_command(
    package_dir: Path, trusted_keys: Path, min_approvals: int, forbid_keys: tuple[str, ...], audit_log: Path | None
) -> None:
    """Check that PACKAGE_DIR is exactly what psbridge renders from its plan.json, and approved.

    Exit 0 when every file is what this psbridge renders from plan.json's parameters and
    at least --min-approvals distinct trusted people signed the current digest,
    unexpired; otherwise print every reason and exit 1 (exit 2 for bad input such as a
    missing trusted-keys folder).

    \b
    Example:
      psbridge verify output/contoso --trusted-keys board-keys/ --min-approvals 2
    """
    from . import approvals, audit

    log = _package_log(audit_log, package_dir)
    package = _read_package(package_dir, log, "verify")
    policy = approvals.ApprovalPolicy(trusted_keys, min_approvals, forbid_keys)
    try:
        result = approvals.verify_package(package, policy)
    except (UserError, RuntimeFailure) as exc:
        _audit_failure(log, "verify", exc, package)
        raise
    entry = audit.record(log, "verify", package, "verified" if result.ok else "refused",
                         min_approvals=min_approvals, reasons=result.reasons,
                         approvals=[a.to_json() for a in result.approvals_used])
    for note in result.notes:
        click.echo(f"note: {_safe(note)}")
    if not result.ok:
        for reason in result.reasons:
            click.echo(f"psbridge: refused: {_safe(reason)}", err=True)
        _print_audit_head(log, entry)
        raise RuntimeFailure(f"{package_dir}: not verified ({len(result.reasons)} reason(s) above)")
    click.echo(f"verified {_safe(result.package)} digest {result.digest}")
    for used in result.approvals_used:
        click.echo(f"  approved by {_safe(used.approver)} (key {used.fingerprint[:16]}), expires {used.expires_at}")
    _print_audit_head(log, entry)


@cli.command("show", context_settings=CONTEXT)
@click.argument("package_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--trusted-keys", "trusted_keys", type=click.Path(file_okay=False, path_type=Path),
              help="Also say whether each approval's key is trusted.")
def show_command(package_dir: Path, as_json: bool, trusted_keys: Path | None) -> None:
    """Print a package's name, profile, digest, steps, certificate and approvals with their status.

    \b
    Example:
      psbridge show output/contoso --trusted-keys board-keys/
    """
    import json

    from . import approvals
    from .package import read_package

    summary = approvals.package_summary(read_package(package_dir), trusted_keys)
    if as_json:
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    for label in ("package", "name", "profile", "digest"):
        click.echo(f"{label + ':':<13}{_safe(summary[label])}")
    problems = summary["integrity"] + summary["reproducible"]
    verdict = "files match plan.json and psbridge's render" if not problems else f"{len(problems)} problem(s)"
    click.echo(f"{'integrity:':<13}{verdict}")
    for problem in problems:
        click.echo(f"  ! {_safe(problem)}")
    click.echo("steps:")
    for step in summary["steps"]:
        click.echo(f"  {_safe(step['index'])!s:>2}  {_safe(step['id'] or ''):<16} {_safe(step['kind'] or ''):<8} "
                   f"{_safe(step['title'] or '')}")
    if summary["non_ascii"]:
        click.echo("values with characters outside ASCII:")
        for item in summary["non_ascii"]:
            click.echo(f"  {_safe(item['key'])} = {_safe(item['value'])}")
            click.echo(f"    {_safe(', '.join(item['code_points']))}")
    if summary["certificate"]:
        click.echo("certificate:")
        for key, value in summary["certificate"].items():
            if isinstance(value, list) and value:  # e.g. warnings: one line each
                click.echo(f"  {_safe(key) + ':'}")
                for item in value:
                    click.echo(f"    - {_human(item)}")
            else:
                click.echo(f"  {_safe(key) + ':':<12} {_human(value)}")
    trust = "" if summary["trusted_keys_checked"] else " (trust not checked; pass --trusted-keys)"
    click.echo(f"approvals{trust}:" if summary["approvals"] else "approvals:   none")
    for item in summary["approvals"]:
        key = (item["fingerprint"] or "")[:16]
        click.echo(f"  {item['status']:<16} {_safe(item['approver'] or '?')} key {key or '?'} "
                   f"expires {_safe(item['expires_at'] or '?')}  {_safe(item['file'])}")
        if item["comment"]:
            click.echo(f"  {'':<16} comment: {_safe(item['comment'])}")
        for problem in item["problems"]:
            click.echo(f"  {'':<16} ! {_safe(problem)}")
    for stray in summary["stray_files"]:
        click.echo(f"  unexpected file {_safe(stray)}")


@cli.command("report", context_settings=CONTEXT)
@click.argument("package_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML file to write (default: <name>-report.html beside the package, never inside it).")
@click.option("--trusted-keys", "trusted_keys", type=click.Path(file_okay=False, path_type=Path),
              help="Also judge whether each approval's key is trusted (without it: trust not checked).")
@audit_log_option
def report_command(package_dir: Path, out: Path | None, trusted_keys: Path | None, audit_log: Path | None) -> None:
    """Write one self-contained HTML report of a package: summary, steps, runs, checks, audit.

    Page 1 (printed) is the summary: change ticket, what changes where, the
    approvals with who/when/expiry and whether each is valid now, and the digest.
    Then every step with its highlighted script and sha256, the back-out plan, the
    runs as a timeline (runs/*.jsonl), saved check results (checks/*.json) and the
    audit chain's status. The page loads nothing and runs no script; it prints
    cleanly to PDF. Writes only the report (exit 0).

    \b
    Examples:
      psbridge report output/contoso        # -> output/contoso-report.html
      psbridge report output/contoso -o CHG-1234.html \\
          --trusted-keys board-keys/
    """
    from .package import read_package
    from .report import build_report, check_target, default_path, write_report

    target = check_target(out if out is not None else default_path(package_dir), package_dir)
    package = read_package(package_dir)
    html = build_report(package, audit_log=_package_log(audit_log, package_dir), trusted_keys=trusted_keys)
    digest = write_report(html, target)
    if package.problems or package.reproduction_problems:
        click.echo(f"psbridge: warning: {_safe(package_dir)} is not intact or not reproducible; the report says why",
                   err=True)
    click.echo(f"wrote {_safe(target)} (package {_safe(package.name)} digest {package.digest}; report sha256 {digest})")


def _human(value: object) -> str:
    """A plan.json value as a person reads it: yes/no, none, comma-separated lists; escaped."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(_human(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{_safe(k)}: {_human(v)}" for k, v in value.items()) if value else "none"
    return _safe(value)


@cli.command("diff", context_settings=CONTEXT)
@click.argument("old_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("new_dir", type=click.Path(file_okay=False, path_type=Path))
def diff_command(old_dir: Path, new_dir: Path) -> None:
    """Show what changed from OLD_DIR to NEW_DIR for re-approval.

    Changed parameters (dotted keys, old -> new), other plan changes, and a unified diff
    of each changed step file; setup.ps1 and REVIEW.md are summarized. Exit 0 when the
    packages are identical (same digest), 1 when they differ, 2 on bad input, like diff(1).

    \b
    Example:
      psbridge diff output/contoso-approved output/contoso
    """
    from .package import read_package
    from .package_diff import diff_packages

    result = diff_packages(read_package(old_dir), read_package(new_dir))
    click.echo(_safe(result.render(str(old_dir), str(new_dir)), keep_newlines=True), nl=False)
    if not result.identical:
        click.get_current_context().exit(1)  # diff(1): 1 = the packages differ, not a failure


@cli.group("audit", context_settings=CONTEXT)
def audit_group() -> None:
    """Check and repair the hash-chained audit log.

    \b
    Example:
      psbridge audit verify output/audit.jsonl
    """


@audit_group.command("verify", context_settings=CONTEXT)
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--head", metavar="SHA256", help="A head hash printed by an earlier check; detects lines cut off the end.")
def audit_verify_command(path: Path | None, head: str | None) -> None:
    """Walk the audit log's hash chain (default $PSBRIDGE_AUDIT_LOG, else output/audit.jsonl).

    Exit 0 and print the number of good lines and the head hash (record it elsewhere),
    or exit 1 naming the first broken line.

    \b
    Example:
      psbridge audit verify output/audit.jsonl
      psbridge audit verify output/audit.jsonl --head "$HEAD"   # from the ticket
    """
    import re
    import shlex

    from . import audit

    if head is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", head):
        raise UserError("--head: a 64-digit hex sha256")
    log = audit.resolve_log(path, near=None)
    check = audit.verify(log, head)
    if not check.ok:
        hint = f"; repair it with: psbridge audit repair {shlex.quote(str(log))}" if check.torn_bytes else ""
        raise RuntimeFailure(
            f"{log}: line {check.broken_line}: {check.problem} ({check.good_lines} good line(s) before it){hint}"
        )
    click.echo(f"{log}: {check.good_lines} good line(s); head {check.head}")


@audit_group.command("repair", context_settings=CONTEXT)
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def audit_repair_command(path: Path) -> None:
    """Cut a torn last line (bytes after the last newline) off the audit log.

    The torn bytes are kept in PATH.torn-<UTC time> for the auditors and the cut is
    recorded as a chained audit-repair line. Exit 0 when repaired or when there is nothing
    to repair; exit 1, changing nothing, when the chain is broken elsewhere.

    \b
    Example:
      psbridge audit repair output/audit.jsonl
    """
    from . import audit

    done = audit.repair(path)
    if not done.removed_bytes:
        click.echo(f"{path}: nothing to repair; {done.good_lines} good line(s); head {done.head}")
        return
    click.echo(f"{path}: removed a torn line of {done.removed_bytes} bytes (sha256 {done.removed_sha256}), "
               f"kept in {done.side_file}; {done.good_lines} good line(s); head {done.head}")


# --------------------------------------------------------------------------- run and check (PSRP)

#: The auth methods of remote.AUTHS, spelled out here so that `--help` does not import the
#: PSRP layer; tests/test_run_logic.py keeps the two equal.
_AUTHS = ("negotiate", "ntlm", "kerberos", "credssp", "basic", "certificate")
_CONNECTION_OPTIONS = (
    click.option("--host", help="The Dynamics 365 server (default: the package's [crm] server; another host is refused)."),
    click.option("--port", type=int, help="WinRM port (default 5986 for https, 5985 for http)."),
    click.option("--transport", type=click.Choice(["https", "http"]), default="https", show_default=True),
    click.option("--auth", type=click.Choice(list(_AUTHS)), default="negotiate", show_default=True),
    click.option("--username", help="WinRM user, e.g. CONTOSO\\crmadmin. Password: PSBRIDGE_WINRM_PASSWORD or a prompt."),
    click.option("--ca-bundle", type=click.Path(dir_okay=False, path_type=Path), help="PEM file of the CA(s) to trust for HTTPS."),
    click.option("--no-verify-tls", is_flag=True, help="Do not verify the server's certificate (unsafe; warned)."),
    click.option("--client-cert", type=click.Path(dir_okay=False, path_type=Path), help="PEM client certificate for --auth certificate."),
    click.option("--client-key", type=click.Path(dir_okay=False, path_type=Path), help="PEM key for --client-cert."),
    click.option("--configuration-name", default="Microsoft.PowerShell", show_default=True, help="PSSession configuration (JEA endpoint)."),
    click.option("--connection-timeout", type=int, default=30, show_default=True, help="Seconds to wait for the TCP/TLS connection."),
    click.option("--operation-timeout", type=int, default=20, show_default=True, help="WSMan OperationTimeout in seconds (long-poll length)."),
    click.option("--o365-user", help="Office 365 admin for the steps that connect (password: PSBRIDGE_O365_PASSWORD or a prompt)."),
)
_CONNECTION_KEYS = ("port", "transport", "auth", "username", "ca_bundle", "no_verify_tls", "client_cert",
                    "client_key", "configuration_name", "connection_timeout", "operation_timeout")


def connection_options(func):  # type: ignore[no-untyped-def]
    """The WinRM connection options that `run` and `check` share."""
    for option in reversed(_CONNECTION_OPTIONS):
        func = option(func)
    return func


def _connection(options: dict, host: str):  # type: ignore[no-untyped-def,type-arg]
    """The validated connection from the shared options (pops them from `options`) to `host`."""
    from .remote.transport import Connection

    o = {k: options.pop(k) for k in _CONNECTION_KEYS}
    conn = Connection(
        host=host, port=o["port"] or (5986 if o["transport"] == "https" else 5985), transport=o["transport"],
        auth=o["auth"], username=o["username"], ca_bundle=o["ca_bundle"], verify_tls=not o["no_verify_tls"],
        configuration_name=o["configuration_name"], connection_timeout=o["connection_timeout"],
        operation_timeout=o["operation_timeout"], client_cert=o["client_cert"], client_key=o["client_key"],
    )
    conn.validate()
    return conn


def _warn_if_unverified(conn) -> None:  # type: ignore[no-untyped-def]
    if not conn.verify_tls and conn.transport == "https":
        click.echo(
            "psbridge: WARNING: --no-verify-tls: the server's certificate is NOT checked; anyone on the path can "
            "impersonate it and read the credentials and secrets sent to it.",
            err=True,
        )


def _ask_step(step) -> str:  # type: ignore[no-untyped-def]
    """`--step`: ask before each step, like Ansible's --step (y = run, n = skip, q = quit)."""
    while True:
        # No default: a state-changing step runs only on an explicit "y". Ctrl-C or end of input
        # at the prompt is an interruption between steps (recorded, exit 130), not an error.
        try:
            answer = click.prompt(f"Run step {step.index:02d} {step.id} ({step.title})? [y/n/q]").strip().lower()
        except click.exceptions.Abort:
            raise KeyboardInterrupt from None
        if answer in ("y", "yes", "n", "no", "q", "quit"):
            return answer[0]


_APPROVAL_OPTIONS = (
    click.option("--require-approval", is_flag=True,
                 help="Only a package psbridge renders byte for byte from its plan.json, approved by enough people."),
    click.option("--trusted-keys", type=click.Path(file_okay=False, path_type=Path),
                 help="Folder of the approvers' .pub.json files (with --require-approval)."),
    click.option("--min-approvals", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Distinct trusted people who must have approved."),
    click.option("--forbid-self-approval", is_flag=True, help="The operator's own approval (--key) does not count."),
    click.option("--key", "operator_key", type=click.Path(dir_okay=False, path_type=Path),
                 help="The operator's approval key or .pub.json (with --forbid-self-approval)."),
    click.option("--forbid-key", "forbid_keys", multiple=True, metavar="PUBKEY",
                 help="A key (.pub.json, key file or fingerprint) whose person may not approve; repeatable."),
)


def approval_options(func):  # type: ignore[no-untyped-def]
    """The --require-approval gate's options, shared by `run` and `check`."""
    for option in reversed(_APPROVAL_OPTIONS):
        func = option(func)
    return func


def _policy(require_approval: bool, trusted_keys: Path | None, min_approvals: int, forbid_self: bool,
            operator_key: Path | None, forbid_keys: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """The ApprovalPolicy of the options, or None without --require-approval."""
    from .approvals import ApprovalPolicy

    if not require_approval:
        if trusted_keys or forbid_self or forbid_keys:
            raise UserError("--trusted-keys, --forbid-self-approval and --forbid-key need --require-approval")
        return None
    if trusted_keys is None:
        raise UserError("--require-approval: needs --trusted-keys DIR")
    if forbid_self and operator_key is None:
        raise UserError("--forbid-self-approval: needs --key (the operator's key or .pub.json)")
    forbid = tuple(forbid_keys) + ((str(operator_key),) if forbid_self and operator_key else ())
    return ApprovalPolicy(trusted_keys, min_approvals, forbid)


def _refused(log: Path, action: str, exc: Exception, package_dir: Path, host: str | None) -> None:
    """Print why the gate refused, and log it, before the exception ends the command."""
    from .approvals import NotApproved

    if isinstance(exc, NotApproved):
        for reason in exc.reasons:
            click.echo(f"psbridge: refused: {_safe(reason)}", err=True)
    problems = list(exc.problems) if isinstance(exc, UserError) else list(getattr(exc, "reasons", [str(exc)]))
    _record_attempt(log, action, None, "refused", problems=problems, folder=str(package_dir), host=host)


@cli.command("run", context_settings=CONTEXT)
@click.argument("package_dir", type=click.Path(file_okay=False, path_type=Path))
@connection_options
@click.option("--from-step", type=click.IntRange(min=1), help="Continue a failed run at step N (re-runs only the session steps N needs).")
@click.option("--step", "step_mode", is_flag=True, help="Ask before each step: y run, n skip, q quit.")
@click.option("--step-timeout", type=click.FloatRange(min=0, min_open=True), default=900.0, show_default=True,
              help="Seconds per step before it is stopped and reported UNKNOWN.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON event per line instead of progress lines.")
@click.option("--verify", "verify_after", is_flag=True, help="After the last step, run the read-only probes of `psbridge check` and record them.")
@click.option("--from-server", help="With --from-step N of the additional-servers step (09; 06 in a renewal): continue it at this server.")
@click.option("--yes", "assume_yes", is_flag=True,
              help="Run a package without --require-approval without asking (needed when there is no terminal).")
@click.option("--force-unlock", is_flag=True,
              help="Close the stale session of a crashed run that still holds the server's run lock (audited).")
@approval_options
@audit_log_option
def run(package_dir: Path, from_step: int | None, step_mode: bool, step_timeout: float, as_json: bool,
        verify_after: bool, from_server: str | None, assume_yes: bool, force_unlock: bool, require_approval: bool, trusted_keys: Path | None, min_approvals: int,
        forbid_self_approval: bool, operator_key: Path | None, forbid_keys: tuple[str, ...],
        audit_log: Path | None, **options: object) -> None:
    """Run a rendered package on the CRM server over PowerShell Remoting, step by step.

    The package is read once and checked (every file as plan.json records, the steps as
    psbridge's catalogue computes them; with --require-approval also byte-identical to
    psbridge's render and approved) before any secret is asked for; only those bytes
    are sent. One runspace runs all steps with $ErrorActionPreference = 'Stop'; the run
    stops at the first step that fails (exit 1) or whose outcome is unknown (timeout,
    lost connection: exit 4), and prints the exact command to continue. Exit 3: could
    not connect or authenticate. Records: PACKAGE_DIR/runs/<UTC time>.jsonl and the
    audit log (its run-start line is written before connecting, or nothing runs).

    \b
    Example:
      PSBRIDGE_WINRM_PASSWORD=… psbridge run output/contoso \\
          --username 'CONTOSO\\crmadmin' --o365-user admin@contoso.onmicrosoft.com
    """
    from .remote.action import Audited, NotRecorded
    from .remote.advice import RunSettings, next_steps
    from .remote.context import RemoteContext
    from .remote.inputs import read_step_secrets, read_winrm_password, secrets_needed
    from .remote.run import run_package
    from .remote.servers import RunOptions

    log = _package_log(audit_log, package_dir)
    policy = _policy(require_approval, trusted_keys, min_approvals, forbid_self_approval, operator_key, forbid_keys)
    host_option = options.pop("host")
    prepared = _gate(log, "run", package_dir, host_option, policy, from_step=from_step, from_server=from_server)
    package = prepared.package
    _warn_if_certificate_ends_first(prepared)
    conn = _connection(options, prepared.host)
    if policy is None:
        _confirm_unapproved(prepared, assume_yes, as_json)
    settings = RunSettings(
        o365_user=options.pop("o365_user"), step_timeout=step_timeout, step_mode=step_mode,  # type: ignore[arg-type]
        as_json=as_json, verify=verify_after, require_approval=require_approval, trusted_keys=trusted_keys,
        min_approvals=min_approvals, forbid=policy.forbid if policy else (), audit_log=log, assume_yes=assume_yes,
    )
    secrets = read_step_secrets(secrets_needed(prepared.selected), settings.o365_user)
    winrm_password = read_winrm_password(conn)
    _warn_if_unverified(conn)
    ctx = RemoteContext(package, conn, winrm_password, secrets, settings, _reporter(as_json))
    run_options = RunOptions(prepared.selected, prepared.additional, confirm=_ask_step if step_mode else None,
                             from_step=from_step, force_unlock=force_unlock, verify=verify_after,
                             show_check=lambda report: _print_check(report, as_json=as_json))
    try:
        done = run_package(ctx, run_options, Audited(log, "run"), prepared.approval)
    except ConnectFailure as exc:
        click.echo(f"psbridge: could not connect: {_safe(exc)}", err=True)
        raise click.exceptions.Exit(ConnectFailure.exit_code) from None
    except NotRecorded as exc:
        raise exc.original from None  # the log refused the start: nothing ran, nothing more to log there
    except Interrupted as exc:
        click.echo(f"psbridge: {exc}", err=True)
        raise click.exceptions.Exit(exc.exit_code) from None
    if not as_json:
        _print_audit_head(log, done.entry)
        if done.result.exit_code == 0:
            for line in next_steps(package, done.result.results, done.facts):
                click.echo(_safe(line))
    if done.result.exit_code:
        raise click.exceptions.Exit(done.result.exit_code)


def _gate(log: Path, action: str, package_dir: Path, host_option: str | None, policy,  # type: ignore[no-untyped-def]
          **request):  # type: ignore[no-untyped-def]
    """The package gate; a refusal is printed and logged before it ends the command."""
    from .remote.gate import GateRequest, prepare

    try:
        return prepare(GateRequest(package_dir, host_option, policy=policy, **request))
    except (UserError, RuntimeFailure) as exc:
        if action != "check" or policy is not None:
            _refused(log, action, exc, package_dir, host_option)
        raise


class HumanReporter:
    """One live line per step (`[06/08] spn … ok 1.2s`), error details on failure, then the summary.

    Every text that came from the server or the operator's options goes through
    `text.printable`, so a server's error message can't forge a progress line or move
    the cursor.
    """

    def __init__(self, out: Callable[..., None]) -> None:
        self.out = out

    def _lines(self, prefix: str, value: object) -> None:
        for line in str(value).splitlines() or [""]:
            self.out(f"{prefix}{printable(line)}")

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = event["event"]
        where = f" on {printable(event['host'])}" if kind.startswith("step-") and event.get("host") else ""
        if kind == "step-start":
            self.out(f"[{event['index']:02d}/{event['total']:02d}] {event['id']}{where} … ", nl=False)
        elif kind == "step-end":
            state = event["state"]
            if state == "skipped":
                why = f" ({printable(event['detail'])})" if event.get("detail") else ""
                self.out(f"[{event['index']:02d}/{event['total']:02d}] {event['id']}{where} … skipped{why}")
                return
            label = {"ok": "ok", "failed": "FAILED", "unknown": "UNKNOWN"}[state]
            self.out(f"{label} {event['seconds']:.1f}s")
            if state != "ok":
                for line in event.get("information") or []:
                    self._lines("    host: ", line)
                for err in event["errors"]:
                    self._lines("    error: ", err["message"])
                    if err["category"]:
                        self._lines("    category: ", err["category"])
                    if err["line"] is not None:
                        self.out(f"    script line: {err['line']}")
                    if err["position"]:
                        self._lines("      ", err["position"])
                if event["detail"]:
                    self._lines("    ", event["detail"])
        elif kind == "run-start":
            user = f" as {event['user']}" if event.get("user") else ""
            self.out(printable(f"psbridge run: {event['package']} on {event['host']}:{event['port']} "
                               f"({event['transport']}, {event['auth']}{user}); record: {event['record']}"))
        elif kind == "run-end":
            if event.get("reason") == "connect-failed":
                return  # the command line prints that one line on stderr
            self.out("")
            for line in event["summary"]:
                self.out(printable(line))
        elif kind == "run-quit":
            self.out(f"quit before step {event['index']:02d} ({event['id']})")


class JsonReporter:
    """`--json`: one JSON object per line, the same events the run record gets."""

    def __init__(self, out: Callable[..., None]) -> None:
        self.out = out

    def __call__(self, event: Mapping[str, Any]) -> None:
        self.out(json.dumps(event, ensure_ascii=False))


def _reporter(as_json: bool):  # type: ignore[no-untyped-def]
    return JsonReporter(click.echo) if as_json else HumanReporter(click.echo)


def _warn_if_certificate_ends_first(prepared) -> None:  # type: ignore[no-untyped-def]
    """One warning line when the package's certificate ends before its approval does.

    The approval lets the change run until its latest expiry; a certificate that ends
    earlier would be installed expired by a run late in that window (or already is).
    Without --require-approval there is no approval window to compare with.
    """
    from .clock import parse_time, utc_now

    facts = prepared.package.certificate
    used = prepared.approval.approvals_used if prepared.approval is not None else []
    if not facts or not used:
        return
    try:
        not_after = parse_time(facts.get("not_after"))
        latest = max(used, key=lambda a: parse_time(a.expires_at))
        approval_ends = parse_time(latest.expires_at)
    except ValueError:
        return  # facts psbridge did not write: the gates judge those, not this warning
    if not_after >= approval_ends:
        return
    verb = "expired" if not_after <= utc_now() else "expires"
    subject = facts.get("subject") or "(empty subject)"
    click.echo(_safe(f"psbridge: warning: the certificate {subject} {verb} {facts['not_after']}, before the approval "
                     f"({latest.approver} until {latest.expires_at})"), err=True)


def _confirm_unapproved(prepared, assume_yes: bool, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    """A package run without --require-approval never runs silently, like `terraform apply`.

    Before any secret is read or any connection made: say where it runs, which bytes (the
    digest) and what it changes, then ask [y/N]; with no terminal, only `--yes` lets it run.
    Approval files in the package are not checked here, so they are not mentioned as approval.
    """
    package = prepared.package
    changing = ", ".join(f"{s.index:02d} {s.id}" for s in prepared.selected if s.changes_state) or "none"
    servers = ", ".join([prepared.host, *prepared.additional])
    err = as_json  # --json keeps stdout for JSON events
    click.echo(_safe(f"psbridge run: package {package.name}, digest {package.digest}"), err=err)
    click.echo(_safe(f"  on: {servers}"), err=err)
    click.echo(_safe(f"  steps that change state: {changing}"), err=err)
    click.echo("  approvals: not checked (this run has no --require-approval)", err=err)
    if assume_yes:
        return
    if not (sys.stdin is not None and sys.stdin.isatty()):
        raise UserError("run: no terminal to confirm on; pass --yes to run this package without "
                        "--require-approval, or require its approval")
    if not click.confirm("Run it?", default=False, err=True):
        raise RuntimeFailure("run: not confirmed; nothing ran")


@cli.command("rollback", context_settings=CONTEXT)
@click.argument("package_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--run", "run_record", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The run record (PACKAGE_DIR/runs/*.jsonl) whose changes to undo.")
@connection_options
@click.option("--step-timeout", type=click.FloatRange(min=0, min_open=True), default=900.0, show_default=True,
              help="Seconds per script before it is stopped and reported UNKNOWN.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON event per line.")
@click.option("--yes", "assume_yes", is_flag=True, help="Without --require-approval: do not ask (no terminal).")
@approval_options
@audit_log_option
def rollback(package_dir: Path, run_record: Path, step_timeout: float, as_json: bool, assume_yes: bool,
             require_approval: bool, trusted_keys: Path | None, min_approvals: int, forbid_self_approval: bool,
             operator_key: Path | None, forbid_keys: tuple[str, ...], audit_log: Path | None,
             **options: object) -> None:
    """Undo what one recorded run changed, with the package's reviewed back-out scripts.

    The record is believed only when the audit log holds its sha256 for this package; the
    values taken from it (key credential ids, the SPN, the previous ServerSettings) are
    checked like parameters and passed as parameters. Scripts run in reverse step order
    with the same connection options, locks, records, prompt and approval gate as `run`;
    steps without a script (02, 09) are listed with their manual procedure.

    \b
    Example:
      psbridge rollback output/contoso --run output/contoso/runs/R.jsonl \\
          --username 'CONTOSO\\crmadmin' --o365-user admin@contoso.onmicrosoft.com
    """
    from .remote.action import Audited, NotRecorded
    from .remote.advice import RunSettings
    from .remote.context import RemoteContext
    from .remote.gate import GateRequest
    from .remote.inputs import read_step_secrets, read_winrm_password, secrets_needed
    from .remote.rollback import prepare_rollback, rollback_package, rollback_sends

    log = _package_log(audit_log, package_dir)
    policy = _policy(require_approval, trusted_keys, min_approvals, forbid_self_approval, operator_key, forbid_keys)
    host_option = options.pop("host")
    try:
        prepared, plan = prepare_rollback(GateRequest(package_dir, host_option, policy=policy), run_record, log)
    except (UserError, RuntimeFailure) as exc:
        _refused(log, "rollback", exc, package_dir, host_option)  # type: ignore[arg-type]
        raise
    package = prepared.package
    for step, why in plan.nothing:
        click.echo(f"step {step.index:02d} {step.id}: nothing to undo: {_safe(why)}", err=as_json)
    for step, manual in plan.manual:
        click.echo(f"step {step.index:02d} {step.id}: by hand: {_safe(manual)}", err=as_json)
    for item in plan.scripted:
        values = ", ".join(f"{k}={v!r}" for k, v in item.parameters.items())
        click.echo(f"step {item.step.index:02d} {item.step.id}: {item.file} with {_safe(values)}", err=as_json)
    if not plan.scripted:
        click.echo("rollback: no script to send", err=as_json)
        return
    conn = _connection(options, prepared.host)
    if policy is None and not assume_yes:
        if not (sys.stdin is not None and sys.stdin.isatty()):
            raise UserError("rollback: no terminal to confirm on; pass --yes, or require the package's approval")
        if not click.confirm("Send these back-out scripts?", default=False, err=True):
            raise RuntimeFailure("rollback: not confirmed; nothing was sent")
    ctx = RemoteContext(package, conn, None, settings=RunSettings(step_timeout=step_timeout), emit=_reporter(as_json))
    sends, parameters, _ = rollback_sends(ctx, plan)
    secrets = read_step_secrets(secrets_needed(s for s in sends if s.index not in parameters),
                                options.pop("o365_user"))  # type: ignore[arg-type]
    winrm_password = read_winrm_password(conn)
    _warn_if_unverified(conn)
    ctx = RemoteContext(package, conn, winrm_password, secrets, ctx.settings, ctx.emit)
    try:
        done = rollback_package(ctx, plan, Audited(log, "rollback", start="rollback-started"))
    except NotRecorded as exc:
        raise exc.original from None
    except ConnectFailure as exc:
        click.echo(f"psbridge: could not connect: {_safe(exc)}", err=True)
        raise click.exceptions.Exit(ConnectFailure.exit_code) from None
    except Interrupted as exc:
        click.echo(f"psbridge: {exc}", err=True)
        raise click.exceptions.Exit(exc.exit_code) from None
    result, entry = done.result, done.entry
    if not as_json:
        _print_audit_head(log, entry)
    if result.exit_code:
        raise click.exceptions.Exit(result.exit_code)


def _print_check(report, *, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    """Per step the verdict, before -> after when it would change, and known causes with their fixes;
    then what ends when (`expiry`) and one `warning:` line per reason for exit 6.

    Lines stay within 100 columns: the detail wraps under the step, long before/after values
    and every cause and fix go on their own indented lines. Outside text is escaped (`_safe`);
    a URL too long for its line is shown as host/…/page (`--json` carries it whole).
    """
    import json as _json
    import re as _re
    import textwrap

    if as_json:
        click.echo(_json.dumps({"event": "check", **report.as_json()}))
        return
    width, indent = 100, " " * 8
    label_width = len("before: ")

    def short_urls(text: str, room: int) -> str:
        def shorten(match: _re.Match[str]) -> str:
            url = match.group(0)
            if len(url) <= room:
                return url
            host, _, path = url.split("://", 1)[-1].partition("/")
            return f"{host}/…/{path.rstrip('/').rsplit('/', 1)[-1]}"
        return _re.sub(r"https?://\S+", shorten, text)

    def labelled(label: str, value: object) -> list[str]:
        first = indent + f"{label}:".ljust(label_width)
        text = short_urls(_safe(value), width - len(first))
        return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=" " * len(first),
                             break_on_hyphens=False) or [first.rstrip()]

    def values(label: str, value: object) -> list[str]:
        """A long before/after value: one line per `; `-separated item, a long `name=value` split after `=`."""
        first = indent + f"{label}:".ljust(label_width)
        rest = " " * len(first)
        out: list[str] = []
        for item in _safe(value).split("; "):
            lead = rest if out else first
            name, eq, val = item.partition("=")
            if len(lead) + len(item) > width and eq:
                out.append(lead + name + eq)
                out += textwrap.wrap(short_urls(val, width - len(rest) - 2), width, initial_indent=rest + "  ",
                                     subsequent_indent=rest + "  ", break_on_hyphens=False)
            else:
                out += textwrap.wrap(short_urls(item, width - len(lead)), width, initial_indent=lead,
                                     subsequent_indent=rest, break_on_hyphens=False) or [lead.rstrip()]
        return out

    total = len(report.verdicts)
    for v in report.verdicts:
        head = f"[{v.index:02d}/{total:02d}] {v.id:<16} {v.verdict:<12} "
        lines = textwrap.wrap(_safe(v.detail), width, initial_indent=head, subsequent_indent=indent,
                              break_on_hyphens=False) or [head.rstrip()]
        if v.before is not None or v.after is not None:
            inline = f"({_safe(v.before)} -> {_safe(v.after)})"
            if len(lines) == 1 and len(lines[0]) + 2 + len(inline) <= width:
                lines[0] += "  " + inline
            elif len(indent) + len(inline) <= width:
                lines.append(indent + inline)
            else:
                lines += values("before", v.before) + values("after", v.after)
        causes = (v.cause or "").split("\n") if v.cause else []
        fixes = (v.fix or "").split("\n") if v.fix else []
        for i in range(max(len(causes), len(fixes))):
            if i < len(causes):
                lines += labelled("cause", causes[i])
            if i < len(fixes):
                lines += labelled("fix", fixes[i])
        for line in lines:
            click.echo(line.rstrip())
    for line in _expiry_lines(report.expiry, report.warn_days, labelled):
        click.echo(line.rstrip())
    for note in report.notes:
        click.echo(f"note: {_safe(note)}")
    for warning in report.expiry_warnings:
        for line in textwrap.wrap(_safe(warning), width, initial_indent="warning: ", subsequent_indent=indent,
                                  break_on_hyphens=False):
            click.echo(line)
    words = {0: "nothing would change", 5: "the package would change something",
             1: "the check failed or a step is blocked",
             6: f"everything is in place, but something ends within {report.warn_days} days or has expired"}
    click.echo(f"check: {words[report.exit_code]} (exit {report.exit_code})")


def _expiry_lines(expiry, warn_days: int, labelled) -> list[str]:  # type: ignore[no-untyped-def]
    """What ends when: CRM's S2S certificate, its key credential in Entra ID, the other credentials."""
    if expiry is None:
        return []
    now = expiry.now

    def when(item) -> str:  # type: ignore[no-untyped-def]
        facts = item.facts(now, warn_days)
        if facts["ends"] is None:
            return "end unknown"
        days = facts["days_left"]
        return f"{facts['ends']} ({'EXPIRED' if facts['expired'] else f'{days} day' + ('' if days == 1 else 's') + ' left'})"

    lines = [f"expiry (at {format_time(now)}, warning within {warn_days} days):"]
    for cert in expiry.certificates:
        lines += labelled("crm", f"{expiry.certificate_type} certificate {cert.thumbprint}, not after {when(cert)}")
    if not expiry.certificates:
        lines += labelled("crm", f"no {expiry.certificate_type or 'S2S'} certificate")
    if not expiry.entra_read:
        lines += labelled("entra", "not read")
    elif expiry.credential is not None:
        lines += labelled("entra", f"key credential of {expiry.credential.thumbprint}, ends {when(expiry.credential)}")
    else:
        lines += labelled("entra", "no key credential of CRM's certificate")
    for key in expiry.other_credentials:
        lines += labelled("other", f"key credential {key.describe()}, ends {when(key)}")
    return lines


@cli.command("check", context_settings=CONTEXT)
@click.argument("package_dir", type=click.Path(file_okay=False, path_type=Path))
@connection_options
@click.option("--no-entra", is_flag=True, help="Skip Entra ID (it needs the session steps 03 and 04 and their secrets).")
@click.option("--probe-timeout", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
              help="Seconds per probe.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts as one JSON document.")
@click.option("--out", "save_to", is_flag=False, flag_value="", default=None, metavar="[FILE.json]",
              help="Save what check saw (evidence); without FILE: PACKAGE_DIR/checks/<UTC time>.json.")
@click.option("--warn-days", type=click.IntRange(min=0), default=EXPIRY_WARNING_DAYS, show_default=True, metavar="N",
              help="Exit 6 when all is in place but CRM's S2S certificate or its key credential in Entra ID "
                   "ends within N days, or another key credential of the CRM service principal has expired.")
@approval_options
@audit_log_option
def check(package_dir: Path, no_entra: bool, probe_timeout: float, as_json: bool, save_to: str | None,
          warn_days: int, require_approval: bool,
          trusted_keys: Path | None, min_approvals: int, forbid_self_approval: bool, operator_key: Path | None,
          forbid_keys: tuple[str, ...], audit_log: Path | None, **options: object) -> None:
    """Read the live state and say what the package would change, like `terraform plan`.

    Read-only: it sends the package's probe scripts (probes/, approved with the package)
    and, for Entra ID, only the session steps the catalogue names (03 session, 04
    connect); never a step that changes state, whatever plan.json says. Per step: in
    place, will change (before -> after), blocked or cannot tell. Then what ends when:
    CRM's S2S certificate, its key credential in Entra ID and the other credentials.
    Exit 0 nothing would change, 5 something would change, 6 all in place but something
    ends within --warn-days (or another credential has expired), 1 a probe failed or a
    step is blocked, 3 could not connect.

    \b
    Example:
      psbridge check output/contoso --username 'CONTOSO\\crmadmin' \\
          --o365-user admin@contoso.onmicrosoft.com
    """
    from .remote.checking import CheckOptions, check_steps, probe_package, record_check
    from .remote.context import RemoteContext
    from .remote.inputs import read_step_secrets, read_winrm_password, secrets_needed

    log = _package_log(audit_log, package_dir)
    policy = _policy(require_approval, trusted_keys, min_approvals, forbid_self_approval, operator_key, forbid_keys)
    host_option = options.pop("host")
    prepared = _gate(log, "check", package_dir, host_option, policy, for_check=True)  # type: ignore[arg-type]
    conn = _connection(options, prepared.host)
    for problem in prepared.package.replaced:
        click.echo(f"psbridge: warning: {_safe(problem)}; check sends the probes psbridge renders itself",
                   err=True)
    entra = check_steps(prepared.package, entra=not no_entra)
    secrets = read_step_secrets(secrets_needed(entra or []), options.pop("o365_user"))  # type: ignore[arg-type]
    winrm_password = read_winrm_password(conn)
    _warn_if_unverified(conn)
    ctx = RemoteContext(prepared.package, conn, winrm_password, secrets)
    check_options = CheckOptions(entra=not no_entra, timeout=probe_timeout, warn_days=warn_days, save_to=save_to,
                                 progress=_probe_line(as_json))
    try:
        report = probe_package(ctx, check_options)
    except ConnectFailure as exc:
        click.echo(f"psbridge: could not connect: {_safe(exc)}", err=True)
        raise click.exceptions.Exit(ConnectFailure.exit_code) from None
    _print_check(report, as_json=as_json)
    checked = record_check(ctx, report, check_options, log)
    if checked.saved is not None:
        click.echo(f"saved: {checked.saved}", err=as_json)
    if not as_json:
        _print_audit_head(log, checked.entry)
    if report.exit_code:
        raise click.exceptions.Exit(report.exit_code)


def _probe_line(as_json: bool):  # type: ignore[no-untyped-def]
    """One live line per probe (`probe certificate on crm01 … ok`): check was silent for seconds."""

    def show(name: str, host: str, answered: bool) -> None:
        click.echo(f"probe {name} on {_safe(host)} … {'ok' if answered else 'no answer'}", err=as_json)

    return show


def _safe(value: object, *, keep_newlines: bool = False) -> str:
    """Text that came from outside (files, keys, the server), with control characters escaped."""
    from .text import printable

    text = str(value)
    if keep_newlines:
        return "\n".join(printable(line) for line in text.split("\n"))
    return printable(text)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the command and turn failures into exit codes without tracebacks."""
    _install_prompt()
    try:
        # With standalone_mode=False click returns ctx.exit(n) / Exit(n) codes instead of raising.
        code = cli.main(args=argv, prog_name="psbridge", standalone_mode=False)
        if isinstance(code, int) and code:
            return code
    except UserError as exc:
        for problem in exc.problems:
            click.echo(f"psbridge: error: {_safe(problem)}", err=True)
        return UserError.exit_code
    except RuntimeFailure as exc:
        click.echo(f"psbridge: failed: {_safe(exc)}", err=True)
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
