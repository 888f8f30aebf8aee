"""Approvals: keygen, approve, verify, show."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..errors import CommandFinished, ExitCode, RuntimeFailure, UserError
from ..secrets import read_secret
from .auditing import audit_failure, read_package_logged
from .options import CONTEXT, audit_log_option, gather, package_log
from .approval_text import print_approved, print_verified
from .output import echo_wrapped, human, safe
from .prompts import has_terminal


#: Where keygen puts the private key unless told: a folder of the user's own, never the board's folder.
DEFAULT_KEY_DIR = Path("~") / ".psbridge" / "keys"


def _key_folders(out_dir: Path | None, key_out: Path | None, pub_out: Path | None) -> tuple[Path, Path]:
    """The private key's folder and the public key's: --key-out and --pub-out, or --out for both."""
    if out_dir is not None:
        if key_out is not None or pub_out is not None:
            raise UserError("--out: give --out DIR (both files) or --key-out/--pub-out, not both")
        return out_dir, out_dir
    return key_out or DEFAULT_KEY_DIR.expanduser(), pub_out or Path(".")


@dataclass(frozen=True)
class KeygenFlags:
    """keygen's passphrase and overwrite options."""

    no_passphrase: bool
    ask_passphrase: bool
    force: bool


@click.command("keygen", context_settings=CONTEXT)
@click.option("--key-out", "key_out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for <name>.key (private, 0600) [default: ~/.psbridge/keys].")
@click.option("--pub-out", "pub_out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for <name>.pub.json, the public key for the board [default: the current folder].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Both files into one folder (as before --key-out and --pub-out).")
@click.option("--name", required=True, help='Approver identity, e.g. "Jane Doe <jane@contoso.com>".')
@click.option("--no-passphrase", "no_passphrase", is_flag=True,
              help="Write the private key UNENCRYPTED (anyone who can read the file can approve as you).")
@click.option("--passphrase", "ask_passphrase", is_flag=True,
              help="Kept for old scripts; does nothing (keys are always encrypted unless --no-passphrase).")
@click.option("--force", is_flag=True, help="Replace existing key files.")
@gather(KeygenFlags, "flags")
def keygen_command(name: str, key_out: Path | None, pub_out: Path | None, out_dir: Path | None,
                   flags: KeygenFlags) -> None:
    """Create an Ed25519 key pair for an approver.

    The private key goes to --key-out (default ~/.psbridge/keys, with a copy of the public
    key beside it: approve reads the approver's identity from it); the public key for the
    board goes to --pub-out (default: the current folder). The private key is encrypted with
    a passphrase (OpenSSH key format, bcrypt-pbkdf) from PSBRIDGE_KEY_PASSPHRASE or, on a
    terminal, a hidden prompt asked twice. Without a terminal and without the variable,
    keygen refuses unless --no-passphrase is given. Give the .pub.json file to whoever keeps
    the board's trusted-keys folder; keep the .key file to yourself.

    \b
    Example:
      psbridge keygen --pub-out board --name "Jane Doe <jane@contoso.com>"
    """
    from .. import keys

    key_dir, pub_dir = _key_folders(out_dir, key_out, pub_out)
    identity = keys.check_identity(name)  # before asking for a passphrase that would be wasted
    board_copy = None if os.path.abspath(key_dir) == os.path.abspath(pub_dir) else (
        pub_dir / f"{keys.identity_slug(identity)}{keys.PUBLIC_KEY_SUFFIX}")
    if board_copy is not None and not flags.force and (board_copy.exists() or board_copy.is_symlink()):
        raise UserError(f"{board_copy}: exists; use --force to replace it")
    passphrase = _keygen_passphrase(flags)
    if not key_dir.exists():
        _make_folder(key_dir, 0o700, "--key-out")
    made = keys.generate_keypair(key_dir, name, passphrase, force=flags.force)
    public = made.public_key
    if board_copy is not None:
        _copy_public(made, board_copy, flags.force)
        public = board_copy
    if not made.encrypted:
        click.echo(f"psbridge: warning: {made.private_key} is NOT encrypted (--no-passphrase): "
                   "anyone who can read it can approve as you", err=True)
    click.echo(f"private key: {made.private_key} ({'encrypted' if made.encrypted else 'NOT encrypted'}, mode 0600)")
    click.echo(f"public key:  {public}")
    click.echo(f"fingerprint: {made.fingerprint}")


def _keygen_passphrase(flags: KeygenFlags) -> str | None:
    """The new key's passphrase (None: --no-passphrase); asked only once the destinations are known to be free."""
    from .. import keys

    if flags.no_passphrase:
        if flags.ask_passphrase:
            raise UserError("--no-passphrase and --passphrase: choose one")
        if keys.PASSPHRASE_ENV in os.environ:
            raise UserError(f"--no-passphrase: {keys.PASSPHRASE_ENV} is set too; unset it or drop --no-passphrase")
        return None
    if keys.PASSPHRASE_ENV in os.environ or has_terminal():
        return read_secret(keys.PASSPHRASE_ENV, "key passphrase", confirm=True, stdin_flag=None)
    raise UserError(f"key passphrase: not given; set {keys.PASSPHRASE_ENV}, or pass --no-passphrase "
                    "for an unencrypted key (no terminal to prompt on)")


def _make_folder(folder: Path, mode: int, option: str) -> None:
    """Create the private key's folder private to the user (a new ~/.psbridge/keys is 0700)."""
    try:
        folder.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{option} {folder}: cannot create folder: {exc.strerror or exc}") from None


def _copy_public(made: Any, target: Path, force: bool) -> None:
    """The public key for the board in its own folder; a failure leaves no half pair behind."""
    from ..files import write_file

    try:
        _make_folder(target.parent, 0o755, "--pub-out")
        write_file(target, made.public_key.read_bytes(), 0o644, overwrite=force)
    except BaseException:
        if not force:
            made.private_key.unlink(missing_ok=True)
            made.public_key.unlink(missing_ok=True)
        raise


@click.command("approve", context_settings=CONTEXT)
@click.argument("package_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Your private key from psbridge keygen (its .pub.json must be next to it).")
@click.option("--expires", default="7d", show_default=True, help="Validity: Nd, Nh or Nm (minutes), at most 90d.")
@click.option("--comment", default="", help="Why / change ticket; signed with the approval.")
@click.option("--json", "as_json", is_flag=True, help="Print what was approved as one JSON object (warnings stay on stderr).")
@audit_log_option
def approve_command(package_dir: Path, key_path: Path, expires: str, comment: str, as_json: bool,
                    audit_log: Path | None) -> None:
    """Sign the package's digest and add the approval under PACKAGE_DIR/approvals/.

    The package must be exactly what this psbridge renders from its plan.json. An
    encrypted key's passphrase comes from PSBRIDGE_KEY_PASSPHRASE or a hidden prompt.
    Approving again with the same key while your approval is still valid adds nothing.

    \b
    Example:
      psbridge approve output/contoso --key ~/.psbridge/jane-doe.key \\
          --expires 3d --comment "CHG-1234"
    """
    from .. import approvals, audit, clock

    log = package_log(audit_log, package_dir)
    package = read_package_logged(package_dir, log, "approve")
    try:
        result = approvals.approve_package(package, key_path, approvals.parse_validity(expires), comment)
    except (UserError, RuntimeFailure) as exc:
        audit_failure(log, "approve", exc, package, key=str(key_path))
        raise
    rec = result.record
    entry = audit.record(log, "approve", package, "approved" if result.created else "already-approved",
                         approver=rec["approver"], fingerprint=rec["fingerprint"], file=result.path.name,
                         expires_at=rec["expires_at"], comment=rec["comment"])
    warnings = [safe(short.line(str(package_dir), str(key_path), clock.utc_now()))
                for short in approvals.window_shortfalls(package, [(rec["approver"], rec["expires_at"])])]
    print_approved(result, package_dir, (log, entry), as_json, warnings)


@click.command("verify", context_settings=CONTEXT)
@click.argument("package_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--trusted-keys", "trusted_keys", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of approvers' *.pub.json files whose approvals count.")
@click.option("--min-approvals", default=1, show_default=True, type=click.IntRange(min=1),
              help="Distinct trusted people who must have approved the current digest.")
@click.option("--forbid-key", "forbid_keys", multiple=True, metavar="PUBKEY",
              help="A key (.pub.json, key file or sha256 fingerprint) whose person may not approve; repeatable.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the verdict as one JSON object (warnings and refusals stay on stderr).")
@audit_log_option
def verify_command(package_dir: Path, trusted_keys: Path, min_approvals: int, forbid_keys: tuple[str, ...],
                   as_json: bool, audit_log: Path | None) -> None:
    """Check that PACKAGE_DIR is exactly what psbridge renders from its plan.json, and approved.

    Exit 0 when every file is what this psbridge renders from plan.json's parameters and
    at least --min-approvals distinct trusted people signed the current digest,
    unexpired; otherwise print every reason and exit 1 (exit 2 for bad input such as a
    missing trusted-keys folder). Every key of the trusted-keys folder is named; hidden
    files in it (.name.pub.json, which `ls` does not show) are never trusted, only named.

    \b
    Example:
      psbridge verify output/contoso --trusted-keys board-keys/ --min-approvals 2
    """
    from .. import approvals, audit

    from ..keys import private_key_notice

    log = package_log(audit_log, package_dir)
    package = read_package_logged(package_dir, log, "verify")
    notice = private_key_notice(trusted_keys)
    if notice is not None:
        echo_wrapped(safe(notice), "psbridge: warning: ", err=True)
    policy = approvals.ApprovalPolicy(trusted_keys, min_approvals, forbid_keys)
    try:
        result = approvals.verify_package(package, policy)
    except (UserError, RuntimeFailure) as exc:
        audit_failure(log, "verify", exc, package)
        raise
    entry = audit.record(log, "verify", package, "verified" if result.ok else "refused",
                         min_approvals=min_approvals, reasons=result.reasons,
                         approvals=[a.to_json() for a in result.approvals_used])
    print_verified(result, package_dir, min_approvals, (log, entry), as_json)
    if not result.ok:
        # main's `psbridge: failed:` line and exit 1, wrapped as the refusals above it are
        from ..remote.advice import approval_next

        found = approval_next(str(package_dir), result.reasons)
        # the command last, so that it is printed whole on a line of its own
        advice = f"; next, {found[0]}, then verify again: {safe(found[1])}" if found else ""
        echo_wrapped(f"{safe(package_dir)}: not verified ({len(result.reasons)} reason(s) above){advice}",
                     "psbridge: failed: ", err=True)
        raise CommandFinished(ExitCode.FAILED)


@click.command("show", context_settings=CONTEXT)
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
    from .. import approvals
    from ..package import read_package

    summary = approvals.package_summary(read_package(package_dir), trusted_keys)
    if as_json:
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    for label in ("package", "name", "profile", "digest"):
        click.echo(f"{label + ':':<13}{safe(summary[label])}")
    problems = summary["integrity"] + summary["reproducible"]
    verdict = "files match plan.json and psbridge's render" if not problems else f"{len(problems)} problem(s)"
    click.echo(f"{'integrity:':<13}{verdict}")
    for problem in problems:
        click.echo(f"  ! {safe(problem)}")
    click.echo("steps:")
    for step in summary["steps"]:
        click.echo(f"  {safe(step['index'])!s:>2}  {safe(step['id'] or ''):<16} {safe(step['kind'] or ''):<8} "
                   f"{safe(step['title'] or '')}")
    if summary["non_ascii"]:
        click.echo("values with characters outside ASCII:")
        for item in summary["non_ascii"]:
            click.echo(f"  {safe(item['key'])} = {safe(item['value'])}")
            click.echo(f"    {safe(', '.join(item['code_points']))}")
    if summary["certificate"]:
        click.echo("certificate:")
        for key, value in summary["certificate"].items():
            if isinstance(value, list) and value:  # e.g. warnings: one line each
                click.echo(f"  {safe(key) + ':'}")
                for item in value:
                    click.echo(f"    - {human(item)}")
            else:
                click.echo(f"  {safe(key) + ':':<12} {human(value)}")
    trust = "" if summary["trusted_keys_checked"] else " (trust not checked; pass --trusted-keys)"
    click.echo(f"approvals{trust}:" if summary["approvals"] else "approvals:   none")
    for item in summary["approvals"]:
        key = (item["fingerprint"] or "")[:16]
        click.echo(f"  {item['status']:<16} {safe(item['approver'] or '?')} key {key or '?'} "
                   f"expires {safe(item['expires_at'] or '?')}  {safe(item['file'])}")
        if item["comment"]:
            click.echo(f"  {'':<16} comment: {safe(item['comment'])}")
        for problem in item["problems"]:
            click.echo(f"  {'':<16} ! {safe(problem)}")
    for stray in summary["stray_files"]:
        click.echo(f"  unexpected file {safe(stray)}")


#: The commands of this module, as `psbridge` adds them.
COMMANDS = (keygen_command, approve_command, verify_command, show_command)
