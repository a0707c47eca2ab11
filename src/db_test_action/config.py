"""`[tool.db-test-action]` settings, resolved once at the CLI edge: flag > DB_TEST_ACTION_* env > pyproject > default.

One table (`SETTINGS`) names each scalar setting's pyproject key, env variable and parser, so the flag,
the action input and the key stay the same word. Nested tables (`categories`, `budgets`, `classes`)
come only from the TOML file (budgets also from `--budget KEY=VALUE`). Bad values raise one-line
errors naming the file, table and key. Other commands may keep their own keys in the same table:
unknown keys, at the top of the table or inside our sub-tables, are errors (typos would otherwise pass
silently); durations and ratios must be finite (TOML allows nan and inf).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from db_test_action.errors import DbTestActionError
from db_test_action.model import CategoryRule, CauseRule

TABLE = "tool.db-test-action"
GATES = ("errors", "failures", "budgets", "flaky")
_DURATION_RE = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?!s))?\s*(?:(\d+(?:\.\d+)?)s)?"
                          r"\s*(?:(\d+(?:\.\d+)?)ms)?\s*$")  # fmt: skip
_CLASS_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def parse_duration(value: object) -> float:
    """Seconds from 120, 1.5, "90s", "2m", "1m30s", "500ms", "1h"; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:  # TOML's nan/inf: a budget that never fails
            raise ValueError(value)
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            if not math.isfinite(float(text)):
                raise ValueError(value)
            return float(text)
        match = _DURATION_RE.match(text)
        if match and text and any(match.groups()):
            h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
            seconds = h * 3600 + m * 60 + s + ms / 1000
            if not math.isfinite(seconds):  # "9999…9h" overflows to inf
                raise ValueError(value)
            return seconds
    raise ValueError(value)


def parse_fail_on(value: object) -> tuple[str, ...]:
    """`errors,failures` → ("errors", "failures"); "" or "none" → (); unknown gate → ValueError."""
    items = value if isinstance(value, list | tuple) else str(value).replace(" ", ",").split(",")
    gates = tuple(dict.fromkeys(str(i).strip().lower() for i in items if str(i).strip()))
    if gates == ("none",):
        return ()
    bad = [g for g in gates if g not in GATES]
    if bad:
        raise ValueError(value)
    return gates


def _positive_int(value: object) -> int:
    number = int(str(value))
    if number < 1:
        raise ValueError(value)
    return number


@dataclass(frozen=True, slots=True)
class Setting:
    key: str
    env: str
    parse: Callable[[object], Any]
    default: Any
    expected: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "fail-on", "DB_TEST_ACTION_FAIL_ON", parse_fail_on, ("errors", "failures"), 'e.g. "errors,failures"'
    ),
    Setting("title", "DB_TEST_ACTION_TITLE", str, "Test results", "a string"),
    Setting("expect-files", "DB_TEST_ACTION_EXPECT_FILES", _positive_int, None, "a whole number ≥ 1"),
    Setting("details-per-cause", "DB_TEST_ACTION_DETAILS_PER_CAUSE", _positive_int, 5, "a whole number ≥ 1"),
)


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
# Every key the commands read from the table: SETTINGS, the sub-tables, and `stability` (its command).
TOP_LEVEL_KEYS = frozenset({*(s.key for s in SETTINGS), "budgets", "categories", "classes", "stability"})


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
    unknown = sorted(str(k) for k in table if k not in TOP_LEVEL_KEYS)
    if unknown:
        raise DbTestActionError(
            f"{where}: unknown key {unknown[0]!r}; use one of {', '.join(sorted(TOP_LEVEL_KEYS))}"
        )
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        attr = setting.key.replace("-", "_")
        for source, raw in (
            (f"--{setting.key}", flags.get(setting.key)),
            (setting.env, env.get(setting.env) or None),
            (f"{where} {setting.key}", table.get(setting.key)),
        ):
            if raw is not None:
                values[attr] = _parse(setting.parse, raw, source, setting.expected)
                break
        else:
            values[attr] = setting.default
    budgets = _budgets(table.get("budgets", {}), f"{where[:-1]}.budgets]" if where.endswith("]") else where)
    budgets = _apply_budget_flags(budgets, flags.get("budget") or ())
    return ReportConfig(
        budgets=budgets,
        categories=_categories(table.get("categories", {}), where),
        classes=_classes(table.get("classes", []), where),
        **values,
    )


def _parse(parse: Callable[[object], Any], raw: object, where: str, expected: str) -> Any:
    try:
        return parse(raw)
    except (ValueError, TypeError):
        raise DbTestActionError(f"{where}: {_show(raw)} is not valid; use {expected}") from None


def _duration(value: object, where: str, *, allow_zero: bool = False) -> float:
    """A budget in seconds; 0 only where it means something (regression-min: any slowdown counts),
    since a zero budget is always over."""
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise DbTestActionError(f'{where}: {_show(value)} is not a duration; use 120 or "2m"') from None
    if seconds == 0 and not allow_zero:
        raise DbTestActionError(f"{where}: a budget of 0 is always over; give a duration above 0")
    return seconds


def _show(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _ratio(value: object, where: str) -> float:
    """A fraction such as warn-at 0.8: finite and in (0, 10) (nan would make every comparison false)."""
    if isinstance(value, bool):
        raise DbTestActionError(f"{where}: {_show(value)} is not valid; use a fraction like 0.8")
    ratio = _parse(float, value, where, "a fraction like 0.8")
    if not 0 < ratio < 10:  # also false for nan
        raise DbTestActionError(f"{where}: {_show(value)} is out of range; use a fraction like 0.8")
    return ratio


def _budgets(table: object, where: str) -> Budgets:
    if not isinstance(table, dict):
        raise DbTestActionError(f"{where}: must be a table of durations")
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
    from dataclasses import replace

    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        where = f"--budget {item}"
        if not sep:
            raise DbTestActionError(f"{where}: expected KEY=DURATION, e.g. suite=2m")
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
        raise DbTestActionError(f"{label}: must be a table of name = [globs]")
    rules = []
    for name, patterns in table.items():
        items = [patterns] if isinstance(patterns, str) else patterns
        if not isinstance(items, list) or not all(isinstance(p, str) and p for p in items) or not items:
            raise DbTestActionError(
                f'{label} {name}: expected a glob or a list of globs, e.g. ["tests/test_auth*"]'
            )
        rules.append(CategoryRule(str(name), tuple(items)))
    return tuple(rules)


def _classes(items: object, where: str) -> tuple[CauseRule, ...]:
    label = f"{where[:-1]}.classes]" if where.endswith("]") else f"{where} classes"
    if not isinstance(items, list):
        raise DbTestActionError(f"{label}: must be an array of tables ([[{TABLE}.classes]])")
    rules = []
    for i, item in enumerate(items):
        at = f"{label}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("pattern"), str) or not item.get("key"):
            raise DbTestActionError(f"{at}: needs key and pattern (and title, hint)")
        key = str(item["key"])
        if not _CLASS_KEY_RE.match(key):
            raise DbTestActionError(f"{at} key: {key!r} must be lowercase words joined by '-'")
        try:
            re.compile(item["pattern"])
        except re.error as exc:
            raise DbTestActionError(f"{at} pattern: not a valid regex ({exc})") from None
        rules.append(
            CauseRule(key, str(item.get("title") or key), str(item.get("hint") or ""), item["pattern"])
        )
    return tuple(rules)
