"""The package's shape (issue 16): no import circle, the loss terms import nothing from the LightningModule
side, and no code outside a class calls one of the package's private methods; the tests' shape (issue 25):
one naming scheme, shared helpers in helpers.py, public seams only."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

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
                if m == "pckd_lightning.run"
                or m.startswith(("pckd_lightning.distillation", "pckd_lightning.run."))
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
    """Warnings the runs do not need are silenced while a run trains (run.fit.known_warnings_silenced), not
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

    from pckd_lightning.run.fit import known_warnings_silenced

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


def test_each_file_of_the_run_package_reads_in_one_sitting():
    """Issue 25: runner.py became run/, one job per file; none grows back past ~200 lines."""
    sizes = {p.name: len(p.read_text().splitlines()) for p in (PACKAGE / "run").glob("*.py")}
    assert {"check.py", "build.py", "fit.py", "summary.py"} <= sizes.keys()
    assert all(lines <= 200 for lines in sizes.values()), sizes


#: private names of other libraries that have no public equivalent, each with its one use
THEIR_PRIVATE_NAMES = {
    # the base class of torch's BatchNorm layers: GlobalBatchNorm is one of them
    "nn.modules.batchnorm._BatchNorm",
    # compiled backward graphs keep their buffers for DOT's retained graph: torch's only switch for it
    "torch._functorch",
    # the tests' compiler switches (no recompilation, eager-equal random numbers): no public equivalent
    "torch._dynamo",
    "torch._inductor",
}


def private(name: str) -> bool:
    """``_x``, but not a dunder (``__x__``) nor a Hydra key (``_target_``)."""
    return name.startswith("_") and not name.endswith("_")


def is_own(owner: ast.expr) -> bool:
    """``self``, ``cls`` or ``super()``: an object whose private names its own class defines."""
    if isinstance(owner, ast.Call):
        return getattr(owner.func, "id", "") == "super"
    return isinstance(owner, ast.Name) and owner.id in ("self", "cls")


def own_private_names(tree: ast.AST) -> set[str]:
    """The private names a file defines: functions, classes, module and class variables, ``self._x``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and is_own(node.value):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if private(name)}


#: calls that reach an attribute by its name as a string: ``getattr(obj, "_x")``, ``monkeypatch.setattr(...)``
BY_NAME = {"getattr", "setattr", "hasattr", "delattr"}


def named_by_string(node: ast.AST) -> list[str]:
    """The private names a by-name call reaches: ``getattr(obj, "_x")`` or ``setattr("pkg.mod._x", v)``."""
    if not isinstance(node, ast.Call):
        return []
    func = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
    if func not in BY_NAME:
        return []
    strings = [a.value for a in node.args[:2] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return [name for s in strings if private(name := s.rsplit(".", 1)[-1])]


def test_no_private_name_is_used_outside_the_module_that_defines_it():
    """Issue 25: objects reach each other through public seams. ``obj._x``, ``from m import _x`` and
    ``getattr(obj, "_x")`` (or setattr, hasattr, delattr, ``monkeypatch.setattr``) name only what the same file
    defines (``self``, ``cls`` and ``super()`` are always the file's own), in the package, the tests and the
    benchmarks; another library's private names only where listed above, with the reason."""
    found = []
    files = [*MODULES.values(), *(REPO / "tests").glob("*.py"), *(REPO / "benchmarks").glob("*.py")]
    for path in files:
        tree = ast.parse(path.read_text())
        own = own_private_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                used = [(alias.name, node.module) for alias in node.names if private(alias.name)]
            elif isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in own:
                if is_own(node.value) or ast.unparse(node) in THEIR_PRIVATE_NAMES:
                    continue
                used = [(node.attr, ast.unparse(node.value))]
            elif named := named_by_string(node):
                used = [(name, "<string>") for name in named if name not in own]
            else:
                continue
            found += [f"{path.relative_to(REPO)}:{node.lineno} {where}.{name}" for name, where in used]
    assert not found, found


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


TESTS = REPO / "tests"
#: test owners outside the package, each a part of the repository (README.md as ``readme``)
REPOSITORY_OWNERS = {
    "conf": "conf",
    "benchmarks": "benchmarks",
    "notebooks": "notebooks",
    "readme": "README.md",
}
#: test owners that are the whole: runs through the Hydra app, the package's shape
END_TO_END = {"app", "architecture"}


def known_owners() -> set[str]:
    """What a test file may be about: the package's modules and subpackages, as src/ has them now."""
    modules = {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__")}
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    return modules | packages | REPOSITORY_OWNERS.keys() | END_TO_END


def test_every_test_file_is_named_test_owner_feature():
    """Issue 25: ``test_<owner>[_<feature>].py``, the owner a module or subpackage of pckd_lightning, a part of
    the repository (conf, benchmarks, notebooks, readme) or the whole (app, architecture)."""
    assert all((REPO / part).exists() for part in REPOSITORY_OWNERS.values())
    owners = known_owners()
    strays = [
        p.name
        for p in TESTS.glob("test_*.py")
        if not any(p.stem == f"test_{o}" or p.stem.startswith(f"test_{o}_") for o in owners)
    ]
    assert not strays, f"{strays}: name each test_<owner>[_<feature>].py, <owner> one of {sorted(owners)}"


def test_no_test_imports_conftest_or_another_test_file():
    """conftest.py holds fixtures, which pytest hands out; a test file holds tests. What tests share they import
    from helpers.py or a helper module of its own (report_runs.py, tiny_module.py, ...)."""

    def imported(node: ast.AST) -> list[str]:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            return [node.module]
        return [a.name for a in node.names] if isinstance(node, ast.Import) else []

    importers = [
        f"{p.name} imports {name}"
        for p in TESTS.glob("*.py")
        for node in ast.walk(ast.parse(p.read_text()))
        for name in imported(node)
        if name == "conftest" or name.startswith("test_")
    ]
    assert not importers, importers


def test_no_config_reads_a_setting_that_may_be_missing():
    """Issue 25: every setting has one declared home, so a config reads it as ``${key}``; ``oc.select`` (a
    default where the key may be absent) would hide a second home or a missing one."""
    users = [
        f"{p.relative_to(REPO)}:{n}"
        for p in sorted((REPO / "conf").rglob("*.yaml"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if "oc.select" in line
    ]
    assert not users, users


def test_no_inline_bool_type_check_outside_the_schema_package():
    """Issue 25: "an int, not a bool" and its kin are field types of :mod:`pckd_lightning.schema.fields`
    (``accepts(Int(1), value)``), declared once with the words of their refusal, not ``isinstance(x, bool)``
    conditions repeated in every module."""
    schema = PACKAGE / "schema"
    found = []
    for path in MODULES.values():
        if schema in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", "") == "isinstance"
                and len(node.args) == 2
            ):
                kinds = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
                if any(isinstance(kind, ast.Name) and kind.id == "bool" for kind in kinds):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {ast.unparse(node)}")
    assert not found, found
