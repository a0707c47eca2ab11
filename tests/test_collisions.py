"""Collision partners and the hints that fit the evidence, on real runs: two xdist workers on one database
of our own server, paired by barriers (files) so each collision happens in every run, never by luck."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from db_test_action.model import Outcome, Phase, Problem, Report, Status, TestResult
from db_test_action.report.classify import classify_failure
from db_test_action.report.codec import report_from_dict
from db_test_action.report.collisions import refine_causes

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = """
import os
import time
from pathlib import Path

import psycopg
import pytest
from xdist.scheduler import LoadScheduling


class Alternate(LoadScheduling):
    # Tests in file order alternate left/right: gw0 gets 0, 2, 4 (left), gw1 gets 1, 3, 5 (right).
    def schedule(self):
        if self.collection is not None:
            return super().schedule()
        self.collection = next(iter(self.node2collection.values()))
        nodes = sorted(self.nodes, key=lambda node: node.gateway.id)
        self.pending[:] = []
        for i, node in enumerate(nodes):
            mine = list(range(i, len(self.collection), len(nodes)))
            self.node2pending[node].extend(mine)
            node.send_runtest_some(mine)
            node.shutdown()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    return Alternate(config, log)

BARRIERS = Path(__file__).parent / "barriers"
BARRIERS.mkdir(exist_ok=True)


def signal(name):
    (BARRIERS / name).touch()


def wait(name, timeout=120):
    deadline = time.monotonic() + timeout
    while not (BARRIERS / name).exists():
        assert time.monotonic() < deadline, f"barrier {name} never came"
        time.sleep(0.01)


def connect(**kw):
    return psycopg.connect(os.environ["DATABASE_URL"], **kw)


def wait_until_blocked(conn, timeout=120):
    deadline = time.monotonic() + timeout
    while conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0] == 0:
        assert time.monotonic() < deadline, "the other worker never blocked"
        time.sleep(0.01)
"""

PAIRS = """
from conftest import connect, signal, wait, wait_until_blocked


def test_deadlock_left():
    with connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE acct (id int PRIMARY KEY, n int)")
        conn.execute("INSERT INTO acct VALUES (1, 0), (2, 0)")
    signal("acct")
    try:
        with connect() as conn:
            conn.execute("UPDATE acct SET n = n + 1 WHERE id = 1")
            signal("left-locked")
            wait("right-locked")
            conn.execute("UPDATE acct SET n = n + 1 WHERE id = 2")
    finally:
        signal("deadlock-left-done")


def test_deadlock_right():
    wait("acct")
    try:
        with connect() as conn:
            conn.execute("UPDATE acct SET n = n + 1 WHERE id = 2")
            signal("right-locked")
            wait("left-locked")
            conn.execute("UPDATE acct SET n = n + 1 WHERE id = 1")
    finally:
        wait("deadlock-left-done")
        signal("deadlock-right-done")


def test_drops_the_table():
    wait("deadlock-right-done")
    with connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE shared_t (id int)")
        signal("created")
        wait("reader-ready")
        conn.execute("DROP TABLE shared_t")
    signal("dropped")


def test_reads_the_table():
    wait("created")
    signal("reader-ready")
    wait("dropped")
    try:
        with connect() as conn:
            conn.execute("SELECT * FROM shared_t")
    finally:
        signal("drop-right-done")


def test_extension_left():
    wait("drop-right-done")
    with connect() as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS citext")
        signal("ext-left")
        wait_until_blocked(conn)


def test_extension_right():
    wait("ext-left")
    try:
        with connect() as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS citext")
    finally:
        signal("ext-right-done")


def test_serial_left():
    wait("ext-right-done")
    with connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE counter (id int PRIMARY KEY, n int)")
        conn.execute("INSERT INTO counter VALUES (1, 0)")
    with connect() as conn:
        conn.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
        signal("serial-left-updated")
        wait_until_blocked(conn)  # the right's UPDATE waits on our row; our commit makes it fail


def test_serial_right():
    wait("serial-left-updated")
    with connect() as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute("UPDATE counter SET n = n + 10 WHERE id = 1")
"""


def _run_and_report(cli, cli_env, tmp_path: Path) -> tuple[Report, str, str]:
    suite = tmp_path / "suite"
    suite.mkdir()
    for name, text in {"conftest.py": CONFTEST, "test_pairs.py": PAIRS}.items():
        (suite / name).write_text(text)
    results = tmp_path / "results"
    cmd = [*cli, "run", "--workers", "2", "--results-dir", str(results), "--no-fail", "--",
           ".", "-p", "no:randomly"]  # fmt: skip
    done = subprocess.run(cmd, cwd=suite, env=cli_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "report.json"
    cmd = [*cli, "report", str(results), "--json", str(out), "--markdown", str(tmp_path / "r.md")]
    shown = subprocess.run(cmd, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 1, shown.stderr
    return report_from_dict(json.loads(out.read_text())), (tmp_path / "r.md").read_text(), shown.stdout


def test_partners_and_hints_from_the_server_log(cli, cli_env, tmp_path):
    report, markdown, console = _run_and_report(cli, cli_env, tmp_path)
    by_id = {t.test_id: t for t in report.tests}

    # The deadlock: whichever side PostgreSQL chose to abort names the other, from both processes in DETAIL.
    (loser,) = [t for i, t in by_id.items() if "deadlock" in i]
    (deadlock,) = [c for c in loser.collisions if c.cause == "deadlock"]
    other = "test_deadlock_right" if loser.test_id.endswith("left") else "test_deadlock_left"
    assert deadlock.partner_id is not None and deadlock.partner_id.endswith(other)
    assert {deadlock.worker, deadlock.partner_worker} == {"gw0", "gw1"}
    detail = "\n".join(line for r in loser.server_log for line in r.lines)
    assert detail.count("blocked by process") == 2

    # relation does not exist, right after the other worker's DROP: not a missing migration.
    reader = by_id["test_pairs.py::test_reads_the_table"]
    (gone,) = reader.collisions
    assert (gone.partner_id, gone.object) == ("test_pairs.py::test_drops_the_table", "shared_t")
    assert gone.worker != gone.partner_worker
    cause = reader.problems[0].cause
    assert cause.key == "concurrent-drop" and "--db-per-worker" in cause.hint
    assert "run migrations" not in cause.hint

    # The extension race names the extension and the option that pre-creates it.
    ext = by_id["test_pairs.py::test_extension_right"]
    cause = ext.problems[0].cause
    assert cause.key == "concurrent-ddl" and "citext" in cause.title
    assert "--extensions pgcrypto,citext" in cause.hint
    (race,) = ext.collisions
    assert race.partner_id == "test_pairs.py::test_extension_left" and race.object == "citext"

    # A serialization failure (REPEATABLE READ, a concurrent UPDATE of the row): the other worker's write.
    serial = by_id["test_pairs.py::test_serial_right"]
    assert serial.problems[0].cause.key == "serialization"
    (conflict,) = serial.collisions
    assert (conflict.partner_id, conflict.object) == ("test_pairs.py::test_serial_left", "counter")
    assert {conflict.worker, conflict.partner_worker} == {"gw0", "gw1"}

    # Rendered as `A (gw0) × B (gw1) on "object"`, in the comment and the console.
    assert (
        f'× test\\_pairs.py::test\\_drops\\_the\\_table ({gone.partner_worker}) on "shared\\_t"'
        in markdown.replace("\\(", "(").replace("\\)", ")")
    )
    assert (
        f"test_pairs.py::test_reads_the_table ({gone.worker}) × test_pairs.py::test_drops_the_table"
        in console
    )


def test_nightly_lists_the_pairs_that_collide(cli, cli_env, tmp_path):
    """Each night's pairs go into the history, so the list adds up over the window's nights."""
    _run_and_report(cli, cli_env, tmp_path)
    out = tmp_path / "stability.json"

    def night(label: str) -> subprocess.CompletedProcess:
        cmd = [*cli, "stability", str(tmp_path / "results"), "--json", str(out), "--markdown",
               str(tmp_path / "s.md"), "--history", str(tmp_path / "history.jsonl"), "--night", label]  # fmt: skip
        done = subprocess.run(cmd, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=120)
        assert done.returncode in (0, 1), done.stderr
        return done

    night("2026-12-01")
    assert '"conflicts":[[' in (tmp_path / "history.jsonl").read_text()
    done = night("2026-12-02")
    conflicts = json.loads(out.read_text())["conflicts"]
    assert {(c["count"], c["nights"]) for c in conflicts} == {(2, 2)}  # every pair, once a night
    pairs = {(tuple(c["tests"]), c["object"]) for c in conflicts}
    assert (
        ("test_pairs.py::test_drops_the_table", "test_pairs.py::test_reads_the_table"),
        "shared_t",
    ) in pairs
    assert (("test_pairs.py::test_extension_left", "test_pairs.py::test_extension_right"), "citext") in pairs
    assert (("test_pairs.py::test_serial_left", "test_pairs.py::test_serial_right"), "counter") in pairs
    assert "Tests that collide most (last 2 nights" in (tmp_path / "s.md").read_text()
    assert (
        "collides 2× (2 nights): test_pairs.py::test_drops_the_table × test_pairs.py::test_reads_the_table"
        in done.stdout
    )


@pytest.mark.parametrize(("extension", "option"), [("citext", "pgcrypto,citext"), ("pgcrypto", "pgcrypto")])
def test_an_extension_race_hint_names_the_extensions_option_once(extension: str, option: str) -> None:
    """The hint adds the raced extension to the default set, and never repeats pgcrypto."""
    message = 'duplicate key value violates unique constraint "pg_extension_name_index"'
    text = f"conftest.py:12: in ext\n    conn.execute('CREATE EXTENSION IF NOT EXISTS {extension}')\nE   {message}"
    cause = classify_failure(message, text)
    assert cause.key == "concurrent-ddl"
    problem = Problem(Phase.SETUP, Outcome.ERROR, message, text, cause, "shard-1-run-1.xml")
    test = TestResult("t.py::test_x", "t", "t.py", 1, Status.SETUP_ERROR, 1, 1, 0.1, (problem,))
    (refined,) = refine_causes(test, (), {}).problems
    assert f"`--extensions {option}`" in refined.cause.hint and extension in refined.cause.title
