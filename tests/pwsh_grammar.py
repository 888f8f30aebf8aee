"""PowerShell parsing for tests, with the tree-sitter PowerShell grammar.

The grammar is a real PowerShell grammar but more lenient than PowerShell in one respect
that matters here: it does not treat the typographic quotes U+2018-U+201B as string
delimiters. Tests therefore pair it with `generator.powershell.unquote`, which reads a
literal the way PowerShell does.
"""

from __future__ import annotations

from collections.abc import Iterator
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
