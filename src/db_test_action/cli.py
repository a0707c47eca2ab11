"""`db-test-action` entry point: argparse table of subcommands, one-line errors, documented exit codes.

Exit codes: 0 ok, 1 a gate failed (tests, budgets, flaky; see --fail-on), 2 usage or bad input,
3 environment (Postgres missing/unreachable, GitHub refused), 4 internal error;
`postgres -- CMD` returns CMD's status.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from db_test_action import __version__
from db_test_action.commands import durations as durations_cmd
from db_test_action.commands import postgres as postgres_cmd
from db_test_action.commands import publish as publish_cmd
from db_test_action.commands import report as report_cmd
from db_test_action.commands import run as run_cmd
from db_test_action.errors import EXIT_INTERNAL, DbTestActionError

COMMANDS = [postgres_cmd, publish_cmd, report_cmd, run_cmd, durations_cmd]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="db-test-action",
        description="Run pytest suites against a throwaway PostgreSQL, and explain what broke.",
        epilog="exit codes: 0 ok, 1 gate failed, 2 usage/input error, 3 environment (Postgres/GitHub), 4 internal",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `postgres -- CMD ARGS…`: argparse cannot take an arbitrary command after `--`, so split it off here.
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.passthrough = passthrough
    try:
        return int(args.handler(args))
    except DbTestActionError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"db-test-action: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("db-test-action: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: say so in one line unless --debug
        if args.debug:
            raise
        print(
            f"db-test-action: internal error: {type(exc).__name__}: {exc}; re-run with --debug",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
