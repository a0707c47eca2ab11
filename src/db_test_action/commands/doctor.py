"""`db-test-action doctor -- PYTEST ARGS`: run the suite once, serially, and say which fixtures will break
under xdist (report/doctor.py) — before a parallel run ever fails.

The run is `db-test-action run` on a server of ours with the statement log on and the plugin recording
each test's fixture spans; the report of that run carries the "Fixture doctor" section, printed here.
Exit codes: 0 no anti-pattern found, 1 found some, 2 usage or bad input, 3 Postgres unavailable.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from db_test_action.commands import report as report_cmd
from db_test_action.commands import run as run_cmd
from db_test_action.commands.postgres import add_launch_options
from db_test_action.contract import ENV_FIXTURES
from db_test_action.errors import EXIT_GATE, EXIT_OK, EXIT_USAGE, DbTestActionError
from db_test_action.publish import gha
from db_test_action.report.sections import doctor_console

HELP = "run the suite once serially and name the fixtures that will break under xdist"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "doctor",
        help=HELP,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="db-test-action doctor [options] [-- PYTEST ARGS…]",
    )
    parser.add_argument(
        "--results-dir", type=Path, default=Path("doctor-results"), metavar="D", help="(default: %(default)s)"
    )
    parser.add_argument("--json", type=Path, metavar="F", help="write the JSON report (with `doctor`) here")
    parser.add_argument("--markdown", type=Path, metavar="F", help="write the Markdown report here")
    parser.add_argument(
        "--pytest-output",
        choices=("auto", "show", "hide"),
        default="auto",
        help="as for `run` (default: hide)",
    )
    parser.add_argument(
        "--workers",
        type=_planned_workers,
        default=os.cpu_count() or 1,
        metavar="N",
        help="the xdist workers you plan to run, for the max_connections headroom check "
        "(default: one per CPU, as `-n auto`; here %(default)s)",
    )
    add_launch_options(parser)
    parser.set_defaults(handler=run)


def _planned_workers(value: str) -> int:
    if value.isdigit() and 1 <= int(value) <= 1024:
        return int(value)
    raise argparse.ArgumentTypeError(f"--workers: {value!r} is not a number of workers 1..1024")


def _run_args(args: argparse.Namespace) -> argparse.Namespace:
    """`run`'s own flags with their defaults, the launch options given here, one serial session."""
    parser = argparse.ArgumentParser()
    run_cmd.add_parser(parser.add_subparsers())
    ns = parser.parse_args(["run"])
    for key, value in vars(args).items():
        if hasattr(ns, key) and key not in ("handler", "workers"):
            setattr(ns, key, value)
    pytest_args = list(args.passthrough)
    if "no:xdist" not in pytest_args:
        pytest_args += ["-n", "0"]  # serial even when the suite's addopts ask for workers
    ns.passthrough = pytest_args
    ns.no_fail = True
    return ns


def run(args: argparse.Namespace) -> int:
    if args.database_url:
        raise DbTestActionError(
            "doctor: needs a server of ours (it reads the server's statement log); drop --database-url",
            EXIT_USAGE,
        )
    os.environ[ENV_FIXTURES] = "1"  # inherited by pytest: the plugin records fixture spans
    try:
        run_cmd.run(_run_args(args), planned_workers=args.workers)
    finally:
        os.environ.pop(ENV_FIXTURES, None)
    report_args = argparse.Namespace(
        paths=[str(args.results_dir)], config=None, markdown=args.markdown, json=args.json, base=None,
        manifest=None, shard=None, expect_files=None, fail_on="none", title="Fixture doctor", budget=None,
        server_log=[], junit_out=None,
    )  # fmt: skip
    report, _tests = report_cmd.build_from_args(report_args)
    report_cmd.write_outputs(report, report_args)
    t = report.totals
    lines = [f"doctor: {t.tests} tests run serially ({t.passed} passed, {t.failed} failed)"]
    lines += doctor_console(report.doctor) or [
        "fixture doctor: no fixture spans or server log; nothing to say"
    ]
    sys.stdout.write(gha.console("\n".join(lines) + "\n"))
    return EXIT_GATE if report.doctor else EXIT_OK
