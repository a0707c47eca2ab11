"""`db-test-action durations PATHS… -o .test_durations`: pytest-split's durations file from JUnit results.

Median over result files (runs, repeats, shards) of each test's first attempt, setup + call + teardown
(pytest's testcase `time`), rerun attempts left out. The output is pytest-split's own format, so the
same file feeds `db-test-action run --durations` and `pytest --splits N --group I`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from db_test_action.commands.files import parse_junit_safely, unique_files
from db_test_action.errors import EXIT_USAGE, DbTestActionError
from db_test_action.junit.files import expand_paths
from db_test_action.run.sharding import durations_from_occurrences, format_durations, parse_durations


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "durations",
        help="build pytest-split's .test_durations from JUnit files (median over runs)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="JUnit files, directories or globs")
    parser.add_argument(
        "-o", "--output", type=Path, default=Path(".test_durations"), help="(default: %(default)s)"
    )
    parser.add_argument(
        "--merge", action="store_true", help="keep entries of the existing output file for tests not in PATHS"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    files, problems = expand_paths(args.paths)
    if problems and not files:
        raise DbTestActionError(str(problems[0]), EXIT_USAGE)
    occurrences = []
    for path in unique_files(files):
        parsed = parse_junit_safely(path, str(path))
        if parsed.problem is not None:
            print(f"db-test-action: warning: {parsed.problem}", file=sys.stderr)
        occurrences.extend(parsed.occurrences)
    durations = durations_from_occurrences(occurrences)
    if not durations:
        raise DbTestActionError(
            f"durations: no test cases in {len(files)} file(s); point at the run's results directory",
            EXIT_USAGE,
        )
    if args.merge and args.output.is_file():
        old = parse_durations(args.output.read_text(encoding="utf-8"), str(args.output))
        durations = {**old, **durations}
    args.output.write_text(format_durations(durations), encoding="utf-8")
    print(f"{args.output}: {len(durations)} tests from {len(files)} file(s)")
    return 0
