"""Server-side evidence end to end: real runs under `db-test-action run` (its own server, its server log),
then `report`: the server's lines land with the failing test that caused them, and only with it."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from db_test_action.junit.files import parse_junit_file
from db_test_action.model import Report, ServerRecord
from db_test_action.report.codec import report_from_dict, report_to_dict
from db_test_action.report.mdtext import GITHUB_COMMENT_MAX, inline
from db_test_action.report.render import render_markdown

ROOT = Path(__file__).resolve().parent.parent
SLACK_S = 0.05  # serverlog.attribute_events' default


@pytest.fixture(scope="module")
def cli_mod() -> list[str]:
    return [sys.executable, "-m", "db_test_action"]


@pytest.fixture(scope="module")
def env_mod() -> dict[str, str]:
    """conftest's cli_env, once per module: the runs below are shared by several tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "DB_TEST_ACTION_"))}
    return {**env, "PYTHONUNBUFFERED": "1"}


# A tiny suite whose two first files deadlock each other on two xdist workers (a file barrier makes it
# certain), a test whose first attempt fails in setup on a server error (rerun, then passes), a passing
# test that expects a server error, and a controller-side session finish that fails outside every test.
EVIDENCE_SUITE = {
    "conftest.py": """
import os
import time
from pathlib import Path

import psycopg
import pytest

URL = os.environ["DATABASE_URL"]
BARRIER = Path(os.environ["EVIDENCE_BARRIER"])

def pytest_configure(config):
    if hasattr(config, "workerinput") or config.option.collectonly:
        return
    with psycopg.connect(URL, autocommit=True) as conn:  # before the workers start: no DDL race
        conn.execute("CREATE TABLE acct (id int PRIMARY KEY, n int)")
        conn.execute("INSERT INTO acct VALUES (1, 0), (2, 0)")
        conn.execute("CREATE TABLE uniq (id int PRIMARY KEY)")
        conn.execute("CREATE TABLE parent (id int PRIMARY KEY)")
        conn.execute("CREATE TABLE child (p int REFERENCES parent)")

def pytest_sessionfinish(session):
    # the controller's cleanup, after every worker finished: its error is in no test's window
    if hasattr(session.config, "workerinput") or session.config.option.collectonly:
        return
    with psycopg.connect(URL, autocommit=True) as conn:
        try:
            conn.execute("DROP TABLE parent")
        except psycopg.errors.DependentObjectsStillExist:
            pass

def meet(me, other):
    (BARRIER / me).touch()
    deadline = time.monotonic() + 20
    while not (BARRIER / other).exists():
        assert time.monotonic() < deadline, f"barrier: {other} never came (not on two workers?)"
        time.sleep(0.02)

def transfer(first, second, me, other):
    with psycopg.connect(URL) as conn:
        conn.execute("UPDATE acct SET n = n + 1 WHERE id = %s", (first,))
        meet(me, other)
        time.sleep(0.2)
        conn.execute("UPDATE acct SET n = n + 1 WHERE id = %s", (second,))
        conn.commit()
""",
    "test_1_deadlock_a.py": """
from conftest import transfer

def test_transfer_a():
    transfer(1, 2, "a", "b")
""",
    "test_1_deadlock_b.py": """
from conftest import transfer

def test_transfer_b():
    transfer(2, 1, "b", "a")
""",
    "test_2_flaky.py": """
import asyncio

import asyncpg
import pytest
from conftest import BARRIER, URL

async def seed():
    conn = await asyncpg.connect(URL)
    try:
        await conn.execute("INSERT INTO uniq VALUES (7)")
        await conn.execute("INSERT INTO uniq VALUES (7)")  # the first attempt's setup fails here
    finally:
        await conn.close()

@pytest.fixture
def seeded():
    marker = BARRIER / "seeded"
    if not marker.exists():
        marker.touch()
        asyncio.run(seed())
    yield

@pytest.mark.flaky(reruns=1)
def test_seeded_once(seeded):
    pass
""",
    "test_3_expected.py": """
import psycopg
import pytest
from conftest import URL

def test_division_by_zero_is_an_error():
    with psycopg.connect(URL, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
""",
}


def _write(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def _run(cli, cli_env, cwd: Path, results: Path, *args: str, env: dict | None = None):
    cmd = [*cli, "run", "--results-dir", str(results), "--pytest-output", "hide", *args]
    return subprocess.run(
        cmd, cwd=cwd, env={**cli_env, **(env or {})}, capture_output=True, text=True, timeout=300
    )


def _report(cli, cli_env, results: Path, out: Path, *extra: str) -> tuple[Report, str, str]:
    cmd = [
        *cli,
        "report",
        str(results),
        "--json",
        str(out / "r.json"),
        "--markdown",
        str(out / "r.md"),
        *extra,
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    data = json.loads((out / "r.json").read_text())
    return report_from_dict(data), (out / "r.md").read_text(), done.stdout


def _windows(results: Path) -> dict[str, list[tuple[float, float, str | None, tuple[str, ...]]]]:
    """test id → its attempts' (start, end, database, failure messages), straight from the JUnit properties."""
    out: dict[str, list] = {}
    for path in results.glob("shard-*-run-*.xml"):
        for row in parse_junit_file(path).rows:
            if row.started_at is None:
                continue
            messages = tuple(m for m in (row.message, row.attempt_failure) if m)
            out.setdefault(row.test_id, []).append((row.started_at, row.finished_at, row.database, messages))
    return out


def _assert_own(report: Report, windows) -> int:
    """Every record shown with a test lies in one of that test's own windows, on its database, and is the
    error that test reported: nothing from the other worker (or another test) is cross-attributed."""
    checked = 0
    for test in report.tests:
        for record in test.server_log:
            own = [
                (start, end, db, messages)
                for start, end, db, messages in windows[test.test_id]
                if start - SLACK_S <= record.timestamp <= end + SLACK_S and db == record.database
            ]
            assert own, (test.test_id, record)
            if record.severity != "LOG":
                assert any(record.message.lower() in m.lower() for _s, _e, _d, msgs in own for m in msgs), (
                    test.test_id,
                    record.message,
                )
            checked += 1
    return checked


@pytest.fixture(scope="module")
def fragile(tmp_path_factory, cli_mod, env_mod) -> tuple[Path, Report, str, str]:
    results = tmp_path_factory.mktemp("fragile")
    out = _run(cli_mod, env_mod, ROOT, results / "results", "--workers", "2", "--", "examples/fragile", "-q")
    assert out.returncode == 1, out.stderr[-3000:]
    assert (results / "results" / "server-shard-1.jsonl").stat().st_size > 0
    report, markdown, console = _report(cli_mod, env_mod, results / "results", results)
    return results / "results", report, markdown, console


def test_fragile_drop_failure_shows_the_dependent_table(fragile) -> None:
    _results, report, markdown, _console = fragile
    drops = [t for t in report.tests if any(p.cause.key == "dependent-objects" for p in t.problems)]
    assert drops, [t.test_id for t in report.tests]
    for test in drops:
        lines = [line for r in test.server_log for line in r.lines]
        assert "STATEMENT:  DROP TABLE workspaces" in lines
        assert any(
            "DETAIL:  constraint workspace_audit_workspace_id_fkey on table workspace_audit depends on "
            "table workspaces" in line
            for line in lines
        )
    assert "on table workspace\\_audit depends" not in markdown  # fenced, not escaped prose
    assert "DETAIL:  constraint workspace_audit_workspace_id_fkey on table workspace_audit" in markdown
    assert "Server log (server-shard-1.jsonl):" in markdown


def test_fragile_function_race_shows_the_racing_statement(fragile) -> None:
    _results, report, _markdown, _console = fragile
    races = [t for t in report.tests if any(p.cause.key == "concurrent-ddl" for p in t.problems)]
    assert races
    for test in races:
        (record,) = [r for r in test.server_log if r.sqlstate == "XX000"]
        assert record.message == "tuple concurrently updated"
        assert record.lines[1].startswith("STATEMENT:  CREATE OR REPLACE FUNCTION app_encrypt(")


def test_fragile_two_workers_are_never_cross_attributed(fragile) -> None:
    results, report, _markdown, _console = fragile
    windows = _windows(results)
    assert {w[2] for ws in windows.values() for w in ws} == {next(iter(windows.values()))[0][2]}  # one db
    assert _assert_own(report, windows) >= 3
    # every failing test of the run got its evidence, and no record was shown twice
    assert all(t.server_log for t in report.tests), [t.test_id for t in report.tests if not t.server_log]
    server = report.server
    assert server is not None and server.attributed == sum(len(t.server_log) for t in report.tests)
    assert server.files == (str(results / "server-shard-1.jsonl"),)


def test_fragile_report_json_round_trips_with_evidence(fragile) -> None:
    _results, report, _markdown, console = fragile
    assert report_from_dict(json.loads(json.dumps(report_to_dict(report)))) == report
    assert re.search(r"server log: \d+ errors, \d+ records shown with failing tests", console)


def test_evidence_is_trimmed_first_to_fit_the_comment_limit(fragile) -> None:
    _results, report, _markdown, _console = fragile
    long_statement = tuple(f"    , column_{i} text" for i in range(200))
    big = ServerRecord(
        0.0, "ERROR", "boom", ("ERROR:  boom", "STATEMENT:  CREATE TABLE t (", *long_statement)
    )
    tests = tuple(dataclasses.replace(t, server_log=(big,) * 6) for t in report.tests)
    fat = dataclasses.replace(report, tests=tests)
    full = render_markdown(fat)
    assert len(full) <= GITHUB_COMMENT_MAX and "lines cut" in full  # each excerpt is capped anyway
    # one character less room: the server excerpts shrink first, every test's details still show
    text = render_markdown(fat, max_chars=len(full) - 1)
    assert "shorter server log excerpts" in text and len(text) < len(full)
    assert text.count("<details>") == full.count("<details>") > 0
    assert text.count("```text\nERROR:  boom") == full.count("```text\nERROR:  boom")


@pytest.fixture(scope="module")
def evidence_run(tmp_path_factory, cli_mod, env_mod) -> tuple[Path, Report, str, str]:
    root = tmp_path_factory.mktemp("evidence")
    suite = _write(root / "suite", EVIDENCE_SUITE)
    barrier = root / "barrier"
    barrier.mkdir()
    out = _run(
        cli_mod, env_mod, suite, root / "results", "--workers", "2", "--", "-q", "--dist", "loadfile", "-p",
        "no:cacheprovider", env={"EVIDENCE_BARRIER": str(barrier)},
    )  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]
    report, markdown, console = _report(cli_mod, env_mod, root / "results", root)
    return root / "results", report, markdown, console


def test_deadlock_shows_both_processes(evidence_run) -> None:
    results, report, markdown, _console = evidence_run
    (loser,) = [t for t in report.tests if "transfer" in t.test_id]
    (record,) = [r for r in loser.server_log if r.sqlstate == "40P01"]
    detail = "\n".join(record.lines)
    # both processes, each with the statement the client never sees
    statements = re.findall(r"^    Process (\d+): (UPDATE acct SET n = n \+ 1 WHERE id = \$1)$", detail, re.M)
    assert len({pid for pid, _ in statements}) == 2, detail
    assert re.search(
        r"^DETAIL:  Process \d+ waits for ShareLock on transaction \d+; blocked by process", detail, re.M
    )
    assert "Process " in markdown and "deadlock detected" in markdown
    _assert_own(report, _windows(results))


def test_rerun_attempt_failure_counts_with_its_cause_and_server_lines(evidence_run) -> None:
    results, report, markdown, _console = evidence_run
    (flaky,) = [t for t in report.tests if t.test_id.endswith("test_seeded_once")]
    assert flaky.status.value == "flaky" and (flaky.executions, flaky.failed_executions) == (2, 1)
    (problem,) = flaky.problems
    assert problem.phase.value == "setup" and problem.cause.key == "unique-violation"
    assert "uniq_pkey" in problem.message
    assert any("DETAIL:  Key (id)=(7) already exists." in r.lines for r in flaky.server_log)
    assert "pytest's JUnit does not record rerun failures" not in markdown
    _assert_own(report, _windows(results))


def test_error_outside_every_window_is_counted_and_expected_errors_are_not(evidence_run) -> None:
    _results, report, markdown, console = evidence_run
    server = report.server
    assert server is not None and server.unattributed >= 1
    drops = [r for r in server.examples if r.sqlstate == "2BP01"]
    assert (
        drops and "DETAIL:  constraint child_p_fkey on table child depends on table parent" in drops[0].lines
    )
    # the passing test's expected division by zero is neither shown nor "no test reported"
    assert all(r.sqlstate != "22012" for r in server.examples)
    assert all(r.sqlstate != "22012" for t in report.tests for r in t.server_log)
    assert re.search(r"\*\*\d+ server errors? no test reported\*\*", markdown)
    assert f"{server.unattributed} in no test's window" in console


def test_without_our_server_the_report_says_evidence_is_unavailable(tmp_path, cli, cli_env, pg_server):
    suite = _write(tmp_path / "suite", {"test_x.py": "def test_x():\n    assert 1 == 2\n"})
    out = _run(cli, cli_env, suite, tmp_path / "results", "--database-url", pg_server.url(), "--", "-q")
    assert out.returncode == 1, out.stderr[-2000:]
    assert not list((tmp_path / "results").glob("server*"))
    manifest = json.loads((tmp_path / "results" / "manifest.json").read_text())
    assert (manifest["server"], manifest["server_log"]) == ("external", None)
    report, markdown, console = _report(cli, cli_env, tmp_path / "results", tmp_path)
    note = "server evidence unavailable (server not started by db-test-action)"
    assert report.server is not None and report.server.note == note and not report.server.is_available
    assert markdown.count(inline(note)) == 1 and note in console  # once, in the footer
    assert report.tests[0].server_log == ()


def test_a_results_dir_that_lost_its_server_log_says_so(evidence_run, tmp_path, cli, cli_env) -> None:
    results = evidence_run[0]
    copy = tmp_path / "results"
    copy.mkdir()
    for path in results.iterdir():
        if not path.name.startswith("server"):
            (copy / path.name).write_bytes(path.read_bytes())
    report, markdown, _ = _report(cli, cli_env, copy, tmp_path)
    assert report.server is not None and not report.server.is_available
    assert inline("server-shard-1.jsonl not found next to the results") in markdown
    # --server-log brings it back from anywhere
    again, _, _ = _report(cli, cli_env, copy, tmp_path, "--server-log", str(results / "server-shard-1.jsonl"))
    assert again.server is not None and again.server.is_available and again.server.attributed


def test_old_report_json_without_the_new_fields_still_loads() -> None:
    data = json.loads((ROOT / "tests/data/junit/phases-reruns.expected.json").read_text())
    data.pop("server")
    for test in data["tests"]:
        test.pop("server_log")
    old = report_from_dict(data)
    assert old.server is None and all(t.server_log == () for t in old.tests)
    assert old.tests and data["schema_version"] == 1
