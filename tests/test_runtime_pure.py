"""Pure pieces behind the runtime inputs, on hostile input (hypothesis): option parsers raise only our
one-line error, the foreign-database check never trips over odd log records, codenames never crash."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from db_test_action.commands.postgres import parse_server_settings
from db_test_action.errors import DbTestActionError
from db_test_action.report.evidence import ServerEvent, TestWindow, foreign_databases
from db_test_action.server.info import ServerInfo, parse_url_driver, parse_url_envs, with_driver
from db_test_action.server.install import os_codename

TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=80)


def _only_ours(parse, value) -> None:
    try:
        parse(value)
    except DbTestActionError as exc:
        assert ("\n" not in str(exc) and str(exc)[0].islower()) or str(exc).startswith("--")


@given(TEXT)
def test_option_parsers_fail_only_with_one_line_errors(value: str) -> None:
    for parse in (parse_url_driver, parse_url_envs, parse_server_settings):
        _only_ours(parse, value)


def test_drivers_and_settings() -> None:
    assert parse_url_driver("asyncpg") == "postgresql+asyncpg"
    assert parse_url_driver("postgresql+psycopg2://") == "postgresql+psycopg2"
    assert parse_url_driver("") is None
    assert with_driver("postgresql://u@h:1/d", "postgresql+asyncpg") == "postgresql+asyncpg://u@h:1/d"
    assert parse_server_settings("# c\nmax_locks_per_transaction = 256\n\ntimezone='UTC'") == (
        ("max_locks_per_transaction", "256"),
        ("timezone", "UTC"),
    )
    info = ServerInfo("127.0.0.1", 5, "u", "d", url_driver="postgresql+asyncpg", url_envs=("A_URL",))
    assert info.env()["DATABASE_URL"] == info.env()["A_URL"] == "postgresql+asyncpg://u@127.0.0.1:5/d"


@given(st.lists(st.tuples(st.none() | TEXT, st.none() | TEXT, TEXT), max_size=30), st.lists(TEXT, max_size=5))
def test_foreign_databases_never_crash_and_never_name_the_tests_own(events, own) -> None:
    evs = [ServerEvent(0.0, "LOG", msg, database=db, backend_type=bt) for db, bt, msg in events]
    windows = [TestWindow("t", 0.0, 1.0, database=db) for db in own]
    found = foreign_databases(evs, windows)
    assert not set(found) & set(own)
    assert list(found) == sorted(set(found))


def test_foreign_databases_spare_derived_and_server_databases() -> None:
    def ev(db: str, message: str = "connection authorized") -> ServerEvent:
        return ServerEvent(0.0, "LOG", message, database=db, backend_type="client backend")

    windows = [TestWindow("t", 0.0, 1.0, database="dta_s1_r1_ab_c1_gw0")]
    events = [ev("dta_s1_r1_ab_c1_gw1"), ev("dta_s1_r1_ab_c1_template"), ev("postgres"), ev("app_test"),
              ev("mine", "connection authorized: user=p database=mine application_name=db-test-action")]  # fmt: skip
    assert foreign_databases(events, windows) == ("app_test",)
    assert foreign_databases(events, []) == ()


@given(TEXT)
def test_codename_never_crashes(text: str) -> None:
    result = os_codename(text)
    assert result is None or (result and "\n" not in result)
