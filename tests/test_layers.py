"""The package's layers, lowest first; a module imports only from its own layer or below, and no function-local
import of the package hides a cycle (only the CLI imports lazily, to start fast, and it is the top layer)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "expressnet"
LAYERS = [
    {"io", "registry", "config", "progress", "version"},
    {"data", "nn", "faces"},
    {"checkpoint", "hub", "pretrained"},
    {"runtime"},
    {"evaluate"},
    {"train", "release"},
    {"infer"},
    {"serve"},
    {"cli", "__main__"},
]
LAZY_ALLOWED = {"cli", "__init__"}  # the CLI (top layer) and the package's lazy attributes


def layer_of(part: str) -> int:
    for i, names in enumerate(LAYERS):
        if part in names:
            return i
    raise AssertionError(f"expressnet.{part} is in no layer: add it to LAYERS in {Path(__file__).name}")


def part_of(module: Path) -> str:
    relative = module.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def imported_parts(module: Path, node: ast.AST) -> list[str]:
    """Top-level parts of ``expressnet`` that an import statement names."""
    if isinstance(node, ast.Import):
        return [a.name.split(".")[1] for a in node.names if a.name.startswith("expressnet.")]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level == 0:
        if node.module and node.module.startswith("expressnet."):
            return [node.module.split(".")[1]]
        if node.module == "expressnet":
            return [a.name for a in node.names]
        return []
    package = module.relative_to(PACKAGE).parent.parts
    base = package[: len(package) - (node.level - 1)]
    target = [*base, *(node.module.split(".") if node.module else [])]
    if target:
        return [target[0]]
    return [a.name for a in node.names]  # from . import x (at the package root)


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_import_goes_to_the_same_layer_or_below():
    wrong = []
    for module in modules():
        part = part_of(module)
        if part == "__init__":
            continue
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            for target in imported_parts(module, node):
                if target == "__version__" or target == part:
                    continue
                if layer_of(target) > layer_of(part):
                    wrong.append(f"{module.relative_to(PACKAGE)}:{node.lineno} imports expressnet.{target}")
    assert not wrong, "imports from a higher layer:\n" + "\n".join(wrong)


def test_no_function_local_import_of_the_package():
    hidden = []
    for module in modules():
        if part_of(module) in LAZY_ALLOWED:
            continue
        tree = ast.parse(module.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.ImportFrom) and (node.level or str(node.module).startswith("expressnet")):
                    hidden.append(f"{module.relative_to(PACKAGE)}:{node.lineno} in {func.name}()")
    assert not hidden, "function-local imports of the package (move them to the top):\n" + "\n".join(hidden)
