"""Budgets, timing measures, regressions, and the config that feeds them (durations, precedence, errors)."""

from __future__ import annotations

import re
from collections import namedtuple
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from db_test_action.commands.files import load_table
from db_test_action.config.report import Budgets, resolve_report_config
from db_test_action.config.values import parse_duration
from db_test_action.errors import DbTestActionError
from db_test_action.junit.parse import parse_junit_bytes
from db_test_action.model import BudgetStatus, Counts, ResultFile, Status, Timing
from db_test_action.report.budgets import (
    budget_status,
    category_durations,
    check_budgets,
    compute_timing,
    find_regressions,
)
from db_test_action.report.build import build_report

Row = namedtuple("Row", ["test_id", "run", "duration_s"])


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(120, 120.0), (1.5, 1.5), ("90s", 90.0), ("2m", 120.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0),
     ("10", 10.0)],
)  # fmt: skip
def test_durations_accept_numbers_and_units(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["2min", "", "fast", -1, True, "1x"])
def test_bad_durations_are_refused(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_bad_budget_names_the_pyproject_key(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.db-test-action.budgets]\nsuite = "2min"\n')
    table, where = load_table(None, tmp_path)
    with pytest.raises(DbTestActionError) as err:
        resolve_report_config({}, {}, table, where)
    assert str(err.value) == (
        'pyproject.toml [tool.db-test-action.budgets] suite: "2min" is not a duration; use 120 or "2m"'
    )


def test_unknown_budget_key_and_bad_category_budget_are_named():
    with pytest.raises(DbTestActionError, match=r"budgets\] sutie: unknown budget"):
        resolve_report_config({}, {}, {"budgets": {"sutie": 3}}, "pyproject.toml [tool.db-test-action]")
    with pytest.raises(
        DbTestActionError, match=r"budgets.categories\] encryption: \"soon\" is not a duration"
    ):
        resolve_report_config(
            {},
            {},
            {"budgets": {"categories": {"encryption": "soon"}}},
            "pyproject.toml [tool.db-test-action]",
        )


def test_precedence_is_flag_then_env_then_pyproject_then_default():
    table = {"fail-on": "errors", "title": "From pyproject"}
    env = {"DB_TEST_ACTION_FAIL_ON": "errors,flaky"}
    assert resolve_report_config({}, {}, {}).fail_on == ("errors", "failures")
    assert resolve_report_config({}, {}, table).fail_on == ("errors",)
    assert resolve_report_config({}, env, table).fail_on == ("errors", "flaky")
    assert resolve_report_config({"fail-on": "budgets"}, env, table).fail_on == ("budgets",)
    assert resolve_report_config({}, env, table).title == "From pyproject"
    with pytest.raises(DbTestActionError, match=r"^DB_TEST_ACTION_FAIL_ON: \"sometimes\" is not valid"):
        resolve_report_config({}, {"DB_TEST_ACTION_FAIL_ON": "sometimes"}, {})


def test_budget_flags_override_the_file(tmp_path):
    config_file = tmp_path / "ci.toml"
    config_file.write_text('[budgets]\nsuite = "2m"\n[budgets.categories]\nencryption = "5s"\n')
    table, where = load_table(config_file, tmp_path)
    config = resolve_report_config({"budget": ["suite=90s", "category.encryption=3s"]}, {}, table, where)
    assert config.budgets.suite_s == 90 and config.budgets.for_category("encryption") == 3
    with pytest.raises(DbTestActionError, match="--budget suite: no `=` in it; use KEY=DURATION"):
        resolve_report_config({"budget": ["suite"]}, {}, {})


def test_budget_status_thresholds():
    assert budget_status(79, 100) is BudgetStatus.OK
    assert budget_status(81, 100) is BudgetStatus.WARNING
    assert budget_status(100, 100) is BudgetStatus.WARNING
    assert budget_status(101, 100) is BudgetStatus.OVER


def _suite_xml(shard: int, run: int, times: dict[str, float], wall: float) -> bytes:
    cases = "".join(
        f'<testcase classname="tests.{m}" name="t{i}" time="{t}"/>' for i, (m, t) in enumerate(times.items())
    )
    return f'<testsuites><testsuite name="pytest" time="{wall}">{cases}</testsuite></testsuites>'.encode()


def test_wall_time_is_the_slowest_shard_and_categories_take_the_slowest_run():
    files = [
        parse_junit_bytes(_suite_xml(1, 1, {"test_enc": 3.0, "test_iso": 1.0}, 5.0), "shard-1-run-1.xml"),
        parse_junit_bytes(_suite_xml(2, 1, {"test_enc": 1.0, "test_auth": 2.0}, 4.0), "shard-2-run-1.xml"),
        parse_junit_bytes(_suite_xml(1, 2, {"test_enc": 2.5, "test_iso": 9.0}, 12.0), "shard-1-run-2.xml"),
    ]
    infos: list[ResultFile] = [f.info for f in files]
    occurrences = [o for f in files for o in f.occurrences]
    cats = category_durations(occurrences, [o.test_id.split("/")[1].split(".")[0][5:] for o in occurrences])
    assert cats == {"enc": 4.0, "iso": 9.0, "auth": 2.0}  # enc: run 1 = 3 + 1 (two shards), run 2 = 2.5
    config = resolve_report_config(
        {}, {}, {"budgets": {"suite": "10s", "slowest-test": 10, "average-test": "3.5s"}}
    )
    report = build_report(files, config)
    assert (report.timing.wall_s, report.timing.wall_source, report.timing.total_s) == (
        12.0,
        "shard 1 run 2",
        21.0,
    )
    assert report.timing.slowest_test_s == 9.0
    assert report.timing.average_test_s == round(18.5 / 6, 4)  # six executions of three tests
    statuses = {b.key: b.status for b in report.budgets}
    assert statuses == {
        "suite": BudgetStatus.OVER,
        "slowest-test": BudgetStatus.WARNING,
        "average-test": BudgetStatus.WARNING,
    }
    assert report.verdict.value == "over-budget"
    assert report.is_green  # budgets are not a gate unless asked for
    gated = build_report(files, resolve_report_config({"fail-on": "budgets"}, {}, config_table(config)))
    assert gated.gate_failures == ("budgets",)
    assert infos[0].shard == 1 and infos[2].run == 2


def config_table(config) -> dict:
    return {"budgets": {"suite": config.budgets.suite_s}}


def test_category_budget_lands_in_the_category_row_and_checks():
    files = [parse_junit_bytes(_suite_xml(1, 1, {"test_workspace_isolation": 9.0}, 9.5), "r.xml")]
    config = resolve_report_config(
        {}, {}, {"budgets": {"categories": {"workspace_isolation": "10s", "encryption": 5}}}
    )
    report = build_report(files, config)
    (row,) = report.categories
    assert (row.budget_s, row.budget_status) == (10.0, BudgetStatus.WARNING)
    checks = {b.key: b for b in report.budgets}
    assert checks["categories.encryption"].detail == "no tests in this category"


def test_regressions_need_both_ratio_and_seconds():
    base_timing = Timing(wall_s=100.0, total_s=1.0, average_test_s=0.1)
    base = build_report([], resolve_report_config({}, {}, {}))
    from dataclasses import replace

    base = replace(
        base, timing=base_timing, categories=(Counts("iso", duration_s=10.0), Counts("enc", duration_s=0.1))
    )
    now = Timing(wall_s=101.5, total_s=3.0, average_test_s=0.3)
    cats = (Counts("iso", duration_s=13.0), Counts("enc", duration_s=0.9))
    regs = find_regressions(now, cats, base, ratio=0.2, min_s=1.0)
    assert [(r.name, r.base_s, r.actual_s) for r in regs] == [
        ("suite total", 1.0, 3.0),
        ("category iso", 10.0, 13.0),
    ]


def test_check_budgets_skips_unset_budgets():
    assert check_budgets(Budgets(), Timing(wall_s=1000), ()) == ()


def test_compute_timing_on_nothing():
    assert compute_timing([], [], []) == Timing()


def test_no_tests_is_a_gate_failure():
    report = build_report(
        [parse_junit_bytes(b"<testsuites/>", "empty.xml")], resolve_report_config({}, {}, {})
    )
    assert report.verdict.value == "no-tests" and report.gate_failures == ("no-tests",)


def test_flaky_gate(tmp_path: Path):
    xml = (
        b'<testsuite name="pytest"><testcase classname="tests.test_a" name="t"><failure message="x"/></testcase>'
        b'<testcase classname="tests.test_a" name="t"/></testsuite>'
    )
    files = [parse_junit_bytes(xml, "a.xml")]
    report = build_report(files, resolve_report_config({"fail-on": "errors,failures,flaky"}, {}, {}))
    assert report.tests[0].status is Status.FLAKY
    assert (report.verdict.value, report.gate_failures) == ("flaky", ("flaky",))


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("suite=0", "--budget suite=0: a budget of 0 is always over"),
        ("category.=1s", "--budget category.=1s: no category name"),
    ],
)
def test_budget_flags_that_cannot_mean_anything_are_refused(item, message):
    with pytest.raises(DbTestActionError, match=re.escape(message)):
        resolve_report_config({"budget": [item]}, {}, {})
    assert resolve_report_config({"budget": ["regression-min=0"]}, {}, {}).budgets.regression_min_s == 0


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["enc", "iso", "auth"]),
            st.sampled_from([None, 1, 2]),
            st.floats(0, 1e7, allow_nan=False),
        ),
        max_size=60,
    )
)
def test_category_durations_are_the_floats_a_plain_loop_adds(rows):
    """Added in C by runs of one category and run: each sum must be the same float, bit for bit."""
    occurrences = [Row(f"t{i}", run, seconds) for i, (_cat, run, seconds) in enumerate(rows)]
    per_run: dict = {}
    for category, run, seconds in rows:
        per_run[category, run] = per_run.get((category, run), 0.0) + seconds
    expected: dict = {}
    for (category, _run), seconds in per_run.items():
        expected[category] = max(expected.get(category, 0.0), seconds)
    got = category_durations(occurrences, [cat for cat, _run, _s in rows])
    assert got == {k: round(v, 3) for k, v in expected.items()}
