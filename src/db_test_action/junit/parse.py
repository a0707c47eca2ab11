"""JUnit XML → `Occurrence`s (one per <testcase>) → `TestResult`s (one per test id).

Why not junitparser's object tree: it wraps every element in Python objects and reads `tests=` style
attributes that lie. Here expat tokenizes in C and a small reader (reader.py) takes its callbacks,
building no element objects and keeping only what a report needs: testcase attributes, result messages
and texts, properties. Runs of clean pytest testcases (most of a big report) do not reach expat at all:
a regex cuts them from the bytes and C loops make their rows (clean_runs.py); a file expat then finds
broken is read again without, so its problem is always the reader's own. Before any byte reaches
the parser, a scan of the prolog refuses `<!DOCTYPE` and `<!ENTITY` (JUnit never needs them): without
a DTD there are no entities to expand and nothing external to fetch, which is all defusedxml guards
against. It counts <testcase> elements, keeps what a truncated file held before it broke, and keeps
junitparser's semantics (error > failure > skipped, messages of several results joined). Testcases are `OccurrenceRow`s (named tuples with the fields of
`Occurrence`). See benchmarks/report_scale.py for the speed.

pytest realities this module encodes (verified with pytest 9, pytest-rerunfailures 16, xdist 3.8):
- fixture errors are `<error message="failed on setup with &quot;…&quot;">` (or teardown);
- a body failure plus a teardown error is two <testcase> elements with the same name;
- each rerun attempt is an extra *empty* <testcase> (the failure is not recorded); the last carries
  the outcome, so an empty testcase followed by another of the same test in one pytest file failed.
  Under `db-test-action run` our plugin adds `attempt_failure` ("setup: <exception line>") to it, which
  the reader turns back into a failed attempt with its phase and message.
Grouping occurrences into tests lives in attempts.py (re-exported here).
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.parsers import expat

from db_test_action.junit.attempts import (  # re-exported: one import for callers
    TestResultRow,
    error_location,
    group_tests,
    group_tests_lazily,
)
from db_test_action.junit.clean_runs import USABLE as CLEAN_RUNS_USABLE
from db_test_action.junit.clean_runs import CleanRuns, is_utf8
from db_test_action.junit.reader import (  # derive_test_id and OccurrenceRow re-exported
    JUnitReader,
    MergedReport,
    NotJUnit,
    OccurrenceRow,
    PassRow,
    derive_test_id,
    file_shard_run,
)
from db_test_action.model import (
    Occurrence,
    ParseProblem,
    ResultFile,
)

_SHARD_RUN_RE = re.compile(r"shard-(\d+)(?:-run-(\d+))?")
_TRUNCATION_CODES = {
    expat.errors.codes[expat.errors.XML_ERROR_NO_ELEMENTS],
    expat.errors.codes[expat.errors.XML_ERROR_UNCLOSED_TOKEN],
    expat.errors.codes[expat.errors.XML_ERROR_UNCLOSED_CDATA_SECTION],
    expat.errors.codes[expat.errors.XML_ERROR_PARTIAL_CHAR],
}
_ENCODING_CODES = {
    expat.errors.codes[expat.errors.XML_ERROR_UNKNOWN_ENCODING],
    expat.errors.codes[expat.errors.XML_ERROR_INCORRECT_ENCODING],
}


@dataclass(frozen=True, slots=True)
class ParsedFile:
    """One result file: what it is, its testcases (as rows) and what went wrong reading it."""

    info: ResultFile
    rows: tuple[OccurrenceRow | PassRow, ...]
    problem: ParseProblem | None
    is_merged: bool = False  # our own `report --junit-out` file: its tests are already in the others

    @property
    def occurrences(self) -> tuple[Occurrence, ...]:
        """The testcases as the model's `Occurrence`s (built on each call: use `rows` in hot loops)."""
        return tuple(row.occurrence() if type(row) is PassRow else Occurrence(*row) for row in self.rows)


# --- one file ------------------------------------------------------------------------------------


def parse_junit_bytes(data: bytes, name: str) -> ParsedFile:
    """Parse JUnit XML held in memory. Never raises for bad input: the problem is returned as a value."""

    def pieces() -> Iterator[bytes]:  # the same pieces each time: expat's message may depend on them
        return (data[at : at + CHUNK] for at in range(0, len(data), CHUNK))

    return parse_junit_chunks(pieces(), name, pieces)


CHUNK = 1 << 16  # the pieces of an in-memory file, and the size of expat's text buffer
MAX_PROLOG = 1 << 20  # JUnit writers put a line or two before the root element


def parse_junit_chunks(
    chunks: Iterable[bytes], name: str, again: Callable[[], Iterable[bytes]] | None = None
) -> ParsedFile:
    """Parse JUnit XML arriving in pieces (a file read chunk by chunk: memory holds a chunk and one
    testcase, never the file). Never raises for bad input: the problem is returned as a value.

    `again` reads the same bytes once more from the start. With it, runs of clean testcases bypass
    expat in a UTF-8 file (clean_runs.py, where an expat it can keep in step is used), and a file
    found broken is read again without. It is also asked after a syntax error in a token begun more
    than a megabyte before the end (whether the file was cut short there depends on the lines after
    it); without it, the lines in the kept megabyte and after are all that count."""
    shard, run = _shard_run_from_name(name)
    pieces = iter(chunks)
    head = b""
    verdict: str | None = None
    for chunk in pieces:  # enough of the file to see its prolog: the root element, or a DTD
        head = head + chunk if head else chunk  # mostly one chunk: not copied
        verdict = prolog_problem(head, final=False)
        if verdict is not None or len(head) > MAX_PROLOG:
            break
    else:
        verdict = prolog_problem(head, final=True)
    if not head or head.isspace():
        return broken_file(name, "empty file (0 testcases); the test process probably died before writing it")
    if verdict is None:
        return broken_file(
            name, "more than 1 MB before the root element; JUnit has a line or two there, regenerate it"
        )
    if verdict:
        return broken_file(name, verdict)
    reader = JUnitReader(name, shard, run)
    if again is not None and CLEAN_RUNS_USABLE and is_utf8(head):
        try:
            _read(reader, head, pieces, clean=True)
        except _ReadAgain:  # expat found the file broken: read it again the usual way, for the usual problem
            reader = JUnitReader(name, shard, run)
            _read(reader, head, iter(again()), again=again)
    else:
        _read(reader, head, itertools.chain((head,), pieces), again=again)
    if reader.merged:
        return ParsedFile(ResultFile(name, None, None, 0.0, 0), (), None, is_merged=True)
    rows = reader.rows
    final_shard = reader.suite_int("shard", shard)
    final_run = reader.suite_int("run", run)
    if (final_shard, final_run) != (shard, run):  # the suite's properties overrule the file name
        for i, row in enumerate(rows):
            if type(row) is PassRow:
                rows[i] = row._replace(shard=final_shard, run=final_run if final_shard is not None else None)
        for i, own_run in reader.defaulted:
            new_shard, new_run = file_shard_run(own_run, final_shard, final_run)
            rows[i] = rows[i]._replace(shard=new_shard, run=new_run)
    wall_s = reader.wall_s if reader.wall_s is not None else sum(r.duration_s for r in rows)
    info = ResultFile(name, final_shard, final_run, round(wall_s, 6), len(rows), reader.is_pytest)
    return ParsedFile(info, tuple(rows), reader.problem or reader.number_problem)


class _ReadAgain(Exception):
    """Raised by `_read` with `clean` when expat finds the file broken: it is read again without."""


def _read(
    reader: JUnitReader,
    head: bytes,
    pieces: Iterator[bytes],
    *,
    clean: bool = False,
    again: Callable[[], Iterable[bytes]] | None = None,
) -> None:
    """One pass of expat over the file's `pieces` into `reader`: its rows and any problem (`head`: the
    file's first bytes, for the problems; `again`: see `parse_junit_chunks`).

    With `clean`, `pieces` are what follows `head`, and both go through `CleanRuns` (runs of clean
    testcases bypass expat); a syntax or encoding error then raises `_ReadAgain`: the caller reads the
    file again without, so the problem named is always the usual one, with its line."""
    name, shard = reader.name, reader.shard
    parser = expat.ParserCreate(namespace_separator="}")  # "uri}tag", as ElementTree names them
    parser.buffer_text, parser.buffer_size = True, CHUNK  # a traceback's text in one or few pieces
    reader.attach(parser)
    tail = None if clean else _Tail()
    try:
        if tail is None:
            feeder = CleanRuns(reader, parser)
            root = prolog_end(head)
            feeder.feed_raw(head[:root])  # the declaration: a `<?` the pieces must not meet
            feeder.feed(head, root)
            for chunk in pieces:
                feeder.feed(chunk)
            feeder.close()
        else:
            for chunk in pieces:
                tail.add(chunk)
                parser.Parse(chunk, False)
            parser.Parse(b"", True)
    except NotJUnit:
        pass
    except MergedReport:
        reader.merged = True
    except expat.ExpatError as exc:  # every complete testcase before it is already a row
        if tail is None:
            raise _ReadAgain from exc
        # Cut short: a file that stopped inside its root element, at an error on its last line (or the
        # one before a final newline).
        truncated = (
            exc.code in _TRUNCATION_CODES
            and reader.open
            and tail.ends_near(parser.ErrorByteIndex, pieces, again)
        )
        reader.problem = _syntax_problem(name, exc, truncated, head, reader, shard)
    except (ValueError, LookupError) as exc:  # a multi-byte or unknown encoding: pyexpat refuses it
        if tail is None:
            raise _ReadAgain from exc
        reader.problem = ParseProblem(name, _encoding_problem(head, str(exc)))
    finally:  # the handlers hold the parser (a cycle): freed now, not at a collection the report defers
        parser.StartElementHandler = parser.EndElementHandler = parser.CharacterDataHandler = None


class _Tail:
    """The last chunks fed to the parser (at least a megabyte) and where they start in the file.

    On a syntax error, the newlines from the error to the end of the file say whether it was on the last
    line. Counting every chunk's newlines as it went by cost ~0.5 ns a byte (13 ms of a 24 MB report)
    for the few files that break; the error's line is expat's, so only what follows it is counted: from
    the kept bytes, or, for a token begun before them (a huge attribute value cut short), from the file
    read once more.
    """

    KEEP = 1 << 20  # bytes of the file kept behind the parser (at least; whole chunks)

    def __init__(self) -> None:
        self.chunks: deque[tuple[int, bytes]] = deque()
        self.end = 0

    def add(self, chunk: bytes) -> None:
        if chunk:
            self.chunks.append((self.end, chunk))
            self.end += len(chunk)
            while self.end - self.chunks[0][0] - len(self.chunks[0][1]) >= self.KEEP:
                self.chunks.popleft()  # the chunks after it still hold KEEP bytes

    def ends_near(self, at: int, rest: Iterable[bytes], again: Callable[[], Iterable[bytes]] | None) -> bool:
        """Whether byte `at` is on the last line, or the one before a final newline (`rest`: the chunks not
        fed yet; `again`: the whole file once more, see `parse_junit_chunks`)."""
        kept_from = self.chunks[0][0] if self.chunks else 0
        if at < kept_from and again is not None:
            with contextlib.suppress(OSError):  # the file gone since: count what is kept
                return _ends_near(again(), 0, at)
        return _ends_near(itertools.chain((chunk for _start, chunk in self.chunks), rest), kept_from, at)


def _ends_near(chunks: Iterable[bytes], start: int, at: int) -> bool:
    """`_Tail.ends_near` over `chunks`, the first of which begins at byte `start` of the file."""
    count, last = 0, b""
    for chunk in chunks:
        if chunk:
            end = start + len(chunk)
            if end > at:
                count += chunk.count(b"\n", max(at - start, 0))
            start, last = end, chunk
    return count + (0 if last.endswith(b"\n") else 1) <= 2


# --- the prolog: no DTD, a readable encoding -------------------------------------------------------------

_UTF16 = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be", b"<\x00": "utf-16-le", b"\x00<": "utf-16-be"}
_DECLARED = re.compile(rb"""<\?xml[^>]{0,200}?encoding\s*=\s*["']([^"']{0,40})["']""")


def prolog_problem(data: bytes, final: bool = True) -> str | None:
    """Why the file is refused before parsing ("" when it is not): a DTD or entity declaration.

    Only the prolog (before the root element) can hold one; a byte scan of it, skipping comments and
    processing instructions, finds it. UTF-16 files are scanned decoded (expat reads them natively); every
    other encoding pyexpat accepts is ASCII-compatible, so `<!DOCTYPE` is those very bytes. Linear time.
    With `final` false (more bytes may follow), None means the prolog has not ended yet.
    """
    codec = _UTF16.get(data[:2])
    if codec and not data.startswith(b"\xff\xfe\x00\x00"):  # UTF-32 is refused by the parser itself
        data = data.decode(codec, errors="replace").encode("utf-8", errors="replace")
    return _prolog(data, final)[0]


def prolog_end(data: bytes) -> int:
    """Where the root element begins in an ASCII-compatible file whose prolog `prolog_problem` passed."""
    return _prolog(data, True)[1]


def _prolog(data: bytes, final: bool) -> tuple[str | None, int]:
    """`prolog_problem`'s verdict, and where the scan stopped (the root element's `<` when "")."""
    more = None if not final else ""
    at = 0
    while (at := data.find(b"<", at)) >= 0:
        if not final and len(data) - at < len(b"<!DOCTYPE"):
            return None, at  # a declaration may be cut in two
        if data.startswith(b"<?", at):
            at = data.find(b"?>", at + 2)
            at = at + 2 if at >= 0 else -1
        elif data.startswith(b"<!--", at):
            at = data.find(b"-->", at + 4)
            at = at + 3 if at >= 0 else -1
        elif data.startswith((b"<!DOCTYPE", b"<!ENTITY"), at):
            kind = "<!DOCTYPE" if data.startswith(b"<!D", at) else "<!ENTITY"
            return (
                f"refused: the file declares a DTD or entities ({kind}); JUnit never needs them, regenerate it",
                at,
            )
        else:  # the root element (or bytes the parser will name)
            return "", at
        if at < 0:
            return more, len(data)
    return more, len(data)


def _encoding_problem(data: bytes, reason: str) -> str:
    match = _DECLARED.search(data[:300])
    declared = match.group(1).decode("ascii", "replace") if match else "?"
    return f"unsupported encoding {declared!r} ({reason}); write JUnit as UTF-8"


def broken_file(name: str, message: str, line: int | None = None) -> ParsedFile:
    shard, run = _shard_run_from_name(name)
    return ParsedFile(ResultFile(name, shard, run, 0.0, 0), (), ParseProblem(name, message, line))


def _shard_run_from_name(name: str) -> tuple[int | None, int | None]:
    match = _SHARD_RUN_RE.search(Path(name).name)
    if not match:
        return None, None
    return int(match.group(1)), int(match.group(2)) if match.group(2) else None


def _syntax_problem(
    name: str,
    exc: expat.ExpatError,
    truncated: bool,
    head: bytes,
    reader: JUnitReader,
    shard: int | None,
):
    line = exc.lineno
    if exc.code in _ENCODING_CODES:
        return ParseProblem(name, _encoding_problem(head, str(exc).split(":")[0]), line)
    if truncated:
        kept = len(reader.rows)
        rerun = f"re-run shard {shard}" if shard is not None else "re-run the job that wrote it"
        return ParseProblem(
            name,
            f"truncated XML (no closing </{reader.root}>); kept {kept} complete testcases, {rerun}",
            line,
        )
    reason = str(exc).split(":")[0]
    return ParseProblem(name, f"not well-formed XML ({reason}); fix or regenerate the file", line)


__all__ = [
    "OccurrenceRow",
    "ParsedFile",
    "PassRow",
    "TestResultRow",
    "derive_test_id",
    "error_location",
    "group_tests",
    "group_tests_lazily",
    "parse_junit_bytes",
]
