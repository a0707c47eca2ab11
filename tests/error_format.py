"""The one shape of every DbTestActionError message: `<where>: <what>; <fix>` on one line, no final period.

Checked two ways: `tests/test_error_format.py` reads every message literal in src/ (ast), and conftest
records every DbTestActionError built while a test runs — in the test process and in the CLI subprocesses
started through `CLI` (which runs the real `db_test_action.cli.main` with the same recorder installed) — and
fails the test whose code produced a message of another shape. So a new bad-input path is checked as soon
as a test reaches it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from db_test_action.errors import DbTestActionError

LOG_ENV = "DTA_TEST_ERROR_LOG"  # not DB_TEST_ACTION_*: cli_env strips those, and this must reach subprocesses


def shape_problem(message: str) -> str | None:
    """Why `message` is not `<where>: <what>; <fix>` (None when it is)."""
    if "\n" in message or "\r" in message:
        return "spans several lines"
    where, sep, rest = message.partition(": ")
    if not sep or not where.strip():
        return "no `<where>: ` in front"
    what, sep, fix = rest.rpartition("; ")
    if not sep or not what.strip():
        return "no `; <fix>` part"
    if not fix.strip():
        return "an empty fix"
    if message.rstrip().endswith(".") and not message.rstrip().endswith(".."):
        return "ends with a period"
    return None


_recorded: list[str] = []
_original_init = DbTestActionError.__init__


def _recording_init(self: DbTestActionError, message: str, *args: object, **kwargs: object) -> None:
    _original_init(self, message, *args, **kwargs)  # type: ignore[arg-type]
    _recorded.append(str(message))
    log = os.environ.get(LOG_ENV)
    if log and os.getpid() != _test_pid:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(str(message)) + "\n")


_test_pid = -1


def install(*, in_test_process: bool) -> None:
    """Record every DbTestActionError message from now on (behaviour unchanged: the real __init__ runs)."""
    global _test_pid
    if in_test_process:
        _test_pid = os.getpid()
    DbTestActionError.__init__ = _recording_init  # type: ignore[method-assign]


def take_recorded(log: Path | None) -> list[str]:
    """The messages recorded since the last call: this process's, then the subprocesses' log file."""
    messages = list(_recorded)
    _recorded.clear()
    if log is not None and log.exists():
        messages += [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line]
        log.unlink()
    return messages


# The CLI as `python -m db_test_action` runs it, with the recorder installed first.
_CLI_CODE = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); import error_format; sys.path.pop(0); "
    "error_format.install(in_test_process=False); "
    "from db_test_action.cli import main; sys.exit(main())"
)
CLI = [sys.executable, "-c", _CLI_CODE, str(Path(__file__).resolve().parent)]
