"""What a reviewer reads about a package: report (one HTML file) and diff (what changed)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ExitCode, CommandFinished
from .options import CONTEXT, audit_log_option, package_log
from .output import echo_wrapped, safe


@click.command("report", context_settings=CONTEXT)
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
    from ..package import read_package
    from ..report import build_report, check_target, default_path, write_report

    target = check_target(out if out is not None else default_path(package_dir), package_dir)
    package = read_package(package_dir)
    html = build_report(package, audit_log=package_log(audit_log, package_dir), trusted_keys=trusted_keys)
    digest = write_report(html, target)
    if package.problems or package.reproduction_problems:
        click.echo(f"psbridge: warning: {safe(package_dir)} is not intact or not reproducible; the report says why",
                   err=True)
    echo_wrapped(f"wrote {safe(target)} (package {safe(package.name)} digest {package.digest}; report sha256 {digest})")


@click.command("diff", context_settings=CONTEXT)
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
    from ..package import read_package
    from ..package_diff import diff_packages

    result = diff_packages(read_package(old_dir), read_package(new_dir))
    click.echo(safe(result.render(str(old_dir), str(new_dir)), keep_newlines=True), nl=False)
    if not result.identical:
        raise CommandFinished(ExitCode.FAILED)  # diff(1): 1 = the packages differ, not a failure


#: The commands of this module, as `psbridge` adds them.
COMMANDS = (report_command, diff_command)
