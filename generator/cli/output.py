"""Everything the commands print, in one place: escaping, the check report, the run's events.

Text that came from outside (files, keys, the server, the operator's options) is escaped
with `safe` before it reaches the terminal, so that it cannot forge a line or move the
cursor. `--json` output is JSON and needs no escaping.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from ..clock import format_time
from ..text import printable

if TYPE_CHECKING:
    from ..check import CheckReport, Ending, Expiry, StepVerdict

#: Check report lines stay within this many columns.
WIDTH = 100
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


# --------------------------------------------------------------------------- width and colour


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether `stream` (stdout by default) is a terminal: the status line and colour need one."""
    stream = stream if stream is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except ValueError:  # a closed stream
        return False


def width() -> int:
    """Where long lines wrap: the terminal's width on a terminal, 100 columns otherwise (logs, pipes).

    shutil, not click: click.get_terminal_size is gone from click 8.1.
    """
    if not is_terminal():
        return WIDTH
    return max(40, shutil.get_terminal_size((WIDTH, 24)).columns)


#: Text between backticks is a command to copy: it is never wrapped.
_COMMAND = re.compile(r"`([^`\n]+)`")


def wrap(text: str, first: str = "", indent: str = "    ", columns: int | None = None) -> list[str]:
    """`text` wrapped to the screen with a hanging indent; a `command` in backticks on a line of its own.

    Each paragraph (line of `text`) wraps on its own; a command is printed whole (without its
    backticks) on its own indented line, however long, so that it can be copied as it is. The
    caller escapes outside text first (`safe`).
    """
    columns = columns or width()
    lines: list[str] = []
    for paragraph in text.split("\n"):
        if not paragraph.strip():
            lines.append("")
            continue
        lead = first if not lines else indent
        for i, part in enumerate(_COMMAND.split(paragraph)):
            if i % 2:  # a command: whole, on its own line
                if lead.strip():
                    lines.append(lead)
                lines.append(indent + "  " + part)
            else:
                # The `;` or `.` that followed a command in the sentence would only spoil a copied line.
                part = (part.lstrip(";,. ") if i else part).strip()
                if not part:
                    continue
                lines += textwrap.wrap(part, columns, initial_indent=lead, subsequent_indent=indent,
                                       break_long_words=False, break_on_hyphens=False)
            lead = indent
    return [line.rstrip() for line in lines] or [first.rstrip()]


def echo_wrapped(text: str, first: str = "", indent: str = "    ", *, err: bool = False) -> None:
    """Print `text` (already escaped) wrapped as `wrap` does: one long line was 140-370 columns."""
    for line in wrap(text, first, indent):
        click.echo(line, err=err)


#: The colour of each word that says how a step went (run, rollback, check).
COLOURS = {"ok": "green", "in place": "green", "FAILED": "red", "failed": "red", "blocked": "red",
           "UNKNOWN": "yellow", "unknown": "yellow", "cannot tell": "yellow"}


def colour(word: str) -> str:
    """`word` in its colour. click.echo drops the colour when the stream is not a terminal, with
    NO_COLOR or --no-color (both set the context's `color` to False, see cli/__init__.py)."""
    name = COLOURS.get(word.strip())
    return click.style(word, fg=name, bold=True if name == "red" else None) if name else word


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


# --------------------------------------------------------------------------- run and rollback events


def elapsed(seconds: float) -> str:
    """A step's running time as a clock reads: 0:42, 12:05, 1:02:03."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class StatusLine:
    """The sign of life while a step runs: how long it has been running, from a helper thread.

    On a terminal, one line redrawn in place each second (`[07/13] crm-settings … 0:42`) and
    cleared before the step's result prints. Elsewhere (a pipe, a log) a plain line only every
    minute, so that `psbridge run … | tee run.log` shows life without filling the log. The
    thread only draws between a step's start and its end, when the main thread is waiting for
    the server: it never writes during a prompt, and `stop` waits for it, so nothing it writes
    can land after the step's result. Ctrl-C and SIGTERM reach the main thread as before.
    """

    def __init__(self, out: Callable[..., None], *, live: bool, every: float | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.live = live
        self.every = every  # seconds between redraws; None: never (the prefix, then the result)
        self.clock = clock
        self._prefix = ""
        self._drawn = 0
        self._pending = False  # the step's prefix is on the line, waiting for its result
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self, prefix: str) -> None:
        """The step has been sent: show `prefix` and start counting."""
        self.stop()
        self._prefix, self._stop = prefix, threading.Event()
        started = self.clock()
        if self.live:
            self._draw(0.0)
        else:
            self.out(prefix, nl=False)
            self._pending = True
        if self.every is None:
            return
        self._thread = threading.Thread(target=self._tick, args=(started, self._stop), daemon=True,
                                        name="psbridge-status")
        _TICKING.add(self)
        self._thread.start()

    def _tick(self, started: float, stop: threading.Event) -> None:
        """Redraw every `every` seconds of the step's time until the step ends."""
        every = self.every or 1.0
        beats = 1
        while not stop.wait(max(0.0, started + beats * every - self.clock())):
            with self._lock:
                if stop.is_set():
                    return
                seconds = self.clock() - started
                if self.live:
                    self._draw(seconds)
                else:
                    self.out(f"{'' if self._pending else self._prefix}still running, {elapsed(seconds)}")
                    self._pending = False
            beats = max(beats + 1, int((self.clock() - started) / every) + 1)

    def _draw(self, seconds: float) -> None:
        """The status line in place: never wider than the terminal, or `\\r` could not go back over it."""
        text = f"{self._prefix}{elapsed(seconds)}"
        room = max(10, shutil.get_terminal_size((WIDTH, 24)).columns - 1)
        text = text if len(text) <= room else text[: room - 1] + "…"
        self.out("\r" + text + " " * max(0, self._drawn - len(text)), nl=False)
        self._drawn = len(text)

    def stop(self) -> str:
        """The step ended (or the run did): stop counting, clear the status line.

        Returns what must precede the step's result: "" when its prefix is still on the
        line (a pipe, no minute passed), else the prefix.
        """
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            with self._lock:  # a redraw under way finishes first
                pass
            thread.join(2.0)
        if self.live and self._drawn:
            self.out("\r" + " " * self._drawn + "\r", nl=False)
            self._drawn = 0
        if self._pending:
            self._pending = False
            return ""
        return self._prefix


#: Status lines whose thread runs: `stop_status_lines` ends them when a command ends.
_TICKING: weakref.WeakSet[StatusLine] = weakref.WeakSet()


def stop_status_lines() -> None:
    """End every status line still counting: a command that ended half way through a step (its
    step-end never came) must not leave a thread drawing after it (cli.main calls this)."""
    for line in list(_TICKING):
        line.stop()
    _TICKING.clear()


class HumanReporter:
    """One live line per step (`[06/08] spn … ok 1.2s`), error details on failure, then the summary.

    While a step runs, `status` shows its running time. Every text that came from the
    server or the operator's options goes through `text.printable`, so a server's error
    message can't forge a progress line or move the cursor.
    """

    def __init__(self, out: Callable[..., None], status: StatusLine | None = None) -> None:
        self.out = out
        self.status = status if status is not None else StatusLine(out, live=False, every=None)

    def _lines(self, prefix: str, value: object) -> None:
        """Each line of a server's text on its own escaped line, so none can pose as a progress line."""
        for line in str(value).splitlines() or [""]:
            self.out(f"{prefix}{printable(line)}")

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = event["event"]
        where = f" on {printable(event['host'])}" if kind.startswith("step-") and event.get("host") else ""
        if kind == "step-start":
            self.status.start(f"[{event['index']:02d}/{event['total']:02d}] {event['id']}{where} … ")
            return
        lead = self.status.stop()  # any other event: the step is no longer running
        if kind == "step-end":
            self._step_end(event, where, lead)
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

    def _step_end(self, event: Mapping[str, Any], where: str, lead: str) -> None:
        """The end of the step line (after `lead`, its prefix when the screen no longer shows it);
        on failure the server's messages and where in the script."""
        state = event["state"]
        if state == "skipped":
            why = f" ({printable(event['detail'])})" if event.get("detail") else ""
            self.out(f"[{event['index']:02d}/{event['total']:02d}] {event['id']}{where} … skipped{why}")
            return
        label = {"ok": "ok", "failed": "FAILED", "unknown": "UNKNOWN"}[state]
        self.out(f"{lead}{colour(label)} {event['seconds']:.1f}s")
        if state == "ok":
            return
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


class JsonReporter:
    """`--json`: one JSON object per line, the same events the run record gets."""

    def __init__(self, out: Callable[..., None]) -> None:
        self.out = out

    def __call__(self, event: Mapping[str, Any]) -> None:
        self.out(json.dumps(event, ensure_ascii=False))


def reporter(as_json: bool) -> HumanReporter | JsonReporter:
    """The screen's view of a run's or rollback's events: progress lines, or JSON lines with --json.

    With --json, the events only (no status line: stdout is for JSON). Otherwise a status line
    redrawn each second on a terminal, a plain line each minute elsewhere.
    """
    if as_json:
        return JsonReporter(click.echo)
    live = is_terminal()
    return HumanReporter(click.echo, StatusLine(click.echo, live=live, every=1.0 if live else 60.0))
