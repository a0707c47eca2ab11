"""`db-test-action run` end to end: real pytest subprocesses against a real server, real JUnit files."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import defusedxml.ElementTree as DET
import psycopg
import pytest

from db_test_action.run.files import synthetic_junit

SUITE = {
    "test_db.py": """
import os
import psycopg

def test_database_is_fresh(record_property):
    url = os.environ["DATABASE_URL"]
    record_property("db", url.rsplit("/", 1)[1])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE marker (id int)")  # fails if a previous run left it behind
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pgcrypto'").fetchone()[0] == 1
""",
    "test_more.py": """
import pytest

@pytest.mark.parametrize("n", range(4))
def test_param(n):
    assert n >= 0

class TestGroup:
    def test_one(self):
        pass

    def test_two(self):
        pass
""",
}


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _cases(path: Path) -> list[dict[str, str]]:
    """Every <testcase> as {name, classname, <property>…, outcome}."""
    out = []
    for case in DET.parse(path).getroot().iter("testcase"):
        row = {"name": case.get("name", ""), "classname": case.get("classname", ""), "outcome": "passed"}
        for prop in case.iter("property"):
            row[prop.get("name")] = prop.get("value")
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                row["outcome"] = tag
                row["message"] = case.find(tag).get("message", "")
        out.append(row)
    return out


def _suite_props(path: Path) -> dict[str, str]:
    suite = DET.parse(path).getroot().find("testsuite")
    props = suite.find("properties")
    return {} if props is None else {p.get("name"): p.get("value") for p in props}


@pytest.fixture
def run_cli(cli, cli_env, pg_server, tmp_path):
    """Run `db-test-action run --database-url <session server> …` in tmp_path/suite."""
    suite = tmp_path / "suite"
    suite.mkdir()

    def run(*args: str, files: dict[str, str] = SUITE, timeout: float = 120) -> subprocess.CompletedProcess:
        _write(suite, files)
        cmd = [
            *cli,
            "run",
            "--database-url",
            pg_server.url(),
            "--results-dir",
            str(tmp_path / "results"),
            *args,
        ]
        return subprocess.run(cmd, cwd=suite, env=cli_env, capture_output=True, text=True, timeout=timeout)

    return run


def _leftover_databases(pg_server) -> list[str]:
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'dta\\_%'")]


def test_shards_are_complete_and_disjoint_and_match_the_manifest(run_cli, tmp_path, pg_server):
    out = run_cli("--shards", "3", "--shard", "all", "--", "-q")
    assert out.returncode == 0, out.stderr
    results = tmp_path / "results"
    manifest = json.loads((results / "manifest.json").read_text())
    assert manifest["version"] == 1 and manifest["shards"] == 3 and manifest["repeat"] == 1
    assert len(manifest["tests"]) == 7
    seen: dict[str, int] = {}
    for shard in (1, 2, 3):
        cases = _cases(results / f"shard-{shard}-run-1.xml")
        assert cases, f"shard {shard} is empty"
        assert _suite_props(results / f"shard-{shard}-run-1.xml") == {"shard": str(shard), "run": "1"}
        for case in cases:
            node = f"{case['classname'].replace('.', '/', 0)}::{case['name']}"
            assert case["shard"] == str(shard) and case["run"] == "1" and case["attempt"] == "1"
            assert node not in seen
            seen[node] = shard
    assert len(seen) == 7
    assert sorted(manifest["tests"].values()) == sorted(seen.values())
    assert _leftover_databases(pg_server) == []


def test_repeat_runs_whole_sessions_on_separate_fresh_databases(run_cli, tmp_path, pg_server):
    out = run_cli("--repeat", "3", "--", "-q", "test_db.py")
    assert out.returncode == 0, out.stderr + out.stdout
    databases = []
    for run in (1, 2, 3):
        path = tmp_path / "results" / f"shard-1-run-{run}.xml"
        (case,) = _cases(path)
        assert case["outcome"] == "passed" and case["run"] == str(run)
        assert _suite_props(path)["run"] == str(run)
        databases.append(case["db"])
    assert len(set(databases)) == 3 and all(db.startswith("dta_s1_r") for db in databases)
    assert all(len(db.encode()) <= 63 for db in databases)
    assert _leftover_databases(pg_server) == []


def test_reruns_are_recorded_as_attempts(run_cli, tmp_path):
    flaky = {
        "test_flaky.py": """
from pathlib import Path

def test_flaky(tmp_path_factory):
    marker = Path(__file__).with_name("attempted")
    if not marker.exists():
        marker.write_text("1")
        raise AssertionError("first attempt fails")
"""
    }
    out = run_cli("--reruns", "2", "--", "-q", files=flaky)
    assert out.returncode == 0, out.stderr
    cases = _cases(tmp_path / "results" / "shard-1-run-1.xml")
    assert [(c["name"], c["attempt"]) for c in cases] == [("test_flaky", "1"), ("test_flaky", "2")]
    # rerunfailures writes the failed attempt as an empty testcase; the plugin keeps what failed
    assert cases[0]["attempt_failure"] == "call: AssertionError: first attempt fails"
    assert "attempt_failure" not in cases[1]
    assert "1 rerun" in out.stderr


def test_xdist_workers_are_tagged(run_cli, tmp_path):
    out = run_cli("--workers", "2", "--", "-q", "test_more.py")
    assert out.returncode == 0, out.stderr
    cases = _cases(tmp_path / "results" / "shard-1-run-1.xml")
    assert len(cases) == 6
    assert {c["worker"] for c in cases} == {"gw0", "gw1"}
    assert _suite_props(tmp_path / "results" / "shard-1-run-1.xml") == {"shard": "1", "run": "1"}


def test_failures_exit_1_unless_no_fail(run_cli, tmp_path):
    failing = {"test_f.py": "def test_f():\n    assert 1 == 2\n"}
    out = run_cli("--", "-q", files=failing)
    assert out.returncode == 1
    assert _cases(tmp_path / "results" / "shard-1-run-1.xml")[0]["outcome"] == "failure"
    assert run_cli("--no-fail", "--", "-q", files=failing).returncode == 0


def test_until_failure_stops_repeating(run_cli, tmp_path):
    failing = {"test_f.py": "def test_f():\n    assert 1 == 2\n"}
    out = run_cli("--repeat", "5", "--until-failure", "--", "-q", files=failing)
    assert out.returncode == 1
    assert sorted(p.name for p in (tmp_path / "results").glob("*.xml")) == ["shard-1-run-1.xml"]


def test_fewer_tests_than_shards_exits_0_with_a_note_and_a_valid_file(run_cli, tmp_path, cli, cli_env):
    one = {"test_one.py": "def test_one():\n    pass\n"}
    out = run_cli("--shards", "3", "--shard", "3", "--repeat", "2", "--", "-q", files=one)
    assert out.returncode == 0, out.stderr
    assert "shard 3 of 3 has no tests: only 1 collected" in out.stderr
    for run in (1, 2):
        path = tmp_path / "results" / f"shard-3-run-{run}.xml"
        assert _cases(path) == []
        assert "no tests" in _suite_props(path)["note"]
    assert json.loads((tmp_path / "results" / "manifest.json").read_text())["tests"] == {
        "test_one.py::test_one": 1
    }
    # the shard job's own report accepts the empty shard: present, not missing
    results = tmp_path / "results"
    report = subprocess.run(
        [*cli, "report", str(results), "--manifest", str(results / "manifest.json"), "--shard", "3",
         "--fail-on", "none"],
        capture_output=True, text=True, env=cli_env, timeout=60,
    )  # fmt: skip
    assert "missing" not in report.stdout, report.stdout
    assert report.returncode == 0, report.stdout  # no tests was the plan for this shard, not a failure


def _crash_case(tmp_path: Path) -> dict[str, str]:
    (case,) = _cases(tmp_path / "results" / "shard-1-run-1.xml")
    assert case["outcome"] == "error"
    return case


def test_bad_pytest_args_give_one_line_error_and_a_results_file(run_cli, tmp_path):
    out = run_cli("--", "--no-such-flag")
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("db-test-action: run: collection failed (pytest exit 4: usage error)")
    assert "--no-such-flag" in last
    case = _crash_case(tmp_path)
    assert "pytest exit 4" in case["name"] and "--no-such-flag" in case["message"]


def test_import_error_in_conftest_gives_one_line_error_and_a_results_file(run_cli, tmp_path):
    broken = {**SUITE, "conftest.py": "import no_such_module_here\n"}
    out = run_cli("--", "-q", files=broken)
    assert out.returncode == 2  # pytest calls a broken conftest a usage error (its exit 4)
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("db-test-action: run: collection failed") and "no_such_module_here" in last
    assert "no_such_module_here" in _crash_case(tmp_path)["message"]


def test_no_tests_collected_is_an_error(run_cli, tmp_path):
    out = run_cli("--", "-q", "-k", "nothing_matches_this", files=SUITE)
    assert out.returncode == 1
    assert "no tests collected" in out.stderr.strip().splitlines()[-1]
    assert "no tests" in _crash_case(tmp_path)["name"]


def test_crash_during_the_run_is_reported(run_cli, tmp_path):
    """Collection passes, then pytest dies mid-session without writing its XML."""
    dying = {"test_die.py": "import os\n\ndef test_die():\n    os._exit(3)\n"}
    out = run_cli("--", "-q", files=dying)
    assert out.returncode == 1
    assert "pytest exit 3" in out.stderr.strip().splitlines()[-1]
    assert "pytest crashed" in _crash_case(tmp_path)["name"]


def test_sigterm_stops_pytest_and_drops_the_database(cli, cli_env, pg_server, tmp_path):
    suite = _write(tmp_path, {"test_slow.py": "import time\n\ndef test_slow():\n    time.sleep(60)\n"})
    cmd = [*cli, "run", "--database-url", pg_server.url(), "--results-dir", str(tmp_path / "r"), "--", "-q"]
    proc = subprocess.Popen(
        cmd, cwd=suite, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _leftover_databases(pg_server):
        time.sleep(0.1)
    assert _leftover_databases(pg_server), "the run never created its database"
    time.sleep(1.0)  # let pytest start the test
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert _leftover_databases(pg_server) == []
    assert subprocess.run(["pgrep", "-f", "test_slow.py"], capture_output=True).returncode == 1


def test_own_server_mode(cli, cli_env, tmp_path, data_root):
    suite = _write(tmp_path / "suite", {"test_db.py": SUITE["test_db.py"]})
    cmd = [*cli, "run", "--data-root", str(data_root), "--results-dir", str(tmp_path / "r"), "--", "-q"]
    out = subprocess.run(cmd, cwd=suite, env=cli_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert _cases(tmp_path / "r" / "shard-1-run-1.xml")[0]["db"].startswith("dta_s1_r1_")
    assert list(data_root.iterdir()) == []  # the server's data dir is gone


def test_plugin_is_inert_without_the_runner(tmp_path, cli_env):
    _write(tmp_path, {"test_x.py": "def test_x():\n    pass\n"})
    junit = tmp_path / "plain.xml"
    out = subprocess.run(
        ["python", "-m", "pytest", "-q", f"--junitxml={junit}"],
        cwd=tmp_path,
        env=cli_env,
        capture_output=True,
    )
    assert out.returncode == 0
    assert b"<properties" not in junit.read_bytes()


def test_synthetic_files_are_valid_junit():
    text = synthetic_junit(2, 3, error=("pytest crashed", 'msg with "quotes" & <tags>', "tail ]]> end"))
    root = DET.fromstring(text.encode())
    case = root.find("testsuite/testcase")
    assert case.find("error").get("message") == 'msg with "quotes" & <tags>'
    assert case.find("error").text == "tail ]]> end"
    assert {p.get("name"): p.get("value") for p in case.iter("property")}["shard"] == "2"


def test_detached_server_state_pytest_args_and_server_log(cli, cli_env, tmp_path, data_root) -> None:
    """The action's path: `postgres start --name`, then `run --server-state NAME --pytest-args "…"`."""
    suite = _write(tmp_path / "suite", SUITE)
    state = tmp_path / "state.json"
    started = subprocess.run(
        [*cli, "postgres", "start", "--state-file", str(state), "--data-root", str(data_root)],
        capture_output=True, text=True, env=cli_env, timeout=60,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        suite.joinpath("test_fail.py").write_text(
            "import os, psycopg\n"
            "def test_missing_table():\n"
            "    with psycopg.connect(os.environ['DATABASE_URL']) as conn:\n"
            "        conn.execute('SELECT * FROM no_such_table')\n"
        )
        out = subprocess.run(
            [*cli, "run", "--server-state", str(state), "--results-dir", "res", "--no-fail",
             "--pytest-args", "-q -k 'missing or fresh'"],
            capture_output=True, text=True, env=cli_env, cwd=suite, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        cases = {c["name"]: c for c in _cases(suite / "res" / "shard-1-run-1.xml")}
        assert set(cases) == {"test_missing_table", "test_database_is_fresh"}  # -k came through shlex
        port = json.loads(state.read_text())["port"]
        assert cases["test_database_is_fresh"]["db"].startswith("dta_s1_r1_")
        window = cases["test_missing_table"]
        assert float(window["started_at"]) <= float(window["finished_at"])
        assert window["database"] == cases["test_database_is_fresh"]["db"]
        records = [
            json.loads(line) for line in (suite / "res" / "server-shard-1.jsonl").read_text().splitlines()
        ]
        [err] = [r for r in records if r.get("state_code") == "42P01"]
        assert err["dbname"] == window["database"] and err["statement"] == "SELECT * FROM no_such_table"
        assert str(port) in started.stdout
    finally:
        subprocess.run([*cli, "postgres", "stop", "--state-file", str(state)], env=cli_env, timeout=60)


def test_libpq_connections_are_named_after_the_test_and_rerun_failures_name_the_exception(
    cli, cli_env, tmp_path, data_root
) -> None:
    """Own server (so its log is kept): psycopg picks up PGAPPNAME, and a rerun attempt that psycopg failed
    keeps `psycopg.errors.UniqueViolation: …` — not the DETAIL line below it — as attempt_failure."""
    suite = _write(
        tmp_path / "suite",
        {
            "test_named.py": """
import os, pathlib, psycopg

def test_unique_once(tmp_path_factory):
    marker = pathlib.Path(os.environ["MARKER"])
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY)")
        if not marker.exists():
            marker.write_text("1")
            conn.execute("INSERT INTO t VALUES (7)")
            conn.execute("INSERT INTO t VALUES (7)")  # fails the first attempt only
""",
        },
    )
    # run from inside another pytest's xdist worker: the child must not take that identity for its own
    env = {**cli_env, "MARKER": str(tmp_path / "marker"), "PYTEST_XDIST_WORKER": "gw7"}
    out = subprocess.run(
        [*cli, "run", "--data-root", str(data_root), "--reruns", "1", "--results-dir", "res", "--", "-q"],
        capture_output=True, text=True, env=env, cwd=suite, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    cases = _cases(suite / "res" / "shard-1-run-1.xml")
    failed = [c for c in cases if c.get("attempt_failure")]
    assert failed and failed[0]["attempt_failure"].startswith(
        "call: psycopg.errors.UniqueViolation: duplicate key value violates unique constraint"
    )
    records = [json.loads(line) for line in (suite / "res" / "server-shard-1.jsonl").read_text().splitlines()]
    [dup] = [r for r in records if r.get("state_code") == "23505"]
    assert dup["application_name"] == "main test_named.py::test_unique_once"


STARTS = """
import os


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the pytest process the runner started, not an xdist worker
        with open(os.environ["STARTS_FILE"], "a") as fh:
            fh.write("x")
"""


@pytest.mark.parametrize("workers", [None, "2"])
def test_one_shard_starts_pytest_once_per_run_and_still_writes_the_manifest(
    cli, cli_env, pg_server, tmp_path, workers
):
    """No separate collection pass for a single shard: the plugin records the ids during run 1 (under
    xdist from worker gw0), so the manifest lists every test while pytest starts once per run."""
    suite = _write(tmp_path / "suite", {**SUITE, "conftest.py": STARTS})
    starts = tmp_path / "starts"
    cmd = [*cli, "run", "--database-url", pg_server.url(), "--results-dir", str(tmp_path / "results"),
           "--repeat", "2", *(["--workers", workers] if workers else [])]  # fmt: skip
    done = subprocess.run(cmd, cwd=suite, env={**cli_env, "STARTS_FILE": str(starts)},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert starts.read_text() == "xx"  # two runs, no third start for collecting
    manifest = json.loads((tmp_path / "results" / "manifest.json").read_text())
    assert len(manifest["tests"]) == 7 and set(manifest["tests"].values()) == {1}
    assert "test_more.py::TestGroup::test_two" in manifest["tests"]
