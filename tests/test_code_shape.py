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


# --------------------------------------------------------------------------- tests/: no test module imports another

TESTS = ROOT / "tests"


def _is_test_module(dotted: str) -> bool:
    """`test_x`, `tests.test_x`, `test_x.y`: any part of the dotted name is a test module."""
    return any(part.startswith("test_") for part in dotted.split("."))


def _test_module_imports(source: str) -> list[tuple[int, str]]:
    """Every import of a test module in `source`, at any depth (a function body's too), as (line, what).

    Covers `import test_x`, `from test_x import y`, `from tests.test_x import y`, `from . import test_x`,
    `from tests import test_x` and `importlib.import_module("test_x")` / `__import__("test_x")` with a literal name.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if _is_test_module(a.name)]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if _is_test_module(node.module or ""):
                found.append((node.lineno, f"from {module} import ..."))
            else:
                found += [(node.lineno, f"from {module} import {a.name}")
                          for a in node.names if a.name.startswith("test_")]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            name = node.args[0].value
            if called in ("import_module", "__import__") and isinstance(name, str) and _is_test_module(name):
                found.append((node.lineno, f"{called}({name!r})"))
    return sorted(found)


def test_no_test_module_imports_another() -> None:
    """The project's rule: shared fixtures live in tests/conftest.py and shared helpers in tests/support/; a test
    module that imports another runs that module's code (and may collect its fixtures) in the wrong place."""
    offenders = [f"{path.relative_to(ROOT)}:{line}: {what}"
                 for path in sorted(TESTS.rglob("*.py"))
                 for line, what in _test_module_imports(path.read_text(encoding="utf-8"))]
    assert not offenders, "move what is shared into tests/support/ or tests/conftest.py:\n" + "\n".join(offenders)


def test_the_import_check_sees_every_kind_of_import() -> None:
    source = (
        "import os, test_a\n"
        "import tests.test_b as b\n"
        "from test_c import x\n"
        "from tests.test_d import y\n"
        "from . import test_e\n"
        "def f():\n"
        "    from test_f import z\n"
        "    import importlib\n"
        "    importlib.import_module('test_g')\n"
        "    __import__('test_h')\n"
        "from support.signatures import check_script\n"
        "from psbridge import testing_tools\n"
        "import_module('support.x')\n"
    )
    assert _test_module_imports(source) == [
        (1, "import test_a"), (2, "import tests.test_b"), (3, "from test_c import ..."),
        (4, "from tests.test_d import ..."), (5, "from . import test_e"), (7, "from test_f import ..."),
        (9, "import_module('test_g')"), (10, "__import__('test_h')")]
