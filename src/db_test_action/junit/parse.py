"""JUnit XML → `Occurrence`s (one per <testcase>) → `TestResult`s (one per test id).

Why not junitparser's object tree: it wraps every element in Python objects and reads `tests=` style
attributes that lie. Here defusedxml's XMLParser (DTDs and entities refused, so an entity bomb is a
named error, not a hang) feeds expat callbacks straight to a small reader that keeps only what a
report needs: testcase attributes, result messages and texts, properties. It counts <testcase>
elements, keeps what a truncated file held before it broke, and keeps junitparser's semantics
(error > failure > skipped, messages of several results joined). Testcases are `OccurrenceRow`s
(named tuples with the fields of `Occurrence`). See benchmarks/report_scale.py for the speed.

pytest realities this module encodes (verified with pytest 9, pytest-rerunfailures 16, xdist 3.8):
- fixture errors are `<error message="failed on setup with &quot;…&quot;">` (or teardown);
- a body failure plus a teardown error is two <testcase> elements with the same name;
- each rerun attempt is an extra *empty* <testcase> (the failure is not recorded); the last carries
  the outcome, so an empty testcase followed by another of the same test in one pytest file failed.
  Under `db-test-action run` our plugin adds `attempt_failure` ("setup: <exception line>") to it, which
  the reader turns back into a failed attempt with its phase and message.
The expat callbacks live in junit_reader.py, grouping occurrences into tests in attempts.py (both
re-exported here).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from xml.parsers import expat

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from db_test_action.junit.attempts import (  # re-exported: one import for callers
    TestResultRow,
    error_location,
    group_tests,
    group_tests_lazily,
)
from db_test_action.junit.reader import (  # derive_test_id and OccurrenceRow re-exported
    JUnitReader,
    NotJUnit,
    OccurrenceRow,
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


@dataclass(frozen=True, slots=True)
class ParsedFile:
    """One result file: what it is, its testcases (as rows) and what went wrong reading it."""

    info: ResultFile
    rows: tuple[OccurrenceRow, ...]
    problem: ParseProblem | None

    @property
    def occurrences(self) -> tuple[Occurrence, ...]:
        """The testcases as the model's `Occurrence`s (built on each call: use `rows` in hot loops)."""
        return tuple(Occurrence(*row) for row in self.rows)


# --- one file ------------------------------------------------------------------------------------


def parse_junit_bytes(data: bytes, name: str) -> ParsedFile:
    """Parse JUnit XML held in memory. Never raises for bad input: the problem is returned as a value."""
    if not data.strip():
        return broken_file(name, "empty file (0 testcases); the test process probably died before writing it")
    shard, run = _shard_run_from_name(name)
    reader = JUnitReader(name, shard, run)
    # defusedxml's parser keeps its DTD/entity/external-reference guards on the expat parser; like the
    # stdlib's iterparse, we then route the element and text callbacks straight to our reader, which keeps
    # only the attributes and result texts a report needs (no element tree, no <system-out> bodies).
    parser = DET.XMLParser(target=_NO_TARGET, forbid_dtd=True)
    expat_parser = parser.parser
    expat_parser.StartElementHandler = reader.start
    expat_parser.EndElementHandler = reader.end
    expat_parser.CharacterDataHandler = reader.data
    try:
        parser.feed(data)
        parser.close()
    except NotJUnit:
        pass
    except DefusedXmlException as exc:
        kind = type(exc).__name__
        reader.problem = ParseProblem(
            name,
            f"refused: the file declares a DTD or entities ({kind}); JUnit never needs them, regenerate it",
        )
    except ET.ParseError as exc:
        line, _col = exc.position
        reader.problem = _syntax_problem(name, exc, line, data, reader, shard)
    rows = reader.rows
    final_shard = reader.suite_int("shard", shard)
    final_run = reader.suite_int("run", run)
    if (final_shard, final_run) != (shard, run):  # the suite's properties overrule the file name
        for i, own_run in reader.defaulted:
            new_shard, new_run = file_shard_run(own_run, final_shard, final_run)
            rows[i] = rows[i]._replace(shard=new_shard, run=new_run)
    wall_s = reader.wall_s if reader.wall_s is not None else sum(r.duration_s for r in rows)
    info = ResultFile(name, final_shard, final_run, round(wall_s, 6), len(rows), reader.is_pytest)
    return ParsedFile(info, tuple(rows), reader.problem)


_NO_TARGET = object()  # XMLParser then installs no element callbacks of its own


def broken_file(name: str, message: str, line: int | None = None) -> ParsedFile:
    shard, run = _shard_run_from_name(name)
    return ParsedFile(ResultFile(name, shard, run, 0.0, 0), (), ParseProblem(name, message, line))


def _shard_run_from_name(name: str) -> tuple[int | None, int | None]:
    match = _SHARD_RUN_RE.search(Path(name).name)
    if not match:
        return None, None
    return int(match.group(1)), int(match.group(2)) if match.group(2) else None


def _syntax_problem(
    name: str, exc: ET.ParseError, line: int, data: bytes, reader: JUnitReader, shard: int | None
):
    last_line = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if exc.code in _TRUNCATION_CODES and line >= last_line - 1 and reader.tags:
        kept = len(reader.rows)
        rerun = f"re-run shard {shard}" if shard is not None else "re-run the job that wrote it"
        return ParseProblem(
            name,
            f"truncated XML (no closing </{reader.tags[0]}>); kept {kept} complete testcases, {rerun}",
            line,
        )
    reason = str(exc).split(":")[0]
    return ParseProblem(name, f"not well-formed XML ({reason}); fix or regenerate the file", line)


__all__ = [
    "OccurrenceRow",
    "ParsedFile",
    "TestResultRow",
    "derive_test_id",
    "error_location",
    "group_tests",
    "group_tests_lazily",
    "parse_junit_bytes",
]
