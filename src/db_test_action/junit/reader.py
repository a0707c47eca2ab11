"""Reading one JUnit file's XML events into rows: the loop behind `junit.parse_junit_bytes`.

Split from parse.py (files, problems, the DTD refusal) to keep modules small. Elements are built in C by
ElementTree's pull parser; the reader sees the start and end of every element of 100,000-testcase reports,
so it keeps only what a report needs and does little per element; test ids (pytest node ids from
classname/file) are derived here too.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import namedtuple
from collections.abc import Iterable
from dataclasses import MISSING, fields

from db_test_action.junit.ids import derive_test_id, file_shard_run, id_prefix
from db_test_action.junit.results import SEVERITY as _SEVERITY
from db_test_action.junit.results import attempt_failure_of, outcome_of, quarantined_failure_of
from db_test_action.model import Occurrence, Outcome, ParseProblem, Phase

_RETRY_TAGS = {"flakyFailure", "flakyError", "rerunFailure", "rerunError"}  # Surefire / xunit2 dialect

OccurrenceRow = namedtuple(  # type: ignore[misc]  # fields come from the model
    "OccurrenceRow",
    [f.name for f in fields(Occurrence)],
    defaults=[f.default for f in fields(Occurrence) if f.default is not MISSING],
)
OccurrenceRow.__doc__ = """An `Occurrence` as a named tuple: same fields, same order, ~6× cheaper to build.

A report reads 100,000 testcases; the stages read fields by name, so they take either kind."""


_new_row = tuple.__new__  # OccurrenceRow(…) without the Python-level __new__ of namedtuple


class PassRow(namedtuple("PassRow", ["test_id", "file", "line", "duration_s", "source", "shard", "run"])):
    """A clean pass without runner properties (~95 % of a big report): 7 fields, the other 12 of
    `Occurrence` are class constants. 112 bytes instead of 200 per testcase: ~9 MB of 100,000."""

    __slots__ = ()
    outcome = Outcome.PASSED
    phase = None
    message = text = ""
    attempt = worker = started_at = finished_at = database = attempt_failure = None
    markers: tuple[str, ...] = ()
    is_quarantined = False
    fixtures = None

    def occurrence(self) -> Occurrence:
        return Occurrence(
            self.test_id, self.file, self.line, self.outcome, None, self.duration_s, "", "", self.source,
            self.shard, self.run,
        )  # fmt: skip


MERGED_NAME = "db-test-action merged"  # the root of `report --junit-out` files (report/junit_out.py)


class MergedReport(Exception):
    """Raised from `consume` to skip a merged file we wrote: counting it would count every test twice."""


class NotJUnit(Exception):
    """Raised from `consume` to stop parsing a file whose root is not a test suite."""


# Properties the rows use: a suite's others are dropped when read, so nesting 20,000 suites deep with a
# property each costs 20,000 small dict copies, not 20,000² entries.
_KNOWN_PROPS = frozenset(
    ("shard", "run", "attempt", "worker", "markers", "started_at", "finished_at", "database",
     "attempt_failure", "quarantined", "fixtures")
)  # fmt: skip


class _Suite:
    """An open <testsuite>/<testsuites>: its attributes, its known properties and what it inherited."""

    __slots__ = ("base", "had_props", "name", "props", "tag", "time")

    def __init__(self, tag: str, time: str | None, name: str | None, base: dict[str, str]) -> None:
        self.tag, self.time, self.name, self.base = tag, time, name, base
        self.props: dict[str, str] = {}
        self.had_props = False


class JUnitReader:
    """ElementTree pull events for one file: testcases become rows at their end tag; nothing else is kept.

    Like a walk over the element tree, it descends only into <testsuites> and <testsuite> (a <testcase>
    anywhere else is not a test); a testcase or a suite's <properties> is read from its (C-built) subtree
    at its end tag, then deleted from its suite, so memory holds one testcase, not the file. Suite
    properties apply to the testcases after them. On a syntax error, every complete testcase is already a
    row. Work per element is O(1): nesting depth costs nothing extra.
    """

    def __init__(self, name: str, shard: int | None, run: int | None) -> None:
        self.name = name
        self.shard, self.run = shard, run  # from the file name; the suite's properties may overrule them
        self.file_shard_run = file_shard_run(None, shard, run)  # for a testcase without properties
        self.root: str | None = None  # local name of the root element
        self.open = 0  # elements open now (a truncated file leaves some)
        self.skip = 0  # > 0 inside an element that is read at its end (or not at all)
        self.suites: list[_Suite] = []
        self.suite_elems: list[ET.Element] = []
        self.inherited: dict[str, str] = {}  # the open suites' known properties, inner ones win
        self.file_props: dict[str, str] = {}
        self.file_props_set = False
        self.rows: list[OccurrenceRow] = []
        # OccurrenceRows that took the file's shard: (index, own run). PassRows always do.
        self.defaulted: list[tuple[int, int | None]] = []
        self.problem: ParseProblem | None = None  # what stopped the file
        self.number_problem: ParseProblem | None = None  # the first absurd number (the rows are kept)
        self.wall_s: float | None = None
        self.is_pytest = False
        self.index = 0
        self.ids, self.lines = _IDS, _LINES

    def suite_int(self, key: str, default: int | None) -> int | None:
        value = self.file_props.get(key)
        if value is None:
            return default
        number = self._int(key, value)
        return default if number is None else number

    def consume(self, events: Iterable[tuple[str, ET.Element]]) -> None:
        """Read (event, element) pairs from an `XMLPullParser`; one loop, no callback per element.

        A clean testcase (no children, no inherited runner properties: most of a big report) is read
        inline; everything else goes through `_add_testcase`.
        """
        skip, depth, index = self.skip, self.open, self.index
        append, name, (shard, run) = self.rows.append, self.name, self.file_shard_run
        suite_elems, ids, lines = self.suite_elems, self.ids, self.lines
        # What a clean testcase needs, as locals; refreshed after each suite event (the only changes).
        inherited, one_based = self.inherited, self.is_pytest
        try:
            for event, elem in events:
                if event == "start":
                    depth += 1
                    if skip:
                        skip += 1
                        continue
                    tag = elem.tag
                    if tag == "testcase" and depth > 1:  # the commonest element (in a suite): read at its end
                        skip = 1
                        continue
                    if tag[:1] == "{":
                        tag = tag.rpartition("}")[2]
                    if tag == "testsuite" or tag == "testsuites":
                        self._open_suite(tag, elem)
                        inherited, one_based = self.inherited, self.is_pytest
                    elif not self.suites:  # the root
                        self.root = tag
                        self.problem = ParseProblem(
                            name,
                            f"not JUnit XML (root element <{tag}>, expected <testsuites> or <testsuite>); pass the files pytest --junitxml writes",
                        )
                        raise NotJUnit
                    else:  # a testcase, the suite's properties, or anything else: read at its end
                        skip = 1
                    continue
                depth -= 1
                if not skip:
                    self._close_suite(elem)
                    inherited, one_based = self.inherited, self.is_pytest
                    continue
                skip -= 1
                if skip:
                    continue
                tag = elem.tag
                if tag[:1] == "{":
                    tag = tag.rpartition("}")[2]
                if tag == "testcase":
                    index += 1
                    get = elem.attrib.get
                    classname, file, line = get("classname") or "", get("file"), get("line")
                    prefix, path = ids.get((classname, file)) or self._prefix(classname, file)
                    line_no = lines.get(line, -1)
                    seconds = get("time")
                    try:
                        duration = float(seconds) if seconds else 0.0
                    except ValueError:
                        duration = -1.0
                    if (
                        prefix is None or line_no == -1 or not 0.0 <= duration <= MAX_SECONDS
                        or len(elem) or inherited
                    ):  # fmt: skip
                        self.index = index
                        self._add_testcase(elem)
                    else:  # the common case, a clean pass without runner properties
                        if line_no is not None and one_based:
                            line_no += 1  # pytest writes the 0-based line of the `def`; editors count from 1
                        append(_new_row(PassRow, (f"{prefix}::{get('name') or ''}", path, line_no, duration, name,
                                                  shard, run)))  # fmt: skip
                elif tag == "properties":
                    self._suite_properties(elem)
                    inherited = self.inherited
                del suite_elems[-1][:]  # read: free it
        finally:
            self.skip, self.open, self.index = skip, depth, index

    def _prefix(self, classname: str, file: str | None) -> tuple[str | None, str | None]:
        if len(_IDS) > _CACHED:
            _IDS.clear()
        _IDS[classname, file] = found = id_prefix(classname, file)
        return found

    # --- suites ---

    def _open_suite(self, tag: str, elem: ET.Element) -> None:
        get = elem.attrib.get
        name = get("name")
        if self.root is None:
            self.root = tag
            if name == MERGED_NAME:  # `report --junit-out` wrote it: its tests are in the other files
                raise MergedReport
        self.suites.append(_Suite(tag, get("time"), name, self.inherited))
        self.suite_elems.append(elem)
        if tag == "testsuite" and name == "pytest":
            self.is_pytest = True

    def _suite_properties(self, elem: ET.Element) -> None:
        props = _properties(elem)
        suite = self.suites[-1]
        suite.had_props |= bool(props)
        suite.props.update((k, v) for k, v in props.items() if k in _KNOWN_PROPS)
        self.inherited = {**suite.base, **suite.props} if suite.props else suite.base

    def _close_suite(self, elem: ET.Element) -> None:
        suite = self.suites.pop()
        self.suite_elems.pop()
        if suite.tag == "testsuite":
            if not self.file_props_set and suite.had_props:
                self.file_props, self.file_props_set = suite.props, True
            if suite.time is not None and (not self.suites or self.suites[-1].tag != "testsuite"):
                # A top-level suite: that process's wall time.
                self.wall_s = (self.wall_s or 0.0) + self._duration(suite.time, f"suite {suite.name or '?'}")
        else:
            self.is_pytest |= suite.name == "pytest tests"
        self.inherited = suite.base
        if self.suite_elems:
            del self.suite_elems[-1][:]

    # --- numbers: absurd ones are read as nothing and named once per file ---

    def _duration(self, value: str | None, where: str) -> float:
        seconds = _float(value)
        if seconds < 0.0:
            self._absurd(where, "time", value, "not a number of seconds from 0 to 1e7 (read as 0)")
            return 0.0
        return seconds

    def _int(self, key: str, value: str) -> int | None:
        value = value.strip()
        if value.isascii() and value.isdigit():
            if len(value) <= _MAX_DIGITS:
                return int(value)
            self._absurd(f"property {key}", key, value, f"more than {_MAX_DIGITS} digits (ignored)")
        elif value and value.isdigit():  # '²' or other Unicode digits int() may refuse
            self._absurd(f"property {key}", key, value, "not an ASCII number (ignored)")
        return None

    def _absurd(self, where: str, key: str, value: str | None, what: str) -> None:
        if self.number_problem is None:
            shown = (value or "")[:20] + ("…" if value and len(value) > 20 else "")
            self.number_problem = ParseProblem(
                self.name, f"{where}: {key}={shown!r} is {what}; fix the tool that wrote the file"
            )

    # --- testcases ---

    def _add_testcase(self, elem: ET.Element) -> None:
        get = elem.attrib.get
        line_attr = get("line")
        if line_attr and not (line_attr.isascii() and len(line_attr) <= _MAX_DIGITS):
            self._absurd(f"testcase {get('name') or '?'}", "line", line_attr, "not a line number (ignored)")
            line_attr = None
        test_id, file, line = derive_test_id(
            get("classname") or "", get("name") or "", get("file"), line_attr, self.index
        )
        if line_attr is not None:
            if len(_LINES) > _CACHED:
                _LINES.clear()
                _LINES[None] = None
            _LINES[line_attr] = line
        if line is not None and self.is_pytest:
            line += 1  # pytest writes the 0-based line of the `def`; editors and GitHub count from 1
        rows, name = self.rows, self.name
        results: list[tuple[str, str, str | None, str]] = []
        case_props: dict[str, str] = {}
        if len(elem):
            for child in elem:
                tag = child.tag
                if tag[:1] == "{":
                    tag = tag.rpartition("}")[2]
                if tag in _SEVERITY or tag in _RETRY_TAGS:
                    cget = child.attrib.get
                    results.append((tag, cget("message") or "", cget("type"), (child.text or "").strip()))
                elif tag == "properties":
                    case_props.update(_properties(child))
        duration = _float(get("time"))
        if duration < 0.0:
            duration = self._duration(get("time"), f"testcase {test_id}")
        props = {**self.inherited, **case_props} if case_props else self.inherited
        if not props and not results:  # the common case, a clean pass without runner properties
            rows.append(_new_row(PassRow, (test_id, file, line, duration, name, *self.file_shard_run)))
            return
        if props:
            pget = props.get
            own_shard, own_run, attempt = (
                self._opt_int("shard", pget("shard")),
                self._opt_int("run", pget("run")),
                self._opt_int("attempt", pget("attempt")),
            )
            worker, markers = pget("worker"), tuple(m for m in pget("markers", "").split(",") if m)
            started, finished = _time(pget("started_at")), _time(pget("finished_at"))
            database, attempt_failure = pget("database") or None, pget("attempt_failure") or None
            is_quarantined = pget("quarantined") == "true"
            fixtures = pget("fixtures")
        else:
            own_shard = own_run = attempt = worker = started = finished = database = attempt_failure = None
            markers, is_quarantined, fixtures = (), False, None
        if own_shard is not None:
            shard, run = own_shard, own_run
        else:
            shard, run = file_shard_run(own_run, self.shard, self.run)
        for tag, message, _type, text in results:
            if tag in _RETRY_TAGS:
                if own_shard is None:
                    self.defaulted.append((len(rows), own_run))
                rows.append(
                    OccurrenceRow(
                        test_id, file, line, Outcome.FAILED, Phase.CALL, 0.0, message, text, name, shard,
                        run, attempt, worker, markers, started, finished, database, attempt_failure,
                        is_quarantined, fixtures,
                    )
                )  # fmt: skip
        results = [r for r in results if r[0] in _SEVERITY]
        if results or not attempt_failure:
            outcome, phase, message, text = outcome_of(results)
        else:  # a rerun attempt, written empty by pytest-rerunfailures: the plugin kept what failed
            outcome, phase, message, text = attempt_failure_of(attempt_failure)
        if is_quarantined and outcome is Outcome.XFAILED:
            phase, message = quarantined_failure_of(message)
        if own_shard is None:
            self.defaulted.append((len(rows), own_run))
        rows.append(
            OccurrenceRow(
                test_id, file, line, outcome, phase, duration, message, text, name,
                shard, run, attempt, worker, markers, started, finished, database, attempt_failure,
                is_quarantined, fixtures,
            )
        )  # fmt: skip

    def _opt_int(self, key: str, value: str | None) -> int | None:
        return self._int(key, value) if value else None


# Pure caches shared by the files of one report: classname/file → (node id prefix, path), `line` → int.
_IDS: dict[tuple[str, str | None], tuple[str | None, str | None]] = {}
_LINES: dict[str | None, int | None] = {None: None}
_CACHED = 20_000

_MAX_DIGITS = 18  # shard, run, attempt, line: anything longer is no count (int() refuses > 4,300 anyway)


def _properties(elem: ET.Element) -> dict[str, str]:
    """<properties><property name= value=/>…: a property's value, or its text when the value is empty."""
    props: dict[str, str] = {}
    for prop in elem:
        tag = prop.tag
        if tag[:1] == "{":
            tag = tag.rpartition("}")[2]
        if tag == "property":
            get = prop.attrib.get
            props[get("name") or ""] = get("value") or prop.text or ""
    return props


def _time(value: str | None) -> float | None:
    """An epoch-seconds property (`started_at`); anything unreadable is no window rather than a wrong one."""
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) else None


def _float(value: str | None) -> float:
    """A duration (`1,234.5` is read as 1234.5; missing is 0); -1.0 when negative, NaN, infinite (`1e400`),
    absurd (over MAX_SECONDS) or unreadable: no duration a report can add up, and the reader names it."""
    try:
        seconds = float(value or 0)
    except ValueError:
        try:
            seconds = float(value.replace(",", ""))  # type: ignore[union-attr]
        except ValueError:
            return -1.0
    return seconds if 0.0 <= seconds <= MAX_SECONDS else -1.0  # NaN fails the comparison


MAX_SECONDS = 1e7  # ~4 months: no test or suite runs longer; larger times (1e308) would sum to infinity
