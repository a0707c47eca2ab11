"""JUnit XML → `Occurrence`s (one per <testcase>) → `TestResult`s (one per test id).

Why not junitparser's object tree: it wraps every element in Python objects and reads `tests=` style
attributes that lie; here we stream with defusedxml's iterparse (DTDs and entities refused, so an
entity bomb is a named error, not a hang), count <testcase> elements at any depth, keep what a
truncated file held before it broke, and keep junitparser's semantics (error > failure > skipped,
messages of several results joined). See benchmarks/report_scale.py for the speed comparison.

pytest realities this module encodes (verified with pytest 9, pytest-rerunfailures 16, xdist 3.8):
- fixture errors are `<error message="failed on setup with &quot;…&quot;">` (or teardown);
- a body failure plus a teardown error is two <testcase> elements with the same name;
- each rerun attempt is an extra *empty* <testcase> (the failure is not recorded); the last carries
  the outcome, so an empty testcase followed by another of the same test in one pytest file failed.
Grouping occurrences into tests lives in attempts.py (re-exported here).
"""

from __future__ import annotations

import glob
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from xml.parsers import expat

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from db_test_action.attempts import error_location, group_tests  # re-exported: one import for callers
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


@dataclass(frozen=True, slots=True)
class ParsedFile:
    info: ResultFile
    occurrences: tuple[Occurrence, ...]
    problem: ParseProblem | None


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
    state = _State(name)
    try:
        try:
            root = DET.fromstring(data, forbid_dtd=True)
        except ET.ParseError:
            # Broken or truncated: stream it again to keep every testcase that was complete.
            state = _State(name, streaming=True)
            for event, elem in DET.iterparse(io.BytesIO(data), events=("start", "end"), forbid_dtd=True):
                if event == "start":
                    if not state.start(elem):
                        break
                else:
                    state.end(elem)
        else:
            state.replay(root)
    except DefusedXmlException as exc:
        kind = type(exc).__name__
        state.problem = ParseProblem(
            name,
            f"refused: the file declares a DTD or entities ({kind}); JUnit never needs them, regenerate it",
        )
    except ET.ParseError as exc:
        line, _col = exc.position
        state.problem = _syntax_problem(name, exc, line, data, state, shard)
    shard = state.suite_int("shard", shard)
    run = state.suite_int("run", run)
    occurrences = tuple(
        o if o.shard is not None or shard is None else _with_shard_run(o, shard, run)
        for o in state.occurrences
    )
    wall_s = state.wall_s if state.wall_s is not None else sum(o.duration_s for o in occurrences)
    info = ResultFile(name, shard, run, round(wall_s, 6), len(occurrences), state.is_pytest)
    return ParsedFile(info, occurrences, state.problem)


def _with_shard_run(o: Occurrence, shard: int | None, run: int | None) -> Occurrence:
    return Occurrence(
        o.test_id, o.file, o.line, o.outcome, o.phase, o.duration_s, o.message, o.text, o.source,
        shard, o.run if o.run is not None else run, o.attempt, o.worker, o.markers,
    )  # fmt: skip


def _broken(name: str, message: str, line: int | None = None) -> ParsedFile:
    shard, run = _shard_run_from_name(name)
    return ParsedFile(ResultFile(name, shard, run, 0.0, 0), (), ParseProblem(name, message, line))


def _shard_run_from_name(name: str) -> tuple[int | None, int | None]:
    match = _SHARD_RUN_RE.search(Path(name).name)
    if not match:
        return None, None
    return int(match.group(1)), int(match.group(2)) if match.group(2) else None


def _syntax_problem(name: str, exc: ET.ParseError, line: int, data: bytes, state: _State, shard: int | None):
    last_line = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if exc.code in _TRUNCATION_CODES and line >= last_line - 1 and state.open_tags:
        kept = len(state.occurrences)
        rerun = f"re-run shard {shard}" if shard is not None else "re-run the job that wrote it"
        return ParseProblem(
            name,
            f"truncated XML (no closing </{state.open_tags[0]}>); kept {kept} complete testcases, {rerun}",
            line,
        )
    reason = str(exc).split(":")[0]
    return ParseProblem(name, f"not well-formed XML ({reason}); fix or regenerate the file", line)


class _State:
    """Streaming walk: a stack of open tags and of suite-level properties, testcases built at their end."""

    def __init__(self, name: str, streaming: bool = False) -> None:
        self.name = name
        self.streaming = streaming
        self.open_tags: list[str] = []
        self.open_elems: list[ET.Element] = []
        self.suite_props: list[dict[str, str]] = []
        self.occurrences: list[Occurrence] = []
        self.problem: ParseProblem | None = None
        self.wall_s: float | None = None
        self.is_pytest = False
        self.index = 0
        self.file_props: dict[str, str] = {}

    def start(self, elem: ET.Element) -> bool:
        tag = _local(elem.tag)
        if not self.open_tags and tag not in ("testsuites", "testsuite"):
            self.problem = ParseProblem(
                self.name, f"not JUnit XML (root element <{tag}>, expected <testsuites> or <testsuite>)"
            )
            return False
        if tag in ("testsuite", "testsuites"):
            self.suite_props.append({})
        if tag == "testsuite" and elem.get("name") == "pytest":
            self.is_pytest = True
        self.open_tags.append(tag)
        self.open_elems.append(elem)
        return True

    def replay(self, elem: ET.Element) -> None:
        """Walk a parsed tree through the same start/end steps, descending only into suites."""
        if not self.start(elem):
            return
        for child in elem:
            tag = _local(child.tag)
            if tag == "testcase":  # straight to the testcase: no start/end bookkeeping per case
                self.index += 1
                self.occurrences.extend(self._testcase(child))
            elif tag in ("testsuite", "testsuites", "properties"):
                self.replay(child)
        self.end(elem)

    def suite_int(self, key: str, default: int | None) -> int | None:
        value = self.file_props.get(key, "")
        return int(value) if value.isdigit() else default

    def end(self, elem: ET.Element) -> None:
        tag = self.open_tags.pop()
        self.open_elems.pop()
        parent = self.open_tags[-1] if self.open_tags else None
        if tag == "testcase":
            self.index += 1
            self.occurrences.extend(self._testcase(elem))
            self._drop(elem)
        elif tag == "properties" and parent in ("testsuite", "testsuites"):
            self.suite_props[-1].update(_properties(elem))
        elif tag == "testsuite":
            props = self.suite_props.pop()
            if not self.file_props and props:
                self.file_props = props
            if parent != "testsuite":  # a top-level suite: its time is the wall time of that process
                time_s = _float(elem.get("time"))
                if elem.get("time") is not None:
                    self.wall_s = (self.wall_s or 0.0) + time_s
            self._drop(elem)
        elif tag == "testsuites":
            self.suite_props.pop()
            self.is_pytest |= elem.get("name") == "pytest tests"

    def _drop(self, elem: ET.Element) -> None:
        """Free the finished element: clear it and detach it from its parent (it is the last child)."""
        if not self.streaming:
            return  # a whole tree is dropped at once when parsing the file is done
        elem.clear()
        if self.open_elems and len(self.open_elems[-1]) and self.open_elems[-1][-1] is elem:
            del self.open_elems[-1][-1]

    def _testcase(self, elem: ET.Element) -> list[Occurrence]:
        props: dict[str, str] = {}
        for suite in self.suite_props:
            if suite:
                props.update(suite)
        results, retries = [], []
        for child in elem:
            tag = _local(child.tag)
            if tag == "properties":
                props.update(_properties(child))
            elif tag in _SEVERITY:
                results.append((tag, child))
            elif tag in _RETRY_TAGS:
                retries.append(child)
        test_id, file, line = derive_test_id(
            elem.get("classname") or "",
            elem.get("name") or "",
            elem.get("file"),
            elem.get("line"),
            self.index,
        )
        if props:
            shard, run, attempt = _int(props.get("shard")), _int(props.get("run")), _int(props.get("attempt"))
            worker, markers = props.get("worker"), tuple(m for m in props.get("markers", "").split(",") if m)
        else:  # the usual case without runner properties: no parsing at all
            shard = run = attempt = worker = None
            markers = ()
        out = [
            Occurrence(
                test_id, file, line, Outcome.FAILED, Phase.CALL, 0.0, child.get("message") or "",
                (child.text or "").strip(), self.name, shard, run, attempt, worker, markers,
            )
            for child in retries
        ]  # fmt: skip
        if results:
            outcome, phase, message, text = _result(results)
        else:
            outcome, phase, message, text = Outcome.PASSED, None, "", ""
        out.append(
            Occurrence(
                test_id, file, line, outcome, phase, _float(elem.get("time")), message, text, self.name,
                shard, run, attempt, worker, markers,
            )
        )  # fmt: skip
        return out


def _result(results: list[tuple[str, ET.Element]]) -> tuple[Outcome, Phase | None, str, str]:
    if not results:
        return Outcome.PASSED, None, "", ""
    worst = max(_SEVERITY[tag] for tag, _ in results)
    chosen = [child for tag, child in results if _SEVERITY[tag] == worst]
    message = "\n".join(c.get("message") or "" for c in chosen).strip()
    text = "\n".join((c.text or "").strip() for c in chosen).strip()
    if worst == _SEVERITY["skipped"]:
        is_xfail = any(c.get("type") == "pytest.xfail" for c in chosen)
        return (Outcome.XFAILED if is_xfail else Outcome.SKIPPED), None, message, text
    phase = Phase.CALL
    for prefix, prefix_phase in _PHASE_PREFIXES:
        if message.startswith(prefix):
            phase, message = prefix_phase, message[len(prefix) :]
            if len(message) >= 2 and message[0] == message[-1] == '"':
                message = message[1:-1]
            break
    return (Outcome.ERROR if worst == _SEVERITY["error"] else Outcome.FAILED), phase, message, text


def _properties(elem: ET.Element) -> dict[str, str]:
    return {
        p.get("name") or "": p.get("value") or (p.text or "") for p in elem if _local(p.tag) == "property"
    }


def _local(tag: object) -> str:
    if isinstance(tag, str):
        return tag if tag[:1] != "{" else tag.rsplit("}", 1)[-1]
    return ""  # comments and processing instructions


def _int(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


def _float(value: str | None) -> float:
    try:
        return max(0.0, float((value or "0").replace(",", "")))
    except ValueError:
        return 0.0


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
    "ParsedFile",
    "derive_test_id",
    "error_location",
    "expand_paths",
    "group_tests",
    "parse_junit_bytes",
    "parse_junit_file",
]
