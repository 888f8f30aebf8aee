"""PowerShell parsing for tests, with the tree-sitter PowerShell grammar.

The grammar is a real PowerShell grammar but more lenient than PowerShell in one respect
that matters here: it does not treat the typographic quotes U+2018-U+201B as string
delimiters. Tests therefore pair it with `generator.powershell.unquote`, which reads a
literal the way PowerShell does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from tree_sitter import Node, Parser, Tree
from tree_sitter_language_pack import get_parser

TYPOGRAPHIC_QUOTES = "\u2018\u2019\u201a\u201b\u201c\u201d\u201e"


@cache
def parser() -> Parser:
    return get_parser("powershell")


def parse(text: str) -> Tree:
    return parser().parse(text.encode("utf-8"))


def walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children:
        yield from walk(child)


def syntax_errors(text: str) -> list[str]:
    """Every ERROR or MISSING node, as `line:column kind text` (empty when the script parses)."""
    tree = parse(text)
    out = []
    for node in walk(tree.root_node):
        if node.is_error or node.is_missing:
            row, col = node.start_point
            snippet = text.encode("utf-8")[node.start_byte:node.end_byte][:60].decode("utf-8", "replace")
            out.append(f"{row + 1}:{col + 1} {'MISSING' if node.is_missing else 'ERROR'} {snippet!r}")
    return out


def spans(text: str, kinds: set[str]) -> list[tuple[int, int]]:
    """Byte spans of every node of the given kinds."""
    return [(n.start_byte, n.end_byte) for n in walk(parse(text).root_node) if n.type in kinds]


def string_literal_spans(text: str) -> list[tuple[int, int]]:
    return spans(text, {"string_literal"})


def typographic_quotes_outside_literals(text: str) -> list[int]:
    """Byte offsets of typographic quotes that are neither in a string literal nor in a comment."""
    allowed = spans(text, {"string_literal", "comment"})
    bad = []
    for i, ch in enumerate(text):
        if ch in TYPOGRAPHIC_QUOTES:
            offset = len(text[:i].encode("utf-8"))
            if not any(a <= offset < b for a, b in allowed):
                bad.append(offset)
    return bad


# --------------------------------------------------------------------------- command invocations
# Helpers for tests/test_signatures.py: what a script invokes, as the grammar sees it.


@dataclass(frozen=True)
class Element:
    """One element after a command name: a `-parameter`, an argument, or a `@splat`."""

    kind: str  # "parameter" | "argument" | "splat"
    text: str  # parameter name without "-" and ":", the argument's source text, or the splatted variable's name
    line: int  # 1-based
    colon: bool = False  # parameter written as -Name:value (the next argument is its value)


@dataclass(frozen=True)
class Invocation:
    """A command invocation: `name` as written, how it is named, and its elements."""

    name: str  # command name, variable name (without $) or string value, as `name_kind` says
    name_kind: str  # "name" | "variable" | "string" | "other"
    operator: str  # "", "&" or "."
    line: int
    elements: tuple[Element, ...]
    first_in_pipeline: bool  # False when an earlier pipeline element can bind by pipeline input


def _text(node: Node) -> str:
    return node.text.decode("utf-8") if node.text is not None else ""


def _first_in_pipeline(node: Node) -> bool:
    parent = node.parent
    if parent is None or parent.type != "pipeline":
        return True
    named = [c for c in parent.children if c.type not in ("|",) and c.is_named]
    return bool(named) and named[0].id == node.id


def _foreach_elements(node: Node) -> list[Element]:
    """`ForEach-Object` is its own node in this grammar; a `-Name` after it parses as an ERROR node."""
    out: list[Element] = []
    for child in node.children[1:]:
        line = child.start_point[0] + 1
        if child.type == "ERROR":
            text = _text(child).strip()
            if text.startswith("-"):
                out.append(Element("parameter", text[1:].rstrip(":"), line))
                continue
        out.append(Element("argument", _text(child).strip(), line))
    return out


def command_invocations(text: str) -> list[Invocation]:
    """Every command invocation in `text` (method calls and expressions are not commands).

    `& { ... }` and `. { ... }` (script blocks) are left out: they are not commands.
    """
    out: list[Invocation] = []
    for node in walk(parse(text).root_node):
        if node.type != "command":
            continue
        line = node.start_point[0] + 1
        operator, name, kind, elements = "", "", "other", []
        for child in node.children:
            if child.type == "command_invokation_operator":
                operator = _text(child).strip()
            elif child.type == "command_name":
                name, kind = _text(child), "name"
            elif child.type == "foreach_command":
                name, kind = _text(child.children[0]), "name"
                elements = _foreach_elements(child)
            elif child.type == "command_name_expr":
                variables = [n for n in walk(child) if n.type == "variable"]
                strings = [n for n in walk(child) if n.type == "string_literal"]
                if any(n.type == "script_block_expression" for n in child.children):
                    kind = "scriptblock"
                elif variables and _text(child).strip() == _text(variables[0]):
                    name, kind = _text(variables[0]).lstrip("$"), "variable"
                elif strings and _text(child).strip() == _text(strings[0]):
                    name, kind = _text(strings[0]), "string"
                else:
                    name, kind = _text(child), "other"
            elif child.type == "command_elements":
                for el in child.children:
                    el_line = el.start_point[0] + 1
                    if el.type == "command_argument_sep":
                        if _text(el).strip() == ":" and elements and elements[-1].kind == "parameter":
                            last = elements.pop()
                            elements.append(Element("parameter", last.text, last.line, colon=True))
                        continue
                    if el.type == "command_parameter":
                        raw = _text(el)
                        elements.append(Element("parameter", raw[1:].rstrip(":"), el_line, colon=raw.endswith(":")))
                        continue
                    if el.type in ("redirection", "file_redirection_operator", "merging_redirection_operator"):
                        continue
                    raw = _text(el).strip()
                    if raw.startswith("@") and len(raw) > 1 and all(c.isalnum() or c in "_:" for c in raw[1:]):
                        elements.append(Element("splat", raw[1:], el_line))
                    else:
                        elements.append(Element("argument", raw, el_line))
        if kind == "scriptblock":
            continue
        out.append(Invocation(name, kind, operator, line, tuple(elements), _first_in_pipeline(node)))
    return out


def _blank(data: bytearray, start: int, end: int) -> None:
    for i in range(start, end):
        if data[i] not in (0x0A, 0x0D):
            data[i] = 0x20


def code_only(text: str) -> str:
    """`text` with string literals and comments blanked (same length and lines), for token scans."""
    data = bytearray(text.encode("utf-8"))
    for start, end in spans(text, {"string_literal", "comment"}):
        _blank(data, start, end)
    return data.decode("utf-8", "replace")


def variable_assignments(text: str, variable: str) -> list[Node]:
    """The right-hand sides of `$variable = ...` (case-insensitive) in `text`."""
    out = []
    for node in walk(parse(text).root_node):
        if node.type != "assignment_expression" or len(node.children) < 3:
            continue
        left = _text(node.children[0]).strip()
        if left.lower() == "$" + variable.lower():
            out.append(node.children[-1])
    return out


def string_values(node: Node) -> list[str]:
    """The texts of the string literals under `node`, unquoted the simple way (no expansion)."""
    out = []
    for n in walk(node):
        if n.type == "string_literal":
            raw = _text(n)
            if raw[:1] in "'\"" and raw[-1:] == raw[:1]:
                out.append(raw[1:-1].replace("''", "'") if raw[0] == "'" else raw[1:-1])
    return out


def hashtable_keys(text: str, variable: str) -> list[str] | None:
    """Keys of the hashtable `$variable` in `text`: the literal `@{...}` it is assigned, and literal keys
    added later with `$variable['Key'] = ...`, `$variable.Key = ...` or `$variable.Add('Key', ...)`.
    None when `$variable` is never assigned a literal hashtable."""
    literal = None
    for value in variable_assignments(text, variable):
        tables = [n for n in walk(value) if n.type == "hash_literal_expression"]
        if tables and _text(value).strip() == _text(tables[0]).strip():
            literal = tables[0]
    if literal is None:
        return None
    keys: list[str] = []
    for n in walk(literal):
        if n.type == "hash_entry" and n.parent is not None and n.parent.parent is not None \
                and n.parent.parent.id == literal.id:
            key = _text(n.children[0]).strip()
            keys.append(key.strip("'\""))
    name = re.escape(variable)
    code = text
    keys += re.findall(rf"(?im)\${name}\[\s*['\"]([^'\"]+)['\"]\s*\]\s*=(?!=)", code)
    keys += re.findall(rf"(?im)\${name}\.([A-Za-z_][\w]*)\s*=(?!=)", code)
    keys += re.findall(rf"(?im)\${name}\.Add\(\s*['\"]([^'\"]+)['\"]", code)
    return keys
