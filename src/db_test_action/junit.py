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
Grouping occurrences into tests lives in attempts.py (re-exported here).
"""

from __future__ import annotations

import glob
import re
import xml.etree.ElementTree as ET
from collections import namedtuple
from collections.abc import Iterable
from dataclasses import MISSING, dataclass, fields
from functools import lru_cache
from pathlib import Path
from xml.parsers import expat

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from db_test_action.attempts import (  # re-exported: one import for callers
    TestResultRow,
    error_location,
    group_tests,
    group_tests_lazily,
)
from db_test_action.model import (
    Occurrence,
    Outcome,
    ParseProblem,
    Phase,
    ResultFile,
)

_SHARD_RUN_RE = re.compile(r"shard-(\d+)(?:-run-(\d+))?")
_PHASE_PREFIXES = (("failed on setup with ", Phase.SETUP), ("failed on teardown with ", Phase.TEARDOWN))
_SEVERITY = {"error": 3, "failure": 2, "skipped": 1}
_RETRY_TAGS = {"flakyFailure", "flakyError", "rerunFailure", "rerunError"}  # Surefire / xunit2 dialect
_TRUNCATION_CODES = {
    expat.errors.codes[expat.errors.XML_ERROR_NO_ELEMENTS],
    expat.errors.codes[expat.errors.XML_ERROR_UNCLOSED_TOKEN],
    expat.errors.codes[expat.errors.XML_ERROR_UNCLOSED_CDATA_SECTION],
    expat.errors.codes[expat.errors.XML_ERROR_PARTIAL_CHAR],
}


OccurrenceRow = namedtuple(  # type: ignore[misc]  # fields come from the model
    "OccurrenceRow",
    [f.name for f in fields(Occurrence)],
    defaults=[f.default for f in fields(Occurrence) if f.default is not MISSING],
)
OccurrenceRow.__doc__ = """An `Occurrence` as a named tuple: same fields, same order, ~6× cheaper to build.

A report reads 100,000 testcases; the stages read fields by name, so they take either kind."""


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


# --- one file ----------------------------------------------------------------------------------------


def parse_junit_file(path: Path, name: str | None = None) -> ParsedFile:
    """Read and parse one file; unreadable files become a ParseProblem, like broken XML."""
    name = name or str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _broken(name, f"cannot read ({exc.strerror}); check the artifact download")
    return parse_junit_bytes(data, name)


def parse_junit_bytes(data: bytes, name: str) -> ParsedFile:
    """Parse JUnit XML held in memory. Never raises for bad input: the problem is returned as a value."""
    if not data.strip():
        return _broken(name, "empty file (0 testcases); the test process probably died before writing it")
    shard, run = _shard_run_from_name(name)
    reader = _Reader(name, shard, run)
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
    except _NotJUnit:
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
            new_shard, new_run = _file_shard_run(own_run, final_shard, final_run)
            rows[i] = rows[i]._replace(shard=new_shard, run=new_run)
    wall_s = reader.wall_s if reader.wall_s is not None else sum(r.duration_s for r in rows)
    info = ResultFile(name, final_shard, final_run, round(wall_s, 6), len(rows), reader.is_pytest)
    return ParsedFile(info, tuple(rows), reader.problem)


class _NotJUnit(Exception):
    """Raised from the start callback to stop parsing a file whose root is not a test suite."""


_NO_TARGET = object()  # XMLParser then installs no element callbacks of its own
_new_row = tuple.__new__  # OccurrenceRow(…) without the Python-level __new__ of namedtuple


def _broken(name: str, message: str, line: int | None = None) -> ParsedFile:
    shard, run = _shard_run_from_name(name)
    return ParsedFile(ResultFile(name, shard, run, 0.0, 0), (), ParseProblem(name, message, line))


def _shard_run_from_name(name: str) -> tuple[int | None, int | None]:
    match = _SHARD_RUN_RE.search(Path(name).name)
    if not match:
        return None, None
    return int(match.group(1)), int(match.group(2)) if match.group(2) else None


def _syntax_problem(
    name: str, exc: ET.ParseError, line: int, data: bytes, reader: _Reader, shard: int | None
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


class _Result:
    """A <failure>/<error>/<skipped> (or a rerun/flaky dialect element) of the open testcase."""

    __slots__ = ("message", "tag", "text", "type")

    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag = tag
        self.message = attrs.get("message") or ""
        self.type = attrs.get("type")
        self.text: list[str] = []


class _Reader:
    """expat callbacks for one file: testcases become rows at their end tag; nothing else is kept.

    Like a walk over the element tree, it descends only into <testsuites>, <testsuite> and <properties>
    (a <testcase> anywhere else is not a test), reads a testcase's direct children only, and keeps an
    element's text up to its first child (ElementTree's `.text`); <system-out> bodies are never stored.
    Suite properties apply to the testcases after them. On a syntax error, every complete testcase is
    already a row.
    """

    def __init__(self, name: str, shard: int | None, run: int | None) -> None:
        self.name = name
        self.shard, self.run = shard, run  # from the file name; the suite's properties may overrule them
        self.file_shard_run = _file_shard_run(None, shard, run)  # for a testcase without properties
        self.tags: list[str] = []  # open elements (local names), outermost first
        self.skip_depth = 0  # > 0 inside an element whose content does not matter
        self.suites: list[tuple[dict[str, str], str | None, str | None]] = []  # (properties, time, name)
        self.inherited: dict[str, str] = {}  # the open suites' properties, outer first
        self.file_props: dict[str, str] = {}
        self.props_target: dict[str, str] | None = None  # the <properties> being read
        self.prop: tuple[str, str, list[str]] | None = None  # the <property> being read: name, value, text
        self.case: dict[str, str] | None = None  # attributes of the open testcase
        self.case_props: dict[str, str] = {}
        self.results: list[_Result] = []
        self.text: list[str] | None = None  # where character data goes now
        self.rows: list[OccurrenceRow] = []
        self.defaulted: list[tuple[int, int | None]] = []  # rows that took the file's shard: (index, own run)
        self.problem: ParseProblem | None = None
        self.wall_s: float | None = None
        self.is_pytest = False
        self.index = 0
        self.local_names: dict[str, str] = {}

    def suite_int(self, key: str, default: int | None) -> int | None:
        value = self.file_props.get(key, "")
        return int(value) if value.isdigit() else default

    # --- expat callbacks; attributes arrive as a flat [name, value, …] list ---

    def start(self, tag: str, attr_list: list[str]) -> None:
        tag = self.local_names.get(tag) or self._local(tag)
        tags = self.tags
        parent = tags[-1] if tags else None
        tags.append(tag)
        self.text = None  # a child ends its parent's `.text`
        if self.skip_depth:
            self.skip_depth += 1
        elif self.props_target is not None:
            if tag == "property" and parent == "properties":
                attrs = _attrs(attr_list)
                self.prop = (attrs.get("name") or "", attrs.get("value") or "", [])
                self.text = self.prop[2]
            else:
                self.skip_depth = 1
        elif self.case is not None:
            if parent != "testcase":  # inside a result: not read
                self.skip_depth = 1
            elif tag in _SEVERITY or tag in _RETRY_TAGS:
                result = _Result(tag, _attrs(attr_list))
                self.results.append(result)
                self.text = result.text
            elif tag == "properties":
                self.props_target = self.case_props
            else:  # <system-out>, <system-err>, anything else
                self.skip_depth = 1
        elif parent is None and tag not in ("testsuite", "testsuites"):
            self.problem = ParseProblem(
                self.name, f"not JUnit XML (root element <{tag}>, expected <testsuites> or <testsuite>)"
            )
            raise _NotJUnit
        elif tag == "testcase":
            self.case = _attrs(attr_list)
        elif tag == "testsuite" or tag == "testsuites":
            attrs = _attrs(attr_list)
            self.suites.append(({}, attrs.get("time"), attrs.get("name")))
            if tag == "testsuite" and attrs.get("name") == "pytest":
                self.is_pytest = True
        elif tag == "properties":  # of the enclosing suite
            self.props_target = {}
        else:
            self.skip_depth = 1

    def end(self, _tag: str) -> None:
        tags = self.tags
        tag = tags.pop()
        self.text = None
        if self.skip_depth:
            self.skip_depth -= 1
        elif self.prop is not None:  # the end of the <property>
            name, value, text = self.prop
            self.props_target[name] = value or "".join(text)  # type: ignore[index]
            self.prop = None
        elif self.props_target is not None:  # the end of the <properties>
            if self.case is None:
                self.suites[-1][0].update(self.props_target)
                self._merge_inherited()
            self.props_target = None
        elif self.case is not None:
            if tag == "testcase":
                self._add_testcase(self.case)
                self.case = None
                self.case_props = {}
                self.results = []
        elif tag == "testsuite":
            props, time, _name = self.suites.pop()
            if not self.file_props and props:
                self.file_props = props
            if time is not None and (not tags or tags[-1] != "testsuite"):
                self.wall_s = (self.wall_s or 0.0) + _float(
                    time
                )  # a top-level suite: that process's wall time
            self._merge_inherited()
        elif tag == "testsuites":
            _props, _time, name = self.suites.pop()
            self.is_pytest |= name == "pytest tests"
            self._merge_inherited()

    def data(self, text: str) -> None:
        if self.text is not None:
            self.text.append(text)

    # --- helpers ---

    def _local(self, tag: str) -> str:
        """`uri}name` (expat's namespaced form) → `name`."""
        self.local_names[tag] = local = tag.rpartition("}")[2]
        return local

    def _merge_inherited(self) -> None:
        merged: dict[str, str] = {}
        for props, _time, _name in self.suites:
            merged.update(props)
        self.inherited = merged

    def _add_testcase(self, attrs: dict[str, str]) -> None:
        self.index += 1
        get = attrs.get
        test_id, file, line = derive_test_id(
            get("classname") or "", get("name") or "", get("file"), get("line"), self.index
        )
        rows, name = self.rows, self.name
        props = {**self.inherited, **self.case_props} if self.case_props else self.inherited
        if not props and not self.results:  # the common case, a clean pass without runner properties
            self.defaulted.append((len(rows), None))
            rows.append(
                _new_row(OccurrenceRow, (
                    test_id, file, line, Outcome.PASSED, None, _float(get("time")), "", "", name,
                    *self.file_shard_run, None, None, (),
                ))
            )  # fmt: skip
            return
        if props:
            own_shard, own_run, attempt = (
                _int(props.get("shard")),
                _int(props.get("run")),
                _int(props.get("attempt")),
            )
            worker, markers = props.get("worker"), tuple(m for m in props.get("markers", "").split(",") if m)
        else:
            own_shard = own_run = attempt = worker = None
            markers = ()
        if own_shard is not None:
            shard, run = own_shard, own_run
        else:
            shard, run = _file_shard_run(own_run, self.shard, self.run)
        for r in self.results:
            if r.tag in _RETRY_TAGS:
                if own_shard is None:
                    self.defaulted.append((len(rows), own_run))
                rows.append(
                    OccurrenceRow(
                        test_id, file, line, Outcome.FAILED, Phase.CALL, 0.0, r.message,
                        "".join(r.text).strip(), name, shard, run, attempt, worker, markers,
                    )
                )  # fmt: skip
        outcome, phase, message, text = _result([r for r in self.results if r.tag in _SEVERITY])
        if own_shard is None:
            self.defaulted.append((len(rows), own_run))
        rows.append(
            OccurrenceRow(
                test_id, file, line, outcome, phase, _float(get("time")), message, text, name,
                shard, run, attempt, worker, markers,
            )
        )  # fmt: skip


def _attrs(attr_list: list[str]) -> dict[str, str]:
    pairs = iter(attr_list)
    return dict(zip(pairs, pairs))  # noqa: B905 (expat always gives name, value pairs)


def _result(results: list[_Result]) -> tuple[Outcome, Phase | None, str, str]:
    if not results:
        return Outcome.PASSED, None, "", ""
    worst = max(_SEVERITY[r.tag] for r in results)
    chosen = [r for r in results if _SEVERITY[r.tag] == worst]
    message = "\n".join(r.message for r in chosen).strip()
    text = "\n".join("".join(r.text).strip() for r in chosen).strip()
    if worst == _SEVERITY["skipped"]:
        is_xfail = any(r.type == "pytest.xfail" for r in chosen)
        return (Outcome.XFAILED if is_xfail else Outcome.SKIPPED), None, message, text
    phase = Phase.CALL
    for prefix, prefix_phase in _PHASE_PREFIXES:
        if message.startswith(prefix):
            phase, message = prefix_phase, message[len(prefix) :]
            if len(message) >= 2 and message[0] == message[-1] == '"':
                message = message[1:-1]
            break
    return (Outcome.ERROR if worst == _SEVERITY["error"] else Outcome.FAILED), phase, message, text


def _int(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


def _float(value: str | None) -> float:
    """A duration: negative, missing or unreadable → 0 (`1,234.5` is read as 1234.5)."""
    try:
        seconds = float(value or 0)
    except ValueError:
        try:
            seconds = float(value.replace(",", ""))  # type: ignore[union-attr]
        except ValueError:
            return 0.0
    return seconds if seconds > 0.0 else 0.0


def _file_shard_run(own_run: int | None, shard: int | None, run: int | None) -> tuple[int | None, int | None]:
    """A testcase without its own shard property gets the file's shard, and its run unless it has one."""
    if shard is None:
        return None, own_run
    return shard, own_run if own_run is not None else run


# --- test ids ------------------------------------------------------------------------------------------


def derive_test_id(
    classname: str, name: str, file: str | None, line: str | None, index: int = 0
) -> tuple[str, str | None, int | None]:
    """pytest's node id where derivable: `tests/test_x.py::TestC::test_y[1]`; otherwise `classname::name`.

    pytest's classname is the dotted module path plus classes (`tests.test_x.TestC`); xunit1 adds a
    `file=` attribute. An absolute or `../` file (seen in the wild) is ignored in favour of the classname.
    """
    line_no = int(line) if line and line.isdigit() else None
    prefix, path = _id_prefix(classname, file)
    if prefix is not None:
        return f"{prefix}::{name}", path, line_no
    if not classname and not name:
        return f"<unnamed testcase #{index}>", None, line_no
    return (f"{classname}::{name}" if classname else name), None, line_no


@lru_cache(maxsize=4096)
def _id_prefix(classname: str, file: str | None) -> tuple[str | None, str | None]:
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


__all__ = [
    "OccurrenceRow",
    "ParsedFile",
    "TestResultRow",
    "derive_test_id",
    "error_location",
    "expand_paths",
    "group_tests",
    "group_tests_lazily",
    "parse_junit_bytes",
    "parse_junit_file",
]
