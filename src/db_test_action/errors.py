"""The one exception type the CLI turns into a one-line message and an exit code.

Every layer raises this (never prints and exits) so library callers can catch it and
the CLI alone decides how it looks. Messages follow `<where>: <what>; <fix>`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE = 1  # a gate failed: tests, budgets, flaky (see --fail-on)
EXIT_USAGE = 2  # bad arguments or bad input files
EXIT_ENV = 3  # the environment: Postgres missing or unreachable, GitHub refused
EXIT_INTERNAL = 4  # a bug of ours; --debug shows the traceback


class DbTestActionError(Exception):
    """A problem the user can fix; `str(err)` is the whole one-line message."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def first_line(exc: BaseException) -> str:
    """A driver's error in one line: its first (libpq puts DETAIL/HINT below), or its type when empty."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
