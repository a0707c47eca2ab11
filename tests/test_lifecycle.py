"""Launcher lifecycle under faults, with real processes: a server never outlives its owner.

Every test signals (or kills) a real `db-test-action` process at a stage of its work, then checks the
guarantee from outside: no postgres process under the test's data root and no data dir of ours remain.
SIGKILL gives the launcher no chance to clean up, so there the reaper process must do it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from db_test_action.server.initdb_cache import CACHE_ENV
from db_test_action.server.launch import LaunchOptions, LocalServer
from db_test_action.server.procs import children_of, pid_alive, processes_in, start_time

TIMEOUT_S = 60.0


def _procs_under(root: Path) -> list[tuple[int, str]]:
    """Processes (postgres, initdb) whose command line names a path under `root`."""
    needle = os.fsencode(str(root))
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) in (b"postgres", b"initdb") and any(needle in a for a in argv):
            stat = (proc / "stat").read_text()
            if stat.rsplit(") ", 1)[1][0] != "Z":
                found.append((int(proc.name), argv[0].decode()))
    return found


def _wait_for(predicate, timeout_s: float = TIMEOUT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError(f"{what}: not reached in {timeout_s}s")


def _assert_nothing_left(root: Path) -> None:
    _wait_for(lambda: not _procs_under(root), what=f"no server under {root}")
    _wait_for(lambda: not any(root.iterdir()), what=f"{root} empty")


def _data_dir_with(root: Path, relative: str) -> bool:
    return any((d / relative).exists() for d in root.glob("db-test-action-pg-*"))


def _initdb_running(root: Path) -> bool:
    return any(name.endswith("initdb") for _pid, name in _procs_under(root))


def _server_up(root: Path) -> bool:
    return _data_dir_with(root, "data/postmaster.pid") and any(
        name.endswith("postgres") for _pid, name in _procs_under(root)
    )


STAGES = {"initdb": _initdb_running, "server-up": _server_up}
# What a CI runner, a terminal and an OOM killer send; SIGKILL leaves the cleanup to the reaper.
SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda sig: sig.name)
@pytest.mark.parametrize("stage", list(STAGES))
def test_signal_during_detached_start_leaves_nothing(cli, cli_env, data_root, tmp_path, stage, sig) -> None:
    state = tmp_path / "state.json"
    # initdb runs only without a cached cluster to copy (server/initdb_cache.py)
    env = {**cli_env, CACHE_ENV: "0"} if stage == "initdb" else cli_env
    proc = subprocess.Popen(
        [*cli, "postgres", "start", "--state-file", str(state), "--data-root", str(data_root)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_for(lambda: STAGES[stage](data_root) or proc.poll() is not None, what=stage)
        if proc.poll() is not None:
            pytest.fail(f"start finished before stage {stage}: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        proc.send_signal(sig)
        code = proc.wait(timeout=TIMEOUT_S)
    finally:
        proc.kill()
        proc.wait()
    assert code in (-sig, 128 + sig)
    _assert_nothing_left(data_root)
    assert not state.exists()


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda sig: sig.name)
@pytest.mark.parametrize("stage", ["initdb", "command"])
def test_signal_to_postgres_exec_leaves_nothing(cli, cli_env, data_root, tmp_path, stage, sig) -> None:
    marker = tmp_path / "started"
    pidfile = tmp_path / "cmd.pid"
    env = {**cli_env, CACHE_ENV: "0"} if stage == "initdb" else cli_env
    proc = subprocess.Popen(
        [*cli, "postgres", "--data-root", str(data_root), "--", "sh", "-c",
         f"echo $$ > {pidfile}; touch {marker}; exec sleep 120"],
        env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        if stage == "initdb":
            _wait_for(lambda: _initdb_running(data_root) or proc.poll() is not None, what="initdb")
            # still running, so the wait ended on a running initdb: the signal arrives mid-initdb
            assert proc.poll() is None, "the launcher ended before its initdb was seen"
        else:
            _wait_for(marker.exists, what="command started")
            assert _procs_under(data_root), "server not seen while the command ran"
        proc.send_signal(sig)
        proc.wait(timeout=TIMEOUT_S)
    finally:
        proc.kill()
        proc.wait()
    _assert_nothing_left(data_root)
    if pidfile.exists():
        cmd_pid = int(pidfile.read_text())
        _wait_for(lambda: not pid_alive(cmd_pid), what="CMD ended with its owner")
    else:
        assert stage == "initdb"  # stopped before CMD ever ran


SLOW_SUITE = """
import os, pathlib, time
def test_slow():
    pathlib.Path(os.environ["MARKER"]).touch()
    time.sleep(120)
"""


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda sig: sig.name)
@pytest.mark.parametrize("stage", ["initdb", "test"])
def test_signal_to_run_leaves_nothing(cli, cli_env, data_root, tmp_path, stage, sig) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_slow.py").write_text(SLOW_SUITE)
    marker = tmp_path / "in-test"
    env = {**cli_env, "MARKER": str(marker), **({CACHE_ENV: "0"} if stage == "initdb" else {})}
    proc = subprocess.Popen(
        [*cli, "run", "--data-root", str(data_root), "--results-dir", str(tmp_path / "results"),
         "--", str(suite), "-p", "no:cacheprovider"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        if stage == "initdb":
            _wait_for(lambda: _initdb_running(data_root) or proc.poll() is not None, what="initdb")
            # still running, so the wait ended on a running initdb: the signal arrives mid-initdb
            assert proc.poll() is None, "the launcher ended before its initdb was seen"
        else:
            _wait_for(marker.exists, what="test started")
        proc.send_signal(sig)
        proc.wait(timeout=TIMEOUT_S)
    finally:
        proc.kill()
        proc.wait()
    _assert_nothing_left(data_root)
    _wait_for(lambda: not _pytest_of(suite), what="pytest ended with its owner")


def _pytest_of(suite: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"pytest" in argv and os.fsencode(str(suite)) in argv and pid_alive(int(proc.name)):
                found.append(int(proc.name))
    return found


def test_concurrent_starts_of_one_name_start_one_server(cli, cli_env, data_root, tmp_path) -> None:
    state = tmp_path / "state.json"
    cmd = [*cli, "postgres", "start", "--state-file", str(state), "--data-root", str(data_root)]
    procs = [
        subprocess.Popen(cmd, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    try:
        results = [(p.wait(timeout=180), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
        codes = sorted(code for code, _err in results)
        assert codes == [0, 2, 2], results
        assert all("already recorded" in err for code, err in results if code == 2)
        servers = [p for p, name in _procs_under(data_root) if name.endswith("postgres")]
        info = json.loads(state.read_text())
        assert info["pid"] in servers and len(list(data_root.iterdir())) == 1
        assert {
            pid
            for pid in servers
            if f"{info['data_dir']}".encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        } == set()
    finally:
        stopped = subprocess.run([*cli, "postgres", "stop", "--state-file", str(state)], env=cli_env,
                                 capture_output=True, text=True, timeout=120)  # fmt: skip
    assert stopped.returncode == 0, stopped.stderr
    _assert_nothing_left(data_root)


def test_a_state_file_that_cannot_be_written_stops_the_started_server(data_root, tmp_path, capsys) -> None:
    from db_test_action.cli import main

    state = tmp_path / "state" / "state.json"
    state.parent.mkdir(mode=0o700)
    state.with_suffix(f".{os.getpid()}.tmp").mkdir()  # the temp file's name is taken: the write fails
    code = main(["postgres", "start", "--state-file", str(state), "--data-root", str(data_root)])
    assert code == 3 and "cannot write the state file" in capsys.readouterr().err
    _assert_nothing_left(data_root)
    assert not state.exists()


def test_stop_returns_only_when_every_server_process_is_gone(data_root) -> None:
    server = LocalServer(LaunchOptions(data_root=str(data_root)))
    info = server.start()
    with psycopg.connect(info.url()):  # a backend too
        kids = children_of(info.pid)  # type: ignore[arg-type]
        names = set()
        for pid, _started in kids:
            with contextlib.suppress(OSError):  # a short-lived child may be gone already
                names.add(Path(f"/proc/{pid}/cmdline").read_bytes())
        assert any(b"logger" in n for n in names), names
    inside = processes_in(Path(info.data_dir))  # type: ignore[arg-type]
    assert len(inside) > 2
    server.stop()
    # no waiting here: stop() itself must have waited for the logger and every backend
    # (a zombie counts as gone: it holds no files; in a container PID 1 may be slow to reap it)
    assert not [pid for pid, started in inside if pid_alive(pid) and start_time(pid) == started]
    assert list(data_root.iterdir()) == []


class _TakenFirst(LocalServer):
    """The launcher with its first port probe landing on a port someone else holds (a real race)."""

    held: int = 0

    def _pick_port(self, attempt: int) -> int:
        return self.held if attempt == 0 else super()._pick_port(attempt)


def test_port_taken_between_probe_and_bind_is_retried(data_root) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = _TakenFirst(LaunchOptions(data_root=str(data_root)))
        server.held = taken.getsockname()[1]
        with server as info:
            assert info.port != server.held
            with psycopg.connect(info.url()) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            logs = "".join(p.read_text() for p in Path(info.server_log_dir).iterdir())  # type: ignore[arg-type]
            assert "could not bind" not in logs  # the failed attempt's records are not evidence
    _assert_nothing_left(data_root)


def test_owner_killed_in_process_reaps_via_reaper_and_parent_death(data_root, tmp_path) -> None:
    """A Python program using the library (not the CLI) dies by SIGKILL: its server goes too."""
    script = tmp_path / "owner.py"
    script.write_text(
        "import sys, time\n"
        "from db_test_action.server.launch import LaunchOptions, LocalServer\n"
        f"s = LocalServer(LaunchOptions(data_root={str(data_root)!r}))\n"
        "s.start(); print('up', flush=True); time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"  # type: ignore[union-attr]
        assert _procs_under(data_root)
        proc.kill()
        proc.wait()
    finally:
        proc.kill()
    _assert_nothing_left(data_root)


# --- state files planted by another user ----------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user (runuser)")


def _as_nobody(*cmd: str) -> None:
    subprocess.run(["runuser", "-u", "nobody", "--", *cmd], check=True, timeout=60)


@pytest.fixture
def victim():
    """A process of ours that a planted state file names: it must survive every stop."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


def _planted_state(victim_pid: int, target: Path) -> str:
    return json.dumps({"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "x",
                       "data_dir": str(target), "pid": victim_pid, "owner_token": "t"})  # fmt: skip


@needs_root
def test_planted_state_file_of_another_user_is_refused(cli, cli_env, data_root, victim) -> None:
    target = data_root / "db-test-action-pg-precious"
    (target / "data").mkdir(parents=True)
    (target / "data" / "postmaster.pid").write_text(f"{victim.pid}\n{target / 'data'}\n")
    shared = data_root / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # a shared temp dir
    planted = shared / "planted"
    _as_nobody("mkdir", "-m", "755", str(planted))
    state = planted / "state.json"
    _as_nobody("sh", "-c", f"umask 022; printf '%s' '{_planted_state(victim.pid, target)}' > {state}")
    out = subprocess.run([*cli, "postgres", "stop", "--state-file", str(state)], env=cli_env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 3 and "not a private directory" in out.stderr, out.stderr
    # the same file moved into a private directory of ours is still refused: its owner is not us
    private = data_root / "private"
    private.mkdir(mode=0o700)
    moved = private / "state.json"
    os.rename(state, moved)
    out = subprocess.run([*cli, "postgres", "stop", "--state-file", str(moved)], env=cli_env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 3 and "not owned by this user" in out.stderr, out.stderr
    assert victim.poll() is None and target.is_dir() and moved.exists()


@needs_root
def test_planted_default_state_dir_is_refused_for_start_and_stop(cli, cli_env, data_root, victim) -> None:
    target = data_root / "db-test-action-pg-precious"
    target.mkdir()
    base = data_root / "runner-temp"
    base.mkdir()
    os.chmod(base, 0o1777)  # a shared temp dir
    planted = base / f"db-test-action-{os.getuid()}"
    _as_nobody("mkdir", "-m", "755", str(planted))
    _as_nobody(
        "sh", "-c", f"printf '%s' '{_planted_state(victim.pid, target)}' > {planted}/postgres-default.json"
    )
    env = {**cli_env, "RUNNER_TEMP": str(base)}
    for action in ("stop", "start", "status"):
        out = subprocess.run([*cli, "postgres", action, "--data-root", str(data_root)], env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        refused = "not a private directory" in out.stderr or "not owned by this user" in out.stderr
        assert out.returncode == 3 and refused, (action, out.stderr)
    assert victim.poll() is None and target.is_dir()
    assert not _procs_under(data_root)


def test_own_state_naming_a_foreign_pid_and_dir_signals_and_deletes_nothing(
    cli, cli_env, tmp_path, victim
) -> None:
    target = tmp_path / "db-test-action-pg-precious"
    (target / "data").mkdir(parents=True)
    # even a postmaster.pid that names the victim is not enough: its cmdline is not `postgres -D target`
    (target / "data" / "postmaster.pid").write_text(f"{victim.pid}\n{target / 'data'}\n")
    state = tmp_path / "state" / "state.json"
    state.parent.mkdir(mode=0o700)
    state.write_text(_planted_state(victim.pid, target))
    out = subprocess.run([*cli, "postgres", "stop", "--state-file", str(state)], env=cli_env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert victim.poll() is None and (target / "data" / "postmaster.pid").exists()
