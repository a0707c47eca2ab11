"""The pipeline's shape, read from the package layout and enforced.

The stages are the sub-packages, in data-flow order: `server → run → junit → report → stability →
publish`, then `commands` (the CLI's I/O edge) on top. The pytest plugin stands beside the pipeline: it
may use the base modules and `server`, and nothing but the CLI may import it. A module imports only from
the base, its own package and earlier stages. The pure middle stays pure *transitively*: a pure module
neither does I/O (files, environment, processes, clock) nor imports a module that does.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "db_test_action"

BASE = ("errors", "model", "contract", "config")  # importable from anywhere
STAGES = ("server", "run", "junit", "report", "stability", "publish", "commands")
BESIDE = {"plugin": ("server",)}  # side packages and the stages they may use
TOP = ("cli", "__main__", "__init__")  # the entry points: may import anything

# Packages whose every module is pure, plus single pure modules elsewhere.
PURE_PACKAGES = ("report", "stability")
PURE_MODULES = (
    "errors", "model", "contract", "config", "junit.parse", "junit.reader", "junit.attempts", "junit.stream"
)  # fmt: skip
IMPURE_IMPORTS = {
    "subprocess",
    "socket",
    "time",
    "shutil",
    "tempfile",
    "glob",
    "requests",
    "github",
    "psycopg",
}
IMPURE_CALLS = {"open", "input", "print"}
IMPURE_METHODS = {"read_text", "write_text", "read_bytes", "write_bytes", "mkdir", "unlink", "iterdir",
                  "rglob", "glob", "getenv", "putenv", "now", "utcnow", "today", "exists", "is_file",
                  "is_dir"}  # fmt: skip
IMPURE_ATTRIBUTES = {("os", "environ"), ("sys", "stdout"), ("sys", "stderr"), ("sys", "argv")}


def _modules() -> list[str]:
    """Dotted names below the package: `report.build`, `config`, `plugin` (a package's __init__)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if len(parts) > 1 and parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def _path(module: str) -> Path:
    base = PACKAGE.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse(_path(module).read_text(encoding="utf-8"))


@cache
def _imports(module: str) -> frozenset[str]:
    """Our own modules this module imports, as dotted names (`from pkg import mod` counts as pkg.mod)."""
    known = set(_modules())
    found = set()
    for node in ast.walk(_tree(module)):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("db_test_action"):
            base = node.module.removeprefix("db_test_action").lstrip(".")
            names = [f"{base}.{a.name}".lstrip(".") for a in node.names]
            names = [n if n in known else base for n in names]
        elif isinstance(node, ast.Import):
            names = [
                a.name.removeprefix("db_test_action.")
                for a in node.names
                if a.name.startswith("db_test_action.")
            ]
        found.update(n for n in names if n in known)
    return frozenset(found)


def _top(module: str) -> str:
    return module.split(".")[0]


def _allowed(module: str) -> set[str]:
    """The top-level names (packages or base modules) `module` may import from."""
    top = _top(module)
    if top in TOP:
        return {_top(m) for m in _modules()}
    if top in BASE:
        return set(BASE[: BASE.index(top) + 1]) | {"errors"}
    if top in BESIDE:
        return {*BASE, top, *BESIDE[top]}
    return {*BASE, *STAGES[: STAGES.index(top) + 1]}


def test_every_module_has_a_place() -> None:
    placed = {*BASE, *STAGES, *BESIDE, *TOP}
    loose = [m for m in _modules() if _top(m) not in placed]
    assert not loose, f"put these in a stage package (or BASE): {loose}"


@pytest.mark.parametrize("module", _modules())
def test_imports_only_from_earlier_stages(module: str) -> None:
    bad = sorted(m for m in _imports(module) if _top(m) not in _allowed(module))
    assert not bad, f"{module} imports {bad}, outside what its stage may use: {sorted(_allowed(module))}"


def test_the_runner_does_not_import_the_plugin() -> None:
    """The plugin runs inside the user's pytest; the runner reaches it only through `contract`."""
    users = sorted(
        m for m in _modules() if any(_top(i) == "plugin" for i in _imports(m)) and _top(m) != "plugin"
    )
    assert not users, users


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}

    def visit(node: str, trail: tuple[str, ...]) -> None:
        if state.get(node) == 1:
            raise AssertionError(f"import cycle: {' -> '.join((*trail, node))}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in _imports(node):
            if dep != node and not (node == _top(node) and dep.startswith(node + ".")):
                visit(dep, (*trail, node))
        state[node] = 2

    for name in _modules():
        visit(name, ())


def _direct_io(module: str) -> list[str]:
    """What in `module` itself touches the outside world."""
    found = []
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in IMPURE_IMPORTS]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in IMPURE_IMPORTS:
            found.append(node.module)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IMPURE_CALLS:
            found.append(f"{node.func.id}()")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in IMPURE_METHODS
        ):
            found.append(f".{node.func.attr}()")
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in IMPURE_ATTRIBUTES
        ):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def _pure() -> list[str]:
    return [m for m in _modules() if _top(m) in PURE_PACKAGES or m in PURE_MODULES]


@pytest.mark.parametrize("module", _pure())
def test_the_middle_is_pure_transitively(module: str) -> None:
    seen: set[str] = set()
    todo = [(module, (module,))]
    while todo:
        name, trail = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        io = _direct_io(name)
        assert not io, f"{' -> '.join(trail)} does I/O ({', '.join(sorted(set(io)))}); it belongs at an edge"
        todo += [(dep, (*trail, dep)) for dep in _imports(name)]


def test_the_purity_check_sees_io() -> None:
    """The check itself must fail on the edges, or a passing run proves nothing."""
    assert _direct_io("junit.files") and _direct_io("commands.files") and _direct_io("server.launch")


def test_modules_stay_small() -> None:
    """~400 lines is the guide; 520 is the hard stop that makes a split due."""
    sizes = {m: len(_path(m).read_text().splitlines()) for m in _modules()}
    too_big = {name: n for name, n in sizes.items() if n > 520}
    assert not too_big, too_big
