"""PowerShell parsing for tests, with the tree-sitter PowerShell grammar.

The grammar is a real PowerShell grammar but more lenient than PowerShell in one respect
that matters here: it does not treat the typographic quotes U+2018-U+201B as string
delimiters. Tests therefore pair it with `psbridge.powershell.unquote`, which reads a
literal the way PowerShell does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, lru_cache

from tree_sitter import Node, Parser, Tree
from tree_sitter_language_pack import get_parser

TYPOGRAPHIC_QUOTES = "\u2018\u2019\u201a\u201b\u201c\u201d\u201e"


@cache
def parser() -> Parser:
    return get_parser("powershell")


@lru_cache(maxsize=8)
def parse(text: str) -> Tree:
    """The syntax tree of `text` (the last few are kept: each check reads one script several ways)."""
    return parser().parse(text.encode("utf-8"))


def walk(node: Node) -> Iterator[Node]:
    """`node` and every node under it, in document order (pre-order)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))


@lru_cache(maxsize=8)
def _nodes(text: str) -> tuple[Node, ...]:
    return tuple(walk(parse(text).root_node))


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
    return [(n.start_byte, n.end_byte) for n in _nodes(text) if n.type in kinds]


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
    start_byte: int = 0  # where the invocation starts (UTF-8 byte offset)
    deferred: bool = False  # inside a function body or a script block value: it may run later (see _deferred)


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
    for node in _nodes(text):
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
        out.append(Invocation(name, kind, operator, line, tuple(elements), _first_in_pipeline(node),
                              node.start_byte, _deferred(node)))
    return out


def _invoked_block(block: Node) -> str:
    """How a script_block_expression runs: "." (dot-sourced in place: `. { }`), "&" (called in place, in a
    child scope: `& { }`) or "" (a value: assigned, passed as an argument, run whenever that decides)."""
    parent = block.parent
    if parent is not None and parent.type == "command_name_expr" and parent.parent is not None:
        for child in parent.parent.children:
            if child.type == "command_invokation_operator":
                return _text(child).strip()
    return ""


def _deferred(node: Node) -> bool:
    """Inside a function body or a script block value, so the code may run later than where it stands.
    `. { }` and `& { }` run in place. Every other script block counts as deferred, also one that runs in
    place such as `ForEach-Object { }`'s: for "called before its definition" that can only hide a
    finding, never make one up."""
    parent = node.parent
    while parent is not None:
        if parent.type == "function_statement":
            return True
        if parent.type == "script_block_expression" and _invoked_block(parent) == "":
            return True
        parent = parent.parent
    return False


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
    for node in _nodes(text):
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


# --------------------------------------------------------------------------- functions defined in a script
# `function Name(<parameters>) { ... }` and `function Name { [CmdletBinding()] param(<parameters>) ... }`
# (also `filter`): their parameters as declared, for tests/test_signatures.py.


@dataclass(frozen=True)
class ParameterDeclaration:
    """One parameter of a script-defined function, as written in its declaration."""

    name: str  # without "$"
    line: int
    switch: bool  # typed [switch] / [SwitchParameter] / [System.Management.Automation.SwitchParameter]
    aliases: tuple[str, ...]  # from [Alias(...)]
    attributes: tuple[dict[str, object], ...]  # one dict per [Parameter(...)]: argument name -> value


@dataclass(frozen=True)
class FunctionDefinition:
    name: str  # without a scope prefix (global:, script:, local:, private:)
    line: int
    start_byte: int
    scope: tuple[int, int] | None  # byte span it is visible in: None = the whole script
    cmdlet_binding: dict[str, object] | None  # arguments of [CmdletBinding(...)], None without one
    parameters: tuple[ParameterDeclaration, ...]
    problems: tuple[str, ...]  # declarations that cannot be read statically


_UNREADABLE = object()


def _attribute_value(node: Node | None) -> object:
    """The constant an attribute argument is set to: $true/$false, an integer or a string literal."""
    if node is None:
        return True  # `[Parameter(Mandatory)]`: a named argument without a value is $true
    text = _text(node).strip()
    if text.lower() in ("$true", "$false"):
        return text.lower() == "$true"
    if re.fullmatch(r"\d+", text):
        return int(text)
    strings = [n for n in walk(node) if n.type == "string_literal"]
    if len(strings) == 1 and _text(strings[0]).strip() == text and string_values(strings[0]):
        return string_values(strings[0])[0]
    return _UNREADABLE


def _attribute(node: Node) -> tuple[str, dict[str, object], list[object], str]:
    """(type name, named arguments, positional arguments, source text) of an `[Attribute(...)]` node;
    a type constraint `[type]` has an empty argument list."""
    name = ""
    named: dict[str, object] = {}
    positional: list[object] = []
    for child in node.children:
        if child.type in ("attribute_name", "type_literal"):
            name = _text(child).strip("[] ")
        elif child.type == "attribute_arguments":
            for arg in child.children:
                if arg.type != "attribute_argument":
                    continue
                parts = [c for c in arg.children if c.type != "="]
                if arg.children and arg.children[0].type == "simple_name":
                    value = _attribute_value(parts[1] if len(parts) > 1 else None)
                    named[_text(arg.children[0]).strip()] = value
                else:
                    positional += [n for n in walk(arg) if n.type == "string_literal"] or [_UNREADABLE]
    return name, named, positional, _text(node)


def _parameters(parameter_list: Node | None, problems: list[str]) -> tuple[ParameterDeclaration, ...]:
    out = []
    if parameter_list is None:
        return ()
    for sp in parameter_list.children:
        if sp.type != "script_parameter":
            continue
        variable = next((c for c in sp.children if c.type == "variable"), None)
        if variable is None:
            continue
        name = _text(variable).lstrip("$")
        if ":" in name:
            name = name.split(":", 1)[1]
        switch = False
        aliases: list[str] = []
        attributes: list[dict[str, object]] = []
        for attr_list in (c for c in sp.children if c.type == "attribute_list"):
            for attr in (c for c in attr_list.children if c.type == "attribute"):
                type_name, named, positional, source = _attribute(attr)
                short = type_name.lower().split(".")[-1]
                if short in ("switch", "switchparameter"):
                    switch = True
                elif short in ("alias", "aliasattribute"):
                    for value in positional:
                        if value is _UNREADABLE:
                            problems.append(f"${name}: {source.strip()} cannot be read statically")
                        else:
                            aliases += string_values(value)  # type: ignore[arg-type]
                elif short in ("parameter", "parameterattribute"):
                    for key, value in named.items():
                        if value is _UNREADABLE:
                            problems.append(f"${name}: {key} in {source.strip()} cannot be read statically")
                    attributes.append({k: (None if v is _UNREADABLE else v) for k, v in named.items()})
        out.append(ParameterDeclaration(name, sp.start_point[0] + 1, switch, tuple(aliases), tuple(attributes)))
    return tuple(out)


def function_definitions(text: str) -> list[FunctionDefinition]:
    """Every `function`/`filter` definition in `text` with its declared parameters."""
    out = []
    for node in _nodes(text):
        if node.type != "function_statement":
            continue
        name_node = next((c for c in node.children if c.type == "function_name"), None)
        if name_node is None:
            continue
        name = _text(name_node).strip()
        if re.match(r"(?i)(global|script|local|private):", name):
            name = name.split(":", 1)[1]
        problems: list[str] = []
        declaration = next((c for c in node.children if c.type == "function_parameter_declaration"), None)
        body = next((c for c in node.children if c.type == "script_block"), None)
        param_block = next((c for c in body.children if c.type == "param_block"), None) if body is not None else None
        parameter_list = None
        cmdlet_binding = None
        if declaration is not None:
            parameter_list = next((c for c in declaration.children if c.type == "parameter_list"), None)
        if param_block is not None:
            if declaration is not None:
                problems.append("both a parameter list after the name and a param() block")
            parameter_list = next((c for c in param_block.children if c.type == "parameter_list"), None)
            for attr_list in (c for c in param_block.children if c.type == "attribute_list"):
                for attr in (c for c in attr_list.children if c.type == "attribute"):
                    type_name, named, _, source = _attribute(attr)
                    if type_name.lower().split(".")[-1] in ("cmdletbinding", "cmdletbindingattribute"):
                        for key, value in named.items():
                            if value is _UNREADABLE:
                                problems.append(f"{key} in {source.strip()} cannot be read statically")
                        cmdlet_binding = {k: (None if v is _UNREADABLE else v) for k, v in named.items()}
        # A definition is visible in the scope it runs in: the enclosing function or script block, except
        # that a dot-sourced `. { }` block runs in its caller's scope.
        scope = None
        parent = node.parent
        while parent is not None:
            if parent.type == "function_statement" or (
                    parent.type == "script_block_expression" and _invoked_block(parent) != "."):
                scope = (parent.start_byte, parent.end_byte)
                break
            parent = parent.parent
        parameters = _parameters(parameter_list, problems)
        out.append(FunctionDefinition(name, node.start_point[0] + 1, node.start_byte, scope, cmdlet_binding,
                                      parameters, tuple(problems)))
    return out
