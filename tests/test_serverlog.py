"""Server-side evidence from real server logs: parse jsonlog/csvlog, attribute records to tests."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from db_test_action.report.evidence import (
    ServerEvent,
    TestWindow,
    attribute_events,
    parse_server_log,
)
from db_test_action.server.launch import LaunchOptions, LocalServer

FUNC = "CREATE OR REPLACE FUNCTION enc(t text) RETURNS bytea LANGUAGE sql AS $$ SELECT pgp_sym_encrypt(t, 'k') $$"


def _concurrent_function_replace(url: str) -> str:
    """Two sessions replace one function; the second fails with 'tuple concurrently updated'."""
    errors: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FUNC)  # it exists; now two sessions replace it at once
    with psycopg.connect(url) as first:
        first.execute(FUNC)  # transaction open, function row locked
        second_started = threading.Event()

        def second() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SET application_name = 'tests/test_encryption.py::test_b'")
                second_started.set()
                try:
                    conn.execute(FUNC.replace("'k'", "'k2'"))
                except psycopg.Error as exc:
                    errors.append(str(exc).splitlines()[0])

        thread = threading.Thread(target=second)
        thread.start()
        second_started.wait(10)
        time.sleep(0.4)  # past deadlock_timeout (100 ms), so the lock wait is logged
        first.commit()
        thread.join(10)
    return errors[0]


def _deadlock(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute("CREATE TABLE acct (id int PRIMARY KEY, n int)")
        setup.execute("INSERT INTO acct VALUES (1, 0), (2, 0)")
    barrier = threading.Barrier(2)

    def worker(first: int, second: int) -> None:
        with psycopg.connect(url) as conn:
            conn.execute("UPDATE acct SET n = n + 1 WHERE id = %s", (first,))
            barrier.wait(10)
            try:
                conn.execute("UPDATE acct SET n = n + 1 WHERE id = %s", (second,))
                conn.commit()
            except psycopg.errors.DeadlockDetected:
                conn.rollback()

    threads = [threading.Thread(target=worker, args=ab) for ab in ((1, 2), (2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)


@pytest.fixture(scope="module")
def provoked(tmp_path_factory) -> tuple[Path, str, float, float]:
    log = tmp_path_factory.mktemp("log") / "server.jsonl"
    with LocalServer(LaunchOptions(log_copy_to=str(log))) as info:
        url = info.url()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE workspaces (id int PRIMARY KEY)")
            conn.execute("CREATE TABLE audit (ws int REFERENCES workspaces)")  # outside any metadata
            start = time.time()
            with pytest.raises(psycopg.errors.DependentObjectsStillExist):
                conn.execute("DROP TABLE workspaces")
        message = _concurrent_function_replace(url)
        _deadlock(url)
        end = time.time()
    return log, message, start, end


def test_jsonlog_records_carry_statement_and_detail(provoked) -> None:
    log, message, _, _ = provoked
    events, problems = parse_server_log(log.read_text(errors="replace"), str(log))
    assert problems == ()
    drop = next(e for e in events if e.sqlstate == "2BP01")
    assert drop.statement == "DROP TABLE workspaces"
    assert "constraint audit_ws_fkey on table audit depends on table workspaces" in drop.detail
    assert (
        drop.lines()[0] == "ERROR (2BP01):  cannot drop table workspaces because other objects depend on it"
    )
    assert message == "tuple concurrently updated"


def test_concurrent_replace_shows_the_racing_statement_and_the_lock_holder(provoked) -> None:
    log, _, _, _ = provoked
    events, _ = parse_server_log(log.read_text(errors="replace"), str(log))
    race = next(e for e in events if e.message == "tuple concurrently updated")
    assert race.sqlstate == "XX000" and "'k2'" in (race.statement or "")
    wait = next(e for e in events if e.is_lock_wait and "still waiting" in e.message)
    assert wait.detail and "Process holding the lock" in wait.detail


def test_deadlock_shows_both_processes(provoked) -> None:
    log, _, _, _ = provoked
    events, _ = parse_server_log(log.read_text(errors="replace"), str(log))
    deadlock = next(e for e in events if e.sqlstate == "40P01")
    detail = deadlock.detail or ""
    pids = {line.split()[1].rstrip(":") for line in detail.splitlines() if line.startswith("Process ")}
    assert len(pids) == 2
    assert detail.count("UPDATE acct SET n = n + 1") == 2  # both statements, which the client never sees


def test_serial_run_attributes_by_database_and_time(provoked) -> None:
    log, _, start, end = provoked
    events, _ = parse_server_log(log.read_text(errors="replace"), str(log))
    window = TestWindow("tests/test_ws.py::test_teardown", start - 0.01, end, database="test", worker=None)
    got = attribute_events(events, [window]).for_test(window.test_id)
    states = [e.sqlstate for e in got]
    assert "2BP01" in states and "XX000" in states and "40P01" in states
    assert len(states) == len(set(zip(states, [e.message for e in got], strict=True)))  # de-duplicated


def test_two_workers_on_one_database_are_never_cross_attributed(provoked) -> None:
    log, message, start, end = provoked
    events, _ = parse_server_log(log.read_text(errors="replace"), str(log))
    gw0 = TestWindow(
        "t.py::test_gw0", start, end, database="test", worker="gw0", messages=("AssertionError",)
    )
    gw1 = TestWindow("t.py::test_gw1", start, end, database="test", worker="gw1", messages=(f"E  {message}",))
    result = attribute_events(events, [gw0, gw1])
    assert [e.message for e in result.for_test("t.py::test_gw1")] == ["tuple concurrently updated"]
    assert result.for_test("t.py::test_gw0") == ()
    # what neither test's error names stays unattributed, counted on its own
    assert {e.sqlstate for e in result.unattributed} >= {"2BP01", "40P01"}


def test_application_name_wins_over_time_windows() -> None:
    event = ServerEvent(10.0, "ERROR", "boom", application_name="gw1 t.py::test_b", database="d")
    a = TestWindow("t.py::test_a", 9.0, 11.0, database="d", worker="gw0")
    b = TestWindow("t.py::test_b", 9.5, 10.5, database="d", worker="gw1")
    assert attribute_events([event], [a, b]).for_test("t.py::test_b") == (event,)


def test_csvlog_is_read_too(tmp_path: Path) -> None:
    log = tmp_path / "server.csv"
    options = LaunchOptions(log_copy_to=str(log), settings=(("log_destination", "csvlog"),))
    with (
        LocalServer(options) as info,
        psycopg.connect(info.url(), autocommit=True) as conn,
        pytest.raises(psycopg.errors.UndefinedTable),
    ):
        conn.execute("SELECT * FROM missing_table")
    events, problems = parse_server_log(log.read_text(errors="replace"), str(log))
    assert problems == ()
    err = next(e for e in events if e.sqlstate == "42P01")
    assert err.message == 'relation "missing_table" does not exist'
    assert err.statement == "SELECT * FROM missing_table" and err.database == "test"


def test_damaged_log_lines_become_named_problems(tmp_path: Path) -> None:
    log = tmp_path / "server.jsonl"
    good = '{"timestamp":"2026-11-25 17:56:45.748 UTC","error_severity":"ERROR","message":"x"}'
    log.write_text(good + "\n" + good[:40] + "\n")
    events, problems = parse_server_log(log.read_text(errors="replace"), str(log))
    assert len(events) == 1 and len(problems) == 1
    assert problems[0].line == 2 and "bad jsonlog record" in problems[0].message


def test_a_database_the_suite_derived_for_its_worker_belongs_to_that_worker() -> None:
    """Suites that create `<db>_gw1` in conftest keep DATABASE_URL at `<db>`: the suffix names the worker."""
    event = ServerEvent(10.0, "ERROR", "Wrong key or corrupt data", database="dta_s1_r1_ab_gw1")
    gw0 = TestWindow("t.py::test_a", 9.0, 11.0, database="dta_s1_r1_ab", worker="gw0")
    gw1 = TestWindow("t.py::test_b", 9.5, 10.5, database="dta_s1_r1_ab", worker="gw1")
    result = attribute_events([event], [gw0, gw1])
    assert result.for_test("t.py::test_b") == (event,) and result.for_test("t.py::test_a") == ()
    # a database of neither worker's naming stays unattributed rather than guessed
    other = ServerEvent(10.0, "ERROR", "boom", database="dta_s1_r1_ab_gw7")
    assert attribute_events([other], [gw0, gw1]).unattributed == (other,)


def test_records_that_are_not_objects_or_have_blank_fields_do_not_crash(tmp_path: Path) -> None:
    log = tmp_path / "server.jsonl"
    good = '{"timestamp":"2026-11-25 17:56:45.748 UTC","error_severity":"ERROR","message":"x","detail":"  "}'
    log.write_text(good + "\n[1, 2]\n")
    events, problems = parse_server_log(log.read_text(errors="replace"), str(log))
    assert [e.detail for e in events] == [None] and events[0].lines() == ("ERROR:  x",)
    assert len(problems) == 1 and "not an object" in problems[0].message
