"""Reading and writing the commands' own files, with the one-line errors every command promises."""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db_test_action.config.settings import TABLE
from db_test_action.errors import DbTestActionError

if TYPE_CHECKING:  # the reader and the model are imported where used: `postgres start/stop` need only
    # load_table, and importing those two costs them ~60 ms a step
    from db_test_action.junit.parse import ParsedFile
    from db_test_action.model import ParseProblem
    from db_test_action.stability.nightly import Night


def write_output(path: Path, text: str | bytes, flag: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DbTestActionError(
            f"{path}: cannot write {flag} ({exc.strerror}); check the directory"
        ) from None


def write_chunks(path: Path, chunks: Iterable[bytes], flag: str) -> None:
    """Write a document produced piece by piece (the JSON report, the merged JUnit): constant memory."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
    except OSError as exc:
        raise DbTestActionError(
            f"{path}: cannot write {flag} ({exc.strerror}); check the directory"
        ) from None


def read_json(path: Path, flag: str) -> Any:
    """Parsed JSON, or a one-line error for every way an untrusted file can be bad (never a crash)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise DbTestActionError(
            f"{path}: cannot read {flag} file ({exc.strerror}); check the path and its permissions"
        ) from None
    except UnicodeDecodeError as exc:
        raise DbTestActionError(
            f"{path}: {flag} file is not UTF-8 (byte {exc.start}); pass the file db-test-action wrote"
        ) from None
    return loads_json(text, str(path), f"{flag} file", "pass the file db-test-action wrote")


def loads_json(text: str, where: str, what: str, fix: str) -> Any:
    """json.loads with every way untrusted text can fail as one line: `<where>: <what> is not …; <fix>`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DbTestActionError(f"{where}:{exc.lineno}: {what} is not JSON ({exc.msg}); {fix}") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise DbTestActionError(f"{where}: {what} is not usable JSON ({str(exc)[:100]}); {fix}") from None
    except RecursionError:
        raise DbTestActionError(f"{where}: {what} is nested too deeply; {fix}") from None


def bug(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}; please report this db-test-action bug"


def parse_junit_safely(path: Path, name: str) -> ParsedFile:
    """parse_junit_file, with any parser bug costing this one file (a named problem), never the report."""
    from db_test_action.junit.files import parse_junit_file
    from db_test_action.junit.parse import broken_file

    try:
        return parse_junit_file(path, name)
    except Exception as exc:
        return broken_file(name, f"cannot parse ({bug(exc)})")


def unique_files(files: Sequence[Path]) -> tuple[Path, ...]:
    """One entry per file on disk: the same file reached by two paths (`results/x.xml` and
    `./results/../results/x.xml`, a symlink, a hard link) would count its runs twice and make a
    passing test look repeated or flaky."""
    seen: set[tuple[int, int] | str] = set()
    out = []
    for path in files:
        try:
            st = path.stat()
            key: tuple[int, int] | str = (st.st_dev, st.st_ino)
        except OSError:
            key = str(path.resolve())
        if key not in seen:
            seen.add(key)
            out.append(path)
    return tuple(out)


def problem_from(error: DbTestActionError, path: Path) -> ParseProblem:
    """An input error as a problem of the report: named, shown, and the report still written."""
    from db_test_action.model import ParseProblem

    text = str(error)
    prefix = f"{path}: "
    return ParseProblem(str(path), text[len(prefix) :] if text.startswith(prefix) else text)


def display_path(path: Path, cwd: Path) -> str:
    """Relative to the working directory when inside it: shorter names in reports and messages."""
    try:
        return str(path.resolve().relative_to(_resolved(cwd) if cwd.is_absolute() else cwd.resolve()))
    except ValueError:
        return str(path)


@lru_cache(maxsize=8)
def _resolved(folder: Path) -> Path:
    """An absolute working directory resolved once, not once per file named (~70 µs each); a relative
    one is resolved each time (it depends on the process's directory, which may change)."""
    return folder.resolve()


def find_pyproject(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load_table(config: Path | None, cwd: Path) -> tuple[dict[str, Any], str]:
    """The `[tool.db-test-action]` table (from --config or the nearest pyproject.toml) and a label for errors.

    A --config file may be a pyproject.toml or a bare TOML with the same keys at top level.
    """
    path = config or find_pyproject(cwd)
    if path is None:
        return {}, "defaults"
    # Imported here, not at the top: most reports have no config file (~5 ms at startup).
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DbTestActionError(f"{path}: cannot read ({exc.strerror}); check --config") from None
    except UnicodeDecodeError:
        raise DbTestActionError(f"{path}: not UTF-8 text; fix the file") from None
    except tomllib.TOMLDecodeError as exc:
        raise DbTestActionError(f"{path}: not valid TOML ({exc}); fix the file") from None
    except RecursionError:
        raise DbTestActionError(f"{path}: nested too deeply; fix the file") from None
    if "tool" in data or config is None:
        tool = data.get("tool", {})
        if not isinstance(tool, dict):
            raise DbTestActionError(f"{path}: tool must be a table ([tool.db-test-action]); fix the file")
        table = tool.get("db-test-action", {})
        if not isinstance(table, dict):
            raise DbTestActionError(f"{path}: tool.db-test-action must be a table; fix the file")
        return table, f"{path.name} [{TABLE}]"
    return data, str(path.name)


def read_history_file(path: Path) -> tuple[Night, ...] | None:
    """None when the file does not exist yet (the first night); errors name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DbTestActionError(
            f"{path}: cannot read the history ({exc.strerror}); check its permissions or pass another --history"
        ) from None
    except UnicodeDecodeError:
        raise DbTestActionError(f"{path}: the history is not UTF-8 text; pass another --history") from None
    from db_test_action.stability.history import (
        parse_history,  # only `stability` reads one: not imported by `report`
    )

    return parse_history(text, str(path))


def write_history_file(path: Path, nights: Sequence[Night]) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a history behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        from db_test_action.stability.history import dump_history

        tmp.write_text(dump_history(nights), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise DbTestActionError(
            f"{path}: cannot write the history ({exc.strerror}); make its directory writable or pass another --history"
        ) from None


def read_result_files(files: Sequence[Path], cwd: Path) -> list[ParsedFile]:
    """Parse each JUnit file; a merged file we wrote (`report --junit-out`) is left out, with a note,
    because every test in it is already in the shard files beside it."""
    parsed = [parse_junit_safely(path, display_path(path, cwd)) for path in files]
    for item in parsed:
        if item.is_merged:
            print(
                f"db-test-action: {item.info.path}: a merged file from `report --junit-out`; not read again",
                file=sys.stderr,
            )
    return [item for item in parsed if not item.is_merged]


@contextmanager
def without_gc() -> Iterator[None]:
    """Reading 100,000 testcases makes ~10⁶ small objects and no cycles to collect, yet each collection of
    the oldest generation re-walks all of them: ~0.1 s of a 0.8 s report, ~0.2 s of a 1 s stability
    night (benchmarks/report_scale.py, stability_scale.py). Objects made while the collector is off stay
    in its youngest generation, so its next collection would walk all of them (~0.02 s): on the way out
    they are moved to the oldest one instead (`freeze` then `unfreeze`, no walk), where any cycle among
    them is still collected, at the next full collection."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.unfreeze()
            gc.enable()
