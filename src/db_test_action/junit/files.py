"""Finding and reading JUnit files: the I/O edge in front of the pure parser in parse.py."""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path

from db_test_action.junit.parse import ParsedFile, broken_file, parse_junit_chunks
from db_test_action.model import ParseProblem

# --- finding files -----------------------------------------------------------------------------------


def expand_paths(paths: Iterable[str]) -> tuple[tuple[Path, ...], tuple[ParseProblem, ...]]:
    """Files, directories (every *.xml below) and globs → sorted files; a path matching nothing is a problem."""
    found: dict[Path, None] = {}
    problems = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            matches = sorted(path.rglob("*.xml"))
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(m) for m in glob.glob(raw, recursive=True) if Path(m).is_file())
        if not matches:
            problems.append(
                ParseProblem(raw, "no JUnit XML files here; check the path or the test step's output")
            )
        found.update(dict.fromkeys(matches))
    return tuple(found), tuple(problems)


def parse_junit_file(path: Path, name: str | None = None) -> ParsedFile:
    """Read and parse one file; unreadable files become a ParseProblem, like broken XML."""
    name = name or str(path)
    try:
        with path.open("rb") as fh:  # read as parsed, a chunk at a time: a 1 GB file is not held at once
            return parse_junit_chunks(iter(partial(fh.read, READ_CHUNK), b""), name, partial(_chunks, path))
    except OSError as exc:
        return broken_file(name, f"cannot read ({exc.strerror}); check the artifact download")


READ_CHUNK = 1 << 18


def _chunks(path: Path) -> Iterator[bytes]:
    """The file once more, a chunk at a time (the parser asks after a syntax or encoding error)."""
    with path.open("rb") as fh:
        yield from iter(partial(fh.read, READ_CHUNK), b"")
