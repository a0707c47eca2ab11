"""`db-test-action stability` end to end: real repeated runs by our runner on the real server (two xdist
workers racing on one database), then nights of history, the tracking issue and the branch on the fake GitHub."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from fake_github_tracking import FakeGitHubTracking
from pytest_httpserver import HTTPServer

ROOT = Path(__file__).resolve().parent.parent

RACY_SUITE = {
    "conftest.py": '''
        import os
        import time

        import psycopg
        import pytest


        @pytest.fixture
        def conn():
            with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as c:
                c.execute("CREATE TABLE IF NOT EXISTS slot (id int PRIMARY KEY)")
                c.execute("CREATE TABLE IF NOT EXISTS arrived (name text PRIMARY KEY)")
                yield c


        def claim(conn, name, loses_on_odd_runs):
            """Both workers claim one row together (a barrier in the shared database); this run's loser comes
            second and hits the primary key, so each racy test fails in every other run."""
            run = int(os.environ.get("DB_TEST_ACTION_PLUGIN_RUN") or 1)
            conn.execute("INSERT INTO arrived VALUES (%s) ON CONFLICT DO NOTHING", (name,))
            deadline = time.monotonic() + 10
            while conn.execute("SELECT count(*) FROM arrived").fetchone()[0] < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            if (run % 2 == 1) == loses_on_odd_runs:
                time.sleep(0.2)
            conn.execute("INSERT INTO slot VALUES (1)")
            time.sleep(0.5)
            conn.execute("DELETE FROM slot WHERE id = 1")
    ''',
    "test_racy_a.py": """
        from conftest import claim

        def test_racy_a(conn):
            claim(conn, "a", loses_on_odd_runs=True)
    """,
    "test_racy_b.py": """
        from conftest import claim

        def test_racy_b(conn):
            claim(conn, "b", loses_on_odd_runs=False)
    """,
    "test_clean.py": """
        def test_clean_1():
            assert 1 + 1 == 2

        def test_clean_2():
            assert "a".upper() == "A"
    """,
    "test_broken.py": """
        def test_always_fails():
            assert 1 == 2
    """,
    "pytest.ini": "[pytest]\naddopts = -p no:cacheprovider\n",
}
RACY = ("test_racy_a.py::test_racy_a", "test_racy_b.py::test_racy_b")
CLEAN = ("test_clean.py::test_clean_1", "test_clean.py::test_clean_2")
BROKEN = "test_broken.py::test_always_fails"


@pytest.fixture(scope="module")
def nights(tmp_path_factory, pg_server, request) -> dict[str, Path]:
    """Two real nights from the runner: 'racy' (2 repeats, 2 workers, 1 rerun) and 'green' (clean tests only)."""
    import os
    import sys

    base = tmp_path_factory.mktemp("nights")
    suite = base / "suite"
    for name, source in RACY_SUITE.items():
        (suite / name).parent.mkdir(parents=True, exist_ok=True)
        (suite / name).write_text(textwrap.dedent(source), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "DB_TEST_ACTION_", "PYTEST_"))}
    out = {}
    for label, extra in (
        ("racy", ["--reruns", "1", "--", "--dist", "loadfile", "--reruns-delay", "1"]),
        ("green", ["--", "-k", "clean"]),
    ):
        results = base / label
        cmd = [sys.executable, "-m", "db_test_action", "run", "--database-url", pg_server.url(), "--repeat", "2",
               "--workers", "2", "--results-dir", str(results), "--pytest-output", "hide", "--no-fail", *extra]  # fmt: skip
        proc = subprocess.run(cmd, cwd=suite, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        out[label] = results
    return out


def stability(
    cli, cli_env, cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*cli, "stability", *args],
        cwd=cwd,
        env={**cli_env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_racy_tests_get_a_flake_rate_and_clean_ones_zero(nights, cli, cli_env, tmp_path) -> None:
    history = tmp_path / "history.jsonl"
    summary = tmp_path / "summary.md"
    first = stability(
        cli, cli_env, tmp_path, str(nights["racy"]), "--history", str(history), "--night", "2025-01-01",
        "--json", "n1.json", "--markdown", "n1.md", "--quarantine-out", "q.txt", "--require-consecutive", "2",
        env={"GITHUB_STEP_SUMMARY": str(summary)},
    )  # fmt: skip
    assert first.returncode == 1, first.stderr  # 0 green runs < 2 required
    data = json.loads((tmp_path / "n1.json").read_text())
    tests = {t["test_id"]: t for t in data["tests"]}
    for tid in RACY:
        assert tests[tid]["status"] == "flaky"
        assert tests[tid]["tonight"] == {
            "runs": 2,
            "passes": 1,
            "failures": 1,
            "fixture_errors": 0,
            "reruns": 1,
            "rerun_passes": 1,
        }
        assert tests[tid]["rate"]["value"] == 0.5 and tests[tid]["rate"]["low"] > 0
    for tid in CLEAN:
        assert (
            tests[tid]["status"] == "stable"
            and tests[tid]["rate"]["value"] == 0
            and tests[tid]["rate"]["bad"] == 0
        )
    assert tests[BROKEN]["status"] == "broken" and tests[BROKEN]["tonight"]["reruns"] == 2
    assert [r["is_complete"] for r in data["runs"]] == [True, True]
    assert data["consecutive_green"] == 0 and data["gate_failures"] == ["consecutive"]
    assert (tmp_path / "q.txt").read_text().splitlines()[2:] == list(RACY)
    assert "racy_a" in summary.read_text() and "❌ below the required 2" in (tmp_path / "n1.md").read_text()
    assert "2 flaky" in first.stdout and "1 broken" in first.stdout

    second = stability(
        cli, cli_env, tmp_path, str(nights["green"]), "--history", str(history), "--night", "2025-01-02",
        "--json", "n2.json", "--markdown", "n2.md", "--require-consecutive", "2",
    )  # fmt: skip
    assert second.returncode == 0, second.stdout + second.stderr
    data = json.loads((tmp_path / "n2.json").read_text())
    assert data["consecutive_green"] == 2 and data["clean_nights"] == 1
    assert {t["test_id"] for t in data["tests"]} == set(CLEAN)
    assert [p["label"] for p in data["trend"]] == ["2025-01-01", "2025-01-02"]
    assert len(history.read_text().splitlines()) == 3  # header + 2 nights
    assert "| 2025-01-01 | 5 | 2 | 1 | 0/2 |" in (tmp_path / "n2.md").read_text()

    again = stability(
        cli, cli_env, tmp_path, str(nights["green"]), "--history", str(history), "--night", "2025-01-02"
    )
    assert again.returncode == 0 and len(history.read_text().splitlines()) == 3  # a re-run replaces its night


def test_tracking_issue_and_branch_history_over_nights(
    nights, cli, cli_env, tmp_path, httpserver: HTTPServer
) -> None:
    fake = FakeGitHubTracking(httpserver)
    env = {
        "GITHUB_TOKEN": fake.token,
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_API_URL": fake.base_url,
        "GITHUB_SHA": "f00d",
    }
    common = ("--tracking-issue", "--history-branch", "db-test-action-history", "--close-after", "1")

    first = stability(cli, cli_env, tmp_path, str(nights["racy"]), *common, "--night", "d1", env=env)
    assert first.returncode == 0, first.stderr
    (issue,) = fake.open_issues()
    assert "created the tracking issue #1" in first.stdout
    assert issue["title"] == "Nightly stability: 3 unstable tests (night d1)"
    assert "test\\_racy\\_a" in issue["body"] or "test_racy_a" in issue["body"]
    assert "<!-- db-test-action:tracking:stability -->" in issue["body"]
    history = fake.file("db-test-action-history", "stability-history.jsonl")
    assert history is not None and '"night":"d1","commit":"f00d"' in history

    second = stability(cli, cli_env, tmp_path, str(nights["green"]), *common, "--night", "d2", env=env)
    assert second.returncode == 0, second.stderr
    assert "closed the tracking issue #1" in second.stdout and issue["state"] == "closed"
    history = fake.file("db-test-action-history", "stability-history.jsonl")
    assert history is not None and len(history.splitlines()) == 3
    assert len(fake.issues) == 1


def test_github_failure_never_loses_the_report(
    nights, cli, cli_env, tmp_path, httpserver: HTTPServer
) -> None:
    fake = FakeGitHubTracking(httpserver)
    fake.fail("GET", r".*", 500, "Internal Server Error", times=100)
    summary = tmp_path / "summary.md"
    env = {"GITHUB_TOKEN": fake.token, "GITHUB_REPOSITORY": "o/r", "GITHUB_API_URL": fake.base_url,
           "GITHUB_STEP_SUMMARY": str(summary)}  # fmt: skip
    args = (str(nights["racy"]), "--tracking-issue", "--history-branch", "h", "--retries", "1", "--max-wait", "5",
            "--history", "local.jsonl")  # fmt: skip
    proc = stability(cli, cli_env, tmp_path, *args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "cannot read the history from branch h" in proc.stderr and "not be overwritten" in proc.stderr
    assert "tracking issue not updated" in proc.stderr
    assert "racy" in summary.read_text() and (tmp_path / "local.jsonl").is_file()
    assert not fake.calls("PUT") and not fake.issues  # an unreadable history is never overwritten
    strict = stability(cli, cli_env, tmp_path, *args, "--fail-on-publish-error", env=env)
    assert strict.returncode == 3


def test_read_only_token_says_which_permission(
    nights, cli, cli_env, tmp_path, httpserver: HTTPServer
) -> None:
    fake = FakeGitHubTracking(httpserver, is_read_only=True)
    env = {"GITHUB_TOKEN": fake.token, "GITHUB_REPOSITORY": "o/r", "GITHUB_API_URL": fake.base_url}
    proc = stability(cli, cli_env, tmp_path, str(nights["racy"]), "--tracking-issue", env=env)
    assert proc.returncode == 0 and "grant `issues: write`" in proc.stderr


def test_dry_run_writes_nothing_to_github(nights, cli, cli_env, tmp_path, httpserver: HTTPServer) -> None:
    fake = FakeGitHubTracking(httpserver)
    env = {"GITHUB_TOKEN": fake.token, "GITHUB_REPOSITORY": "o/r", "GITHUB_API_URL": fake.base_url}
    proc = stability(cli, cli_env, tmp_path, str(nights["racy"]), "--tracking-issue", "--history-branch", "h",
                     "--dry-run", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "dry run: would write" in proc.stderr and "dry run: would create/update/close" in proc.stderr
    assert not fake.issues and not fake.branches and not fake.calls("PUT") and not fake.calls("POST")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "stability: no results given; pass the nightly run's JUnit XML"),
        (
            ("RESULTS", "--fail-on", "sometimes"),
            '--fail-on: "sometimes" is not valid; use consecutive, broken, newly-flaky, flaky or none',
        ),
        (("RESULTS", "--window", "0"), '--window: "0" is not valid; use a whole number ≥ 1'),
        (("RESULTS", "--history", "bad.jsonl"), "bad.jsonl:1: not JSON"),
        (("RESULTS", "--tracking-issue"), "--repository: None is not OWNER/REPO"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(nights, cli, cli_env, tmp_path, args, expected) -> None:
    (tmp_path / "bad.jsonl").write_text("nope\n")
    args = tuple(str(nights["green"]) if a == "RESULTS" else a for a in args)
    proc = stability(cli, cli_env, tmp_path, *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"db-test-action: {expected}"), proc.stderr


def test_broken_result_file_still_writes_the_report(nights, cli, cli_env, tmp_path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    for f in nights["green"].glob("*.xml"):
        (results / f.name).write_bytes(f.read_bytes())
    (results / "shard-1-run-2.xml").write_text(
        "<testsuites><testsuite name='pytest'><testcase", encoding="utf-8"
    )
    proc = stability(cli, cli_env, tmp_path, str(results), "--markdown", "out.md")
    assert proc.returncode == 2
    text = (tmp_path / "out.md").read_text()
    assert "unreadable result file" in text and "incomplete runs" in text and "shard-1-run-2.xml" in text


@pytest.mark.skipif(
    not (ROOT / "examples" / "fragile" / "conftest.py").is_file(), reason="examples/fragile absent"
)
def test_fragile_example_racy_tests_are_flaky_and_validation_stays_clean(
    cli, cli_env, pg_server, tmp_path
) -> None:
    """The README demo: the fragile suite under 2 workers, 2 repeats; the pure validation tests never flake."""
    results = tmp_path / "results"
    run = subprocess.run(
        [*cli, "run", "--database-url", pg_server.url(), "--repeat", "2", "--workers", "2", "--results-dir",
         str(results), "--pytest-output", "hide", "--no-fail", "--", "examples/fragile"],
        cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    proc = stability(cli, cli_env, tmp_path, str(results), "--json", "out.json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "out.json").read_text())
    by_category = {c["name"]: c for c in data["categories"]}
    assert by_category["validation"]["rate"]["bad"] == 0 and by_category["validation"]["tests"] > 0
    unstable = [t for t in data["tests"] if t["rate"]["bad"] > 0]
    assert unstable and all(t["category"] != "validation" for t in unstable)
    assert {"unique-violation", "concurrent-ddl", "dependent-objects"} <= {c["name"] for c in data["causes"]}


def test_pyproject_table_sets_gates_and_categories(nights, cli, cli_env, tmp_path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.db-test-action.categories]\nracing = ["test_racy_*"]\n'
        '[tool.db-test-action.stability]\nfail-on = ["broken"]\ntitle = "Night watch"\n',
        encoding="utf-8",
    )
    proc = stability(cli, cli_env, tmp_path, str(nights["racy"]), "--json", "out.json")
    assert proc.returncode == 1 and "Night watch" in proc.stdout
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["gate_failures"] == ["broken"]
    racing = next(c for c in data["categories"] if c["name"] == "racing")
    assert (racing["tests"], racing["flaky"], racing["rate"]["bad"]) == (2, 2, 2)
    flag_wins = stability(cli, cli_env, tmp_path, str(nights["racy"]), "--fail-on", "none")
    assert flag_wins.returncode == 0

    (tmp_path / "pyproject.toml").write_text("[tool.db-test-action.stability]\nwindw = 3\n", encoding="utf-8")
    typo = stability(cli, cli_env, tmp_path, str(nights["racy"]))
    assert typo.returncode == 2 and "stability: unknown key 'windw'" in typo.stderr
