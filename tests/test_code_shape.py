"""House rules the package's code keeps, read from its syntax trees: no function (or method) over 60 lines, so each
can be read at once, and no two classes of the same name, so a name means one thing."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "expressnet"
MAX_LINES = 60


def trees() -> list[tuple[Path, ast.Module]]:
    paths = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
    return [(p, ast.parse(p.read_text(), filename=str(p))) for p in paths]


def long_functions(tree: ast.Module, limit: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """(name, first line, length) of every function longer than ``limit`` lines, from ``def`` to its last line
    (signature, docstring and body; decorators not counted), nested ones too."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append((node.name, node.lineno, length))
    return found


def test_the_measure_counts_the_whole_function():
    source = "def f(\n    a,\n):\n    '''doc'''\n" + "    a += 1\n" * 57 + "    return a\n"
    assert long_functions(ast.parse(source)) == [("f", 1, 62)]
    assert long_functions(ast.parse(source), limit=62) == []
    method = "class C:\n    def g(self):\n" + "        pass\n" * 60
    assert long_functions(ast.parse(method)) == [("g", 2, 61)]


def test_no_function_is_longer_than_60_lines():
    long = [
        f"{path.relative_to(PACKAGE.parent)}:{line} {name}() has {length} lines"
        for path, tree in trees()
        for name, line, length in long_functions(tree)
    ]
    assert not long, f"functions over {MAX_LINES} lines (split them):\n" + "\n".join(long)


def test_no_two_classes_share_a_name():
    where = defaultdict(list)
    for path, tree in trees():
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                where[node.name].append(str(path.relative_to(PACKAGE.parent)))
    shared = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert not shared, f"classes of the same name (rename one): {shared}"
