"""What the operator sees while a run or a rollback goes: a line per step, its running time, the summary.

`reporter` gives the screen's view of the events the executor emits (the same events the run
record gets): progress lines with a status line while a step runs, or JSON lines with --json.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import click

from ..text import printable
from . import screen
from .screen import WIDTH, colour


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
        _TICKING.discard(self)
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

    def __init__(self, out: Callable[..., None], status: StatusLine | None = None, *, colourful: bool = False) -> None:
        self.out = out
        self.status = status if status is not None else StatusLine(out, live=False, every=None)
        #: ok / FAILED / UNKNOWN in colour (click.echo still drops it where colour is off).
        self.colourful = colourful

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
            header = printable(f"psbridge run: {event['package']} on {event['host']}:{event['port']} "
                               f"({event['transport']}, {event['auth']}{user}); record: {event['record']}")
            for line in screen.wrap(header):  # 133 columns with a usual record path: wrapped (issue 21)
                self.out(line)
        elif kind == "run-end":
            if event.get("reason") == "connect-failed":
                return  # the command line prints that one line on stderr
            self.out("")
            for line in event["summary"]:
                self.out(printable(line))
        elif kind == "run-quit":
            self.out(f"quit before step {event['index']:02d} ({event['id']})")
        elif kind == "lock" and event.get("state") == "heartbeat-failed":
            for text in event.get("output") or []:  # the server lock's heartbeat failed: a warning, escaped
                for line in screen.wrap(printable(text), "psbridge: warning: "):
                    self.out(line, err=True)

    def _step_end(self, event: Mapping[str, Any], where: str, lead: str) -> None:
        """The end of the step line (after `lead`, its prefix when the screen no longer shows it);
        on failure the server's messages and where in the script."""
        state = event["state"]
        if state == "skipped":
            why = f" ({printable(event['detail'])})" if event.get("detail") else ""
            self.out(f"[{event['index']:02d}/{event['total']:02d}] {event['id']}{where} … skipped{why}")
            return
        label = {"ok": "ok", "failed": "FAILED", "unknown": "UNKNOWN"}[state]
        self.out(f"{lead}{colour(label) if self.colourful else label} {event['seconds']:.1f}s")
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
        # ASCII only: the server's text (a bidi override, a C1 control) is escaped, its value kept exact.
        self.out(json.dumps(event))


def reporter(as_json: bool) -> HumanReporter | JsonReporter:
    """The screen's view of a run's or rollback's events: progress lines, or JSON lines with --json.

    With --json, the events only (no status line: stdout is for JSON). Otherwise a status line
    redrawn each second on a terminal, a plain line each minute elsewhere.
    """
    if as_json:
        return JsonReporter(click.echo)
    live = screen.is_terminal()
    return HumanReporter(click.echo, StatusLine(click.echo, live=live, every=1.0 if live else 60.0), colourful=True)
