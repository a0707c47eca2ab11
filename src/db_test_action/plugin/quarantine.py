"""`--quarantine FILE`: known-flaky tests run and are reported, but cannot fail the session. Inert otherwise.

The file is what `db-test-action stability --quarantine-out` writes: one node id per line, `#` comments.
An entry matches that node id, its parametrizations (`test_x[1]`) and, for a file or class, everything
below it (`tests/test_x.py`, `tests/test_x.py::TestC`).

Why not an `xfail(strict=False)` marker: xfail covers only the test body, and the flakes a nightly job
finds are mostly fixture errors in setup or teardown. So a failed report of a quarantined test, in any
phase, becomes what xfail makes of a failure (outcome skipped, `wasxfail` set): pytest counts it as
xfailed, the exit code ignores it, JUnit records `<skipped type="pytest.xfail" message="quarantined: …">`
with the original error line, and every quarantined test carries the JUnit property `quarantined=true`,
so the report can show them. Quarantined failures are not rerun (there is nothing to save).

Precedence: `--quarantine` > ini `db_quarantine` > `DB_TEST_ACTION_QUARANTINE`. The hooks are
re-exported from `db_test_action.plugin` under unique names (pluggy `specname`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from db_test_action.config.settings import first_source, parse_value, plugin_candidates, setting_for
from db_test_action.errors import DbTestActionError
from db_test_action.plugin.sources import ini, option

__all__ = ["pytest_addoption_quarantine", "pytest_configure_quarantine"]

PROPERTY = "quarantined"
QUARANTINE_HELP = (
    "File of node ids (one per line, '#' comments) whose failures are reported as xfailed instead of "
    "failing the run; written by `db-test-action stability --quarantine-out` (default: off)."
)


@dataclass(frozen=True, slots=True)
class QuarantineList:
    path: str
    ids: frozenset[str]

    def __contains__(self, node_id: str) -> bool:
        if node_id in self.ids:
            return True
        # `a.py::test_x[1]` → `a.py::test_x`; then each `::` parent up to the file.
        base = node_id.split("[", 1)[0]
        if base in self.ids:
            return True
        parts = base.split("::")
        return any("::".join(parts[:i]) in self.ids for i in range(1, len(parts)))


def parse_quarantine(text: str) -> frozenset[str]:
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )


@pytest.hookimpl(specname="pytest_addoption")
def pytest_addoption_quarantine(parser: pytest.Parser) -> None:
    group = parser.getgroup("db-test-action")
    group.addoption("--quarantine", dest="db_quarantine", metavar="FILE", help=QUARANTINE_HELP)
    parser.addini("db_quarantine", QUARANTINE_HELP, type="string", default=None)


@pytest.hookimpl(specname="pytest_configure")
def pytest_configure_quarantine(config: pytest.Config) -> None:
    setting = setting_for("plugin", "quarantine")
    try:
        found = first_source(plugin_candidates(option(config), ini(config), os.environ, setting))
    except DbTestActionError as exc:
        raise pytest.UsageError(str(exc)) from None
    if found is None or config.pluginmanager.has_plugin(Quarantine.NAME):
        return
    source, raw = found  # "--quarantine", "db_quarantine (ini)" or DB_TEST_ACTION_QUARANTINE
    value = parse_value(setting, raw, source)
    path = Path(value)
    if not path.is_absolute() and source.endswith("(ini)"):
        path = config.rootpath / path
    try:
        ids = parse_quarantine(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise pytest.UsageError(
            f"{source}: cannot read {value} ({reason}); pass the file from `stability --quarantine-out`"
        ) from None
    config.pluginmanager.register(Quarantine(QuarantineList(str(value), ids)), Quarantine.NAME)


class Quarantine:
    NAME = "db_test_action_quarantine"

    def __init__(self, quarantine: QuarantineList) -> None:
        self.quarantine = quarantine
        self.failed: list[str] = []

    def pytest_report_header(self) -> str:
        return f"quarantine: {len(self.quarantine.ids)} entries from {self.quarantine.path} (reported, not failing)"

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            if item.nodeid in self.quarantine:
                item.user_properties.append((PROPERTY, "true"))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
        report = yield
        if report.failed and (PROPERTY, "true") in item.user_properties:
            report.outcome = "skipped"
            report.wasxfail = f"quarantined ({report.when}): {_last_line(report)}"
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        reason = getattr(report, "wasxfail", "")
        if report.skipped and isinstance(reason, str) and reason.startswith("quarantined ("):
            self.failed.append(report.nodeid)

    def pytest_terminal_summary(self, terminalreporter) -> None:  # type: ignore[no-untyped-def]
        if self.failed and not hasattr(terminalreporter.config, "workerinput"):
            names = sorted(set(self.failed))
            terminalreporter.write_sep("-", f"{len(names)} quarantined tests failed (not blocking)")
            for name in names:
                terminalreporter.write_line(name)


def _last_line(report: pytest.TestReport) -> str:
    """The exception (`RuntimeError: duplicate key …`), so the report can still classify the cause."""
    crash = getattr(report.longrepr, "reprcrash", None)
    message = getattr(crash, "message", None)
    if isinstance(message, str) and message.strip():
        return message.strip().splitlines()[0][:500]
    text = str(report.longrepr or "")
    lines = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
    found = lines[0] if lines else (text.strip().splitlines() or [""])[-1]
    return found[:500]
