"""`report --junit-out`: real pytest runs merged into one Surefire flaky-dialect file, read back by junitparser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from junitparser import Error, Failure, Skipped
from junitparser.xunit2 import JUnitXml
from pytest_runs import run_pytest

SUITE = {
    "tests/conftest.py": """
        import pytest

        @pytest.fixture
        def broken_db():
            raise RuntimeError('relation "workspaces" does not exist')
    """,
    "tests/test_merge.py": """
        import os

        import pytest

        def test_ok():
            pass

        def test_flaky():
            assert os.environ["RUN"] != "1", "deadlock detected"

        def test_always():
            raise AssertionError('duplicate key value violates unique constraint "ws_pkey" <&> \\x01')

        def test_setup(broken_db):
            pass

        @pytest.mark.skip(reason="not here")
        def test_skipped():
            pass

        class TestGroup:
            @pytest.mark.parametrize("n", [1, 2])
            def test_param(self, n):
                pass
    """,
}


@pytest.fixture(scope="module")
def merged(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("merge")
    results = root / "results"
    results.mkdir()
    for run in (1, 2):
        junit = run_pytest(root / f"run{run}", SUITE, junit=f"shard-1-run-{run}.xml", env={"RUN": str(run)})
        (results / junit.name).write_bytes(junit.read_bytes())
    return root, _report(root, "results", "--junit-out", "out/merged.xml", "--json", "r.json")


def _report(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "db_test_action", "report", *args, "--fail-on", "none"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _cases(path: Path) -> dict[str, object]:
    xml = JUnitXml.fromfile(str(path))
    return {f"{case.classname}::{case.name}": case for suite in xml for case in suite}


def test_merged_file_reads_back_with_junitparser_in_the_flaky_dialect(merged):
    root, proc = merged
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cases = _cases(root / "out" / "merged.xml")
    assert len(cases) == 7  # one testcase per test, not per run
    flaky = cases["tests.test_merge::test_flaky"]
    assert flaky.is_passed and not flaky.result
    assert [f.message for f in flaky.flaky_failures()] == [
        "AssertionError: deadlock detected\nassert '1' != '1'"
    ]
    always = cases["tests.test_merge::test_always"]
    assert isinstance(always.result[0], Failure)
    assert "ws_pkey" in always.result[0].message and "<&>" in always.result[0].message
    assert len(always.rerun_failures()) == 1  # the other run's failure, beside the final one
    setup = cases["tests.test_merge::test_setup"]
    assert isinstance(setup.result[0], Error) and len(setup.rerun_errors()) == 1
    assert isinstance(cases["tests.test_merge::test_skipped"].result[0], Skipped)
    assert cases["tests.test_merge.TestGroup::test_param[2]"].is_passed
    props = {(p.name, p.value) for p in always.properties()}
    assert {("category", "merge"), ("status", "failed"), ("cause", "unique-violation")} <= props
    assert ("executions", "2") in props
    assert ("cause", "undefined-object") in {(p.name, p.value) for p in setup.properties()}
    assert ("cause", "deadlock") in {(p.name, p.value) for p in flaky.properties()}


def test_suite_counts_agree_with_the_json_report(merged):
    root, _proc = merged
    report = json.loads((root / "r.json").read_text())
    xml = JUnitXml.fromfile(str(root / "out" / "merged.xml"))
    (suite,) = list(xml)
    assert suite.name == "merge"
    totals = report["totals"]
    assert suite.tests == totals["tests"] == 7
    assert suite.failures == totals["failed"] == 1
    assert suite.errors == totals["setup_errors"] + totals["teardown_errors"] == 1
    assert suite.skipped == totals["skipped"] == 1


def test_a_merged_file_left_among_the_results_is_not_counted_twice(merged, tmp_path):
    root, _proc = merged
    folder = tmp_path / "results"
    folder.mkdir()
    for path in (root / "results").glob("*.xml"):
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "merged.xml").write_bytes((root / "out" / "merged.xml").read_bytes())
    proc = _report(tmp_path, "results", "--json", "again.json")
    assert proc.returncode == 0, proc.stdout
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["totals"]["tests"] == 7
    # nor counted as a result file of its own (the comment's footer says how many shard files reported)
    assert sorted(again["files"]) == ["results/shard-1-run-1.xml", "results/shard-1-run-2.xml"]
    assert "merged.xml: a merged file from `report --junit-out`; not read again" in proc.stderr


def test_unwritable_junit_out_is_a_one_line_error(merged, tmp_path):
    root, _proc = merged
    (tmp_path / "file").write_text("")
    proc = _report(root, "results", "--junit-out", str(tmp_path / "file" / "merged.xml"))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("db-test-action: ") and "merged.xml: cannot write --junit-out (" in line
    assert line.endswith("); check the directory")
