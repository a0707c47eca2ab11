"""`db-test-action stability PATHS…`: tonight's JUnit + the history → flake rates, trend, tracking issue.

The I/O edge of the nightly job. Order matters for resilience: the report (console, Markdown, JSON,
quarantine file, job summary) and the local history file are written before any GitHub call, so an outage,
a rate limit or a read-only token can cost the issue update or the branch commit, never the report.
A history that could not be *read* from the branch is never *written* back: one night must not replace a
year. Settings: flag > DB_TEST_ACTION_<FLAG> > [tool.db-test-action.stability] > GitHub's variables > default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from db_test_action.commands.files import (
    display_path,
    load_table,
    problem_from,
    read_history_file,
    read_result_files,
    unique_files,
    without_gc,
    write_history_file,
    write_output,
)
from db_test_action.commands.report import _result_dirs, find_server_logs
from db_test_action.config.report import resolve_report_config
from db_test_action.config.settings import (
    DEFAULT_BRANCH,
    DEFAULT_HISTORY_PATH,
    DEFAULT_KEEP_NIGHTS,
    DEFAULT_LABEL,
    default_text,
    resolve,
    table_keys,
)
from db_test_action.errors import EXIT_ENV, EXIT_GATE, EXIT_OK, EXIT_USAGE, DbTestActionError
from db_test_action.junit.files import expand_paths
from db_test_action.publish import gha
from db_test_action.report.build import build_report
from db_test_action.report.evidence import parse_server_log
from db_test_action.stability.conflicts import conflict_list, merge_conflicts
from db_test_action.stability.history import (
    add_night,
    dump_history,
    parse_history,
)
from db_test_action.stability.nightly import Night, night_of, observe
from db_test_action.stability.rates import StabilityReport, StabilitySettings, build_stability
from db_test_action.stability.render import (
    render_quarantine,
    render_stability_console,
    render_stability_markdown,
)

if TYPE_CHECKING:
    from db_test_action.publish.client import Retrier
    from db_test_action.publish.tracking import BranchFile, TrackingSettings

T = TypeVar("T")


def _github_modules() -> tuple[Any, Any]:
    """publish.client and publish.tracking, imported when GitHub is used: PyGithub costs ~1 s to import."""
    from db_test_action.publish import client, tracking

    return client, tracking


TABLE_KEYS = table_keys("stability", "stability")  # [tool.db-test-action.stability]: what describes the suite
SCHEMA = "db-test-action-stability"
SCHEMA_VERSION = 1

HELP = f"""\
Read the JUnit XML of a nightly run (every shard, repeat and rerun; files, directories or globs) and the
history of earlier nights; per test: runs, passes, failures, fixture errors, reruns, the flake rate with
a 95 % Wilson interval and a status (stable, flaky, newly-flaky, broken, recovered); per category and
root-cause class; consecutive green suite runs across nights; the trend. Appends tonight to the history
(--history FILE and/or --history-branch), updates one tracking issue (--tracking-issue) and writes the
quarantine list (--quarantine-out) that `pytest --quarantine FILE` reads.

settings: flag > DB_TEST_ACTION_<FLAG> > [tool.db-test-action.stability] > GITHUB_* > default
exit codes: 0 ok, 1 a --fail-on gate failed (default: consecutive, with --require-consecutive), 2 bad
input (broken or missing result files, bad flags; the report is still written), 3 GitHub failed and
--fail-on-publish-error (otherwise a warning). History format: {SCHEMA} (docs/stability.md, "History")."""


def _flag(group: argparse._ArgumentGroup, key: str, metavar: str, text: str) -> None:
    """The flag of a setting in the table; its help ends with the table's default, so the two agree."""
    group.add_argument(
        f"--{key}", metavar=metavar, help=f"{text} (default: {default_text('stability', key)})"
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stability",
        help="flake rates across runs and nights, history, trend, tracking issue, quarantine list",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="*", metavar="PATHS", help="JUnit XML files, directories or globs")
    p.add_argument(
        "--config", type=Path, metavar="F", help="TOML with [tool.db-test-action] (categories, classes)"
    )
    h = p.add_argument_group("history")
    h.add_argument("--history", metavar="FILE", help="local history file: read if present, then rewritten")
    h.add_argument(
        "--history-artifact",
        metavar="NAME",
        help="first fetch --history FILE from the newest artifact NAME of a default-branch run (GitHub API); "
        "failing to ask is an error, only no such artifact is a first night",
    )
    h.add_argument(
        "--history-branch", metavar="BRANCH", help=f"keep the history on this branch, e.g. {DEFAULT_BRANCH}"
    )
    h.add_argument(
        "--history-path", metavar="PATH", help=f"file on the branch (default: {DEFAULT_HISTORY_PATH})"
    )
    h.add_argument(
        "--keep-nights", metavar="N", help=f"nights kept in the history (default: {DEFAULT_KEEP_NIGHTS})"
    )
    h.add_argument(
        "--night", metavar="LABEL", help="tonight's label (default: today's UTC date); same label replaces"
    )
    h.add_argument("--commit", metavar="SHA", help="commit tested tonight (default: GITHUB_SHA)")
    s = p.add_argument_group("verdict")
    _flag(s, "window", "N", "nights (tonight included) behind rates and statuses")
    _flag(s, "recover-after", "N", "clean nights before a flaky test counts as recovered")
    s.add_argument("--require-consecutive", metavar="N", help="the suite's last N runs must all be green")
    _flag(s, "fail-on", "GATES", "comma list of consecutive, broken, newly-flaky, flaky; or none")
    s.add_argument(
        "--expect-runs",
        metavar="N",
        help="runs tonight should have (a run with no file at all is incomplete)",
    )
    _flag(s, "title", "T", "heading")
    o = p.add_argument_group("outputs")
    o.add_argument("--markdown", type=Path, metavar="F", help="write the Markdown here")
    o.add_argument("--json", type=Path, metavar="F", help=f"write the JSON here ({SCHEMA} v{SCHEMA_VERSION})")
    o.add_argument(
        "--quarantine-out", type=Path, metavar="F", help="write the flaky node ids here, for --quarantine"
    )
    g = p.add_argument_group("GitHub")
    g.add_argument(
        "--tracking-issue", action="store_true", default=None, help="create/update/close the tracking issue"
    )
    g.add_argument("--label", metavar="L", help=f"the tracking issue's label (default: {DEFAULT_LABEL})")
    _flag(g, "issue-key", "KEY", "one tracking issue per key")
    _flag(g, "close-after", "M", "close the issue after M clean nights in a row")
    g.add_argument("--token", metavar="TOKEN", help="API token (default: GITHUB_TOKEN); never printed")
    g.add_argument("--repository", metavar="OWNER/REPO", help="(default: GITHUB_REPOSITORY)")
    g.add_argument("--api-url", metavar="URL", help="REST base (default: GITHUB_API_URL or api.github.com)")
    _flag(g, "retries", "N", "retries on 5xx/rate limits")
    _flag(g, "max-wait", "SECONDS", "one time limit for all GitHub calls: connecting, reading, retry waits")
    g.add_argument(
        "--dry-run", action="store_true", default=None, help="read from GitHub, write nothing there"
    )
    g.add_argument(
        "--fail-on-publish-error", action="store_true", default=None, help="exit 3 when GitHub fails"
    )
    p.set_defaults(handler=run)


def _io(message: str) -> None:
    print(f"db-test-action: stability: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> int:
    env = dict(os.environ) if env is None else env
    cwd = cwd or Path.cwd()
    table, where = load_table(args.config, cwd)
    stability_table = table.get("stability", {})
    if not isinstance(stability_table, dict):
        raise DbTestActionError(
            f"{where}: stability is not a table; write it as [tool.db-test-action.stability]"
        )
    unknown = sorted(set(stability_table) - TABLE_KEYS)
    if unknown:
        raise DbTestActionError(
            f"{where} stability: unknown key {unknown[0]!r}; use one of {', '.join(sorted(TABLE_KEYS))}"
        )
    st = resolve("stability", vars(args), env, where=where, tables={"stability": stability_table})
    report_config = resolve_report_config({}, {}, table, where)
    settings = StabilitySettings(
        window=st["window"],
        recover_after=st["recover_after"],
        require_consecutive=st["require_consecutive"],
        fail_on=st["fail_on"],
        title=st["title"],
    )
    keep = st["keep_nights"]
    label = st["night"] or datetime.now(timezone.utc).date().isoformat()
    commit = st["commit"]
    history_file = st["history"]
    branch = st["history_branch"]
    branch_path = st["history_path"]
    is_dry_run = st["dry_run"]
    wants_issue = st["tracking_issue"]

    if not args.paths:
        raise DbTestActionError(
            "stability: no results given; pass the nightly run's JUnit XML files, directories or globs"
        )
    files, missing = expand_paths(args.paths)
    with without_gc():
        parsed = read_result_files(unique_files(files), cwd)
        observed = observe(parsed, report_config.categories, report_config.classes, st["expect_runs"])
    observed = dataclasses.replace(observed, problems=observed.problems + missing)
    tonight = night_of(observed, label, commit)

    artifact = st["history_artifact"]
    github = _GitHub.maybe(st, is_dry_run) if (branch or wants_issue or artifact) else None
    if artifact and github is not None:
        fetch_history_artifact(github, artifact, history_file)
    previous: tuple[Night, ...] = ()
    branch_file: BranchFile | None = None
    can_write_branch = False
    history_ok = True
    if history_file:
        try:
            previous = read_history_file(Path(history_file)) or ()
        except DbTestActionError as exc:
            # Tonight's outputs are still written (the promise); the damaged file is kept, not overwritten.
            history_ok = False
            observed = dataclasses.replace(
                observed, problems=(*observed.problems, problem_from(exc, Path(history_file)))
            )
            _io(f"{exc}; tonight's report is written, the history file is left as it is")
        else:
            _io(
                f"history {history_file}: {len(previous)} earlier nights"
                if previous
                else f"history {history_file}: none yet"
            )
    if branch and github is not None:
        client, tracking = _github_modules()
        try:
            branch_file = github.within(
                lambda: tracking.load_branch_file(
                    github.gh, github.retrier, github.repository, branch, branch_path
                ),
                "read the history branch",
            )
            can_write_branch = True
            if branch_file is not None:
                try:
                    previous = parse_history(branch_file.text, f"{branch}:{branch_path}")
                except DbTestActionError as exc:
                    can_write_branch = False  # never overwrite a history we could not read
                    where = Path(f"{branch}:{branch_path}")
                    observed = dataclasses.replace(
                        observed, problems=(*observed.problems, problem_from(exc, where))
                    )
            _io(f"history on branch {branch}: {len(previous)} earlier nights")
        except client.PublishError as exc:
            _io(f"cannot read the history from branch {branch}: {exc}; it will not be overwritten tonight")
            github.failed = True

    conflicts, unknown = _conflicts(parsed, args.paths, files, report_config, cwd)
    tonight = dataclasses.replace(tonight, conflicts=conflicts)  # kept in the history line
    report = build_stability(observed, tonight, previous, settings)
    earlier = previous[-(settings.window - 1) :] if settings.window > 1 else ()
    merged = merge_conflicts(n.conflicts for n in (*earlier, tonight))
    report = dataclasses.replace(report, conflicts=merged, conflicts_unknown=unknown)
    markdown = render_stability_markdown(report)
    _write_outputs(report, markdown, args)
    sys.stdout.write(gha.console(render_stability_console(report)))
    try:
        path = gha.append_summary(markdown, env)
        if path:
            _io(f"wrote the job summary to {path}")
    except OSError as exc:
        _io(f"{env.get('GITHUB_STEP_SUMMARY')}: cannot write the job summary ({exc.strerror})")
    nights = add_night(previous, tonight, keep)
    if history_file and history_ok:
        write_history_file(Path(history_file), nights)
        _io(f"history {history_file}: {len(nights)} nights written")

    if github is not None:
        if branch and can_write_branch:
            github.save_history(branch, branch_path, dump_history(nights), branch_file, label)
        if wants_issue:
            github.track(report, markdown, tonight.is_clean)
    if report.problems:
        return EXIT_USAGE
    if github is not None and github.failed and st["fail_on_publish_error"]:
        return EXIT_ENV
    return EXIT_OK if report.is_green else EXIT_GATE


def fetch_history_artifact(github: _GitHub, name: str, history_file: str | None) -> None:
    """Write the previous night's history (the newest default-branch artifact `name`) to `history_file`."""
    if not history_file:
        raise DbTestActionError(
            "--history-artifact: needs a local history file; give --history FILE too (tonight's is written there)"
        )
    from db_test_action.publish.artifacts import fetch_history  # PyGithub: only when GitHub is used

    client, _tracking = _github_modules()
    try:
        found = github.within(
            lambda: fetch_history(
                github.gh,
                github.retrier,
                github.repository,
                name,
                github.settings.token,
                Path(history_file).name,
            ),
            "fetch the history artifact",
        )
    except client.PublishError as exc:
        raise DbTestActionError(
            f"--history-artifact {name}: {exc}; without the earlier nights the gates would start over "
            "(grant `actions: read`, or drop --history-artifact to begin a new history)",
            EXIT_ENV,
        ) from None
    if found is None:
        _io(f"history artifact {name}: none from the default branch yet; this is the first night")
        return
    Path(history_file).parent.mkdir(parents=True, exist_ok=True)
    Path(history_file).write_text(found.text, encoding="utf-8")
    _io(f"history artifact {name}: from workflow run {found.run_id} (artifact {found.artifact_id})")


def _conflicts(parsed, paths, files, config, cwd: Path):  # type: ignore[no-untyped-def]
    """Collision partners from the server logs next to the results (none: an empty list)."""
    logs = find_server_logs(_result_dirs(list(paths), files), [])
    server_logs = []
    for log in logs:
        try:
            text = log.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            _io(f"{log}: cannot read the server log ({exc.strerror}); no conflict list from it")
            continue
        server_logs.append((display_path(log, cwd), parse_server_log(text, str(log))[0]))
    if not server_logs:
        return (), 0
    return conflict_list(build_report(parsed, config, server_logs=server_logs).tests)


@dataclasses.dataclass
class _GitHub:
    settings: TrackingSettings
    retrier: Retrier
    is_dry_run: bool
    gh: Any
    left_s: float  # what remains of --max-wait for GitHub calls (time spent inside them, not local work)
    failed: bool = False

    @classmethod
    def maybe(cls, st: Mapping[str, Any], is_dry_run: bool) -> _GitHub | None:
        repository, token = st["repository"], st["token"]
        if not repository or repository.count("/") != 1:
            raise DbTestActionError(
                f"--repository: {repository!r} is not OWNER/REPO; pass it or set GITHUB_REPOSITORY"
            )
        if not token:
            raise DbTestActionError("stability: no token for GitHub; pass --token or set GITHUB_TOKEN")
        client, tracking = _github_modules()
        settings = tracking.TrackingSettings(
            repository=repository,
            token=token,
            api_url=st["api_url"],
            label=st["label"],
            key=st["issue_key"],
            close_after=st["close_after"],
            retry=client.RetryPolicy(retries=st["retries"], max_wait_s=st["max_wait"]),
        )
        # Per-request socket timeouts inside one overall deadline: a server that trickles bytes cannot
        # hold the night's job past --max-wait (connecting, reading and retry sleeps together).
        gh = client.connect(settings.token, settings.api_url, timeout_s=max(1, min(30, int(st["max_wait"]))))
        return cls(settings, client.Retrier(settings.retry, log=_io), is_dry_run, gh, st["max_wait"])

    def within(self, work: Callable[[], T], what: str) -> T:
        """`work` (GitHub calls) in what is left of --max-wait; PublishError when it runs out. Only time
        spent here counts, so reading results and writing outputs never eat into it; once nothing is
        left, no further call is even started (an abandoned one could still change an issue)."""
        client, _tracking = _github_modules()
        message = (
            f"github: {what}: no answer within --max-wait {self.settings.retry.max_wait_s:g}s "
            "(all of tonight's GitHub calls together)"
        )
        if self.left_s <= 0:
            raise client.PublishError(message)
        started = time.monotonic()
        try:
            return client.within_deadline(work, self.left_s, message)
        finally:
            self.left_s -= time.monotonic() - started

    @property
    def repository(self) -> str:
        return self.settings.repository

    def save_history(
        self, branch: str, path: str, text: str, previous: BranchFile | None, label: str
    ) -> None:
        if self.is_dry_run:
            _io(f"dry run: would write {len(text.encode())} bytes to {path} on branch {branch}")
            return
        client, tracking = _github_modules()
        try:
            sha = self.within(
                lambda: tracking.save_branch_file(
                    self.gh, self.retrier, self.repository, branch, path, text, previous,
                    f"db-test-action: stability history, night {label}", log=_io,
                ),
                "write the history branch",
            )  # fmt: skip
            _io(f"history written to {self.repository}@{branch}:{path} ({sha[:12]})")
        except client.PublishError as exc:
            self.failed = True
            _io(f"history not written to branch {branch}: {exc}; the local file and the job summary have it")

    def track(self, report: StabilityReport, markdown: str, is_clean_tonight: bool) -> None:
        unstable = sum(1 for t in report.tests if t.status.value != "stable")
        title = f"{report.title}: {unstable} unstable tests (night {report.night})"
        if self.is_dry_run:
            _io(
                f"dry run: would create/update/close the tracking issue labelled {self.settings.label}: {title}"
            )
            return
        client, tracking = _github_modules()
        try:
            result = self.within(
                lambda: tracking.update_tracking_issue(
                    self.settings, self.retrier, title=title, markdown=markdown, night=report.night,
                    clean_nights=report.clean_nights, is_clean_tonight=is_clean_tonight, gh=self.gh,
                ),
                "update the tracking issue",
            )  # fmt: skip
        except client.PublishError as exc:
            self.failed = True
            hint = (
                "grant `issues: write` to the job"
                if exc.is_permission
                else "the report is in the job summary"
            )
            _io(f"tracking issue not updated: {exc}; {hint}")
            return
        for number in result.duplicates_closed:
            _io(f"closed duplicate tracking issue #{number}")
        if result.action is tracking.TrackingAction.NONE:
            _io("all clean and no open tracking issue; nothing to do")
        else:
            verb = {"create": "created", "update": "updated", "close": "closed"}[result.action.value]
            print(f"{verb} the tracking issue #{result.number}: {result.url}")


def stability_to_dict(report: StabilityReport) -> dict[str, Any]:
    """The JSON output: every dataclass field, enums as values, and each rate's value spelled out."""
    data = orjson.loads(orjson.dumps(report))  # dataclasses, enums and tuples serialised in C
    for test, raw in zip(data["tests"], report.tests, strict=True):
        test["rate"]["value"] = raw.rate.value
    return {"schema": SCHEMA, "version": SCHEMA_VERSION, **data}


def _write_outputs(report: StabilityReport, markdown: str, args: argparse.Namespace) -> None:
    if args.markdown:
        write_output(args.markdown, markdown, "--markdown")
    if args.json:
        write_output(args.json, orjson.dumps(stability_to_dict(report)) + b"\n", "--json")
    if args.quarantine_out:
        write_output(args.quarantine_out, render_quarantine(report), "--quarantine-out")
