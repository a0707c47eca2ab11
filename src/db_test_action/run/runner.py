"""Run the user's pytest as subprocesses: collect, shard, one fresh database per run, repeat, clean up.

Why subprocesses and not pytest.main(): the user's conftest, plugins and imports must not live in our
process (an import error there must become a result file, not our crash), each repeat must be a
whole new session, and SIGTERM must be able to stop the run and still drop the databases.

Files in the results dir, per shard I and run K: `shard-I-run-K.xml` (JUnit, always written — by pytest,
or by us when pytest crashed or had nothing to run), `shard-I-run-K.log` (pytest's output) and
`manifest.json` (every node id → its shard; identical on every shard; plus which server ran the tests
and the name of its log, `server-shard-I.jsonl`, which commands/run.py writes when the server is ours).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psycopg
from psycopg import sql

from db_test_action.contract import ENV_COLLECT, ENV_PROGRESS, ENV_RUN, ENV_SELECT, ENV_SHARD
from db_test_action.errors import EXIT_ENV, EXIT_GATE, EXIT_USAGE, DbTestActionError
from db_test_action.run.files import clean_tail, crash_reason, synthetic_junit, write_manifest
from db_test_action.run.sharding import split_tests
from db_test_action.server.launch import ServerInfo, redact

PYTEST_EXIT = {
    0: "ok",
    1: "tests failed",
    2: "interrupted",
    3: "internal error",
    4: "usage error",
    5: "no tests",
}


@dataclass(frozen=True, slots=True)
class RunPlan:
    pytest_args: tuple[str, ...] = ()
    shard: int = 1
    shards: int = 1
    repeat: int = 1
    until_failure: bool = False
    reruns: int = 0
    workers: str | None = None  # "2", "auto"; None = no xdist
    durations: Mapping[str, float] = dataclasses.field(default_factory=dict)
    results_dir: Path = Path("test-results")
    group_scopes: bool = True
    python: str = sys.executable
    show_output: bool = False  # stream pytest's output (CI logs); otherwise only the log file
    progress_tty: bool = False  # redraw one progress line on stderr
    # For the manifest: whether the server is ours ("ours"/"external") and the server log file we write
    # into the results dir (None: external server or --no-server-log), so `report` can say why a run has
    # no server evidence.
    server: str = "ours"
    server_log: str | None = None


@dataclass(frozen=True, slots=True)
class RunOutcome:
    run: int
    exit_code: int  # pytest's, or ours for a crash
    junit: Path
    database: str | None
    duration_s: float
    counts: tuple[tuple[str, int], ...]
    crash: str | None = None  # one-line reason when pytest crashed or ran nothing


def results_name(shard: int, run: int, suffix: str = "xml") -> str:
    return f"shard-{shard}-run-{run}.{suffix}"


def database_name(shard: int, run: int) -> str:
    """Unique per invocation (two jobs may share an external server), lower-case, well under 63 bytes."""
    return f"dta_s{shard}_r{run}_{secrets.token_hex(4)}"


# --- pytest command lines ------------------------------------------------------------------------------


def _needs_explicit_plugins(env: Mapping[str, str]) -> bool:
    # With autoload on, `-p db_test_action.plugin` fails with "Plugin already registered".
    return bool(env.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"))


def pytest_command(plan: RunPlan, junit: Path, env: Mapping[str, str]) -> list[str]:
    cmd = [plan.python, "-m", "pytest", *plan.pytest_args, f"--junitxml={junit}"]
    if not any("junit_family" in a for a in plan.pytest_args):
        cmd += ["-o", "junit_family=xunit1"]  # keeps file= and line= on <testcase>; properties either way
    explicit = _needs_explicit_plugins(env)
    if explicit:
        cmd += ["-p", "db_test_action.plugin"]
    if plan.workers:
        cmd += (["-p", "xdist.plugin"] if explicit else []) + ["-n", plan.workers]
    if plan.reruns:
        cmd += (["-p", "pytest_rerunfailures"] if explicit else []) + ["--reruns", str(plan.reruns)]
    return cmd


def collect_command(plan: RunPlan, env: Mapping[str, str]) -> list[str]:
    cmd = [plan.python, "-m", "pytest", *plan.pytest_args, "--collect-only", "-q"]
    if _needs_explicit_plugins(env):
        cmd += ["-p", "db_test_action.plugin"]
    if any(
        a in ("-n", "--numprocesses") or a.startswith(("-n", "--numprocesses=")) for a in plan.pytest_args
    ):
        cmd += ["-n", "0"]  # collect in one process; the shard's own run may still use xdist
    return cmd


# --- databases -----------------------------------------------------------------------------------------


class Databases:
    """Creates and drops the per-run databases on one server (ours or an external one)."""

    def __init__(self, info: ServerInfo, *, owns_server: bool) -> None:
        self.info = info
        self.admin_db, self.template, self.major = self._inspect(owns_server)

    def _inspect(self, owns_server: bool) -> tuple[str, str, int]:
        if owns_server:
            return "postgres", "template1", self.info.version or 13  # we put the extensions in template1
        for admin in ("postgres", "template1", self.info.database):
            with contextlib.suppress(psycopg.OperationalError):
                with psycopg.connect(self.info.url(admin), autocommit=True, connect_timeout=10) as conn:
                    row = conn.execute(
                        "SELECT rolsuper, rolcreatedb, current_setting('server_version_num')::int "
                        "FROM pg_roles WHERE rolname = current_user"
                    ).fetchone()
                assert row is not None
                if not (row[0] or row[1]):
                    raise DbTestActionError(
                        f"--database-url {redact(self.info.url())}: user {self.info.user!r} may not create "
                        "databases; grant CREATEDB (one fresh database per run needs it)",
                        EXIT_ENV,
                    )
                if admin == self.info.database and not row[0]:
                    raise DbTestActionError(
                        f"--database-url {redact(self.info.url())}: cannot reach the postgres or template1 "
                        f"database to clone {self.info.database!r} from outside it; allow connecting to postgres",
                        EXIT_ENV,
                    )
                # A superuser got the extensions in template1 (use_external); otherwise they live in the
                # target database only, so clone that (CREATE DATABASE … TEMPLATE needs it idle).
                return admin, ("template1" if row[0] else self.info.database), row[2] // 10000
        raise DbTestActionError(
            f"--database-url {redact(self.info.url())}: cannot connect; check the URL and that the server is up",
            EXIT_ENV,
        )

    def create(self, name: str) -> str:
        stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(self.template)
        )
        try:
            with psycopg.connect(self.info.url(self.admin_db), autocommit=True, connect_timeout=10) as conn:
                conn.execute(stmt)
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            fix = (
                f"close other sessions on {self.template!r} (a database used as a template must be idle)"
                if "being accessed by other users" in first
                else "check the server and the user's rights"
            )
            raise DbTestActionError(f"create database {name}: {first}; {fix}", EXIT_ENV) from None
        return self.info.url(name)

    def drop(self, name: str) -> str | None:
        """Drop a run's database; a failure is returned (and reported), never raised over the outcome."""
        force = sql.SQL(" WITH (FORCE)") if self.major >= 13 else sql.SQL("")
        stmt = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)) + force
        try:
            with psycopg.connect(self.info.url(self.admin_db), autocommit=True, connect_timeout=10) as conn:
                if self.major < 13:
                    conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
                    )
                conn.execute(stmt)
        except psycopg.Error as exc:
            return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return None


# --- the subprocess ------------------------------------------------------------------------------------


class _Child:
    """pytest in its own session (so its xdist workers can be stopped as a group), output teed to a log."""

    def __init__(self, cmd: list[str], env: Mapping[str, str], log: Path, show: IO[str] | None) -> None:
        self.log = log
        self._fh = open(log, "w", encoding="utf-8", errors="replace")  # noqa: SIM115 (closed in wait)
        try:
            self.proc = subprocess.Popen(
                cmd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                text=True, errors="replace", start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            self._fh.close()
            raise DbTestActionError(
                f"run: cannot start {cmd[0]} ({exc.strerror}); check --python", EXIT_USAGE
            ) from None
        self._reader = threading.Thread(target=self._pump, args=(show,), daemon=True)
        self._reader.start()

    def _pump(self, show: IO[str] | None) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._fh.write(line)
            if show is not None:
                show.write(line)
                show.flush()

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGINT first (pytest writes its JUnit file on KeyboardInterrupt), then SIGKILL to the group."""
        if self.proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait_s)
                return

    def finish(self) -> str:
        self.proc.wait()
        self._reader.join(timeout=10)
        self._fh.close()
        return self.log.read_text(encoding="utf-8", errors="replace")


# --- orchestration -------------------------------------------------------------------------------------


Reporter = Callable[[str], None]


def collect_node_ids(plan: RunPlan, env: Mapping[str, str]) -> tuple[tuple[str, ...] | None, int, str]:
    """Node ids in collection order, or None with pytest's exit code and output when collection failed."""
    with tempfile.TemporaryDirectory(prefix="dta-collect-") as tmp:
        target = Path(tmp) / "ids.json"
        cmd = collect_command(plan, env)
        child_env = {**env, ENV_COLLECT: str(target)}
        try:
            out = subprocess.run(
                cmd, env=child_env, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL,
                check=False,
            )  # fmt: skip
        except OSError as exc:
            raise DbTestActionError(
                f"run: cannot start {cmd[0]} ({exc.strerror}); check --python", EXIT_USAGE
            ) from None
        output = out.stdout + out.stderr
        if out.returncode not in (0, 5) or not target.exists():
            return None, out.returncode, output
        return tuple(json.loads(target.read_text(encoding="utf-8"))), out.returncode, output


def run_shard(
    plan: RunPlan, info: ServerInfo, databases: Databases, say: Reporter, progress: IO[str] | None = None
) -> tuple[int, tuple[RunOutcome, ...]]:
    """Everything after the server is up; returns (exit code, outcomes). Raises only for our own errors."""
    results = plan.results_dir
    results.mkdir(parents=True, exist_ok=True)
    base_env = {**os.environ, **info.env(), ENV_SHARD: str(plan.shard)}
    node_ids, code, output = collect_node_ids(plan, base_env)
    if node_ids is None or not node_ids:
        return _collection_failed(plan, code, output, say)
    split = split_tests(node_ids, plan.durations, plan.shards, group_scopes=plan.group_scopes)
    write_manifest(results, split, plan.repeat, plan.server, plan.server_log, plan.until_failure)
    mine = split.shards[plan.shard - 1].node_ids
    if not mine:
        note = (
            f"shard {plan.shard} of {plan.shards} has no tests: only {len(node_ids)} collected, "
            "fewer than shards; nothing to run"
        )
        for run in range(1, plan.repeat + 1):
            (results / results_name(plan.shard, run)).write_text(synthetic_junit(plan.shard, run, note=note))
        say(f"note: {note}")
        return 0, ()
    say(
        f"shard {plan.shard}/{plan.shards}: {len(mine)} of {len(node_ids)} tests "
        f"(predicted {split.shards[plan.shard - 1].predicted_s:.1f}s, units: {split.unit})"
    )
    with tempfile.TemporaryDirectory(prefix="dta-run-") as tmp:
        select = Path(tmp) / "select.json"
        select.write_text(json.dumps(list(mine)), encoding="utf-8")
        outcomes: list[RunOutcome] = []
        worst = 0
        for run in range(1, plan.repeat + 1):
            outcome = _one_run(plan, run, info, databases, base_env, select, Path(tmp), say, progress)
            outcomes.append(outcome)
            worst = worse_exit(worst, outcome.exit_code)
            if outcome.crash:
                break  # a crash repeats identically; say it once
            if plan.until_failure and outcome.exit_code != 0:
                say(f"--until-failure: stopping after run {run} of {plan.repeat}")
                break
    return worst, tuple(outcomes)


def worse_exit(a: int, b: int) -> int:
    """pytest's worst exit: anything abnormal (2-4, killed) over test failures (1) over ok (0)."""
    rank = {0: 0, 1: 1}
    return a if rank.get(a, 2) >= rank.get(b, 2) else b


def _collection_failed(
    plan: RunPlan, code: int, output: str, say: Reporter
) -> tuple[int, tuple[RunOutcome, ...]]:
    junit = plan.results_dir / results_name(plan.shard, 1)
    log = plan.results_dir / results_name(plan.shard, 1, "log")
    log.write_text(output, encoding="utf-8")
    if code in (0, 5):
        reason = "no tests collected (pytest exit 5); check the paths and -k/-m filters"
        name = "collection found no tests"
    else:
        reason = f"collection failed (pytest exit {code}: {PYTEST_EXIT.get(code, 'crashed')}): {crash_reason(output)}"
        name = f"collection failed (pytest exit {code})"
    junit.write_text(
        synthetic_junit(plan.shard, 1, error=(name, reason, clean_tail(output))), encoding="utf-8"
    )
    raise DbTestActionError(f"run: {reason}; see {log}", EXIT_USAGE if code == 4 else EXIT_GATE)


def _one_run(
    plan: RunPlan, run: int, info: ServerInfo, databases: Databases, base_env: Mapping[str, str],
    select: Path, tmp: Path, say: Reporter, progress: IO[str] | None,
) -> RunOutcome:  # fmt: skip
    junit = plan.results_dir / results_name(plan.shard, run)
    log = plan.results_dir / results_name(plan.shard, run, "log")
    junit.unlink(missing_ok=True)
    progress_file = tmp / f"progress-{run}"
    progress_file.write_text("")
    name = database_name(plan.shard, run)
    started = time.monotonic()
    databases.create(name)
    try:
        db_info = dataclasses.replace(info, database=name)
        env = {
            **base_env,
            **db_info.env(),
            ENV_RUN: str(run),
            ENV_SELECT: str(select),
            ENV_PROGRESS: str(progress_file),
        }
        label = f"shard {plan.shard}/{plan.shards} run {run}/{plan.repeat}"
        say(f"{label}: pytest on database {name}")
        child = _Child(pytest_command(plan, junit, env), env, log, sys.stdout if plan.show_output else None)
        try:
            while child.poll() is None:
                if progress is not None:
                    _draw(progress, label, _count(progress_file), time.monotonic() - started)
                time.sleep(0.2)
        finally:
            child.stop()
            output = child.finish()
    finally:
        problem = databases.drop(name)
        if problem:
            say(f"warning: drop database {name}: {problem}; drop it by hand")
    code = child.proc.returncode
    counts = _count(progress_file)
    elapsed = time.monotonic() - started
    if progress is not None:
        progress.write("\r\x1b[K")
    crash = _check_result(plan, run, code, output, junit, log)
    summary = ", ".join(f"{n} {k}" for k, n in counts) or "no tests reported"
    say(
        f"{label}: exit {code} ({PYTEST_EXIT.get(code, 'signal' if code < 0 else 'crashed')}), {summary} in "
        f"{elapsed:.1f}s; pytest's output: {log}"
    )
    return RunOutcome(run, code, junit, name, elapsed, counts, crash)


def _check_result(plan: RunPlan, run: int, code: int, output: str, junit: Path, log: Path) -> str | None:
    """A crash reason when the run did not produce a usable report; writes a JUnit file that says so."""
    crash = None
    if code in (3, 4) or code < 0 or (code not in (0, 1, 2, 5)):
        crash = f"pytest exit {code} ({PYTEST_EXIT.get(code, 'killed' if code < 0 else 'crashed')})"
    elif not junit.exists() or junit.stat().st_size == 0:
        crash = f"pytest exit {code} wrote no JUnit file"
    elif code == 5:
        crash = (
            "no tests ran (pytest exit 5) although this shard has tests; check -k/-m filters and deselection"
        )
    if crash is None:
        return None
    reason = f"{crash}: {crash_reason(output)}"
    junit.write_text(
        synthetic_junit(plan.shard, run, error=(f"pytest crashed ({crash})", reason, clean_tail(output))),
        encoding="utf-8",
    )
    return f"{reason}; see {log}"


def _count(progress_file: Path) -> tuple[tuple[str, int], ...]:
    counts: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in progress_file.read_text(encoding="utf-8").split():
            counts[line] = counts.get(line, 0) + 1
    order = ("passed", "failed", "error", "skipped", "rerun")
    return tuple((k, counts[k]) for k in order if counts.get(k))


def _draw(out: IO[str], label: str, counts: tuple[tuple[str, int], ...], elapsed_s: float) -> None:
    summary = ", ".join(f"{n} {k}" for k, n in counts) or "starting"
    out.write(f"\r\x1b[K{label}: {summary} ({elapsed_s:.0f}s)")
    out.flush()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP all become SystemExit, so `finally` stops pytest and drops databases."""

    def _raise(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _raise) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
