"""Reading one JUnit file's XML events into rows: the expat callbacks behind `junit.parse_junit_bytes`.

Split from junit.py (files, problems, defusedxml set-up) to keep modules small. The reader sees every
element of 100,000-testcase reports, so it keeps only what a report needs and does little per element;
test ids (pytest node ids from classname/file) are derived here too.
"""

from __future__ import annotations

import math
import re
from collections import namedtuple
from dataclasses import MISSING, fields
from functools import lru_cache

from db_test_action.model import Occurrence, Outcome, ParseProblem, Phase

_PHASE_PREFIXES = (("failed on setup with ", Phase.SETUP), ("failed on teardown with ", Phase.TEARDOWN))
_SEVERITY = {"error": 3, "failure": 2, "skipped": 1}
_RETRY_TAGS = {"flakyFailure", "flakyError", "rerunFailure", "rerunError"}  # Surefire / xunit2 dialect

OccurrenceRow = namedtuple(  # type: ignore[misc]  # fields come from the model
    "OccurrenceRow",
    [f.name for f in fields(Occurrence)],
    defaults=[f.default for f in fields(Occurrence) if f.default is not MISSING],
)
OccurrenceRow.__doc__ = """An `Occurrence` as a named tuple: same fields, same order, ~6× cheaper to build.

A report reads 100,000 testcases; the stages read fields by name, so they take either kind."""


_new_row = tuple.__new__  # OccurrenceRow(…) without the Python-level __new__ of namedtuple


class NotJUnit(Exception):
    """Raised from the start callback to stop parsing a file whose root is not a test suite."""


class _Result:
    """A <failure>/<error>/<skipped> (or a rerun/flaky dialect element) of the open testcase."""

    __slots__ = ("message", "tag", "text", "type")

    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag = tag
        self.message = attrs.get("message") or ""
        self.type = attrs.get("type")
        self.text: list[str] = []


class JUnitReader:
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
        self.file_shard_run = file_shard_run(None, shard, run)  # for a testcase without properties
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
            raise NotJUnit
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
        if line is not None and self.is_pytest:
            line += 1  # pytest writes the 0-based line of the `def`; editors and GitHub count from 1
        rows, name = self.rows, self.name
        props = {**self.inherited, **self.case_props} if self.case_props else self.inherited
        if not props and not self.results:  # the common case, a clean pass without runner properties
            self.defaulted.append((len(rows), None))
            rows.append(
                _new_row(OccurrenceRow, (
                    test_id, file, line, Outcome.PASSED, None, _float(get("time")), "", "", name,
                    *self.file_shard_run, None, None, (), None, None, None, None, False, None,
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
            started, finished = _time(props.get("started_at")), _time(props.get("finished_at"))
            database, attempt_failure = props.get("database") or None, props.get("attempt_failure") or None
            is_quarantined = props.get("quarantined") == "true"
        else:
            own_shard = own_run = attempt = worker = started = finished = database = attempt_failure = None
            markers, is_quarantined = (), False
        if own_shard is not None:
            shard, run = own_shard, own_run
        else:
            shard, run = file_shard_run(own_run, self.shard, self.run)
        for r in self.results:
            if r.tag in _RETRY_TAGS:
                if own_shard is None:
                    self.defaulted.append((len(rows), own_run))
                rows.append(
                    OccurrenceRow(
                        test_id, file, line, Outcome.FAILED, Phase.CALL, 0.0, r.message,
                        "".join(r.text).strip(), name, shard, run, attempt, worker, markers,
                        started, finished, database, attempt_failure, is_quarantined, None,
                    )
                )  # fmt: skip
        results = [r for r in self.results if r.tag in _SEVERITY]
        if results or not attempt_failure:
            outcome, phase, message, text = _result(results)
        else:  # a rerun attempt, written empty by pytest-rerunfailures: the plugin kept what failed
            outcome, phase, message, text = _attempt_failure(attempt_failure)
        if is_quarantined and outcome is Outcome.XFAILED:
            phase, message = _quarantined_failure(message)
        if own_shard is None:
            self.defaulted.append((len(rows), own_run))
        rows.append(
            OccurrenceRow(
                test_id, file, line, outcome, phase, _float(get("time")), message, text, name,
                shard, run, attempt, worker, markers, started, finished, database, attempt_failure,
                is_quarantined, props.get("fixtures") if props else None,
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


_ATTEMPT_PHASES = {"setup": Phase.SETUP, "call": Phase.CALL, "teardown": Phase.TEARDOWN}


def _attempt_failure(value: str) -> tuple[Outcome, Phase, str, str]:
    """`setup: <exception line>` (the plugin's attempt_failure) → a failed attempt in that phase.

    A fixture failure is an error and a body failure a failure, as pytest itself would have written them.
    """
    head, sep, rest = value.partition(": ")
    phase = _ATTEMPT_PHASES.get(head) if sep else None
    if phase is None:
        return Outcome.FAILED, Phase.CALL, value.strip(), ""
    return (Outcome.FAILED if phase is Phase.CALL else Outcome.ERROR), phase, rest.strip(), ""


_QUARANTINED_RE = re.compile(r"quarantined \((setup|call|teardown)\): ")


def _quarantined_failure(message: str) -> tuple[Phase | None, str]:
    """`quarantined (setup): RuntimeError: …` (plugin_quarantine's xfail reason) → the phase and the error.

    A quarantined test's own `xfail` marker (any other reason) stays an xfail without a phase. A body
    failure plus a teardown error is two reasons on two lines: the first names the phase, both are kept.
    """
    match = _QUARANTINED_RE.match(message)
    if match is None:
        return None, message
    return _ATTEMPT_PHASES[match.group(1)], message[match.end() :]


def _time(value: str | None) -> float | None:
    """An epoch-seconds property (`started_at`); anything unreadable is no window rather than a wrong one."""
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) else None


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
    # NaN fails the comparison; infinity (`time="1e400"`) is no duration a report can add up.
    return seconds if 0.0 < seconds < math.inf else 0.0


def file_shard_run(own_run: int | None, shard: int | None, run: int | None) -> tuple[int | None, int | None]:
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
