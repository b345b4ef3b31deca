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


def test_importing_the_library_leaves_the_warning_filters_alone():
    """Warnings the runs do not need are silenced while a run trains (runner.known_warnings_silenced), not
    by importing a module: a notebook or a program importing the library keeps its own filters."""
    import subprocess
    import sys

    ours = sorted(n for n in MODULES if not n.endswith("__main__"))
    # what the package imports from other libraries first: they may add filters of their own when imported
    theirs = sorted(
        {
            node.module if isinstance(node, ast.ImportFrom) else alias.name
            for path in MODULES.values()
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "level", 0) == 0
            for alias in node.names
            if not (node.module if isinstance(node, ast.ImportFrom) else alias.name).startswith(
                "pckd_lightning"
            )
        }
        - {None, "__future__"}
    )
    code = (
        "import contextlib, importlib, warnings\n"
        f"for name in {theirs!r}:\n"
        "    with contextlib.suppress(ImportError):\n"
        "        importlib.import_module(name)\n"
        "before = list(warnings.filters)\n"
        f"for name in {ours!r}:\n"
        "    importlib.import_module(name)\n"
        "assert warnings.filters == before, [f for f in warnings.filters if f not in before]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_run_time_warning_filters_are_scoped_to_the_run():
    import warnings

    from pckd_lightning.runner import known_warnings_silenced

    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with known_warnings_silenced():
            warnings.warn(
                "Found 3 module(s) in eval mode at the start of training.", UserWarning, stacklevel=1
            )
            warnings.warn("an unrelated warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["an unrelated warning"]
    assert warnings.filters == before


def test_the_preview_weights_and_what_they_import_do_without_hydra():
    """The weights are built from Python as well as from a config: Hydra stays in the config side of the
    preview package (``pckd_lightning.preview.config``)."""
    seen, todo = set(), ["pckd_lightning.preview.weights"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += imports(MODULES[name])
    hydra_users = [
        name
        for name in sorted(seen)
        for node in ast.walk(ast.parse(MODULES[name].read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and any(
            (node.module if isinstance(node, ast.ImportFrom) else alias.name or "").startswith("hydra")
            for alias in node.names
        )
    ]
    assert not hydra_users, hydra_users
