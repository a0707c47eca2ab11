"""A `--quarantine` run through `db-test-action report`: quarantined failures are listed (phase, message) in the
PR comment and the console, counted apart, and never trip the errors/failures gates; a real failure still does.

Real pytest subprocess runs (tests/pytest_runs.py) write the JUnit; the report runs as a subprocess too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from pytest_runs import run_pytest

from db_test_action.model import Outcome, Phase, Report, Status
from db_test_action.report.codec import report_from_dict, report_to_dict
from db_test_action.report.markdown import render_markdown
from db_test_action.report.mdtext import GITHUB_COMMENT_MAX, ZWJ

ROOT = Path(__file__).resolve().parent.parent
SETUP_MESSAGE = 'duplicate key value violates unique constraint "workspaces_pkey" <img src=x> @octocat'
SUITE = {
    "conftest.py": f"""
        import pytest

        @pytest.fixture
        def workspace():
            raise RuntimeError({SETUP_MESSAGE!r})
    """,
    "tests/test_app.py": """
        import pytest

        def test_setup_flaky(workspace):
            pass

        def test_quarantined_passes():
            pass

        @pytest.mark.xfail(reason="known bug, tracked")
        def test_quarantined_marked_xfail():
            assert False

        def test_real_bug():
            assert 1 + 1 == 3, "a real bug"

        def test_fine():
            pass
    """,
}
QUARANTINE = """\
# written by `db-test-action stability --quarantine-out`
tests/test_app.py::test_setup_flaky
tests/test_app.py::test_quarantined_passes
tests/test_app.py::test_quarantined_marked_xfail
"""
SETUP_ID = "tests/test_app.py::test_setup_flaky"
PASSES_ID = "tests/test_app.py::test_quarantined_passes"


def _report(cli, cli_env, folder: Path, junit: Path) -> tuple[subprocess.CompletedProcess[str], dict, str]:
    out = folder / "out"
    proc = subprocess.run(
        [*cli, "report", str(junit), "--markdown", str(out / "report.md"), "--json", str(out / "report.json"),
         "--fail-on", "errors,failures"],
        cwd=folder, env=cli_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return proc, data, (out / "report.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def quarantined_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], dict, str]:
    """One run for the module (the conftest `cli`/`cli_env` fixtures are per test): the same command and env."""
    folder = tmp_path_factory.mktemp("quarantine")
    (folder / "quarantine.txt").write_text(QUARANTINE, encoding="utf-8")
    junit = run_pytest(folder, SUITE, "--quarantine", "quarantine.txt")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "DB_TEST_ACTION_"))}
    return _report([sys.executable, "-m", "db_test_action"], {**env, "PYTHONUNBUFFERED": "1"}, folder, junit)


def test_quarantined_setup_failure_does_not_trip_the_gates_but_a_real_failure_does(quarantined_run) -> None:
    proc, data, _markdown = quarantined_run
    assert proc.returncode == 1
    assert data["gate_failures"] == ["failures"]  # not "errors": the setup error was quarantined
    totals = data["totals"]
    assert (totals["failed"], totals["setup_errors"], totals["teardown_errors"]) == (1, 0, 0)
    assert (totals["quarantined"], totals["quarantined_failed"], totals["quarantined_passed"]) == (3, 1, 1)
    assert [t["test_id"] for t in data["tests"]] == ["tests/test_app.py::test_real_bug"]


def test_without_the_quarantine_the_same_setup_error_trips_the_errors_gate(tmp_path, cli, cli_env) -> None:
    junit = run_pytest(tmp_path, SUITE)
    proc, data, markdown = _report(cli, cli_env, tmp_path, junit)
    assert proc.returncode == 1 and data["gate_failures"] == ["errors", "failures"]
    assert data["totals"]["quarantined"] == 0 and data["quarantined"] == []
    assert "quarantine" not in markdown and "quarantine" not in proc.stdout


def test_the_comment_lists_each_quarantined_failure_with_phase_and_escaped_message(quarantined_run) -> None:
    _proc, _data, markdown = quarantined_run
    line = (
        "🔒 **3 quarantined tests** (1 failed this run, not blocking; "
        "1 passed — may be ready to leave quarantine)"
    )
    assert line in markdown
    item = next(x for x in markdown.splitlines() if x.startswith(f"- `{SETUP_ID}`"))
    assert "— setup error: RuntimeError: duplicate key value violates unique constraint" in item
    assert "&lt;img src=x&gt;" in item and f"@{ZWJ}octocat" in item and "<img" not in markdown
    assert f"Passed this run, may be ready to leave quarantine: `{PASSES_ID}`" in markdown
    assert "<summary>Quarantined failures (reported, not failing)</summary>" in markdown
    # the real failure is where failures go; the quarantined one is not among them
    failing = markdown.split("#### Failing tests by cause", 1)[1]
    assert "test_real_bug" in failing and "test_setup_flaky" not in failing


def test_the_console_summary_names_the_quarantined_failure(quarantined_run) -> None:
    proc, _data, _markdown = quarantined_run
    assert (
        "quarantine: 3 quarantined tests (1 failed this run, not blocking; "
        "1 passed — may be ready to leave quarantine)" in proc.stdout
    )
    assert f"  {SETUP_ID} (setup): RuntimeError: duplicate key value" in proc.stdout


def test_the_json_round_trips_with_the_quarantined_tests(quarantined_run) -> None:
    _proc, data, _markdown = quarantined_run
    report = report_from_dict(data)
    assert report_to_dict(report) == data
    first, passed, marked = report.quarantined
    assert (first.test_id, first.status, first.is_quarantined) == (SETUP_ID, Status.XFAILED, True)
    (problem,) = first.problems
    assert (problem.phase, problem.outcome) == (Phase.SETUP, Outcome.XFAILED)
    assert problem.message.startswith("RuntimeError: duplicate key value")
    assert (passed.test_id, passed.status, passed.problems) == (PASSES_ID, Status.PASSED, ())
    assert (marked.status, marked.problems) == (Status.XFAILED, ())  # its own xfail marker: not a failure


def test_old_report_json_without_quarantine_fields_still_loads() -> None:
    data = json.loads((ROOT / "tests/data/junit/phases-reruns.expected.json").read_text(encoding="utf-8"))
    data.pop("quarantined")
    for counts in [data["totals"], *data["categories"]]:
        for key in ("quarantined", "quarantined_failed", "quarantined_passed"):
            counts.pop(key)
    for test in data["tests"]:
        test.pop("is_quarantined")
    old = report_from_dict(data)
    assert old.quarantined == () and old.totals.quarantined == 0
    assert old.tests and not any(t.is_quarantined for t in old.tests)


def _many_quarantined(report: Report, n: int) -> Report:
    failure = report.quarantined[0]
    copies = tuple(replace(failure, test_id=f"{failure.test_id}[{i}]") for i in range(n))
    totals = replace(report.totals, quarantined=n, quarantined_failed=n, quarantined_passed=0)
    return replace(report, quarantined=copies, totals=totals)


def test_a_long_quarantine_list_is_cut_first_and_the_comment_fits(quarantined_run) -> None:
    report = _many_quarantined(report_from_dict(quarantined_run[1]), 400)
    full = render_markdown(report)
    assert len(full) <= GITHUB_COMMENT_MAX
    assert "- … and 350 more quarantined failures" in full  # 50 listed at full detail
    assert "test_real_bug — failed" in full  # the real failure keeps its details
    assert "Shortened" not in full
    small = render_markdown(report, max_chars=6000)
    assert len(small) <= 6000
    assert "🔒 **400 quarantined tests** (400 failed this run, not blocking)" in small
    assert "- … and 390 more quarantined failures" in small  # cut before any failure detail is
    assert "shorter server log excerpts, fewer quarantined tests listed" in small
    assert "test_real_bug — failed" in small
    tiny = render_markdown(report, max_chars=1500)
    assert len(tiny) <= 1500 and "🔒 **400 quarantined tests**" in tiny and "<summary>Quarantined" not in tiny
