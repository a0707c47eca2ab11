"""Server logs and JUnit properties are untrusted: partner finding and the fixture doctor never crash on
them, whatever the records say (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from db_test_action.model import Occurrence, Outcome
from db_test_action.report.collisions import Evidence, created_relations, find_collisions
from db_test_action.report.doctor import diagnose
from db_test_action.report.evidence import ServerEvent, TestWindow

SQLISH = st.sampled_from(
    [
        "statement: CREATE TABLE t (id int PRIMARY KEY, x int REFERENCES u)",
        "execute s1: INSERT INTO t (id, x) VALUES ($1, $2)",
        "statement: DROP TABLE t",
        "statement: CREATE EXTENSION IF NOT EXISTS citext",
        "connection authorized: user=u database=d application_name=gw1 test_a.py::t",
        "disconnection: session time: 0:00:00.01",
        'duplicate key value violates unique constraint "t_pkey"',
        'relation "t" does not exist',
        "tuple concurrently updated",
        "deadlock detected",
    ]
)
TEXT = st.one_of(st.none(), st.text(max_size=60), SQLISH)
EVENTS = st.lists(
    st.builds(
        ServerEvent,
        timestamp=st.floats(0, 20, allow_nan=False),
        severity=st.sampled_from(["ERROR", "LOG", "FATAL", "WARNING"]),
        message=st.one_of(SQLISH, st.text(max_size=80)),
        sqlstate=st.sampled_from([None, "23505", "40P01", "2BP01", "42P01", "55P03", "XX000", "40001"]),
        detail=st.one_of(
            TEXT,
            st.just("Process 1 waits for ShareLock; blocked by process 2."),
            st.just("parameters: $1 = '1', $2 = NULL"),
            st.just("Key (id)=(1) already exists."),
        ),
        statement=TEXT,
        database=st.sampled_from([None, "d", "d_gw1"]),
        application_name=st.sampled_from([None, "", "gw0 test_a.py::t", "gw1 test_b.py::u", "psql"]),
        pid=st.one_of(st.none(), st.integers(1, 4)),
        vxid=st.sampled_from([None, "2/1", "2/2"]),
    ),
    max_size=25,
)
WINDOWS = st.lists(
    st.builds(
        TestWindow,
        test_id=st.sampled_from(["test_a.py::t", "test_b.py::u", "x"]),
        start=st.floats(0, 10, allow_nan=False),
        end=st.floats(10, 20, allow_nan=False),
        database=st.sampled_from([None, "d"]),
        worker=st.sampled_from([None, "gw0", "gw1", "main"]),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(EVENTS, WINDOWS)
def test_partner_finding_never_crashes(events, windows):
    index = Evidence(events, windows)
    for test_id in ("test_a.py::t", "test_b.py::u"):
        for c in find_collisions(test_id, events, windows, index):
            assert c.test_id == test_id and c.count >= 1
            assert c.partner_id != test_id or c.partner_worker != c.worker
    created_relations(events)


@settings(max_examples=300, deadline=None)
@given(
    EVENTS,
    st.lists(
        st.one_of(
            st.none(),
            st.text(max_size=40),
            st.just('[["db","function","c.py:1","setup",0,20]]'),
            st.just("[[1,2]]"),
            st.just("[5]"),
            st.just('{"a": 1}'),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_doctor_never_crashes_on_damaged_spans(events, spans):
    occurrences = [
        Occurrence(
            f"t{i}",
            None,
            None,
            Outcome.PASSED,
            None,
            0.1,
            "",
            "",
            "x.xml",
            started_at=float(i),
            finished_at=float(i) + 5,
            database="d",
            worker="main",
            fixtures=raw,
        )
        for i, raw in enumerate(spans)
    ]
    findings = diagnose(occurrences, events)
    assert findings is None or all(f.test_count >= 1 for f in findings)
