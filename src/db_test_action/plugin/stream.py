"""The results stream: one JSON line per event, appended as tests run, so results survive a killed pytest.

Why: pytest writes its JUnit file once, at the end of the session. A suite stopped at a time limit that
ignores SIGINT is killed and writes no XML at all; every result it had is lost. Appending each event as
it happens (one `write()` of one line on an O_APPEND descriptor, so lines from the controller and the
xdist workers never interleave) keeps them on disk whatever happens next. `db-test-action report` reads
the stream when the JUnit file is missing or incomplete, and uses its start/fixture events to name what
a hung test and the holder of its lock were doing.

Events (`e`), all with `at` (epoch seconds) and `worker` (`gw0`…, `main` without xdist):
- `start` {node, timeout}: a test's protocol begins (written by the process that runs it); `timeout` is
  its per-test limit in seconds (pytest-timeout's, after markers) or null;
- `fixture` {node, fixture}: a fixture is being set up for that test (same process);
- `call` {node}: the test body starts (same process);
- `limit` {node, limit_s, token}: the per-test limit fired; the runner snapshots the server, then writes
  `<ack dir>/<token>`, which we wait for (bounded) before pytest-timeout fails the test, so the snapshot
  sees the test still waiting;
- `result` {node, outcome, phase, message, text, duration, attempt, file, line, started_at, finished_at,
  database}: the test's final outcome after teardown (written by the controller, which gets every
  worker's reports; without xdist the main process is both).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from db_test_action.contract import ENV_LIMIT_ACKS, ENV_RUN, ENV_SHARD, ENV_STREAM, MAIN_WORKER

__all__ = ["pytest_configure_result_stream"]

TEXT_LIMIT = 8000
ACK_WAIT_S = 10.0


@pytest.hookimpl(specname="pytest_configure")
def pytest_configure_result_stream(config: pytest.Config) -> None:
    path = os.environ.get(ENV_STREAM)
    if path and not config.pluginmanager.has_plugin(ResultStream.NAME):
        config.pluginmanager.register(ResultStream(config, path), ResultStream.NAME)


class ResultStream:
    """Appends the events above; one instance per pytest process."""

    NAME = "db_test_action_stream"

    def __init__(self, config: pytest.Config, path: str) -> None:
        self.config = config
        self.path = path
        self.worker = os.environ.get("PYTEST_XDIST_WORKER") or MAIN_WORKER
        self.is_controller = not hasattr(config, "workerinput")
        self.shard = os.environ.get(ENV_SHARD, "")
        self.run = os.environ.get(ENV_RUN, "")
        self.acks = os.environ.get(ENV_LIMIT_ACKS) or None
        self.current: str | None = None
        self._worst: dict[str, dict[str, Any]] = {}
        self._fd: int | None = None
        self._pid = 0

    def _write(self, event: str, **fields: Any) -> None:
        """One `write()` per line, unbuffered: what was written is on disk whatever kills us next."""
        line = json.dumps({"e": event, "at": round(time.time(), 6), **fields}, ensure_ascii=False) + "\n"
        with contextlib.suppress(OSError):  # a full disk must not fail the user's test
            if self._fd is None or self._pid != os.getpid():  # a forked child gets its own descriptor
                self._fd, self._pid = (
                    os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
                    os.getpid(),
                )
            os.write(self._fd, line.encode("utf-8", errors="replace"))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._fd is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    # --- the process that runs the test ------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
        self.current = item.nodeid
        self._write("start", node=item.nodeid, worker=self.worker, timeout=_item_timeout(item))
        try:
            return (yield)
        finally:
            self.current = None

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any):  # type: ignore[no-untyped-def]
        # Parametrize values arrive as pseudo-fixtures (pytest's get_direct_param_fixture_func): not ours to log.
        if (
            self.current is not None
            and getattr(fixturedef.func, "__name__", "") != "get_direct_param_fixture_func"
        ):
            self._write("fixture", node=self.current, worker=self.worker, fixture=fixturedef.argname)
        return (yield)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> None:
        self._write("call", node=item.nodeid, worker=self.worker)

    @pytest.hookimpl(wrapper=True, optionalhook=True)
    def pytest_timeout_set_timer(self, item: pytest.Item, settings: Any):  # type: ignore[no-untyped-def]
        """Wrap pytest-timeout's SIGALRM handler: tell the runner first, so it sees the test still waiting."""
        result = yield
        inner = signal.getsignal(signal.SIGALRM)
        if getattr(settings, "method", None) == "signal" and callable(inner):

            def handler(signum: int, frame: Any) -> None:
                __tracebackhide__ = True
                self._limit_reached(item, float(settings.timeout))
                inner(signum, frame)

            signal.signal(signal.SIGALRM, handler)
        return result

    def _limit_reached(self, item: pytest.Item, limit_s: float) -> None:
        token = os.urandom(16).hex()
        self._write("limit", node=item.nodeid, worker=self.worker, limit_s=limit_s, token=token)
        if not self.acks:
            return
        ack = Path(self.acks) / token
        deadline = time.monotonic() + ACK_WAIT_S
        while time.monotonic() < deadline and not ack.exists():
            time.sleep(0.05)

    # --- the controller ----------------------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self.is_controller:
            return
        props = dict(report.user_properties)
        worst = self._worst.setdefault(report.nodeid, {"outcome": "passed", "duration": 0.0})
        worst["duration"] += float(getattr(report, "duration", 0.0) or 0.0)
        outcome = _outcome_of(report)
        if _RANK[outcome] > _RANK[worst["outcome"]]:
            worst.update(
                outcome=outcome,
                phase=report.when if outcome in ("failed", "error", "rerun") else None,
                message=_message(report),
                text=(report.longreprtext or "")[-TEXT_LIMIT:],
            )
        if report.when != "teardown":
            return
        final = self._worst.pop(report.nodeid)
        path, line, _domain = report.location
        self._write(
            "result",
            node=report.nodeid,
            worker=str(props.get("worker") or _worker_of(report) or MAIN_WORKER),
            outcome=final["outcome"],
            phase=final.get("phase"),
            message=final.get("message", ""),
            text=final.get("text", ""),
            duration=round(final["duration"], 6),
            attempt=_int(props.get("attempt")),
            shard=_int(props.get("shard") or self.shard),
            run=_int(props.get("run") or self.run),
            file=path,
            line=(line + 1) if isinstance(line, int) else None,
            started_at=_float(props.get("started_at")),
            finished_at=_float(props.get("finished_at")),
            database=props.get("database") or None,
        )


_RANK = {"passed": 0, "skipped": 1, "xfailed": 1, "rerun": 2, "failed": 3, "error": 4}


def _outcome_of(report: pytest.TestReport) -> str:
    if report.outcome == "rerun":
        return "rerun"
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "passed"
    if report.failed:
        return "failed" if report.when == "call" else "error"
    if report.skipped:
        return "skipped"
    return "passed"


def _message(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])[:500]
    lines = [line.strip() for line in (report.longreprtext or "").splitlines() if line.strip()]
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    return ((errors or lines or [""])[-1])[:500]


def _worker_of(report: pytest.TestReport) -> str | None:
    node = getattr(report, "node", None)  # xdist's WorkerController on the controller side
    gateway = getattr(node, "gateway", None)
    return getattr(gateway, "id", None)


def _item_timeout(item: pytest.Item) -> float | None:
    """pytest-timeout's limit for this item (marker, option, ini, env), None without pytest-timeout."""
    try:
        import pytest_timeout
    except ImportError:
        return None
    try:
        value = pytest_timeout._get_item_settings(item).timeout
    except Exception:  # a private helper: never let its change break a user's run
        return None
    return float(value) if value else None


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _float(value: object) -> float | None:
    try:
        return float(str(value))
    except ValueError:
        return None
