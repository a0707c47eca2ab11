"""Shared vocabulary of the pipeline stages: closed sets as Enums, values as frozen dataclasses.

Every stage imports from here (and from earlier stages only), so a renderer, the JSON writer and the
publisher agree on one meaning of "error", "flaky" or "setup". Collections are tuples: a frozen
dataclass holding a list is not frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Outcome(str, Enum):
    """What one execution of one test phase ended as (a single <testcase> element)."""

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"
    XFAILED = "xfailed"


class Phase(str, Enum):
    SETUP = "setup"
    CALL = "call"
    TEARDOWN = "teardown"


class Level(str, Enum):
    """Severity for annotations (GitHub's notice/warning/error)."""

    NOTICE = "notice"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ParseProblem:
    """A result file we could not read completely; shown in the report, never dropped."""

    file: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Annotation:
    """One `::error file=…,line=…,title=…::message` line; `rank` orders them (lower = more important)."""

    level: Level
    title: str
    message: str
    file: str | None = None
    line: int | None = None
    rank: int = 100
