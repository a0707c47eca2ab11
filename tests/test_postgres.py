"""The launcher against real servers: start, extensions, isolation, privileges, signals, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from db_test_action.errors import DbTestActionError
from db_test_action.server.binaries import find_bin_dir, package_for_extension, server_major
from db_test_action.server.launch import LaunchOptions, LocalServer, parse_url, use_external

PGCRYPTO_CHECK = "SELECT gen_random_uuid() IS NOT NULL, crypt('x', gen_salt('bf')) LIKE '$2a$%'"


def _postgres_pids() -> set[int]:
    pids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"/postgres") and b"-D" in cmd:
                pids.add(int(proc.name))
    return pids


def _wait_for(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_pgcrypto_works_in_a_database_created_after_start(data_root: Path) -> None:
    with LocalServer(LaunchOptions(data_root=str(data_root))) as info:
        with psycopg.connect(info.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE later")
        with psycopg.connect(info.url("later")) as conn:
            assert conn.execute(PGCRYPTO_CHECK).fetchone() == (True, True)
        with psycopg.connect(info.url()) as conn:  # the requested database itself
            assert conn.execute(PGCRYPTO_CHECK).fetchone() == (True, True)
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
            assert conn.execute("SHOW max_connections").fetchone() == ("300",)
        assert info.data_dir and Path(info.data_dir).is_dir()
    assert list(data_root.iterdir()) == []
    assert info.pid not in _postgres_pids()


def test_two_servers_side_by_side_do_not_collide() -> None:
    with LocalServer() as one, LocalServer() as two:
        assert one.port != two.port and one.data_dir != two.data_dir
        for info in (one, two):
            with psycopg.connect(info.url()) as conn:
                assert conn.execute("SHOW port").fetchone() == (str(info.port),)


@pytest.mark.skipif(os.geteuid() != 0, reason="only meaningful as root")
def test_as_root_the_server_runs_unprivileged() -> None:
    with LocalServer() as info:
        status = Path(f"/proc/{info.pid}/status").read_text()
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        assert uid != 0


def test_exception_inside_the_context_still_cleans_up(data_root: Path) -> None:
    server = LocalServer(LaunchOptions(data_root=str(data_root)))
    with pytest.raises(RuntimeError), server as info:
        raise RuntimeError("boom")
    assert list(data_root.iterdir()) == []
    assert info.pid not in _postgres_pids()


def test_extra_extensions_and_password() -> None:
    options = LaunchOptions(extensions=("pgcrypto", "citext"), use_password=True, database="app")
    with LocalServer(options) as info:
        assert info.password and info.password in info.url()
        assert info.env()["PGPASSWORD"] == info.password
        with psycopg.connect(info.url()) as conn:
            names = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
            assert {"pgcrypto", "citext"} <= names
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{info.port}/app", connect_timeout=5)


def test_external_mode_against_a_launched_server(pg_server) -> None:
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS ext_mode")
        conn.execute("CREATE DATABASE ext_mode TEMPLATE template0")  # no pgcrypto in it yet
    info = use_external(pg_server.url("ext_mode"), ("pgcrypto",))
    assert (info.port, info.database) == (pg_server.port, "ext_mode")
    with psycopg.connect(info.url()) as conn:
        assert conn.execute(PGCRYPTO_CHECK).fetchone() == (True, True)


def test_sqlalchemy_style_urls_parse() -> None:
    info = parse_url("postgresql+asyncpg://app:s%40cret@db.local:6543/main")
    assert (info.user, info.password, info.host, info.port, info.database) == (
        "app", "s@cret", "db.local", 6543, "main",
    )  # fmt: skip
    assert info.url() == "postgresql://app:s%40cret@db.local:6543/main"


def test_binaries_are_found_and_versioned() -> None:
    bin_dir = find_bin_dir()
    major = server_major(bin_dir)
    assert find_bin_dir(version=major) == bin_dir
    assert package_for_extension("pgcrypto", major).startswith("postgresql-contrib")
    assert package_for_extension("postgis", 16) == "postgresql-16-postgis-3"


# --- through the CLI, as users and the action call it ------------------------------------------------


def _run(cli, cli_env, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli, *args], capture_output=True, text=True, env={**cli_env, **env}, timeout=120)


def test_postgres_exec_passes_the_variables_and_the_exit_status(cli, cli_env) -> None:
    script = (
        "import os, sys, psycopg\n"
        "c = psycopg.connect(os.environ['DATABASE_URL'])\n"
        f"assert c.execute({PGCRYPTO_CHECK!r}).fetchone() == (True, True)\n"
        "print(os.environ['PGHOST'], os.environ['PGPORT'], os.environ['PGUSER'], os.environ['PGDATABASE'])\n"
        "sys.exit(7)\n"
    )
    out = _run(cli, cli_env, "postgres", "--database", "suite", "--", "python", "-c", script)
    assert out.returncode == 7, out.stderr
    host, port, user, database = out.stdout.split()
    assert (host, user, database) == ("127.0.0.1", "postgres", "suite") and int(port) > 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_postgres_exec_leaves_no_server_and_no_data_dir(
    cli, cli_env, tmp_path: Path, data_root: Path, sig
) -> None:
    marker = tmp_path / "started"
    root = data_root
    before = _postgres_pids()
    proc = subprocess.Popen(
        [*cli, "postgres", "--data-root", str(root), "--", "sh", "-c", f"touch {marker}; exec sleep 60"],
        env=cli_env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(marker.exists)
        ours = _postgres_pids() - before
        assert ours, "server not seen while the command ran"
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
    assert code == 128 + sig
    assert not (ours & _postgres_pids())
    assert list(root.iterdir()) == []


def test_detached_start_status_url_stop(cli, cli_env, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    gh_env, gh_out = tmp_path / "env", tmp_path / "out"
    files = {"GITHUB_ENV": str(gh_env), "GITHUB_OUTPUT": str(gh_out)}
    started = _run(cli, cli_env, "postgres", "start", "--state-file", str(state), "--database", "d1", **files)
    assert started.returncode == 0, started.stderr
    info = json.loads(state.read_text())
    url = f"postgresql://postgres@127.0.0.1:{info['port']}/d1"
    assert f"DATABASE_URL={url}" in gh_env.read_text().splitlines()
    assert f"PGPORT={info['port']}" in gh_env.read_text().splitlines()
    assert f"database-url={url}" in gh_out.read_text().splitlines()
    try:
        again = _run(cli, cli_env, "postgres", "start", "--state-file", str(state))
        assert again.returncode == 2 and "already recorded" in again.stderr
        assert _run(cli, cli_env, "postgres", "url", "--state-file", str(state)).stdout.strip() == url
        status = _run(cli, cli_env, "postgres", "status", "--state-file", str(state))
        assert status.returncode == 0 and status.stdout.startswith("running")
        with psycopg.connect(url) as conn:
            assert conn.execute(PGCRYPTO_CHECK).fetchone() == (True, True)
    finally:
        stopped = _run(cli, cli_env, "postgres", "stop", "--state-file", str(state))
    assert stopped.returncode == 0, stopped.stderr
    assert not Path(info["data_dir"]).exists()
    assert info["pid"] not in _postgres_pids()
    assert not state.exists()


@pytest.mark.parametrize(
    ("args", "env", "expected", "code"),
    [
        (["--pg-bin", "/nonexistent/bin"], {}, "--pg-bin=/nonexistent/bin: no initdb/postgres there", 3),
        (
            [],
            {"PG_BIN": "/usr/bin/nothing-here"},
            "PG_BIN=/usr/bin/nothing-here: no initdb/postgres there",
            3,
        ),
        (["--postgres-version", "99"], {}, "no PostgreSQL 99 server binaries", 3),
        (["--extensions", "pgcrypto,no_such_ext"], {}, "no_such_ext not available", 3),
        (["--database-url", "postgresql://u@127.0.0.1:1/x"], {}, "cannot connect", 3),
        (["--database-url", "mysql://u@h/x"], {}, "is not a PostgreSQL URL; use postgresql://", 2),
    ],
)
def test_bad_input_gives_one_line_error_and_nonzero_exit(cli, cli_env, args, env, expected, code) -> None:
    out = _run(cli, cli_env, "postgres", *args, "--", "true", **env)
    assert out.returncode == code, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("db-test-action: "), out.stderr
    assert expected in lines[0]
    assert "Traceback" not in out.stderr


def test_missing_extension_names_the_package_to_install(cli, cli_env) -> None:
    out = _run(cli, cli_env, "postgres", "--extensions", "postgis", "--", "true")
    major = server_major(find_bin_dir())
    assert out.returncode == 3 and f"install postgresql-{major}-postgis-3" in out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the data dir to another user")
def test_unreachable_data_root_is_named(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(DbTestActionError, match="not traversable by user"):
        LocalServer(LaunchOptions(data_root=str(private))).start()


def test_library_error_is_a_value_not_a_print() -> None:
    with pytest.raises(DbTestActionError) as err:
        find_bin_dir(pg_bin="/nonexistent")
    assert err.value.exit_code == 3


def test_server_log_is_captured_with_statement_detail_and_application_name(tmp_path: Path) -> None:
    dest = tmp_path / "server.jsonl"
    server = LocalServer(LaunchOptions(log_copy_to=str(dest)))
    with server as info, psycopg.connect(info.url(), autocommit=True) as conn:
        conn.execute("SET application_name = 'tests/test_ws.py::test_drop'")
        conn.execute("CREATE TABLE workspaces (id int PRIMARY KEY)")
        conn.execute("CREATE TABLE notes (ws int REFERENCES workspaces)")
        with pytest.raises(psycopg.errors.DependentObjectsStillExist):
            conn.execute("DROP TABLE workspaces")
    records = [json.loads(line) for line in dest.read_text().splitlines()]
    [error] = [r for r in records if r.get("state_code") == "2BP01"]
    assert error["application_name"] == "tests/test_ws.py::test_drop"
    assert error["statement"] == "DROP TABLE workspaces"
    assert "notes" in error["detail"] and error["dbname"] == "test"


def test_bin_names_the_server_directory_or_fails_with_the_install_hint(cli, cli_env) -> None:
    found = _run(cli, cli_env, "postgres", "bin")
    assert found.returncode == 0 and Path(found.stdout.strip(), "postgres").is_file()
    missing = _run(cli, cli_env, "postgres", "bin", "--postgres-version", "99")
    assert missing.returncode == 3 and "apt-get install postgresql-99" in missing.stderr


def test_state_files_are_private_and_a_stale_pid_is_never_signalled(tmp_path: Path) -> None:
    from db_test_action.server.launch import ServerInfo
    from db_test_action.server.state import stop_detached, write_state

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    info = ServerInfo("127.0.0.1", 5432, "postgres", "test", password="s3cret")
    with pytest.raises(DbTestActionError, match="not a private directory"):
        write_state(shared / "state.json", info)
    own = tmp_path / "own"
    own.mkdir()
    write_state(own / "state.json", info)
    assert (own / "state.json").stat().st_mode & 0o777 == 0o600
    # a state whose pid is not the data dir's postmaster (here: this test process) is not signalled
    data_dir = tmp_path / "db-test-action-pg-x"
    (data_dir / "data").mkdir(parents=True)
    (data_dir / "data" / "postmaster.pid").write_text("1\n")
    write_state(
        own / "stale.json",
        ServerInfo("127.0.0.1", 1, "postgres", "t", data_dir=str(data_dir), pid=os.getpid()),
    )
    stop_detached(own / "stale.json")  # would SIGINT this very process if it trusted the pid
    assert not data_dir.exists() and not (own / "stale.json").exists()
