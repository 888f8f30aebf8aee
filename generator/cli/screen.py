"""The screen: how wide lines may be, wrapping with hanging indents, and colour.

Lines wrap at the terminal's width on a terminal and at 100 columns elsewhere (a log, a pipe),
as the check report always has; a command the operator must copy is never wrapped. Colour
marks how a step went (ok, failed, unknown) on a terminal only: click.echo drops it on a pipe,
and NO_COLOR or `psbridge --no-color` turn it off (cli/__init__.py).
"""

from __future__ import annotations

import re
import shutil
import sys
import textwrap
from typing import TextIO

import click

#: Lines stay within this many columns when the output is not a terminal.
WIDTH = 100


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
#: A quoted value ('…' after a space or a bracket, not the apostrophe of "record's"): kept on one line.
_QUOTED = re.compile(r"(?<![\w'])'[^'\n]*'(?![\w'])")
#: Stands for a space inside a quoted value while textwrap runs (escaped text never holds a NUL).
_KEPT_SPACE = "\x00"


def _quote_bare_command(paragraph: str) -> str:
    """The psbridge command that ends a message (`… make a new key with psbridge keygen --out …`)
    put in backticks, so that wrap does not break it either.

    A command runs from `psbridge NAME` to the end of the paragraph, or to the bracket the sentence
    opened before it; without an option, a path or a quoted value it is a sentence, not a command.
    """
    from . import WORKFLOW_ORDER  # the command names; imported here, the package imports this module

    found = re.search(rf"(?<![`\w])psbridge (?:{'|'.join(WORKFLOW_ORDER)}) [^`]*$", paragraph)
    if found is None:
        return paragraph
    command, depth = found.group(0), 0
    for at, char in enumerate(command):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:  # the bracket of the sentence around the command: the command ends before it
            command = command[:at]
            break
    if not re.search(r"(?:^|\s)(?:-|'|\")|/", command):  # no option, path or quoted value: a sentence
        return paragraph
    end = found.start() + len(command)
    return f"{paragraph[:found.start()]}`{command.rstrip()}`{paragraph[end:]}"


def wrap(text: str, first: str = "", indent: str = "    ", columns: int | None = None,
         later: str = "") -> list[str]:
    """`text` wrapped to the screen with a hanging indent; a `command` in backticks is never broken.

    Each paragraph (line of `text`; the first after `first`, the others after `later`) that fits
    is printed as it is, and so is an indented line after the first (a line of code to copy). One
    that does not fit wraps under `indent`: a 'quoted value' stays on one line, and each command
    goes whole (without its backticks) on a line of its own, however long, so it can be copied as
    it is. The caller escapes outside text first (`safe`: no NUL, which stands for a kept space).
    """
    columns = columns or width()
    lines: list[str] = []
    for number, paragraph in enumerate(text.split("\n")):
        lead = later if number else first
        if len(lead) + len(paragraph) <= columns or not paragraph.strip() or (number and paragraph[:1].isspace()):
            # fits, or is empty, or is an indented line of code under the text: as it is
            lines.append(lead + paragraph if paragraph.strip() else "")
            continue
        for i, part in enumerate(_COMMAND.split(_quote_bare_command(paragraph))):
            if i % 2:  # a command: whole, on its own line
                if lead.strip():
                    lines.append(lead)
                lines.append(indent + "  " + part)
            else:
                # The `;` or `.` that followed a command in the sentence would only spoil a copied line.
                part = (part.lstrip(";,. ") if i else part).strip()
                if not part:
                    continue
                lines += [line.replace(_KEPT_SPACE, " ") for line in textwrap.wrap(
                    _QUOTED.sub(lambda m: m.group(0).replace(" ", _KEPT_SPACE), part), columns, initial_indent=lead,
                    subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)]
            lead = indent
    return [line.rstrip() for line in lines] or [first.rstrip()]


def echo_wrapped(text: str, first: str = "", indent: str = "    ", *, err: bool = False, later: str = "") -> None:
    """Print `text` (already escaped) wrapped as `wrap` does: one long line was 140-370 columns."""
    for line in wrap(text, first, indent, later=later):
        click.echo(line, err=err)


#: The colour of each word that says how a step went (run, rollback, check).
COLOURS = {"ok": "green", "in place": "green", "FAILED": "red", "failed": "red", "blocked": "red",
           "UNKNOWN": "yellow", "unknown": "yellow", "cannot tell": "yellow"}


def colour(word: str) -> str:
    """`word` in its colour. click.echo drops the colour when the stream is not a terminal, with
    NO_COLOR or --no-color (both set the context's `color` to False, see cli/__init__.py)."""
    name = COLOURS.get(word.strip())
    return click.style(word, fg=name, bold=True if name == "red" else None) if name else word
