"""The report's configuration: the scalar settings from the one table (settings.py) plus the nested
tables only a TOML file can hold (`categories`, `budgets`, `classes`; budgets also from `--budget
KEY=VALUE`). Bad values raise one-line errors naming the file, table and key; unknown keys inside our
sub-tables are errors (typos).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from db_test_action.config.settings import TABLE, resolve, show
from db_test_action.config.values import parse_duration
from db_test_action.errors import DbTestActionError
from db_test_action.model import CategoryRule, CauseRule

_CLASS_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True, slots=True)
class Budgets:
    """Time budgets in seconds (None = not set). `warn_at` is the fraction that turns ok into warning."""

    suite_s: float | None = None
    suite_total_s: float | None = None
    average_test_s: float | None = None
    slowest_test_s: float | None = None
    categories: tuple[tuple[str, float], ...] = ()
    warn_at: float = 0.8
    regression_ratio: float = 0.2
    regression_min_s: float = 1.0

    def for_category(self, name: str) -> float | None:
        return dict(self.categories).get(name)


_BUDGET_KEYS = {
    "suite": "suite_s",
    "suite-total": "suite_total_s",
    "average-test": "average_test_s",
    "slowest-test": "slowest_test_s",
    "regression-min": "regression_min_s",
}
_RATIO_KEYS = {"warn-at": "warn_at", "regression-ratio": "regression_ratio"}


@dataclass(frozen=True, slots=True)
class ReportConfig:
    fail_on: tuple[str, ...] = ("errors", "failures")
    title: str = "Test results"
    expect_files: int | None = None
    details_per_cause: int = 5
    budgets: Budgets = Budgets()
    categories: tuple[CategoryRule, ...] = ()
    classes: tuple[CauseRule, ...] = ()


# --- pure resolution ----------------------------------------------------------------------------------


def resolve_report_config(
    flags: Mapping[str, Any], env: Mapping[str, str], table: Mapping[str, Any], where: str = "pyproject.toml"
) -> ReportConfig:
    """Merge the sources: `flags` holds parsed-or-raw CLI values (None = not given), keyed like SETTINGS."""
    values = resolve("report", flags, env, table, where)
    budgets = _budgets(table.get("budgets", {}), f"{where[:-1]}.budgets]" if where.endswith("]") else where)
    budgets = _apply_budget_flags(budgets, flags.get("budget") or ())
    return ReportConfig(
        budgets=budgets,
        categories=_categories(table.get("categories", {}), where),
        classes=_classes(table.get("classes", []), where),
        **values,
    )


def _ratio(raw: object, where: str) -> float:
    """A fraction like 0.8: finite and above 0 (nan would pass every comparison)."""
    try:
        ratio = float(str(raw))
    except ValueError:
        ratio = math.nan
    if not 0 < ratio < 10:
        raise DbTestActionError(f"{where}: {show(raw)} is not valid; use a fraction like 0.8")
    return ratio


def _duration(value: object, where: str, *, allow_zero: bool = False) -> float:
    """A budget in seconds; 0 only where it means something (regression-min: any slowdown counts),
    since a zero budget is always over."""
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise DbTestActionError(f'{where}: {show(value)} is not a duration; use 120 or "2m"') from None
    if seconds == 0 and not allow_zero:
        raise DbTestActionError(f"{where}: a budget of 0 is always over; give a duration above 0")
    return seconds


def _budgets(table: object, where: str) -> Budgets:
    if not isinstance(table, dict):
        raise DbTestActionError(f'{where}: must be a table of durations; write it as suite = "2m"')
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key in _BUDGET_KEYS:
            kwargs[_BUDGET_KEYS[key]] = _duration(value, f"{where} {key}", allow_zero=key == "regression-min")
        elif key in _RATIO_KEYS:
            kwargs[_RATIO_KEYS[key]] = _ratio(value, f"{where} {key}")
        elif key == "categories" and isinstance(value, dict):
            kwargs["categories"] = tuple(
                (
                    str(name),
                    _duration(v, f"{where[:-1]}.categories] {name}" if where.endswith("]") else where),
                )
                for name, v in value.items()
            )
        else:
            known = ", ".join([*_BUDGET_KEYS, *_RATIO_KEYS, "categories"])
            raise DbTestActionError(f"{where} {key}: unknown budget; use one of {known}")
    return Budgets(**kwargs)


def _apply_budget_flags(budgets: Budgets, items: Sequence[str]) -> Budgets:
    """`--budget suite=2m`, `--budget category.encryption=5s`: overrides the file's values."""
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        where = f"--budget {item}"
        if not sep:
            raise DbTestActionError(f"{where}: no `=` in it; use KEY=DURATION, e.g. suite=2m")
        if key.startswith("category."):
            name = key[len("category.") :].strip()
            if not name:
                raise DbTestActionError(f"{where}: no category name; use category.NAME=DURATION")
            cats = {**dict(budgets.categories), name: _duration(value, where)}
            budgets = replace(budgets, categories=tuple(cats.items()))
        elif key in _BUDGET_KEYS:
            budgets = replace(
                budgets, **{_BUDGET_KEYS[key]: _duration(value, where, allow_zero=key == "regression-min")}
            )
        elif key in _RATIO_KEYS:
            budgets = replace(budgets, **{_RATIO_KEYS[key]: _ratio(value, where)})
        else:
            raise DbTestActionError(
                f"{where}: unknown budget {key!r}; use suite, average-test, category.NAME, …"
            )
    return budgets


def _categories(table: object, where: str) -> tuple[CategoryRule, ...]:
    label = f"{where[:-1]}.categories]" if where.endswith("]") else f"{where} categories"
    if not isinstance(table, dict):
        raise DbTestActionError(f"{label}: must be a table; write it as name = [globs]")
    rules = []
    for name, patterns in table.items():
        items = [patterns] if isinstance(patterns, str) else patterns
        if not isinstance(items, list) or not all(isinstance(p, str) and p for p in items) or not items:
            raise DbTestActionError(
                f'{label} {name}: not a glob or a list of globs; use e.g. ["tests/test_auth*"]'
            )
        rules.append(CategoryRule(str(name), tuple(items)))
    return tuple(rules)


def _classes(items: object, where: str) -> tuple[CauseRule, ...]:
    label = f"{where[:-1]}.classes]" if where.endswith("]") else f"{where} classes"
    if not isinstance(items, list):
        raise DbTestActionError(f"{label}: must be an array of tables; write each as [[{TABLE}.classes]]")
    rules = []
    for i, item in enumerate(items):
        at = f"{label}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("pattern"), str) or not item.get("key"):
            raise DbTestActionError(f"{at}: key or pattern missing; give key and pattern (and title, hint)")
        key = str(item["key"])
        if not _CLASS_KEY_RE.match(key):
            raise DbTestActionError(
                f"{at} key: {key!r} is not a class key; use lowercase words joined by '-'"
            )
        try:
            re.compile(item["pattern"])
        except re.error as exc:
            raise DbTestActionError(
                f"{at} pattern: not a valid regex ({exc}); fix the regular expression"
            ) from None
        rules.append(
            CauseRule(key, str(item.get("title") or key), str(item.get("hint") or ""), item["pattern"])
        )
    return tuple(rules)
