"""The pipeline's shape, enforced: modules import only from earlier stages, and the pure middle stays
pure (no files, environment, subprocesses or clock) so it can be tested and reasoned about in isolation."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "db_test_action"

# Lower stages never import higher ones; same-stage imports are allowed (and cycles are not).
STAGES: dict[str, int] = {
    **dict.fromkeys(["errors", "model", "config", "gha", "pgbin", "serverlog", "github_client"], 0),
    **dict.fromkeys(["postgres", "pgstate"], 1),
    **dict.fromkeys(
        ["dbtemplate", "dbreset", "sharding", "plugin_junit", "plugin_quarantine", "runfiles"], 2
    ),
    **dict.fromkeys(["runner", "plugin_db", "plugin"], 3),
    **dict.fromkeys(["junit_reader", "attempts", "junit"], 4),
    "classify": 5,
    **dict.fromkeys(["budgets", "nightly"], 6),
    **dict.fromkeys(["summary", "stability", "history"], 7),
    **dict.fromkeys(["render_markdown", "render", "stability_render"], 8),
    **dict.fromkeys(["publish", "tracking"], 9),
    **dict.fromkeys(["cli", "__main__", "__init__", "commands"], 10),
}
PURE = ["attempts", "classify", "budgets", "summary", "stability", "nightly", "render", "render_markdown",
        "stability_render"]  # fmt: skip
IMPURE_MODULES = {"subprocess", "socket", "time", "shutil", "tempfile"}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.glob("*.py"))


def _imports(path: Path) -> set[str]:
    """Our own modules this file imports (first component after `db_test_action.`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("db_test_action"):
            parts = node.module.split(".")
            if len(parts) > 1:
                found.add(parts[1])
            else:  # `from db_test_action import x`: only modules count, not names like __version__
                found.update(a.name for a in node.names if (PACKAGE / f"{a.name}.py").exists())
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("db_test_action."))
    return found


def test_every_module_has_a_stage() -> None:
    missing = [p.stem for p in _modules() if p.stem not in STAGES]
    assert not missing, f"give these modules a stage in STAGES: {missing}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.stem)
def test_imports_only_from_earlier_stages(path: Path) -> None:
    stage = STAGES[path.stem]
    later = {m: STAGES.get(m) for m in _imports(path) if STAGES.get(m, 99) > stage}
    assert not later, f"{path.stem} (stage {stage}) imports later stages {later}"


def test_no_import_cycles() -> None:
    graph = {p.stem: _imports(p) & set(STAGES) for p in _modules()}
    state: dict[str, int] = {}

    def visit(node: str, trail: tuple[str, ...]) -> None:
        if state.get(node) == 1:
            raise AssertionError(f"import cycle: {' -> '.join((*trail, node))}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in graph.get(node, ()):
            visit(dep, (*trail, node))
        state[node] = 2

    for name in graph:
        visit(name, ())


@pytest.mark.parametrize("name", PURE)
def test_the_middle_is_pure(name: str) -> None:
    tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & IMPURE_MODULES, (name, ast.unparse(node))
        if isinstance(node, ast.ImportFrom) and node.module:
            assert node.module.split(".")[0] not in IMPURE_MODULES, (name, ast.unparse(node))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "open", f"{name}: open() belongs at the edges"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert (node.value.id, node.attr) not in {("os", "environ"), ("datetime", "now")}, (
                f"{name}: {node.value.id}.{node.attr} belongs at the edges"
            )


def test_modules_stay_small() -> None:
    """~400 lines is the guide; 520 is the hard stop that makes a split due."""
    sizes = {
        p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")
    }
    too_big = {name: n for name, n in sizes.items() if n > 520}
    assert not too_big, too_big
