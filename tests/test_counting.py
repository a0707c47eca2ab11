"""Fixture errors counted the way pytest counts them, and annotations on 1-based lines — on real runs."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

from pytest_runs import PHASES_SUITE, run_pytest

from db_test_action.config.report import resolve_report_config
from db_test_action.junit.files import parse_junit_file
from db_test_action.model import Status
from db_test_action.report.build import build_report
from db_test_action.report.markdown import render_markdown
from db_test_action.report.render import annotations_for

CONFIG = resolve_report_config({}, {}, {})


def _pytest_summary(folder) -> dict[str, int]:
    """pytest's own final line (`3 failed, 3 passed, 1 skipped, 3 errors in 0.1s`) as counts."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           "--junitxml=junit.xml", "-o", "junit_family=xunit1"]  # fmt: skip
    out = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=300).stdout
    last = out.strip().splitlines()[-1]
    return {word.rstrip("s"): int(n) for n, word in re.findall(r"(\d+) (\w+)", last.split(" in ")[0])}


def test_fixture_errors_match_pytests_own_summary_line(tmp_path):
    folder = tmp_path / "phases"
    run_pytest(folder, PHASES_SUITE)  # writes the files; the counted run follows
    summary = _pytest_summary(folder)
    report = build_report([parse_junit_file(folder / "junit.xml", "junit.xml")], CONFIG)
    t = report.totals
    assert t.failed == summary["failed"]
    # pytest: the body failure plus teardown error is "1 failed, 1 error" — both counted here too.
    assert t.setup_errors + t.teardown_errors == summary["error"] == 3
    assert (t.setup_errors, t.teardown_errors) == (1, 2)
    both = next(x for x in report.tests if x.test_id.endswith("test_fails_and_teardown_error"))
    assert both.status is Status.FAILED
    assert report.verdict.value == "failed" and "errors" in report.gate_failures


FLAKY_FIXTURE = {
    "conftest.py": """
        from pathlib import Path
        import pytest

        @pytest.fixture
        def first_time_broken():
            marker = Path(__file__).parent / "ran.marker"
            if not marker.exists():
                marker.write_text("1")
                raise RuntimeError("tuple concurrently updated")

        @pytest.fixture
        def always_broken():
            raise RuntimeError("cannot drop table workspaces because other objects depend on it")
    """,
    "tests/test_db.py": """
        def test_flaky_by_fixture(first_time_broken):
            pass

        def test_broken_fixture(always_broken):
            pass

        def test_fine():
            pass
    """,
}


def test_flaky_by_fixture_is_counted_and_shown_apart(tmp_path):
    folder = tmp_path / "flaky"
    first = run_pytest(folder, FLAKY_FIXTURE, junit="shard-1-run-1.xml")
    second = run_pytest(folder, {}, junit="shard-1-run-2.xml")  # same files, marker now present
    parsed = [parse_junit_file(p, p.name) for p in (first, second)]
    report = build_report(parsed, CONFIG)
    t = report.totals
    assert (t.tests, t.passed, t.flaky) == (3, 1, 1)
    assert (t.setup_errors, t.setup_errors_flaky) == (2, 1)
    assert t.hard_fixture_errors == 1 and "errors" in report.gate_failures
    md = render_markdown(report)
    assert "| **2** (1 flaky) |" in md
    assert "2 setup errors (1 flaky)" in md


LINES = {
    "conftest.py": """
        import pytest

        @pytest.fixture
        def boom():
            raise RuntimeError("fixture broke")
    """,
    "tests/test_lines.py": """
        import pytest


        def test_assert():
            x = 1
            assert x == 2


        def test_fixture(boom):
            pass
    """,
}


def test_annotations_point_at_the_failing_line_one_based(tmp_path):
    folder = tmp_path / "lines"
    junit = run_pytest(folder, LINES, "-o", "junit_family=xunit1")  # as `db-test-action run` writes it
    source = textwrap.dedent(LINES["tests/test_lines.py"]).splitlines()
    def_assert = source.index("def test_assert():") + 1
    assert_line = source.index("    assert x == 2") + 1
    def_fixture = source.index("def test_fixture(boom):") + 1
    report = build_report([parse_junit_file(junit, "junit.xml")], CONFIG)
    by_id = {t.test_id: t for t in report.tests}
    assert by_id["tests/test_lines.py::test_assert"].line == def_assert  # pytest wrote def_assert - 1
    notes = {n.title.rsplit(": ", 1)[1]: n for n in annotations_for(report)}
    assert (
        notes["tests/test_lines.py::test_assert"].file,
        notes["tests/test_lines.py::test_assert"].line,
    ) == (
        "tests/test_lines.py",
        assert_line,
    )
    # The error is in conftest.py: the annotation points at the test's own def.
    fixture = notes["tests/test_lines.py::test_fixture"]
    assert (fixture.file, fixture.line) == ("tests/test_lines.py", def_fixture)
    assert f"tests/test_lines.py:{assert_line}" in render_markdown(report)
