"""Everything the commands print, in one place: escaping, the check report, the run's events.

Text that came from outside (files, keys, the server, the operator's options) is escaped
with `safe` before it reaches the terminal, so that it cannot forge a line or move the
cursor. `--json` output is JSON and needs no escaping.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..clock import format_time
from ..text import printable
from .progress import HumanReporter, JsonReporter, StatusLine, reporter, stop_status_lines
from .screen import WIDTH, colour, echo_wrapped, is_terminal, width, wrap

__all__ = ["HumanReporter", "JsonReporter", "StatusLine", "echo_wrapped", "is_terminal", "reporter", "safe",
           "stop_status_lines", "width", "wrap"]

if TYPE_CHECKING:
    from ..check import CheckReport, Ending, Expiry, StepVerdict

#: Check report lines stay within WIDTH (100) columns, on a terminal too.
INDENT = " " * 8
Labelled = Callable[[str, object], list[str]]


def safe(value: object, *, keep_newlines: bool = False) -> str:
    """Text that came from outside (files, keys, the server), with control characters escaped."""
    text = str(value)
    if keep_newlines:
        return "\n".join(printable(line) for line in text.split("\n"))
    return printable(text)


def human(value: object) -> str:
    """A plan.json value as a person reads it: yes/no, none, comma-separated lists; escaped."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(human(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{safe(k)}: {human(v)}" for k, v in value.items()) if value else "none"
    return safe(value)


def warn(text: str) -> None:
    """One `psbridge: warning:` line on stderr; `text` is escaped."""
    click.echo(f"psbridge: warning: {safe(text)}", err=True)


def print_audit_head(log: Path, entry: Mapping[str, Any]) -> None:
    """After each audit write, the new head hash: quote it in the change ticket."""
    from ..audit import head_of

    click.echo(f"audit: {log} head {head_of(entry)}")


def warn_if_unverified(verify_tls: bool, transport: str) -> None:
    """The loud warning of --no-verify-tls over https."""
    if not verify_tls and transport == "https":
        click.echo(
            "psbridge: WARNING: --no-verify-tls: the server's certificate is NOT checked; anyone on the path can "
            "impersonate it and read the credentials and secrets sent to it.",
            err=True,
        )


def probe_line(as_json: bool) -> Callable[[str, str, bool], None]:
    """One live line per probe (`probe certificate on crm01 … ok`): check was silent for seconds."""

    def show(name: str, host: str, answered: bool) -> None:
        click.echo(f"probe {name} on {safe(host)} … {'ok' if answered else 'no answer'}", err=as_json)

    return show


# --------------------------------------------------------------------------- the check report


def _short_urls(text: str, room: int) -> str:
    """A URL too long for its line shown as host/…/page (`--json` carries it whole)."""

    def shorten(match: re.Match[str]) -> str:
        url = match.group(0)
        if len(url) <= room:
            return url
        host, _, path = url.split("://", 1)[-1].partition("/")
        return f"{host}/…/{path.rstrip('/').rsplit('/', 1)[-1]}"

    return re.sub(r"https?://\S+", shorten, text)


_LABEL_WIDTH = len("before: ")


def _labelled(label: str, value: object) -> list[str]:
    """`label: value` under a step, wrapped with the value's lines aligned."""
    first = INDENT + f"{label}:".ljust(_LABEL_WIDTH)
    text = _short_urls(safe(value), WIDTH - len(first))
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=" " * len(first),
                         break_on_hyphens=False) or [first.rstrip()]


def _values(label: str, value: object) -> list[str]:
    """A long before/after value: one line per `; `-separated item, a long `name=value` split after `=`."""
    first = INDENT + f"{label}:".ljust(_LABEL_WIDTH)
    rest = " " * len(first)
    out: list[str] = []
    for item in safe(value).split("; "):
        lead = rest if out else first
        name, eq, val = item.partition("=")
        if len(lead) + len(item) > WIDTH and eq:
            out.append(lead + name + eq)
            out += textwrap.wrap(_short_urls(val, WIDTH - len(rest) - 2), WIDTH, initial_indent=rest + "  ",
                                 subsequent_indent=rest + "  ", break_on_hyphens=False)
        else:
            out += textwrap.wrap(_short_urls(item, WIDTH - len(lead)), WIDTH, initial_indent=lead,
                                 subsequent_indent=rest, break_on_hyphens=False) or [lead.rstrip()]
    return out


def _coloured_verdict(line: str, at: int, word: str) -> str:
    """The verdict word of a step's first line in its colour, once the line is wrapped (a colour's
    escape codes take no columns on screen, but textwrap would count them)."""
    if not line[at:].startswith(word):
        return line
    return line[:at] + colour(word) + line[at + len(word):]


def _verdict_lines(verdict: StepVerdict, total: int) -> list[str]:
    """One step's verdict, before -> after when it would change, then its causes and fixes."""
    at = len(f"[{verdict.index:02d}/{total:02d}] {verdict.id:<16} ")
    shown = f"{verdict.verdict} (after {verdict.not_before})" if verdict.not_before else verdict.verdict
    head = f"[{verdict.index:02d}/{total:02d}] {verdict.id:<16} {shown:<12} "
    lines = textwrap.wrap(safe(verdict.detail), WIDTH, initial_indent=head, subsequent_indent=INDENT,
                          break_on_hyphens=False) or [head.rstrip()]
    if verdict.before is not None or verdict.after is not None:
        inline = f"({safe(verdict.before)} -> {safe(verdict.after)})"
        if len(lines) == 1 and len(lines[0]) + 2 + len(inline) <= WIDTH:
            lines[0] += "  " + inline
        elif len(INDENT) + len(inline) <= WIDTH:
            lines.append(INDENT + inline)
        else:
            lines += _values("before", verdict.before) + _values("after", verdict.after)
    causes = verdict.cause.split("\n") if verdict.cause else []
    fixes = verdict.fix.split("\n") if verdict.fix else []
    for i in range(max(len(causes), len(fixes))):
        if i < len(causes):
            lines += _labelled("cause", causes[i])
        if i < len(fixes):
            lines += _labelled("fix", fixes[i])
    lines[0] = _coloured_verdict(lines[0], at, verdict.verdict)
    return lines


def print_check(report: CheckReport, *, as_json: bool) -> None:
    """Per step the verdict, before -> after when it would change, and known causes with their fixes;
    then what ends when (`expiry`) and one `warning:` line per reason for exit 6.

    Lines stay within 100 columns: the detail wraps under the step, long before/after values
    and every cause and fix go on their own indented lines. Outside text is escaped (`safe`);
    a URL too long for its line is shown as host/…/page (`--json` carries it whole).
    """
    if as_json:
        click.echo(json.dumps({"event": "check", **report.as_json()}))
        return
    total = max((v.index for v in report.verdicts), default=0)  # a farm's last step has one verdict per server
    for v in report.verdicts:
        for line in _verdict_lines(v, total):
            click.echo(line.rstrip())
    for line in expiry_lines(report.expiry, report.warn_days, _labelled):
        click.echo(line.rstrip())
    for note in report.notes:
        click.echo(f"note: {safe(note)}")
    for warning in report.expiry_warnings:
        for line in textwrap.wrap(safe(warning), WIDTH, initial_indent="warning: ", subsequent_indent=INDENT,
                                  break_on_hyphens=False):
            click.echo(line)
    words = {0: "nothing would change", 5: "the package would change something",
             1: "the check failed or a step is blocked",
             6: f"everything is in place, but something ends within {report.warn_days} days or has expired"}
    click.echo(f"check: {words[report.exit_code]} (exit {report.exit_code})")


def expiry_lines(expiry: Expiry | None, warn_days: int, labelled: Labelled) -> list[str]:
    """What ends when: CRM's S2S certificate, its key credential in Entra ID, the other credentials."""
    if expiry is None:
        return []
    now = expiry.now

    def when(item: Ending) -> str:
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


