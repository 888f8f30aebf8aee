"""`psbridge cert`: inspect, create and export the S2S certificate (no openssl needed).

`cryptography` is imported inside these commands (via generator.certificates) so that
the CLI starts fast for everything else.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import RuntimeFailure, UserError
from ..secrets import read_secret
from .options import CONTEXT, gather
from .output import safe

if TYPE_CHECKING:
    from ..newcert import LikeCertificate

PFX_PASSWORD_HELP = "Read the PFX password from the first line of stdin (else PSBRIDGE_PFX_PASSWORD, else a prompt)."


@click.group(context_settings=CONTEXT)
def cert() -> None:
    """Inspect, check, create and export the S2S certificate (no openssl needed).

    \b
    Example:
      psbridge cert new --subject "CN=crm.contoso.com, O=Contoso" --out certs/
    """


def _pfx_password(path: Path, password_stdin: bool) -> str | None:
    """The password of a PFX (stdin, PSBRIDGE_PFX_PASSWORD or a prompt); None for a .cer."""
    from ..certificates import PFX_PASSWORD_ENV, is_pfx_path

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
    from ..certificates import describe, inspect_file

    info = inspect_file(file, _pfx_password(file, password_stdin))
    if as_json:
        click.echo(json.dumps(_inert(info.to_dict()), indent=2, ensure_ascii=False))
    else:
        for line in describe(info):
            click.echo(line)
    if info.errors:
        raise RuntimeFailure(f"{file}: not usable as the S2S certificate ({len(info.errors)} error finding(s))")


@dataclasses.dataclass(frozen=True)
class NewOptions:
    """`cert new`'s options: where the subject, size and validity come from, and where the files go."""

    subject: str | None
    like: Path | None
    like_password_stdin: bool
    days: int | None
    key_size: str | None
    password_stdin: bool

    def check(self) -> None:
        """Refuse option combinations that cannot work, before a password is asked for."""
        from ..certificates import LIKE_PFX_PASSWORD_ENV, PFX_PASSWORD_ENV

        if self.subject is not None and self.like is not None:
            raise UserError("--subject and --like: give one; --like copies the subject of the certificate it renews")
        if self.subject is None and self.like is None:
            raise UserError("cert new: give --subject, or --like with the certificate to renew")
        if self.like_password_stdin and self.like is None:
            raise UserError("--like-password-stdin: needs --like")
        if self.like_password_stdin and self.password_stdin:
            raise UserError(f"--password-stdin and --like-password-stdin: stdin holds one password; give the other in "
                            f"{PFX_PASSWORD_ENV} or {LIKE_PFX_PASSWORD_ENV}")

    def template(self, like: Path) -> LikeCertificate:
        """The certificate --like renews, read (its PFX password asked for) with --days/--key-size applied."""
        from .. import certificates as certs
        from .. import newcert

        like_password = None
        if certs.is_pfx_path(like):
            like_password = read_secret(certs.LIKE_PFX_PASSWORD_ENV, f"Password for {like.name} (--like, the old PFX)",
                                        from_stdin=self.like_password_stdin, allow_empty=True,
                                        stdin_flag="--like-password-stdin")
        return newcert.like_certificate(
            like, like_password, days=self.days, key_size=int(self.key_size) if self.key_size else None,
            password_hint=f"set {certs.LIKE_PFX_PASSWORD_ENV} or pass --like-password-stdin",
        )


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
@gather(NewOptions, "opts")
def cert_new(out_dir: Path, name: str | None, legacy_pfx: bool, force: bool, as_json: bool, opts: NewOptions) -> None:
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
    from .. import certificates as certs
    from .. import newcert
    from ..dn import parse_subject
    from ..files import write_files

    opts.check()
    template = opts.template(opts.like) if opts.like is not None else None
    if template is not None:
        for warning in template.warnings:
            click.echo(f"psbridge: warning: {safe(warning)}", err=True)
        name_obj, days, size = template.subject, template.days, template.key_size
    else:
        assert opts.subject is not None  # NewOptions.check: --subject or --like
        name_obj, days, size = parse_subject(opts.subject), 365 if opts.days is None else opts.days, int(opts.key_size or 2048)
    stem = newcert.check_stem(name) if name else newcert.default_file_stem(name_obj)
    pfx_path, cer_path = out_dir / f"{stem}.pfx", out_dir / f"{stem}.cer"
    if opts.like is not None and any(os.path.abspath(p) == os.path.abspath(opts.like) for p in (pfx_path, cer_path)):
        raise UserError(f"--like: {opts.like} would be replaced by the new certificate; give another --name or --out")
    if not force:
        taken = [str(p) for p in (pfx_path, cer_path) if p.exists()]
        if taken:
            raise UserError(*(f"{p}: exists; pass --force to overwrite" for p in taken))
    password = read_secret(certs.PFX_PASSWORD_ENV, "PFX password", from_stdin=opts.password_stdin, confirm=True)
    made = newcert.create_self_signed(name_obj, password, days=days, key_size=size, legacy_pfx=legacy_pfx)
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
        click.echo(safe(f"psbridge: note: the new certificate has the subject of {template.path}; while that one is "
                        "in use, a renewal package ([certificate] replaces) needs another subject: cert new "
                        "--subject (README: Renewing the certificate)"), err=True)
    if as_json:
        document: dict[str, Any] = {"pfx": str(pfx_path), "cer": str(cer_path), "certificate": info.to_dict()}
        if renews is not None:
            document["like"] = renews
        click.echo(json.dumps(_inert(document), indent=2, ensure_ascii=False))
    else:
        click.echo(f"Wrote {pfx_path} and {cer_path}")
        if renews is not None:
            click.echo(safe(f"Renews {renews['file']} (thumbprint {renews['thumbprint']}): the same subject, "
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
    from ..certificates import export_cer

    if not force and out.exists():
        raise UserError(f"{out}: exists; pass --force to overwrite")
    info = export_cer(pfx, _pfx_password(pfx, password_stdin), out, force=force)
    click.echo(safe(f"Wrote {out}: {info.subject or '(empty subject)'}, thumbprint {info.thumbprint}"))
    for finding in info.findings:
        click.echo(safe(f"psbridge: {finding.level}: {pfx}: {finding.message}"), err=True)


def _inert(value: Any) -> Any:
    """A JSON document with every string escaped like the text output (`safe`): JSON escapes
    controls itself, but with ensure_ascii=False a bidi override or zero-width character would
    reach the terminal raw."""
    if isinstance(value, str):
        return safe(value)
    if isinstance(value, list):
        return [_inert(item) for item in value]
    if isinstance(value, dict):
        return {key: _inert(item) for key, item in value.items()}
    return value
