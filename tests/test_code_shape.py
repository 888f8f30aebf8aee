"""The code's shape, as the maintainers keep it: small modules, few parameters, types checked.

One concept per module keeps each file short (at most 700 lines; the command line's files,
which only parse, call and print, under 300); a function that needs more than six parameters
wants a context object instead; mypy checks generator/ on every test run, and a `type: ignore`
says why on its own line.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = ROOT / "generator"
SOURCES = sorted(CODE.rglob("*.py"))


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """Every parameter a caller can pass (self and cls are not passed); *args and **kwargs count too."""
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return names + [f"*{v.arg}" for v in (args.vararg, args.kwarg) if v is not None]


def test_no_function_takes_more_than_six_parameters() -> None:
    too_many = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and len(_parameters(node)) > 6:
                too_many.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}({', '.join(_parameters(node))})")
    assert not too_many, "use a context object:\n" + "\n".join(too_many)


def test_the_parameter_count_sees_every_kind_of_parameter() -> None:
    tree = ast.parse("def f(self, a, /, b, *c, d, e=1, **f): pass")
    assert _parameters(tree.body[0]) == ["a", "b", "d", "e", "*c", "*f"]  # type: ignore[arg-type]  # a FunctionDef


def test_modules_stay_small() -> None:
    sizes = {p.relative_to(ROOT): len(p.read_text(encoding="utf-8").splitlines()) for p in SOURCES}
    assert not {p: n for p, n in sizes.items() if n > 700}
    assert not {p: n for p, n in sizes.items() if p.parts[1] == "cli" and n >= 300}


_IGNORE = re.compile(r"#\s*type:\s*ignore(\[[^\]]*\])?(?P<rest>.*)$")


def test_every_type_ignore_says_why() -> None:
    bare = []
    for path in SOURCES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            match = _IGNORE.search(line)
            if match and not match.group("rest").strip().startswith("#"):
                bare.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not bare, "a type: ignore needs a reason in a comment after it:\n" + "\n".join(bare)


def test_mypy_is_clean_on_the_package() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", str(CODE)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
