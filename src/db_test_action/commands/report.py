"""`db-test-action report PATHS…`: JUnit files → Markdown, JSON and a console summary; exit code = the gate.

The I/O edge of the reporter: reads files, the environment and the config, then hands values to the
pure stages (junit → classify → budgets → summary → render).

Exit codes: 0 all selected gates passed; 1 a gate failed (--fail-on errors,failures,budgets,flaky,
or no tests at all); 2 bad input: unreadable/truncated/missing result files (the report is still
written and names them), bad flags or config.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from db_test_action.config import load_table, resolve_report_config
from db_test_action.errors import EXIT_GATE, EXIT_OK, EXIT_USAGE, DbTestActionError
from db_test_action.junit import expand_paths, parse_junit_file
from db_test_action.model import Report, report_from_dict, report_to_dict
from db_test_action.render import render_console, render_markdown
from db_test_action.summary import build_report, validate_manifest

HELP = """\
Read JUnit XML from every shard, run and attempt of one CI run (files, directories or globs), group
reruns and repeats per test, classify failures by root cause, check time budgets, and write a
Markdown comment, a JSON report and a console summary.

settings: flag > DB_TEST_ACTION_* env > [tool.db-test-action] in pyproject.toml (or --config) > default
exit codes: 0 ok, 1 a --fail-on gate failed (or no tests), 2 bad input (broken/missing result files,
bad flags or config; the report is still written)"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "report",
        help="turn JUnit XML into a verdict, root causes, budgets: Markdown, JSON, console",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="*", metavar="PATHS", help="JUnit XML files, directories or globs")
    parser.add_argument(
        "--config", type=Path, metavar="F", help="TOML with [tool.db-test-action] (default: pyproject.toml)"
    )
    parser.add_argument("--markdown", type=Path, metavar="F", help="write the Markdown comment here")
    parser.add_argument(
        "--json", type=Path, metavar="F", help="write the JSON report here (schema_version 1)"
    )
    parser.add_argument(
        "--base", type=Path, metavar="F", help="JSON report of the base branch, to flag slowdowns"
    )
    parser.add_argument(
        "--manifest", type=Path, metavar="F", help="the runner's manifest.json: every shard×run must report"
    )
    parser.add_argument(
        "--shard",
        type=int,
        metavar="I",
        help="with --manifest: check only shard I (a shard job reporting on itself)",
    )
    parser.add_argument(
        "--expect-files", metavar="N", help="fail as incomplete with fewer result files than N"
    )
    parser.add_argument(
        "--fail-on",
        metavar="GATES",
        help="comma list of errors,failures,budgets,flaky (default: errors,failures)",
    )
    parser.add_argument("--title", metavar="T", help="heading of the comment (default: Test results)")
    parser.add_argument(
        "--budget", action="append", metavar="KEY=DURATION", help="e.g. suite=2m, category.encryption=5s"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
    env = dict(os.environ) if env is None else env
    cwd = cwd or Path.cwd()
    table, where = load_table(args.config, cwd)
    flags = {
        "fail-on": args.fail_on,
        "title": args.title,
        "expect-files": args.expect_files,
        "budget": args.budget,
    }
    config = resolve_report_config(flags, env, table, where)
    manifest = _read_json(args.manifest, "--manifest") if args.manifest else None
    if manifest is not None:
        manifest = validate_manifest(manifest, str(args.manifest))
        if args.shard:
            if not 1 <= args.shard <= manifest["shards"]:
                raise DbTestActionError(
                    f"--shard: {args.shard} is not a shard of {args.manifest} (1..{manifest['shards']})",
                    EXIT_USAGE,
                )
            manifest = {**manifest, "only_shard": args.shard}
    base = report_from_dict(_read_json(args.base, "--base"), str(args.base)) if args.base else None
    paths = list(args.paths) or ([str(args.manifest.parent)] if args.manifest else [])
    if not paths:
        raise DbTestActionError(
            "report: give JUnit XML files, directories or globs (or --manifest)", EXIT_USAGE
        )
    files, missing = expand_paths(paths)
    with _without_gc():
        parsed = [parse_junit_file(path, _display(path, cwd)) for path in files]
        report = build_report(
            parsed,
            config,
            base=base,
            manifest=manifest,
            manifest_where=str(args.manifest),
            extra_problems=missing,
        )
    _write_outputs(report, args)
    sys.stdout.write(render_console(report))
    return exit_code(report)


@contextmanager
def _without_gc() -> Iterator[None]:
    """Reading 100,000 testcases makes ~10⁶ small objects and no cycles to collect, yet each collection of
    the oldest generation re-walks all of them: ~0.1 s of a 0.8 s report (benchmarks/report_scale.py)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def exit_code(report: Report) -> int:
    if report.problems:
        return EXIT_USAGE
    return EXIT_OK if report.is_green else EXIT_GATE


def _write_outputs(report: Report, args: argparse.Namespace) -> None:
    if args.markdown:
        _write(args.markdown, render_markdown(report), "--markdown")
    if args.json:
        _write(
            args.json,
            json.dumps(report_to_dict(report), ensure_ascii=False, separators=(",", ":")) + "\n",
            "--json",
        )


def _write(path: Path, text: str, flag: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DbTestActionError(
            f"{path}: cannot write {flag} ({exc.strerror}); check the directory"
        ) from None


def _read_json(path: Path, flag: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DbTestActionError(f"{path}: cannot read {flag} file ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise DbTestActionError(f"{path}:{exc.lineno}: {flag} file is not JSON ({exc.msg})") from None


def _display(path: Path, cwd: Path) -> str:
    try:
        return str(path.resolve().relative_to(cwd.resolve()))
    except ValueError:
        return str(path)
