"""`db-test-action report PATHS…`: JUnit files → Markdown, JSON and a console summary; exit code = the gate.

The I/O edge of the reporter: reads files, the environment and the config, then hands values to the
pure stages (junit → classify → budgets → summary → render).

Exit codes: 0 all selected gates passed; 1 a gate failed (--fail-on errors,failures,budgets,flaky,
or no tests at all); 2 bad input: unreadable/truncated/missing result files (the report is still
written and names them), bad flags or config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from itertools import chain, repeat
from operator import attrgetter, is_not
from pathlib import Path
from typing import Any

from db_test_action.commands.files import (
    bug,
    display_path,
    load_table,
    problem_from,
    read_json,
    read_result_files,
    unique_files,
    without_gc,
    write_chunks,
    write_output,
)
from db_test_action.config.report import resolve_report_config
from db_test_action.config.settings import default_text
from db_test_action.errors import EXIT_GATE, EXIT_OK, EXIT_USAGE, DbTestActionError
from db_test_action.junit.files import expand_paths
from db_test_action.junit.parse import ParsedFile, _shard_run_from_name
from db_test_action.model import Hang, ParseProblem, Report
from db_test_action.publish import gha
from db_test_action.report.build import build_report, validate_manifest
from db_test_action.report.codec import report_from_dict, report_json_chunks
from db_test_action.report.render import render_console, render_markdown

HELP = """\
Read JUnit XML from every shard, run and attempt of one CI run (files, directories or globs), group
reruns and repeats per test, classify failures by root cause, check time budgets, and write a
Markdown comment, a JSON report and a console summary.

settings: flag > DB_TEST_ACTION_* env > [tool.db-test-action] in pyproject.toml (or --config) > default
exit codes: 0 ok, 1 a --fail-on gate failed (or no tests), 2 bad input (broken/missing result files:
the report is still written and names them; or bad flags or config)"""


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
        "--junit-out",
        type=Path,
        metavar="F",
        help="write every shard, run and attempt merged into one JUnit file here (Surefire flaky "
        "dialect: flakyFailure/rerunFailure; categories and causes as properties)",
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
        help=f"comma list of errors,failures,budgets,flaky,regressions (default: {default_text('report', 'fail-on')})",
    )
    parser.add_argument(
        "--title", metavar="T", help=f"heading of the comment (default: {default_text('report', 'title')})"
    )
    parser.add_argument(
        "--budget", action="append", metavar="KEY=DURATION", help="e.g. suite=2m, category.encryption=5s"
    )
    parser.add_argument(
        "--server-log",
        action="append",
        type=Path,
        default=[],
        metavar="F",
        help="PostgreSQL jsonlog/csvlog to tie to failing tests (repeatable; server*.jsonl and server*.csv "
        "next to the JUnit files are read anyway)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
    report, all_tests = build_from_args(args, env, cwd)
    with without_gc():  # the outputs too: many short-lived objects, no cycles
        write_outputs(report, args)
        if args.junit_out:
            from db_test_action.report.junit_out import merged_junit_chunks

            chunks = (
                chunk.encode("utf-8") for chunk in merged_junit_chunks(all_tests or (), report.categories)
            )
            write_chunks(args.junit_out, chunks, "--junit-out")
        sys.stdout.write(gha.console(render_console(report)))
    return exit_code(report)


def build_from_args(
    args: argparse.Namespace, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[Report, list | None]:
    """The report the `report` flags describe (also `doctor`'s, over its own results dir), and every test
    when `--junit-out` wants them."""
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
    if args.manifest is None:
        args.manifest = _manifest_in(args.paths)
    if args.shard and not args.manifest:
        raise DbTestActionError(
            "--shard: needs --manifest (the shard is checked against it); add --manifest RESULTS/manifest.json",
            EXIT_USAGE,
        )
    # Untrusted inputs (a fork's artifacts): each defect becomes a named problem and the report is still
    # written (exit 2), never a crash and never a report missing for the Publish step to fill with a stale one.
    input_problems: list[ParseProblem] = []
    manifest = _load_manifest(args, input_problems)
    base = _load_base(args.base, input_problems) if args.base else None
    paths = list(args.paths) or ([str(args.manifest.parent)] if args.manifest else [])
    if not paths:
        raise DbTestActionError(
            "report: no results given; pass JUnit XML files, directories or globs (or --manifest)", EXIT_USAGE
        )
    files, missing = expand_paths(paths)
    files = unique_files(files)
    missing = (*input_problems, *missing)
    dirs = _result_dirs(paths, files)
    log_paths = find_server_logs(dirs, args.server_log)
    all_tests: list | None = [] if args.junit_out else None
    with without_gc():
        parsed = read_result_files(files, cwd)
        parsed, hangs, hang_problems = read_streams_and_hangs(parsed, dirs, cwd)
        # A killed pytest may leave a directory with no JUnit file but a results stream: not "nothing here".
        streamed = {Path(p.info.path).parent.resolve() for p in parsed if p.info.path.endswith(".jsonl")}
        missing = (*(m for m in missing if Path(m.file).resolve() not in streamed), *hang_problems)
        server_logs, server_problems = [], []
        if log_paths:
            from db_test_action.report.evidence import parse_server_log
        for log in log_paths:
            name = display_path(log, cwd)
            try:
                text = log.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                server_problems.append(ParseProblem(name, f"cannot read server log ({exc.strerror})"))
                continue
            try:
                events, problems = parse_server_log(text, name)
            except Exception as exc:  # a parser bug must cost this file, not the report
                server_problems.append(ParseProblem(name, f"cannot parse server log ({bug(exc)})"))
                continue
            server_logs.append((name, events))
            server_problems += [dataclasses.replace(p, file=name) for p in problems]
        note = "" if log_paths else _server_note(dirs, args.manifest, manifest, parsed)
        report = build_report(
            parsed,
            config,
            base=base,
            manifest=manifest,
            manifest_where=str(args.manifest),
            extra_problems=missing,
            server_logs=server_logs,
            server_note=note,
            server_problems=server_problems,
            tests_out=all_tests,
            hangs=hangs,
        )
    return report, all_tests


def _manifest_in(paths: list[str]) -> Path | None:
    """`report DIR` checks the results against DIR/manifest.json, the one the runner wrote there: a run that
    stopped after 43 of 79 tests must not read as 43 tests that passed."""
    for raw in paths:
        candidate = Path(raw) / "manifest.json"
        if Path(raw).is_dir() and candidate.is_file():
            return candidate
    return None


def read_streams_and_hangs(
    parsed: list[ParsedFile], dirs: tuple[Path, ...], cwd: Path
) -> tuple[list[ParsedFile], tuple[Hang, ...], tuple[ParseProblem, ...]]:
    """The plugin's results streams (`shard-I-run-K.jsonl`) fill in what a killed or interrupted pytest
    left out of its JUnit file; the runner's snapshots (`*.hang.json`) say what the hung tests waited on."""
    stream_paths = sorted({p.resolve() for d in dirs for p in d.rglob("shard-*-run-*.jsonl")})
    hang_paths = sorted({p.resolve() for d in dirs for p in d.rglob("shard-*-run-*.hang.json")})
    if not stream_paths and not hang_paths:
        return parsed, (), ()  # JUnit only (not a run of ours, or an old one): nothing to merge
    # The stream and snapshot readers load only for a run that left such files.
    from db_test_action.junit.stream import merge_stream, parse_stream
    from db_test_action.report.hangs import find_hangs, parse_snapshots, why_unfinished

    hang_runs = {_shard_run_from_name(p.name) for p in hang_paths}
    complete = {(p.info.shard, p.info.run) for p in parsed if _is_complete(p)}
    streams, problems = [], []
    for path in stream_paths:
        key = _shard_run_from_name(path.name)
        if key in complete and key not in hang_runs:
            continue  # pytest finished and wrote every result: the stream would add nothing
        text = _read(path, "results stream", problems, cwd)
        if text is not None:
            streams.append(parse_stream(text, display_path(path, cwd)))
    snapshots: list = []
    for path in hang_paths:
        text = _read(path, "hang snapshot", problems, cwd)
        if text is not None:
            found, bad = parse_snapshots(text, display_path(path, cwd))
            snapshots += found
            problems += bad
    hangs = find_hangs(snapshots, streams)
    why = why_unfinished(hangs)
    by_run: dict[tuple[int | None, int | None], list[ParsedFile]] = {}
    for p in parsed:
        by_run.setdefault((p.info.shard, p.info.run), []).append(p)
    merged = [p for p in parsed if not any((p.info.shard, p.info.run) == (s.shard, s.run) for s in streams)]
    for stream in streams:
        same = by_run.get((stream.shard, stream.run), [])
        near = [p for p in same if Path(p.info.path).parent == Path(stream.name).parent] or same
        first, rest = (near[0], [p for p in same if p is not near[0]]) if near else (None, [])
        reasons = {
            node: text
            for (shard, run, node), text in why.items()
            if (shard, run) == (stream.shard, stream.run)
        }
        merged += [*merge_stream(first, stream, reasons), *rest]
    return merged, hangs, tuple(problems)


def _is_complete(parsed: ParsedFile) -> bool:
    """pytest's own file, whole, and not cut short: no nameless testcases (written for tests interrupted
    by SIGINT) and no error testcase the runner wrote for a crash or a time limit."""
    return (
        parsed.info.is_pytest
        and parsed.problem is None
        and not any(r.test_id.startswith(("<unnamed testcase", "db-test-action::")) for r in parsed.rows)
    )


def _read(path: Path, what: str, problems: list[ParseProblem], cwd: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        problems.append(ParseProblem(display_path(path, cwd), f"cannot read {what} ({exc.strerror})"))
        return None


def _load_manifest(args: argparse.Namespace, problems: list[ParseProblem]) -> dict[str, Any] | None:
    if not args.manifest:
        return None
    try:
        manifest = dict(validate_manifest(read_json(args.manifest, "--manifest"), str(args.manifest)))
    except DbTestActionError as exc:
        problems.append(problem_from(exc, args.manifest))
        return None
    if args.shard:
        if not 1 <= args.shard <= manifest["shards"]:
            raise DbTestActionError(
                f"--shard: {args.shard} is not a shard of {args.manifest}; use 1..{manifest['shards']}",
                EXIT_USAGE,
            )
        manifest["only_shard"] = args.shard
    return manifest


def _load_base(path: Path, problems: list[ParseProblem]) -> Report | None:
    """The base branch's report, or None with a problem when it is unreadable or implausible."""
    try:
        data = read_json(path, "--base")
        base = report_from_dict(data, str(path))
        _check_times(base, str(path))
        return base
    except DbTestActionError as exc:
        problems.append(problem_from(exc, path))
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
        problems.append(ParseProblem(str(path), f"not a report written by `report --json` ({bug(exc)})"))
    return None


def _check_times(value: object, where: str) -> None:
    """Every `*_s` duration must be a finite number >= 0: a negative or NaN base time would invent or
    hide slowdowns."""
    if isinstance(value, tuple):
        for item in value:
            _check_times(item, where)
        return
    if not dataclasses.is_dataclass(value):
        return
    for field in dataclasses.fields(value):
        item = getattr(value, field.name)
        if field.name.endswith("_s") and item is not None:
            if not isinstance(item, (int, float)) or isinstance(item, bool) or not 0 <= item < 1e9:
                raise DbTestActionError(
                    f"{where}: {type(value).__name__}.{field.name} is {item!r}, not a duration in seconds "
                    "(finite, >= 0); pass a report written by `report --json`"
                )
        else:
            _check_times(item, where)


SERVER_LOG_GLOBS = ("server*.jsonl", "server*.csv")
NOT_OURS = "server evidence unavailable (server not started by db-test-action)"


def _result_dirs(paths: list[str], files: tuple[Path, ...]) -> tuple[Path, ...]:
    """Where the results are: the given directories and every JUnit file's own directory."""
    dirs = [Path(p) for p in paths if Path(p).is_dir()] + [f.parent for f in files]
    return tuple(dict.fromkeys(d.resolve() for d in dirs))


def find_server_logs(dirs: tuple[Path, ...], explicit: list[Path]) -> tuple[Path, ...]:
    """The runner writes `server-shard-I.jsonl` next to its JUnit files; `--server-log` adds any other."""
    found = {p.resolve(): None for d in dirs for pattern in SERVER_LOG_GLOBS for p in sorted(d.glob(pattern))}
    for path in explicit:
        if not path.is_file():
            raise DbTestActionError(
                f"--server-log {path}: no such file; pass the server log the run wrote (server-shard-I.jsonl)",
                EXIT_USAGE,
            )
        found[path.resolve()] = None
    return tuple(p for p in found if p.is_file())


def _server_note(dirs: tuple[Path, ...], manifest_path: Path | None, manifest: Any, parsed: list) -> str:
    """Why there is no server evidence, when the results are a run of ours; "" when nothing can be said.

    The runner's manifest names the log it wrote (`"server_log"`), or says why there is none: `"server":
    "external"` (--database-url) or a null log with a server of ours (--no-server-log).
    """
    manifests = [manifest] if manifest is not None else []
    for d in dirs:
        path = d / "manifest.json"
        if path.is_file() and (manifest_path is None or path.resolve() != manifest_path.resolve()):
            try:
                manifests.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, RecursionError):
                continue
    keyed = [m for m in manifests if isinstance(m, dict) and "server_log" in m]
    names = sorted({str(m["server_log"]) for m in keyed if m["server_log"]})
    if names:
        return f"server evidence unavailable ({', '.join(names)} not found next to the results)"
    if keyed and all(m.get("server") == "external" for m in keyed):
        return NOT_OURS
    if keyed:
        return "server evidence unavailable (the run did not capture the server log: --no-server-log)"
    rows = chain.from_iterable(p.rows for p in parsed)
    if any(map(is_not, map(attrgetter("started_at"), rows), repeat(None))):  # a C loop over 100,000
        return "server evidence unavailable (no server log next to the results; pass --server-log)"
    return ""


def exit_code(report: Report) -> int:
    if report.problems:
        return EXIT_USAGE
    return EXIT_OK if report.is_green else EXIT_GATE


def write_outputs(report: Report, args: argparse.Namespace) -> None:
    if args.markdown:
        write_output(args.markdown, render_markdown(report), "--markdown")
    if args.json:
        write_chunks(args.json, report_json_chunks(report), "--json")
