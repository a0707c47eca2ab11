"""Test ids and shards of JUnit testcases: pytest node ids from classname/file, the file's shard and run.

Split from reader.py (the event loop) to keep modules small; pure.
"""

from __future__ import annotations

from functools import lru_cache


def file_shard_run(own_run: int | None, shard: int | None, run: int | None) -> tuple[int | None, int | None]:
    """A testcase without its own shard property gets the file's shard, and its run unless it has one."""
    if shard is None:
        return None, own_run
    return shard, own_run if own_run is not None else run


def derive_test_id(
    classname: str, name: str, file: str | None, line: str | None, index: int = 0
) -> tuple[str, str | None, int | None]:
    """pytest's node id where derivable: `tests/test_x.py::TestC::test_y[1]`; otherwise `classname::name`.

    pytest's classname is the dotted module path plus classes (`tests.test_x.TestC`); xunit1 adds a
    `file=` attribute. An absolute or `../` file (seen in the wild) is ignored in favour of the classname.
    """
    line_no = int(line) if line and line.isascii() and line.isdigit() and len(line) <= 18 else None
    start, path = id_start(classname, file)
    if not start and not name:
        return f"<unnamed testcase #{index}>", None, line_no
    return start + name, path, line_no


def id_start(classname: str, file: str | None) -> tuple[str, str | None]:
    """What a test id starts with before the testcase's name, and the test's file: `tests/test_x.py::TestC::`
    for pytest, `classname::` otherwise, "" without a classname (the id is then the name alone)."""
    prefix, path = id_prefix(classname, file)
    if prefix is not None:
        return prefix + "::", path
    return (classname + "::" if classname else ""), None


@lru_cache(maxsize=4096)
def id_prefix(classname: str, file: str | None) -> tuple[str | None, str | None]:
    """`tests/test_x.py::TestC` from classname (+ file); None when not a pytest-looking classname."""
    parts = [p for p in classname.split(".") if p]
    if file and file.endswith(".py") and not file.startswith(("/", "..")):
        module = file[:-3].replace("/", ".").split(".")
        rest = (
            parts[len(module) :] if parts[: len(module)] == module else [p for p in parts if p[:1].isupper()]
        )
        return "::".join([file, *rest]), file
    cut = next((i for i, p in enumerate(parts) if p[:1].isupper()), len(parts))
    module, classes = parts[:cut], parts[cut:]
    if module and _looks_like_test_module(module[-1]):
        path = "/".join(module) + ".py"
        return "::".join([path, *classes]), path
    return None, None


def _looks_like_test_module(part: str) -> bool:
    return part.startswith("test_") or part.endswith("_test") or part in ("test", "tests", "conftest")
