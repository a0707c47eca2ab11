"""Every shard, run and attempt merged into one JUnit file, in the Surefire flaky dialect. Pure.

Other tools (test-analytics services, flaky-test trackers, IDEs) read JUnit, not our JSON. One <testcase>
per test id, after grouping: a test that failed and then passed is a passing testcase holding a
<flakyFailure>/<flakyError> per failed attempt; one that failed every attempt holds its final <failure>
(or <error> for a fixture error) with <rerunFailure>/<rerunError> beside it for the earlier attempts, as
Maven Surefire writes them. One <testsuite> per category; categories, root causes and attempt counts are
<properties>. The text comes out in chunks (`merged_junit_chunks`), so the writer holds one testcase at a
time, not the document.

The root is `<testsuites name="db-test-action merged">`: the reader skips such a file, so a merged file
left in a results directory is never counted twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence

from db_test_action.junit.reader import MERGED_NAME
from db_test_action.model import Counts, Outcome, Problem, Status, TestResult

# Characters XML 1.0 cannot hold even escaped (C0 controls, lone surrogates, U+FFFE/FFFF).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_EXCEPTION = re.compile(r"([A-Za-z_][\w.]*(?:Error|Exception|Exit|Failed|Warning|Interrupt)\b|Failed)(?=:|$)")


def merged_junit_chunks(tests: Iterable[TestResult], categories: Sequence[Counts]) -> Iterator[str]:
    """The merged file as text chunks: one per suite header and one per testcase."""
    by_category: dict[str, list[TestResult]] = {}
    for test in tests:
        by_category.setdefault(test.category, []).append(test)
    counts = {c.name: c for c in categories}
    total = _sum(categories)
    yield '<?xml version="1.0" encoding="utf-8"?>\n'
    yield f"<testsuites name={_attr(MERGED_NAME)}{_count_attrs(total)}>\n"
    for category in sorted(by_category):
        suite = counts.get(category) or Counts(category)
        yield f"  <testsuite name={_attr(category)}{_count_attrs(suite)}>\n"
        for test in by_category[category]:
            yield _testcase(test)
        yield "  </testsuite>\n"
    yield "</testsuites>\n"


def _sum(categories: Sequence[Counts]) -> Counts:
    return Counts(
        "all",
        tests=sum(c.tests for c in categories),
        failed=sum(c.failed for c in categories),
        setup_errors=sum(c.setup_errors for c in categories),
        teardown_errors=sum(c.teardown_errors for c in categories),
        skipped=sum(c.skipped + c.xfailed for c in categories),
        duration_s=round(sum(c.duration_s for c in categories), 3),
    )


def _count_attrs(c: Counts) -> str:
    errors = c.setup_errors + c.teardown_errors
    return (
        f' tests="{c.tests}" failures="{c.failed}" errors="{errors}" skipped="{c.skipped + c.xfailed}"'
        f' time="{c.duration_s:.3f}"'
    )


def split_test_id(test_id: str, file: str | None) -> tuple[str, str]:
    """`tests/test_x.py::TestC::test_y[1]` → (`tests.test_x.TestC`, `test_y[1]`), as pytest names them."""
    head, sep, name = test_id.rpartition("::")
    if not sep:
        return "", test_id
    parts = head.split("::")
    if parts[0].endswith(".py"):
        parts[0] = parts[0][:-3].replace("/", ".")
    return ".".join(parts), name


def _testcase(test: TestResult) -> str:
    classname, name = split_test_id(test.test_id, test.file)
    attrs = f"classname={_attr(classname)} name={_attr(name)}"
    if test.file:
        attrs += f" file={_attr(test.file)}"
    if test.line is not None:
        attrs += f' line="{test.line}"'
    attrs += f' time="{test.duration_s:.3f}"'
    props = [("category", test.category), ("status", test.status.value)]
    if test.executions > 1 or test.failed_executions:
        props += [("executions", str(test.executions)), ("failed_executions", str(test.failed_executions))]
    causes = dict.fromkeys(p.cause.key for p in test.problems)
    props += [("cause", key) for key in causes]
    details = dict.fromkeys(p.cause.detail for p in test.problems if p.cause.detail)
    props += [("cause_detail", detail) for detail in details]
    if test.is_quarantined:
        props.append(("quarantined", "true"))
    body = ["    <properties>"]
    body += [f"      <property name={_attr(k)} value={_attr(v)}/>" for k, v in props]
    body.append("    </properties>")
    body += _results(test)
    return f"    <testcase {attrs}>\n" + "\n".join(f"  {line}" for line in body) + "\n    </testcase>\n"


def _results(test: TestResult) -> list[str]:
    status, problems = test.status, list(test.problems)
    if status is Status.FLAKY:
        return [_result("flakyError" if _is_error(p) else "flakyFailure", p) for p in problems]
    if status in (Status.FAILED, Status.SETUP_ERROR, Status.TEARDOWN_ERROR):
        want = {Status.SETUP_ERROR: "setup", Status.TEARDOWN_ERROR: "teardown"}.get(status, "call")
        final = max((i for i, p in enumerate(problems) if p.phase.value == want), default=len(problems) - 1)
        out = []
        if final >= 0:
            main = problems.pop(final)
            out.append(_result("error" if _is_error(main) else "failure", main))
        out += [_result("rerunError" if _is_error(p) else "rerunFailure", p) for p in problems]
        if not out:  # failed, but pytest recorded no message (a rerun attempt it left empty)
            out.append('  <failure message="failed (no message recorded)"/>')
        return out
    if status in (Status.SKIPPED, Status.XFAILED):
        message = "quarantined" if test.is_quarantined else status.value
        lines = [f"  <skipped message={_attr(message)}/>"]
        # A quarantined test's failures stay visible: Surefire has no element for them, so as reruns.
        return lines + [_result("rerunFailure", p) for p in problems]
    return []


def _is_error(problem: Problem) -> bool:
    return problem.outcome is Outcome.ERROR or problem.phase.value != "call"


def _result(tag: str, problem: Problem) -> str:
    message = problem.message
    attrs = f"message={_attr(message)}"
    match = _EXCEPTION.match(message)
    if match:
        attrs += f" type={_attr(match.group(1))}"
    text = problem.text or message
    return f"  <{tag} {attrs}>{_escape(_NOT_XML.sub(chr(0xFFFD), text))}</{tag}>"


def _escape(text: str) -> str:
    """Element text. (xml.sax.saxutils would do, but importing it pulls in urllib, ssl and http: 0.1 s.)"""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(value: str) -> str:
    """A double-quoted attribute value; newlines and tabs as character references so they survive."""
    value = _escape(_NOT_XML.sub("\ufffd", value)).replace('"', "&quot;")
    return '"' + value.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;") + '"'
