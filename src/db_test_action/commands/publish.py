"""`db-test-action publish`: job summary, annotations and the sticky PR comment for one report.

Settings resolve flag > DB_TEST_ACTION_<NAME> > GitHub's own variable (GITHUB_TOKEN, GITHUB_REPOSITORY,
GITHUB_API_URL, GITHUB_EVENT_PATH) > default, here and only here; `publish.publish()` gets them resolved.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from db_test_action.commands.files import loads_json
from db_test_action.config.settings import default_text, resolve
from db_test_action.errors import EXIT_USAGE, DbTestActionError
from db_test_action.publish.client import RetryPolicy
from db_test_action.publish.publisher import (
    ANNOTATIONS_PER_LEVEL,
    COMMENT_MAX_CHARS,
    COMMENT_RESERVE_CHARS,
    CommentMode,
    Publication,
    PublishSettings,
    RunHead,
    check_key,
    publish,
    pull_request_from_event,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "publish",
        help="write the job summary and annotations, and post or update the sticky PR comment",
        description="Publish a report: job summary (GITHUB_STEP_SUMMARY), annotations (stdout) and one sticky "
        "comment per --key on the pull request of this event. A comment that cannot be posted (fork token, "
        "outage, rate limit) is a warning and exit 0 unless --fail-on-publish-error; the summary is always "
        "written first. Every flag also reads DB_TEST_ACTION_<FLAG> (e.g. DB_TEST_ACTION_COMMENT_MODE).",
    )
    src = parser.add_argument_group("input (at least one)")
    src.add_argument(
        "--report-json", "--json", dest="report_json", metavar="FILE", help="report from `report --json`"
    )
    src.add_argument("--markdown", metavar="FILE", help="post this Markdown instead of rendering the report")
    parser.add_argument(
        "--key",
        metavar="KEY",
        help=f"one sticky comment per key, e.g. 'unit' (default: {default_text('publish', 'key')})",
    )
    parser.add_argument(
        "--comment-mode",
        choices=[m.value for m in CommentMode],
        help="off; always (default); changes: skip when the report did not change; "
        "failures: only when not green (an existing comment is still updated)",
    )
    gh = parser.add_argument_group("GitHub")
    gh.add_argument("--token", metavar="TOKEN", help="API token (default: GITHUB_TOKEN); never printed")
    gh.add_argument("--repository", metavar="OWNER/REPO", help="(default: GITHUB_REPOSITORY)")
    gh.add_argument(
        "--api-url", metavar="URL", help="REST base, e.g. https://ghe.example/api/v3 (GITHUB_API_URL)"
    )
    gh.add_argument("--event-file", metavar="FILE", help="webhook payload (default: GITHUB_EVENT_PATH)")
    gh.add_argument("--pr", type=int, metavar="N", help="comment on this PR number instead of the event's")
    gh.add_argument(
        "--comment-author",
        metavar="LOGIN",
        help="whose comments count as ours (default: the token's login, else github-actions[bot])",
    )
    gh.add_argument(
        "--retries",
        type=int,
        metavar="N",
        help=f"retries on 5xx/rate limits (default: {default_text('publish', 'retries')})",
    )
    gh.add_argument(
        "--max-wait",
        type=float,
        metavar="SECONDS",
        help=f"one time limit for the comment: connecting, reading, retry waits (default: {default_text('publish', 'max-wait')})",
    )
    parser.add_argument(
        "--max-annotations",
        type=int,
        metavar="N",
        help=f"per level; GitHub shows {ANNOTATIONS_PER_LEVEL} per step (default: {ANNOTATIONS_PER_LEVEL})",
    )
    parser.add_argument("--dry-run", action="store_true", default=None, help="print what would be posted")
    parser.add_argument(
        "--fail-on-publish-error",
        action="store_true",
        default=None,
        help="exit 3 when the comment cannot be posted (default: warn and exit 0, e.g. on fork PRs)",
    )
    parser.set_defaults(handler=run)


def _read_text(path: str, flag: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DbTestActionError(
            f"{path}: cannot read {flag} file ({exc.strerror}); check the path and its permissions"
        ) from None
    except UnicodeDecodeError:
        raise DbTestActionError(
            f"{path}: {flag} file is not UTF-8 text; pass the file db-test-action wrote"
        ) from None


def read_event(path: str) -> dict[str, Any]:
    """The webhook payload: GITHUB_EVENT_PATH, or one saved by the PR workflow (two-workflow pattern)."""
    data = loads_json(
        _read_text(path, "event"), path, "event payload", "pass GitHub's event file (GITHUB_EVENT_PATH)"
    )
    if not isinstance(data, dict):
        raise DbTestActionError(
            f"{path}: event payload is not a JSON object; pass GitHub's event file (GITHUB_EVENT_PATH)"
        )
    return data


def publication_from_report_json(path: str, key: str, markdown: str | None = None) -> Publication:
    """The CLI glue from the reporter's JSON to a Publication (the publish core never sees a Report)."""
    from db_test_action.report.codec import report_from_dict
    from db_test_action.report.render import annotations_for, render_markdown, report_fingerprint

    try:
        data = json.loads(_read_text(path, "--report-json"))
    except json.JSONDecodeError as exc:
        raise DbTestActionError(
            f"{path}:{exc.lineno}: report is not JSON ({exc.msg}); pass `report --json`"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise DbTestActionError(
            f"{path}: report is not usable JSON ({type(exc).__name__}); pass `report --json`"
        ) from None
    report = report_from_dict(data, where=path)
    if markdown is None:
        markdown = render_markdown(report, max_chars=COMMENT_MAX_CHARS - COMMENT_RESERVE_CHARS)
    return Publication(
        key=key,
        markdown=markdown,
        is_green=report.is_green,
        fingerprint=report_fingerprint(report),
        annotations=tuple(annotations_for(report)),
    )


def publication_from_markdown(path: str, key: str) -> Publication:
    """Markdown alone: no verdict, so it counts as not green (`--comment-mode failures` still posts)."""
    markdown = _read_text(path, "--markdown")
    fingerprint = hashlib.sha256(markdown.encode("utf-8")).hexdigest()[:16]
    return Publication(key=key, markdown=markdown, is_green=False, fingerprint=fingerprint)


def settings_from(values: Mapping[str, Any], env: Mapping[str, str]) -> PublishSettings:
    """The publish core's settings from the resolved values (config.resolve("publish", …))."""
    comment_mode = CommentMode(values["comment_mode"])
    repository = values["repository"]
    target: int | RunHead | None = None
    event_problem: str | None = None
    # With comments off (shard jobs, local runs) nothing is posted: the repository and event don't matter,
    # and a runner that reports an odd GITHUB_REPOSITORY must not fail the summary and annotations.
    if comment_mode is not CommentMode.OFF:
        if repository is not None and repository.count("/") != 1:
            raise DbTestActionError(
                f"--repository: {repository!r} is not OWNER/REPO; pass --repository OWNER/REPO"
            )
        target = values["pr"]
        if target is None and values["event_file"]:
            try:
                target = pull_request_from_event(read_event(values["event_file"]), repository)
            except DbTestActionError as exc:  # reported after the summary and annotations are written
                event_problem = str(exc)
    return PublishSettings(
        event_problem=event_problem,
        repository=repository,
        token=values["token"],
        api_url=values["api_url"],
        pull_request=target,
        comment_mode=comment_mode,
        comment_author=values["comment_author"],
        max_annotations=values["max_annotations"],
        is_dry_run=values["dry_run"],
        fail_on_publish_error=values["fail_on_publish_error"],
        retry=RetryPolicy(retries=values["retries"], max_wait_s=values["max_wait"]),
    )


def run(args: argparse.Namespace) -> int:
    env = os.environ
    values = resolve("publish", vars(args), env)
    key = check_key(values["key"])
    report_json, markdown_file = values["report_json"], values["markdown"]
    if report_json:
        markdown = _read_text(markdown_file, "--markdown") if markdown_file else None
        pub = publication_from_report_json(report_json, key, markdown)
    elif markdown_file:
        pub = publication_from_markdown(markdown_file, key)
    else:
        raise DbTestActionError(
            "publish: nothing to publish; pass --report-json FILE or --markdown FILE", EXIT_USAGE
        )
    settings = settings_from(values, env)
    return publish(pub, settings, out=sys.stdout, err=sys.stderr, env=env)
