"""pytest hooks the runner turns on through environment variables; inert otherwise.

Why environment variables and not options: the plugin is loaded through the `pytest11` entry point in
every pytest run where the package is installed, and xdist workers inherit the environment but not
options we would have to add to every user's command line. With none of the variables set, every hook
returns at once and nothing is registered.

What it does for `db-test-action run`:
- tags every test report with JUnit properties `shard`, `run`, `attempt` (pytest-rerunfailures'
  `item.execution_count`) and `worker` (xdist's `gw0`…, `main` without xdist), and the <testsuite>
  with `shard` and `run`, so the reporter can group repeats, reruns and workers; an attempt that
  failed also gets `attempt_failure` ("setup: <exception line>"), because rerunfailures writes a
  rerun attempt as an empty <testcase>;
- keeps only this shard's tests (`DB_TEST_ACTION_PLUGIN_SELECT`, a JSON list of node ids), deselecting the
  rest through pytest's own `pytest_deselected`, so the user's arguments and ordering stay untouched;
- writes the collected node ids (`DB_TEST_ACTION_PLUGIN_COLLECT`) for the shard split;
- appends one line per finished test (`DB_TEST_ACTION_PLUGIN_PROGRESS`) for the runner's progress line.

The one module-level hook is re-exported from `db_test_action.plugin` under a unique name (pluggy's
`specname`), so two modules star-imported into one plugin module cannot overwrite each other's
`pytest_configure`.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from db_test_action.contract import (
    ENV_COLLECT,
    ENV_FIXTURES,
    ENV_PROGRESS,
    ENV_RUN,
    ENV_SELECT,
    ENV_SHARD,
    MAIN_WORKER,
    RUNNER_ENV,
    application_name,
)

__all__ = ["pytest_configure_junit_tags"]


def _is_active() -> bool:
    return any(os.environ.get(name) for name in RUNNER_ENV)


@pytest.hookimpl(specname="pytest_configure")
def pytest_configure_junit_tags(config: pytest.Config) -> None:
    """Register the real hooks only when the runner asked for them (see module docstring)."""
    if _is_active() and not config.pluginmanager.has_plugin(JunitTagger.NAME):
        config.pluginmanager.register(JunitTagger(config), JunitTagger.NAME)


class JunitTagger:
    """The runner-facing hooks; one instance per pytest process (controller and each xdist worker)."""

    NAME = "db_test_action_junit"

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.shard = os.environ.get(ENV_SHARD, "")
        self.run = os.environ.get(ENV_RUN, "")
        self.worker = os.environ.get("PYTEST_XDIST_WORKER") or MAIN_WORKER
        # xdist workers get `workerinput`; the controller alone writes files and suite properties.
        self.is_controller = not hasattr(config, "workerinput")
        self.progress_path = os.environ.get(ENV_PROGRESS) or None
        self._worst: dict[str, str] = {}
        self._attempt_failure: dict[tuple[str, int], str] = {}
        self._started: dict[tuple[str, int], float] = {}
        self.user_appname = os.environ.get("PGAPPNAME")
        # The fixture doctor: which fixture ran when (setup, and teardown as the gaps between finalizers).
        self.record_fixtures = bool(os.environ.get(ENV_FIXTURES))
        self._spans: list[list[object]] = []
        self._teardown_mark = 0.0

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        path = os.environ.get(ENV_SELECT)
        if not path:
            return
        wanted = set(json.loads(Path(path).read_text(encoding="utf-8")))
        keep = [item for item in items if item.nodeid in wanted]
        dropped = [item for item in items if item.nodeid not in wanted]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """The collected ids for the runner (its collection pass, or a single shard's first run). Without
        xdist the controller collects; under xdist only the workers do, all the same ids: gw0 writes."""
        path = os.environ.get(ENV_COLLECT)
        if not path:
            return
        distributing = self.config.pluginmanager.has_plugin("dsession")  # xdist's controller side
        if (self.is_controller and distributing) or (not self.is_controller and self.worker != "gw0"):
            return
        partial = Path(f"{path}.{os.getpid()}")
        partial.write_text(json.dumps([item.nodeid for item in session.items]), encoding="utf-8")
        partial.replace(path)  # whole or absent: the runner may look while a worker writes

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """<testsuite> properties, like record_testsuite_property but also under xdist (controller side)."""
        if not self.is_controller or not (self.shard or self.run):
            return
        for plugin in self.config.pluginmanager.get_plugins():
            # junitxml registers its LogXML object as a plugin; duck-typed to avoid importing _pytest.
            if callable(getattr(plugin, "add_global_property", None)) and hasattr(plugin, "logfile"):
                for name, value in (("shard", self.shard), ("run", self.run)):
                    if value:
                        plugin.add_global_property(name, value)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
        report = yield
        attempt = getattr(item, "execution_count", None) or 1
        values = {"shard": self.shard, "run": self.run, "attempt": str(attempt), "worker": self.worker}
        # pytest-rerunfailures leaves a rerun attempt as an empty <testcase>: keep what failed in it.
        key = (item.nodeid, attempt)
        if report.failed and key not in self._attempt_failure:
            # exconly() names the exception exactly (psycopg's `UniqueViolation`, not its DETAIL line).
            first = call.excinfo.exconly().strip().splitlines()[:1] if call.excinfo is not None else []
            line = first[0][:500] if first else _last_line(report.longreprtext)
            self._attempt_failure[key] = f"{report.when}: {line}"
        if key in self._attempt_failure:
            values["attempt_failure"] = self._attempt_failure[key]
        # Wall-clock window and database of this attempt: what ties the server's log lines to the test.
        if report.when == "setup":
            self._started[key] = call.start
        if report.when == "teardown":
            self._attempt_failure.pop(key, None)
            if self.record_fixtures:
                values["fixtures"] = json.dumps(self._spans, separators=(",", ":"))
                self._spans = []
            values["started_at"] = f"{self._started.pop(key, call.start):.6f}"
            values["finished_at"] = f"{call.stop:.6f}"
            values["database"] = _database_name(os.environ.get("DATABASE_URL", ""))
        props = [(k, v) for k, v in report.user_properties if k not in values]
        props += [(k, v) for k, v in values.items() if v]
        report.user_properties = props
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
        """Name libpq connections after the test (`gw0 tests/x.py::test_y`, cut to 63 bytes) through
        PGAPPNAME, so the server log names the test — unless the suite set PGAPPNAME itself. Drivers
        that ignore PGAPPNAME (asyncpg) are matched by database and time window instead."""
        if self.user_appname is not None:
            return (yield)
        os.environ["PGAPPNAME"] = application_name(self.worker, item.nodeid)
        try:
            return (yield)
        finally:
            os.environ.pop("PGAPPNAME", None)

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):  # type: ignore[no-untyped-def]
        if not self.record_fixtures:
            return (yield)
        start = time.time()
        try:
            return (yield)
        finally:
            where = _fixture_location(fixturedef, self.config)
            if where is not None:
                self._spans.append([fixturedef.argname, fixturedef.scope, where, "setup", start, time.time()])

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
        self._teardown_mark = time.time()
        return (yield)

    def pytest_fixture_post_finalizer(self, fixturedef, request) -> None:  # type: ignore[no-untyped-def]
        """Finalizers run one after another: a fixture's teardown is the time since the previous one ended."""
        if not self.record_fixtures or not self._teardown_mark or fixturedef.cached_result is None:
            return
        where = _fixture_location(fixturedef, self.config)
        now = time.time()
        if where is not None:
            self._spans.append(
                [fixturedef.argname, fixturedef.scope, where, "teardown", self._teardown_mark, now]
            )
        self._teardown_mark = now

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self.progress_path or not self.is_controller:
            return
        outcome = _outcome_of(report)
        previous = self._worst.get(report.nodeid, "passed")
        if _RANK[outcome] > _RANK[previous]:
            self._worst[report.nodeid] = outcome
        if report.when == "teardown":
            final = self._worst.pop(report.nodeid, "passed")
            with open(self.progress_path, "a", encoding="utf-8") as fh:
                fh.write(f"{final}\n")


def _fixture_location(fixturedef, config: pytest.Config) -> str | None:  # type: ignore[no-untyped-def]
    """`conftest.py:45` for the suite's own fixtures; None for plugins' (site-packages, pytest's own)."""
    func = inspect.unwrap(getattr(fixturedef, "func", None) or (lambda: None))
    code = getattr(func, "__code__", None)
    path = code.co_filename if code is not None else ""
    if not path or "site-packages" in path or path.startswith("<"):
        return None
    try:
        shown = os.path.relpath(path, config.invocation_params.dir)
    except ValueError:
        shown = path
    return f"{shown}:{code.co_firstlineno}"


def _database_name(url: str) -> str:
    path = urlsplit(url).path.lstrip("/")
    return unquote(path) if url else ""


def _last_line(text: str) -> str:
    """The exception line of a longrepr (`E   asyncpg…Error: …`), else its last line; at most 500 chars."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    named = [line for line in errors if _EXC_RE.match(line)]  # not SQLAlchemy's "(Background on …)"
    return ((named or errors or lines or [""])[-1])[:500]


_EXC_RE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failed)\b")


_RANK = {"passed": 0, "skipped": 1, "rerun": 2, "failed": 3, "error": 4}


def _outcome_of(report: pytest.TestReport) -> str:
    if report.outcome == "rerun":
        return "rerun"
    if report.failed:
        return "failed" if report.when == "call" else "error"
    if report.skipped:
        return "skipped"
    return "passed"
