"""The literal prefilter in front of the root-cause regexes never changes a classification."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db_test_action.model import Cause, CauseRule
from db_test_action.report import classify
from db_test_action.report.classify import BUILTIN_RULES, classify_failure
from db_test_action.report.prefilter import ALTERNATIVE_NEEDLES, NEEDLES, split_alternatives


def _reference(haystack: str, rules: tuple[CauseRule, ...]) -> Cause | None:
    """The classifier without the prefilter: every rule's regex, in order; the first match's detail."""
    for rule in rules:
        regex = re.compile(rule.pattern)
        if regex.search(haystack):
            details = (m.groupdict().get("detail") for m in regex.finditer(haystack))
            return Cause(rule.key, rule.title, rule.hint, next((d for d in details if d), None))
    return None


def test_every_builtin_rule_has_literals():
    assert set(NEEDLES) == {rule.key for rule in BUILTIN_RULES}


def test_a_pattern_splits_into_its_top_level_alternatives():
    assert split_alternatives(r"a|(b|c)|[|(]|\||d(?:e|f)") == ["a", "(b|c)", "[|(]", r"\|", "d(?:e|f)"]
    for rule in BUILTIN_RULES:
        parts = split_alternatives(rule.pattern)
        assert "|".join(parts) == rule.pattern and len(parts) == len(ALTERNATIVE_NEEDLES[rule.key])
        assert all(re.compile(part) for part in parts)  # each one a regex of its own


ALTERNATIVES = [
    (rule.key, alternative, needles)
    for rule in BUILTIN_RULES
    for alternative, needles in zip(
        split_alternatives(rule.pattern), ALTERNATIVE_NEEDLES[rule.key], strict=True
    )
]


@pytest.mark.parametrize(("key", "alternative", "needles"), ALTERNATIVES, ids=lambda v: str(v)[:30])
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(data=st.data())
def test_every_match_of_an_alternative_holds_one_of_its_literals(key, alternative, needles, data):
    text = data.draw(st.from_regex(re.compile(alternative), fullmatch=True))
    assert any(needle in text for needle in needles), (key, alternative, text)
    assert set(needles) <= set(NEEDLES[key])


WORDS = [
    "sqlalchemy.exc.IntegrityError: ",
    "(psycopg.errors.UniqueViolation) ",
    "duplicate key value violates unique ",
    'constraint "ws_pkey"',
    "SQLSTATE 23505",
    "[23505]",
    "pgcode='40001'",
    "tuple concurrently updated",
    'unique constraint "pg_type_typname_nsp_index"',
    "cannot drop table notes because other objects depend on it",
    'relation "ws" does not exist',
    "function gen_random_uuid() does not exist",
    "deadlock detected",
    "Connection refused",
    "timed out",
    "Event loop is closed",
    "assert 409 == 201",
    "KeyError: 'x'",
    "\n",
    "E   ",
    "could not serialize access",
    'database "t" is being accessed by other users',
    "canceling statement due to lock timeout",
    "too many clients already",
    "terminating connection",
    "ObjectInUse",
    "LockNotAvailable",
    "57014",
    "(0800",
    "UndefinedTableError: ",
    "<class 'asyncpg.exceptions.UndefinedFunctionError'>: ",
    "SQLSTATE 42883 ",
    "error code: 42704",
    "DeadlockDetectedError ",
    "[40P01]",
    "asyncpg.exceptions.UniqueViolationError: ",
    "ConnectionDoesNotExistError: connection was closed",
    "QueryCanceledError: canceling statement due to statement timeout",
    "another operation is in progress",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(WORDS) | st.text(max_size=8), max_size=12))
def test_classification_equals_the_unfiltered_search(parts):
    haystack = "".join(parts)
    classify._classify_text.cache_clear()
    assert classify._classify_text(haystack, ()) == _reference(haystack, BUILTIN_RULES)


def test_user_rules_are_not_prefiltered_and_come_first():
    rule = CauseRule("pgcrypto", "pgcrypto missing", "install it", r"gen_random_\w+\(\)")
    cause = classify_failure("function gen_random_uuid() does not exist", "", (rule,))
    assert cause.key == "pgcrypto"


def test_long_hostile_text_is_classified_in_linear_time():
    import time

    hostile = "type a(" * 20_000 + 'duplicate key value violates unique constraint "' * 5_000
    started = time.perf_counter()
    classify_failure(hostile, "E   " + hostile)
    assert time.perf_counter() - started < 10
