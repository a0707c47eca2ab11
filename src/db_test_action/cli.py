"""`db-test-action` entry point: argparse table of subcommands, one-line errors, documented exit codes.

Exit codes: 0 ok, 1 a gate failed (tests, budgets, flaky; see --fail-on), 2 usage or bad input,
3 environment (Postgres missing/unreachable, GitHub refused), 4 internal error;
`postgres -- CMD` returns CMD's status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Collection, Sequence

from db_test_action import __version__
from db_test_action.errors import EXIT_INTERNAL, DbTestActionError

# name → (module with `add_parser(sub)`, the one-line help `db-test-action --help` lists; keep it equal to the
# module's). Only the command being run is imported: publish pulls in PyGithub and postgres psycopg
# (~0.3 s together), which `report` on 100,000 tests should not wait for.
COMMANDS: dict[str, tuple[str, str]] = {
    "postgres": (
        "db_test_action.commands.postgres",
        "start/stop a throwaway PostgreSQL with pgcrypto, or run a command against one",
    ),
    "publish": (
        "db_test_action.commands.publish",
        "write the job summary and annotations, and post or update the sticky PR comment",
    ),
    "report": (
        "db_test_action.commands.report",
        "turn JUnit XML into a verdict, root causes, budgets: Markdown, JSON, console",
    ),
    "run": (
        "db_test_action.commands.run",
        "run pytest sharded/repeated, each run on a fresh database, JUnit per run",
    ),
    "durations": (
        "db_test_action.commands.durations",
        "build pytest-split's .test_durations from JUnit files (median over runs)",
    ),
    "doctor": (
        "db_test_action.commands.doctor",
        "run the suite once serially and name the fixtures that will break under xdist",
    ),
    "stability": (
        "db_test_action.commands.stability",
        "flake rates across runs and nights, history, trend, tracking issue, quarantine list",
    ),
}


def build_parser(load: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The CLI parser; only the commands in `load` (default: all) get their real flags and handler.

    The others are listed by name and help only, which is all `--help` or an unknown command needs.
    """
    parser = argparse.ArgumentParser(
        prog="db-test-action",
        description="Run pytest suites against a throwaway PostgreSQL, and explain what broke.",
        epilog="exit codes: 0 ok, 1 gate failed, 2 usage/input error, 3 environment (Postgres/GitHub), 4 internal",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_line) in COMMANDS.items():
        if load is None or name in load:
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name, help=help_line)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand named in argv: the first word that is not an option (global options take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `postgres -- CMD ARGS…`: argparse cannot take an arbitrary command after `--`, so split it off here.
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    parser = build_parser(load=(_command_in(argv),))
    args = parser.parse_args(argv)
    args.passthrough = passthrough
    try:
        return int(args.handler(args))
    except DbTestActionError as exc:
        if args.debug:
            import traceback  # ~3 ms of import that only --debug needs

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
