"""The package's shape (issue 16): no import circle, the loss terms import nothing from the LightningModule
side, and no code outside a class calls one of the package's private methods."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

SRC = REPO / "src"
PACKAGE = SRC / "pckd_lightning"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """The package's modules that ``path`` imports (a package counts as its ``__init__``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found |= {n for n in names if n in MODULES} or ({node.module} & MODULES.keys())
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names} & MODULES.keys()
    return found


def test_no_import_circle():
    graph = {name: imports(path) - {name} for name, path in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in sorted(graph[name]):
            if state.get(other) == 1:
                cycle = [*path[path.index(other) :], other] if other in path else [name, other]
                raise AssertionError(f"import circle: {' -> '.join(cycle)}")
            if other not in state:
                visit(other, [*path, other])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_loss_terms_import_nothing_from_the_lightning_side():
    for name, path in MODULES.items():
        if name.startswith("pckd_lightning.losses"):
            bad = {
                m
                for m in imports(path)
                if m.startswith(("pckd_lightning.distillation", "pckd_lightning.runner"))
            }
            assert not bad, f"{name} imports {sorted(bad)}"


def test_no_private_method_of_the_package_is_called_from_outside_its_class():
    private = {
        item.name
        for path in MODULES.values()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        for item in node.body
        if isinstance(item, ast.FunctionDef) and item.name.startswith("_") and not item.name.startswith("__")
    }
    calls = []
    for path in [*MODULES.values(), *(REPO / "benchmarks").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in private
            ):
                owner = node.func.value
                if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")) and not (
                    isinstance(owner, ast.Call) and getattr(owner.func, "id", "") == "super"
                ):
                    calls.append(f"{path.relative_to(REPO)}:{node.lineno} .{node.func.attr}()")
    assert not calls, calls
