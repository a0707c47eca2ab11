"""Cold start to "pgcrypto ready": our launcher versus the naive recipe, measured in the same run.

Baseline (what a hand-written CI script does): default `initdb` (with fsync), `pg_ctl -w start`,
`createdb`, `CREATE EXTENSION pgcrypto`, then stop. Ours: LocalServer().start() until a database
created afterwards answers a pgcrypto query, then stop. Median of N cold starts each.

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
from db_test_action.server.launch import LocalServer, _run_as, _unprivileged_user

QUERY = "SELECT crypt('x', gen_salt('bf')) IS NOT NULL"


def ours() -> float:
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
    ours()  # warm the page cache for binaries, like any second CI step would be
    mine = [ours() for _ in range(args.runs)]
    base = [naive() for _ in range(args.runs)]
    m_ours, m_base = statistics.median(mine), statistics.median(base)
    print(f"postgres start to pgcrypto ready, median of {args.runs} cold starts")
    print(f"  db-test-action launcher : {m_ours:6.3f} s   (runs: {', '.join(f'{x:.2f}' for x in mine)})")
    print(f"  naive initdb+pg_ctl+... : {m_base:6.3f} s   (runs: {', '.join(f'{x:.2f}' for x in base)})")
    print(
        f"  speed-up                : {m_base / m_ours:6.2f}x   target: ours < 2 s -> {'OK' if m_ours < 2 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
