"""Run the user's pytest as subprocesses: collect, shard, one fresh database per run, repeat, clean up.

Why subprocesses and not pytest.main(): the user's conftest, plugins and imports must not live in our
process (an import error there must become a result file, not our crash), each repeat must be a
whole new session, and SIGTERM must be able to stop the run and still drop the databases.

Files in the results dir, per shard I and run K: `shard-I-run-K.xml` (JUnit, always written — by pytest,
or by us when pytest crashed or had nothing to run), `shard-I-run-K.log` (pytest's output) and
`manifest.json` (every node id → its shard; identical on every shard; plus which server ran the tests
and the name of its log, `server-shard-I.jsonl`, which commands/run.py writes when the server is ours).
Beside each JUnit file: `shard-I-run-K.jsonl`, the plugin's results stream (every test's outcome as it
finishes, so a killed pytest still reports), and at a time limit `shard-I-run-K.hang.json`, the server
snapshot (run/hangs.py); run/child.py runs and watches pytest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from db_test_action.contract import (
    ENV_COLLECT,
    ENV_LIMIT_ACKS,
    ENV_PROGRESS,
    ENV_RUN,
    ENV_SELECT,
    ENV_SHARD,
    ENV_STREAM,
    hang_name,
    stream_name,
)
from db_test_action.errors import EXIT_GATE, EXIT_USAGE, DbTestActionError
from db_test_action.run.child import Child, StreamTail, watch
from db_test_action.run.databases import Databases, database_name
from db_test_action.run.files import clean_tail, crash_reason, next_step, synthetic_junit, write_manifest
from db_test_action.run.hangs import append_snapshot, take_snapshot
from db_test_action.run.sharding import split_tests
from db_test_action.server.info import ServerInfo

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
    # `--database NAME`: every run's fresh database gets this exact name (dropped and re-created per run),
    # for a suite that hard-codes it; None: a unique name per run.
    database: str | None = None
    extra_env: tuple[tuple[str, str], ...] = ()  # for the plugin: --db-per-worker, --db-setup
    # `--plugin-path`: the plugin is not installed in the project's environment (the action keeps the
    # tool apart): this directory goes on PYTHONPATH and `-p db_test_action.plugin` loads it.
    plugin_path: str | None = None
    load_plugin: bool = False  # pass `-p db_test_action.plugin`: not installed there, so not autoloaded
    # Time limits: the suite's (`--timeout`, seconds; `deadline` is its end on time.monotonic(), shared by
    # every shard and run of this invocation) and each test's (`--test-timeout`, handed to pytest-timeout).
    timeout_s: float | None = None
    deadline: float | None = None
    test_timeout_s: float | None = None
    stop_grace_s: float = 30.0  # SIGINT → SIGKILL
    # For the doctor's headroom check (manifest): our server's max_connections (None: not ours, unknown),
    # and the workers a doctor run plans for (None: those of this run).
    max_connections: int | None = None
    planned_workers: int | None = None


@dataclass(frozen=True, slots=True)
class RunOutcome:
    run: int
    exit_code: int  # pytest's, or ours for a crash
    junit: Path
    database: str | None
    duration_s: float
    counts: tuple[tuple[str, int], ...]
    crash: str | None = None  # one-line reason when pytest crashed or ran nothing
    crash_fix: str = ""  # what to do about it (the error's `; <fix>` part)
    timed_out: bool = False  # stopped at the suite time limit


def results_name(shard: int, run: int, suffix: str = "xml") -> str:
    return f"shard-{shard}-run-{run}.{suffix}"


# --- pytest command lines ------------------------------------------------------------------------------


def _needs_explicit_plugins(env: Mapping[str, str]) -> bool:
    # With autoload on, `-p db_test_action.plugin` fails with "Plugin already registered".
    return bool(env.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"))


def _load_ours(plan: RunPlan, env: Mapping[str, str]) -> bool:
    return _needs_explicit_plugins(env) or plan.load_plugin


def plugin_installed(python: str, env: Mapping[str, str]) -> bool:
    """Whether the project's Python has our pytest11 entry point (then `-p` would register it twice)."""
    probe = (
        "import importlib.metadata as m, sys; "
        "sys.exit(0 if any(e.name == 'db_test_action' for e in m.entry_points(group='pytest11')) else 1)"
    )
    clean = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    try:
        out = subprocess.run([python, "-c", probe], env=clean, capture_output=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DbTestActionError(
            f"--python {python}: cannot run it ({exc}); give the project's Python"
        ) from None
    return out.returncode == 0


def child_env(plan: RunPlan, env: Mapping[str, str]) -> dict[str, str]:
    """The pytest child's environment: the plugin's directory first on PYTHONPATH when it is not installed,
    and no xdist identity inherited from a pytest that runs us (PYTEST_XDIST_WORKER would make the
    plugin take the child's own controller for a worker of that other session)."""
    env = {k: v for k, v in env.items() if not k.startswith("PYTEST_XDIST_")}
    if not plan.plugin_path:
        return env
    rest = env.get("PYTHONPATH")
    return {**env, "PYTHONPATH": plan.plugin_path + (os.pathsep + rest if rest else "")}


def pytest_command(plan: RunPlan, junit: Path, env: Mapping[str, str]) -> list[str]:
    cmd = [plan.python, "-m", "pytest", *plan.pytest_args, f"--junitxml={junit}"]
    if not any("junit_family" in a for a in plan.pytest_args):
        cmd += ["-o", "junit_family=xunit1"]  # keeps file= and line= on <testcase>; properties either way
    explicit = _needs_explicit_plugins(env)
    if _load_ours(plan, env):
        cmd += ["-p", "db_test_action.plugin"]
    if plan.workers:
        cmd += (["-p", "xdist.plugin"] if explicit else []) + ["-n", plan.workers]
    if plan.reruns:
        cmd += (["-p", "pytest_rerunfailures"] if explicit else []) + ["--reruns", str(plan.reruns)]
    if plan.test_timeout_s:
        cmd += (["-p", "pytest_timeout"] if explicit else []) + [f"--timeout={plan.test_timeout_s:g}"]
    return cmd


def collect_command(plan: RunPlan, env: Mapping[str, str]) -> list[str]:
    cmd = [plan.python, "-m", "pytest", *plan.pytest_args, "--collect-only", "-q"]
    if _load_ours(plan, env):
        cmd += ["-p", "db_test_action.plugin"]
    if any(
        a in ("-n", "--numprocesses") or a.startswith(("-n", "--numprocesses=")) for a in plan.pytest_args
    ):
        cmd += ["-n", "0"]  # collect in one process; the shard's own run may still use xdist
    return cmd


# --- orchestration -------------------------------------------------------------------------------------


Reporter = Callable[[str], None]


def collect_node_ids(plan: RunPlan, env: Mapping[str, str]) -> tuple[tuple[str, ...] | None, int, str]:
    """Node ids in collection order, or None with pytest's exit code and output when collection failed."""
    with tempfile.TemporaryDirectory(prefix="dta-collect-") as tmp:
        target = Path(tmp) / "ids.json"
        cmd = collect_command(plan, env)
        child_env = {**env, ENV_COLLECT: str(target)}
        left = None if plan.deadline is None else max(1.0, plan.deadline - time.monotonic())
        try:
            out = subprocess.run(
                cmd, env=child_env, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL,
                check=False, timeout=left,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise DbTestActionError(
                f"run: collecting the tests did not finish within --timeout {plan.timeout_s:g}s; "
                "look for an import that blocks (a connection made at import time)",
                EXIT_GATE,
            ) from None
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
    base_env = child_env(
        plan, {**os.environ, **info.env(), **dict(plan.extra_env), ENV_SHARD: str(plan.shard)}
    )
    # One shard: no separate collection pass (a whole pytest start, ~0.5-1 s before the first test); the
    # plugin records the collected ids during run 1 itself and the manifest is written from them.
    single = plan.shards == 1
    if not single:
        node_ids, code, output = collect_node_ids(plan, base_env)
        if node_ids is None or not node_ids:
            return _collection_failed(plan, code, output, say)
        mine = _plan_shards(plan, node_ids, say)
        if not mine:
            return 0, ()
    with tempfile.TemporaryDirectory(prefix="dta-run-") as tmp:
        select, collected = None, Path(tmp) / "collected.json"
        if not single:
            select = Path(tmp) / "select.json"
            select.write_text(json.dumps(list(mine)), encoding="utf-8")
        outcomes: list[RunOutcome] = []
        worst = 0
        for run in range(1, plan.repeat + 1):
            if plan.deadline is not None and time.monotonic() >= plan.deadline:
                say(f"--timeout: {plan.timeout_s:g}s reached; runs {run}..{plan.repeat} not started")
                break
            env = {**base_env, ENV_COLLECT: str(collected)} if single and run == 1 else base_env
            outcome = _one_run(plan, run, info, databases, env, select, Path(tmp), say, progress)
            if single and run == 1:
                failed = _manifest_from_run(plan, collected, outcome, base_env, say)
                if failed is not None:
                    return failed
            outcomes.append(outcome)
            worst = worse_exit(worst, outcome.exit_code)
            if outcome.crash:
                break  # a crash repeats identically; say it once
            if plan.until_failure and outcome.exit_code != 0:
                say(f"--until-failure: stopping after run {run} of {plan.repeat}")
                break
    return worst, tuple(outcomes)


def _plan_shards(plan: RunPlan, node_ids: Sequence[str], say: Reporter) -> tuple[str, ...]:
    """Split, write the manifest, and return this shard's tests (none: a note in its JUnit files)."""
    split = split_tests(node_ids, plan.durations, plan.shards, group_scopes=plan.group_scopes)
    write_manifest(
        plan.results_dir, split, plan.repeat, plan.server, plan.server_log, plan.until_failure,
        max_connections=plan.max_connections, workers=plan.planned_workers or _worker_count(plan.workers),
    )  # fmt: skip
    mine = split.shards[plan.shard - 1].node_ids
    if not mine:
        note = (
            f"shard {plan.shard} of {plan.shards} has no tests: only {len(node_ids)} collected, "
            "fewer than shards; nothing to run"
        )
        for run in range(1, plan.repeat + 1):
            path = plan.results_dir / results_name(plan.shard, run)
            path.write_text(synthetic_junit(plan.shard, run, note=note))
        say(f"note: {note}")
    elif plan.shards > 1:
        say(
            f"shard {plan.shard}/{plan.shards}: {len(mine)} of {len(node_ids)} tests "
            f"(predicted {split.shards[plan.shard - 1].predicted_s:.1f}s, units: {split.unit})"
        )
    return mine


def _manifest_from_run(
    plan: RunPlan, collected: Path, outcome: RunOutcome, env: Mapping[str, str], say: Reporter
) -> tuple[int, tuple[RunOutcome, ...]] | None:
    """After a single shard's run 1: the manifest from the ids the plugin recorded at collection. No ids
    means collection itself failed, said exactly as a separate collection pass would have (None: fine)."""
    ids = json.loads(collected.read_text(encoding="utf-8")) if collected.exists() else None
    if ids is None and outcome.exit_code in (0, 1):
        ids, _code, _output = collect_node_ids(plan, env)  # tests ran, the ids did not arrive: ask pytest
    if ids:
        _plan_shards(plan, ids, say)
        return None
    if outcome.timed_out:
        raise DbTestActionError(
            f"run: collecting the tests did not finish within --timeout {plan.timeout_s:g}s; "
            "look for an import that blocks (a connection made at import time)",
            EXIT_GATE,
        )
    log = plan.results_dir / results_name(plan.shard, 1, "log")
    output = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    return _collection_failed(plan, 5 if ids == [] else outcome.exit_code, output, say)


def _worker_count(workers: str | None) -> int:
    """The sessions a run holds at once: xdist's workers (`auto`: one per CPU), else one."""
    if workers == "auto":
        return os.cpu_count() or 1
    return int(workers) if workers and workers.isdigit() else 1


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
    raise DbTestActionError(
        f"run: {reason}; {next_step(output, log)}", EXIT_USAGE if code == 4 else EXIT_GATE
    )


def _one_run(
    plan: RunPlan, run: int, info: ServerInfo, databases: Databases, base_env: Mapping[str, str],
    select: Path | None, tmp: Path, say: Reporter, progress: IO[str] | None,
) -> RunOutcome:  # fmt: skip
    junit = plan.results_dir / results_name(plan.shard, run)
    log = plan.results_dir / results_name(plan.shard, run, "log")
    stream = plan.results_dir / stream_name(junit.name)
    hang_file = plan.results_dir / hang_name(junit.name)
    for stale in (junit, stream, hang_file):
        stale.unlink(missing_ok=True)
    progress_file = tmp / f"progress-{run}"
    progress_file.write_text("")
    acks = tmp / f"acks-{run}"
    acks.mkdir()
    name = plan.database or database_name(plan.shard, run)
    started = time.monotonic()
    if plan.database:
        if name == databases.template:
            raise DbTestActionError(
                f"--database {name}: it is the template the runs are cloned from on this server; "
                "give the suite's database another name or use a server of our own",
                EXIT_USAGE,
            )
        databases.drop(name)  # the previous run's (or the one `postgres start` prepared): fresh each run
    databases.create(name)
    label = f"shard {plan.shard}/{plan.shards} run {run}/{plan.repeat}"

    def snapshot(reason: str, limit_s: float, test: str | None) -> None:
        shot = take_snapshot(info, databases.admin_db, name, reason=reason, limit_s=limit_s, test=test)
        append_snapshot(hang_file, shot)
        what = f"{test} reached --test-timeout" if test else "the suite reached --timeout"
        waiting = sum(1 for b in shot["backends"] if b.get("blocked_by"))
        say(
            f"{label}: {what} ({limit_s:g}s); server snapshot: {len(shot['backends'])} sessions, "
            f"{waiting} waiting on a lock{'; ' + shot['error'] if shot['error'] else ''} → {hang_file.name}"
        )

    def tick() -> None:
        if progress is not None:
            _draw(progress, label, _count(progress_file), time.monotonic() - started)

    try:
        db_info = dataclasses.replace(info, database=name)
        env = {
            **base_env,
            **db_info.env(),
            ENV_RUN: str(run),
            **({ENV_SELECT: str(select)} if select is not None else {}),
            ENV_PROGRESS: str(progress_file),
            ENV_STREAM: str(stream.resolve()),
            ENV_LIMIT_ACKS: str(acks),
        }
        say(f"{label}: pytest on database {name}")
        child = Child(pytest_command(plan, junit, env), env, log, sys.stdout if plan.show_output else None)
        try:
            timed_out = watch(
                child, StreamTail(stream), acks, deadline=plan.deadline, suite_limit_s=plan.timeout_s,
                snapshot=snapshot, tick=tick, grace_s=plan.stop_grace_s,
            )  # fmt: skip
        finally:
            child.stop(plan.stop_grace_s)
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
    if timed_out:
        how = " and killed (it ignored SIGINT)" if "SIGKILL" in child.signals else ""
        stopped = f"stopped at the suite time limit (--timeout {plan.timeout_s:g}s){how}"
        crash, fix = _check_stopped(plan, run, stopped, output, junit, log)
    else:
        crash, fix = _check_result(plan, run, code, output, junit, log) or (None, "")
    summary = _summary(counts) or "no tests reported"
    state = (
        "stopped at --timeout" if timed_out else PYTEST_EXIT.get(code, "signal" if code < 0 else "crashed")
    )
    say(f"{label}: exit {code} ({state}), {summary} in {elapsed:.1f}s; pytest's output: {log}")
    return RunOutcome(run, code, junit, name, elapsed, counts, crash, fix, timed_out)


def _check_stopped(
    plan: RunPlan, run: int, stopped: str, output: str, junit: Path, log: Path
) -> tuple[str, str]:
    """A run stopped at the limit: keep pytest's JUnit when it wrote one (its tests are real results; the
    stream adds the unfinished ones), else write one that says so; the stream holds what finished."""
    if not junit.exists() or junit.stat().st_size == 0:
        text = f"{stopped}\n\n{clean_tail(output)}"
        junit.write_text(
            synthetic_junit(plan.shard, run, error=("pytest stopped at the time limit", stopped, text)),
            encoding="utf-8",
        )
    return stopped, f"see {log} and {hang_name(junit.name)}"


def _check_result(
    plan: RunPlan, run: int, code: int, output: str, junit: Path, log: Path
) -> tuple[str, str] | None:
    """(reason, fix) when the run did not produce a usable report; writes a JUnit file that says so."""
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
    return reason, next_step(output, log)


def _count(progress_file: Path) -> tuple[tuple[str, int], ...]:
    counts: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in progress_file.read_text(encoding="utf-8").split():
            counts[line] = counts.get(line, 0) + 1
    order = ("passed", "failed", "error", "skipped", "rerun")
    return tuple((k, counts[k]) for k in order if counts.get(k))


def _summary(counts: tuple[tuple[str, int], ...]) -> str:
    """As pytest words its own summary line: "3 passed, 1 failed, 2 errors"."""
    return ", ".join(f"{n} {k}{'s' if k == 'error' and n != 1 else ''}" for k, n in counts)


def _draw(out: IO[str], label: str, counts: tuple[tuple[str, int], ...], elapsed_s: float) -> None:
    summary = _summary(counts) or "starting"
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
