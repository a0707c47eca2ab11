"""Cold start to "pgcrypto ready": our launcher versus the naive recipe, measured in the same run.

Baseline (what a hand-written CI script does): default `initdb` (with fsync), `pg_ctl -w start`,
`createdb`, `CREATE EXTENSION pgcrypto`, then stop. Ours: LocalServer().start() until a database
created afterwards answers a pgcrypto query, then stop — with an empty initdb cache (every start runs
initdb, and stores the copy) and with a warm one (the cluster copied from the cache, no initdb; see
server/initdb_cache.py). Median of N starts each.

usage: python benchmarks/postgres_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from db_test_action.server.binaries import find_bin_dir
from db_test_action.server.initdb_cache import CACHE_ENV
from db_test_action.server.launch import LocalServer, _run_as, _unprivileged_user

QUERY = "SELECT crypt('x', gen_salt('bf')) IS NOT NULL"


def ours(cache: Path) -> float:
    os.environ[CACHE_ENV] = str(cache)
    t0 = time.perf_counter()
    server = LocalServer()
    info = server.start()
    with psycopg.connect(info.url()) as conn:
        conn.execute(QUERY).fetchone()
    elapsed = time.perf_counter() - t0
    server.stop()
    return elapsed


def naive() -> float:
    bin_dir = find_bin_dir()
    account = _unprivileged_user()
    as_user = _run_as(account)
    root = Path(tempfile.mkdtemp(prefix="naive-pg-"))
    if account is not None:
        os.chown(root, account.pw_uid, account.pw_gid)
    data = root / "data"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"

    def run(*cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True, cwd=root, **as_user)  # type: ignore[call-overload]

    t0 = time.perf_counter()
    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-o", opts, "-l", str(root / "log"), "start")
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "test")
        url = f"postgresql://postgres@127.0.0.1:{port}/test"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pgcrypto")
            conn.execute(QUERY).fetchone()
        return time.perf_counter() - t0
    finally:
        subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, cwd=root, **as_user)  # type: ignore[call-overload]  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ours(Path(tmp) / "warm-up")  # the page cache for binaries, as any second CI step would have it
        cold = [ours(Path(tmp) / f"cold-{i}") for i in range(args.runs)]
        warm = [ours(Path(tmp) / "warm-up") for _ in range(args.runs)]
    base = [naive() for _ in range(args.runs)]
    m_cold, m_warm, m_base = statistics.median(cold), statistics.median(warm), statistics.median(base)
    print(f"postgres start to pgcrypto ready, median of {args.runs} starts")
    for label, runs, median in (
        ("db-test-action, initdb cache warm", warm, m_warm),
        ("db-test-action, initdb cache empty", cold, m_cold),
        ("naive initdb+pg_ctl+createdb+…", base, m_base),
    ):
        print(f"  {label:<36}: {median:6.3f} s  {m_base / median:5.2f}× faster than naive  "
              f"(runs: {', '.join(f'{x:.2f}' for x in runs)})")  # fmt: skip
    print(f"  target: warm < 0.5 s -> {'met' if m_warm < 0.5 else 'MISSED'}; cold < 2 s -> "
          f"{'met' if m_cold < 2 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
