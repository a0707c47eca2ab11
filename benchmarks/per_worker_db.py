"""Per-worker databases: clone time, and `db_reset` versus `drop_all`/`create_all` per test, in one run.

One server from our launcher; a schema of TABLES SQLAlchemy tables (foreign keys, indexes, a unique
constraint each) plus an alembic_version row, prepared once into a template. Measured (median of N):

- clone: `clone_database` — what each xdist worker pays once (connect, drop-if-exists, CREATE … TEMPLATE);
- reset (truncate): `Resetter.truncate()` after a test wrote rows — the default `db_reset`: it empties
  only tables holding rows (DELETE when small, as superuser), then restores the setup's rows;
- reset (clone): `Resetter.reclone()` — the `--db-reset-mode=clone` alternative;
- one `TRUNCATE <all tables> RESTART IDENTITY CASCADE` (with its own connection), the textbook reset;
- drop_all/create_all: what the fragile suites do around every test (the named alternative).

Targets (issue 5): clone < 0.1 s, truncate reset >= 10x faster than drop_all/create_all.

usage: python benchmarks/per_worker_db.py [--runs 15] [--tables 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import psycopg
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, create_engine, insert

from db_test_action.plugin.reset import Resetter
from db_test_action.plugin.template import (
    Names,
    Setup,
    SetupKind,
    clone_database,
    drop_databases,
    ensure_template,
    with_database,
)
from db_test_action.server.launch import LaunchOptions, LocalServer


def build_metadata(tables: int) -> MetaData:
    """A chain of tables, each referencing the previous one: indexes, FKs and a unique constraint."""
    metadata = MetaData()
    for i in range(tables):
        cols = [
            Column("id", Integer, primary_key=True),
            Column("name", String(100), nullable=False, unique=True),
            Column("note", String, index=True),
        ]
        if i:
            cols.append(Column("parent_id", Integer, ForeignKey(f"t{i - 1}.id"), index=True))
        Table(f"t{i}", metadata, *cols)
    return metadata


def median_s(action: Callable[[], object], runs: int, before: Callable[[], object] | None = None) -> float:
    samples = []
    for _ in range(runs):
        if before is not None:
            before()
        t0 = time.perf_counter()
        action()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--tables", type=int, default=30)
    args = parser.parse_args()
    metadata = build_metadata(args.tables)

    with LocalServer(LaunchOptions(database="bench")) as info:
        base_url = info.url()
        names = Names(prefix="bench_1")

        def sqlalchemy_url(database: str) -> str:
            return with_database(base_url, database).replace("postgresql://", "postgresql+psycopg://")

        # The template: the schema through a `module:function` setup, plus the row alembic leaves.
        setup_module = types.ModuleType("bench_setup")

        def create_schema(url: str) -> None:
            engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
            metadata.create_all(engine)
            with engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
                conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('abc123')")
            engine.dispose()

        setup_module.create_schema = create_schema  # type: ignore[attr-defined]
        sys.modules["bench_setup"] = setup_module
        t0 = time.perf_counter()
        ensure_template(
            base_url,
            names,
            Setup(SetupKind.CALLABLE, "bench_setup:create_schema"),
            (),
            env_name="DATABASE_URL",
            cwd=Path.cwd(),
        )
        template_s = time.perf_counter() - t0

        clone_names = [names.worker(f"gw{i}") for i in range(args.runs)]
        it = iter(clone_names)
        clone_s = median_s(lambda: clone_database(base_url, names.template, next(it)), args.runs)
        drop_databases(base_url, clone_names)

        worker = names.worker("gw0")
        clone_database(base_url, names.template, worker)
        engine = create_engine(sqlalchemy_url(worker))

        def dirty() -> None:  # what a test leaves behind: a few rows in a few tables
            with engine.begin() as conn:
                for i in range(min(5, args.tables)):
                    row = {"name": f"n{i}", "note": "x"} | ({"parent_id": 1} if i else {})
                    conn.execute(insert(metadata.tables[f"t{i}"]).values(id=1, **row))

        resetter = Resetter(base_url, names.template, worker)
        resetter.truncate()  # warm: connection and reset SQL are built once per worker
        truncate_s = median_s(resetter.truncate, args.runs, before=dirty)
        with psycopg.connect(with_database(base_url, worker)) as conn:
            assert conn.execute("SELECT count(*) FROM t0").fetchone() == (0,)
            assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("abc123",)

        def truncate_all() -> None:  # the textbook reset: one TRUNCATE of every table
            with psycopg.connect(with_database(base_url, worker), autocommit=True) as conn:
                tables = ", ".join(metadata.tables)
                conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")

        truncate_all_s = median_s(truncate_all, args.runs, before=dirty)

        engine.dispose()
        reclone_s = median_s(resetter.reclone, args.runs, before=lambda: (dirty(), engine.dispose()))
        resetter.close()

        def drop_create() -> None:
            metadata.drop_all(engine)
            metadata.create_all(engine)

        drop_create_s = median_s(drop_create, args.runs, before=dirty)
        engine.dispose()
        drop_databases(base_url, [worker, names.template])

    print(f"schema: {args.tables} tables (+ alembic_version seed row), median of {args.runs} runs")
    print(f"template prepared once        {template_s * 1000:8.1f} ms")
    print(f"clone per worker              {clone_s * 1000:8.1f} ms   target < 100 ms: {_ok(clone_s < 0.1)}")
    print(f"db_reset truncate             {truncate_s * 1000:8.1f} ms")
    print(f"db_reset clone                {reclone_s * 1000:8.1f} ms")
    print(
        f"one TRUNCATE of all tables    {truncate_all_s * 1000:8.1f} ms   (the textbook reset, for comparison)"
    )
    print(f"drop_all + create_all         {drop_create_s * 1000:8.1f} ms")
    ratio = drop_create_s / truncate_s
    print(f"drop/create vs truncate reset {ratio:8.1f} x   target >= 10x: {_ok(ratio >= 10)}")
    print(f"drop/create vs clone reset    {drop_create_s / reclone_s:8.1f} x")
    print(f"clone reset vs truncate reset {reclone_s / truncate_s:8.1f} x   (truncate is the default)")
    return 0


def _ok(passed: bool) -> str:
    return "ok" if passed else "MISSED"


if __name__ == "__main__":
    raise SystemExit(main())
