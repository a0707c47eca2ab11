"""Value parsers shared by every setting: each takes a raw value (a flag's text, an environment string or a
native TOML/ini value) and returns the typed value or raises ValueError. The resolver turns that into one
line naming where the value came from; the parsers themselves never know the source.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

TRUE = frozenset(("1", "true", "yes", "on"))
FALSE = frozenset(("", "0", "false", "no", "off"))
REPORT_GATES = ("errors", "failures", "budgets", "flaky")
STABILITY_GATES = ("consecutive", "broken", "newly-flaky", "flaky")
RESET_MODES = ("truncate", "clone")  # plugin.template.ResetMode's values

_DURATION_RE = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?!s))?\s*(?:(\d+(?:\.\d+)?)s)?"
                          r"\s*(?:(\d+(?:\.\d+)?)ms)?\s*$")  # fmt: skip


def parse_bool(value: object) -> bool:
    """The one boolean parser: native booleans, and 1/true/yes/on or 0/false/no/off/'' in any case."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ValueError(value)


def parse_duration(value: object) -> float:
    """Seconds from 120, 1.5, "90s", "2m", "1m30s", "500ms", "1h"; ValueError otherwise (nan/inf too)."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(value)
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            return float(text)
        match = _DURATION_RE.match(text)
        if match and text and any(match.groups()):
            h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
            return h * 3600 + m * 60 + s + ms / 1000
    raise ValueError(value)


def _gates(known: tuple[str, ...]) -> Callable[[object], tuple[str, ...]]:
    def parse(value: object) -> tuple[str, ...]:
        items = value if isinstance(value, list | tuple) else str(value).replace(" ", ",").split(",")
        gates = tuple(dict.fromkeys(str(i).strip().lower() for i in items if str(i).strip()))
        if gates == ("none",):
            return ()
        if any(g not in known for g in gates):
            raise ValueError(value)
        return gates

    return parse


parse_fail_on = _gates(REPORT_GATES)
"""`errors,failures` → ("errors", "failures"); "" or "none" → (); an unknown gate → ValueError."""
parse_stability_gates = _gates(STABILITY_GATES)


def whole(minimum: int) -> Callable[[object], int]:
    """A whole number ≥ minimum (no floats, no booleans)."""

    def parse(value: object) -> int:
        if isinstance(value, bool | float):
            raise ValueError(value)
        number = int(str(value).strip())
        if number < minimum:
            raise ValueError(value)
        return number

    return parse


def seconds(value: object) -> float:
    """A finite, non-negative number of seconds: nan and inf would lift a cap."""
    if isinstance(value, bool):
        raise ValueError(value)
    number = float(str(value).strip())
    if not math.isfinite(number) or number < 0:
        raise ValueError(value)
    return number


def choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(value)
        return text

    return parse


def text(value: object) -> str:
    """A string; a TOML array joins with commas."""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def env_name(value: object) -> str:
    name = str(value).strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(value)
    return name


def names(value: object) -> tuple[str, ...]:
    """`a,b c` or a TOML/ini list → ("a", "b", "c")."""
    items = value if isinstance(value, list | tuple) else str(value).replace(",", " ").split()
    return tuple(str(i).strip() for i in items if str(i).strip())


def repository(value: object) -> str:
    name = str(value).strip()
    if name.count("/") != 1 or not all(name.split("/")):
        raise ValueError(value)
    return name
