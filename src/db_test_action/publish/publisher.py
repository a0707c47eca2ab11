"""Last pipeline stage: job summary, annotations and one sticky PR comment per report key.

Order matters for resilience: the summary and annotations are written first (they need no token and no
network), so a fork's read-only token, an outage or a rate limit can cost the PR comment but never the report.
The decisions (which comment is ours, create or update or skip, which annotations fit) are pure functions;
`publish()` is the only one that touches streams, files and the network (through `github_client`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TextIO

from db_test_action.config.settings import ANNOTATIONS_PER_LEVEL
from db_test_action.errors import EXIT_ENV, EXIT_OK, EXIT_USAGE, DbTestActionError
from db_test_action.model import Annotation, Level
from db_test_action.publish import client, gha
from db_test_action.publish.client import (
    ACTIONS_BOT_LOGIN,
    DEFAULT_API_URL,
    Comment,
    PublishError,
    Retrier,
    RetryPolicy,
)
from db_test_action.report.markdown import markdown_closers

COMMENT_MAX_CHARS = 65536  # GitHub rejects longer issue comments with 422
COMMENT_RESERVE_CHARS = (
    400  # marker + fingerprint + trim note; render with max_chars=COMMENT_MAX_CHARS - this
)
KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}")
FORK_HINT = (
    "the token cannot write to this pull request (fork PRs get a read-only GITHUB_TOKEN); the report is in "
    "the job summary; to comment on fork PRs, publish from a workflow_run workflow (see docs/publishing.md)"
)


class CommentMode(str, Enum):
    """When to post: `changes` skips when the report's fingerprint equals the one in our comment;
    `failures` comments only when not green, but still updates an existing comment so it never stays red."""

    OFF = "off"
    ALWAYS = "always"
    CHANGES = "changes"
    FAILURES = "failures"


class CommentAction(str, Enum):
    CREATE = "create"
    UPDATE = "update"
    SKIP_UNCHANGED = "skip-unchanged"
    SKIP_GREEN = "skip-green"


@dataclass(frozen=True, slots=True)
class Publication:
    """What gets published, decoupled from the Report: built from the report JSON by the CLI."""

    key: str
    markdown: str
    is_green: bool
    fingerprint: str
    annotations: tuple[Annotation, ...] = ()


@dataclass(frozen=True, slots=True)
class RunHead:
    """A workflow_run's head (fork owner, branch, SHA): the PR must be looked up through the API."""

    owner: str
    branch: str
    sha: str


@dataclass(frozen=True, slots=True)
class PublishSettings:
    """Fully resolved settings (flags > DB_TEST_ACTION_* > GITHUB_* > defaults, done by the CLI)."""

    repository: str | None = None
    token: str | None = field(default=None, repr=False)
    api_url: str = DEFAULT_API_URL
    pull_request: int | RunHead | None = None
    comment_mode: CommentMode = CommentMode.ALWAYS
    comment_author: str | None = None  # None: ask the API, then fall back to github-actions[bot]
    max_annotations: int = ANNOTATIONS_PER_LEVEL
    is_dry_run: bool = False
    fail_on_publish_error: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)


# --- pure decisions -------------------------------------------------------------------------------


def check_key(key: str) -> str:
    if not KEY_PATTERN.fullmatch(key):
        raise DbTestActionError(f"--key: {key!r} is not a key; use letters, digits and . _ / - (e.g. 'unit')")
    return key


def marker(key: str) -> str:
    """The hidden line that makes a comment ours-for-this-key; ` -->` ends it, so key `a` never matches `ab`."""
    return f"<!-- db-test-action:{key} -->"


def fingerprint_line(key: str, fingerprint: str) -> str:
    return f"<!-- db-test-action:{key}:fingerprint={fingerprint} -->"


def comment_body(pub: Publication) -> str:
    """Markdown + marker + fingerprint, cut to GitHub's comment limit (the report JSON keeps everything)."""
    tail = f"\n\n{marker(pub.key)}\n{fingerprint_line(pub.key, pub.fingerprint)}\n"
    markdown = pub.markdown
    budget = COMMENT_MAX_CHARS - len(tail)
    if len(markdown) > budget:
        note = "\n\n> **Note:** this comment was cut to GitHub's size limit; see the job summary.\n"
        head = markdown[: budget - len(note) - 200]  # room for the closers
        head = head[: head.rindex("\n")] if "\n" in head else head
        markdown = head + markdown_closers(head) + note
    return markdown.rstrip("\n") + tail


def fingerprint_in(body: str, key: str) -> str | None:
    prefix = f"<!-- db-test-action:{key}:fingerprint="
    for line in body.splitlines():
        if line.startswith(prefix) and line.endswith(" -->"):
            return line[len(prefix) : -len(" -->")]
    return None


def find_sticky(comments: Iterable[Comment], key: str, login: str) -> Comment | None:
    """The first comment carrying our marker *and* written by us; a copied marker in someone else's
    comment is ignored, so we never edit (or fail trying to edit) another user's words."""
    mark = marker(key)
    for comment in comments:
        if mark in comment.body and comment.author.casefold() == login.casefold():
            return comment
    return None


def decide_comment(mode: CommentMode, pub: Publication, existing: Comment | None) -> CommentAction:
    if mode is CommentMode.FAILURES and pub.is_green and existing is None:
        return CommentAction.SKIP_GREEN
    is_same = existing is not None and fingerprint_in(existing.body, pub.key) == pub.fingerprint
    if mode is CommentMode.CHANGES and is_same:
        return CommentAction.SKIP_UNCHANGED
    return CommentAction.CREATE if existing is None else CommentAction.UPDATE


def pull_request_from_event(payload: Mapping[str, Any], repository: str | None) -> int | RunHead | None:
    """The PR this event is about: a number, a workflow_run head to look up, or None (push, schedule…)."""
    pr = payload.get("pull_request")
    if isinstance(pr, Mapping) and isinstance(pr.get("number"), int):
        return int(pr["number"])  # pull_request, pull_request_target, pull_request_review…
    issue = payload.get("issue")
    if isinstance(issue, Mapping) and issue.get("pull_request") and isinstance(issue.get("number"), int):
        return int(issue["number"])  # issue_comment on a PR
    run = payload.get("workflow_run")
    if not isinstance(run, Mapping) or run.get("event") not in ("pull_request", "pull_request_target"):
        return None
    suffix = f"/repos/{repository}".casefold() if repository else None
    for item in run.get("pull_requests") or ():
        base_url = str(((item.get("base") or {}).get("repo") or {}).get("url", ""))
        if isinstance(item.get("number"), int) and (suffix is None or base_url.casefold().endswith(suffix)):
            return int(item["number"])
    # Fork PRs: GitHub leaves pull_requests empty; find it by the head repository's owner:branch and SHA.
    owner = ((run.get("head_repository") or {}).get("owner") or {}).get("login")
    branch, sha = run.get("head_branch"), run.get("head_sha")
    if owner and branch and sha:
        return RunHead(owner=str(owner), branch=str(branch), sha=str(sha))
    return None


def select_annotations(annotations: Iterable[Annotation], per_level: int) -> tuple[Annotation, ...]:
    """The most important `per_level` annotations of each level (by rank, then file/line), errors first.

    When some are left out, the last slot of that level says how many, so the UI shows the count instead
    of silently dropping them (GitHub would drop everything past the 10th anyway).
    """
    chosen: list[Annotation] = []
    for level in (Level.ERROR, Level.WARNING, Level.NOTICE):
        same = sorted(
            (a for a in annotations if a.level is level),
            key=lambda a: (a.rank, a.file or "\uffff", a.line or 0, a.title),
        )
        if len(same) <= per_level:
            chosen.extend(same)
            continue
        shown = same[: max(per_level - 1, 0)]
        left_out = len(same) - len(shown)
        chosen.extend(shown)
        if per_level > 0:
            chosen.append(
                Annotation(
                    level=level,
                    title=f"{left_out} more {level.value} annotations not shown",
                    message=f"GitHub shows {per_level} {level.value}s per step; all {len(same)} are in the "
                    "job summary and the report JSON",
                    rank=10**6,
                )
            )
    return tuple(chosen)


def annotation_lines(annotations: Iterable[Annotation]) -> tuple[str, ...]:
    return tuple(
        gha.annotation(a.level.value, a.message, title=a.title, file=a.file, line=a.line) for a in annotations
    )


# --- the edge -------------------------------------------------------------------------------------


@dataclass
class _Io:
    out: TextIO
    err: TextIO
    env: Mapping[str, str]

    def log(self, line: str) -> None:
        print(f"db-test-action: publish: {line}", file=self.err, flush=True)

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)


def publish(
    pub: Publication,
    settings: PublishSettings,
    *,
    out: TextIO,
    err: TextIO,
    env: Mapping[str, str],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> int:
    """Annotations, then the job summary, then the sticky comment; returns the exit code.

    A failed comment is a warning plus exit 0 (or 3 with `fail_on_publish_error`): the gate is the test
    step's job, and the report already reached the summary.
    """
    io = _Io(out, err, env)
    check_key(pub.key)
    lines = annotation_lines(select_annotations(pub.annotations, settings.max_annotations))
    if settings.is_dry_run:
        return _dry_run(pub, settings, lines, io)
    for line in lines:
        io.say(line)
    try:
        path = gha.append_summary(pub.markdown, env)
        io.log(
            f"wrote the job summary to {path}" if path else "GITHUB_STEP_SUMMARY is not set; no job summary"
        )
    except OSError as exc:  # the comment below still carries the report
        io.log(f"{env.get('GITHUB_STEP_SUMMARY')}: cannot write the job summary ({exc.strerror})")
    if settings.comment_mode is CommentMode.OFF:
        return EXIT_OK
    if settings.pull_request is None:
        io.log("this event is not about a pull request; no comment")
        return EXIT_OK
    if not settings.repository:
        raise DbTestActionError(
            "publish: no repository; pass --repository OWNER/REPO or set GITHUB_REPOSITORY"
        )
    if not settings.token:
        raise DbTestActionError("publish: no token; pass --token or set GITHUB_TOKEN", EXIT_USAGE)
    retrier = Retrier(settings.retry, sleep=sleep, clock=clock, log=io.log)
    try:
        return _comment(pub, settings, retrier, io)
    except PublishError as exc:
        hint = FORK_HINT if exc.is_permission else "the report is in the job summary and the report JSON"
        io.log(f"comment not posted: {exc}; {hint}")
        if env.get("GITHUB_ACTIONS") == "true":
            io.say(gha.annotation("warning", f"{exc}; {hint}", title="db-test-action PR comment not posted"))
        return EXIT_ENV if settings.fail_on_publish_error else EXIT_OK


def _comment(pub: Publication, settings: PublishSettings, retrier: Retrier, io: _Io) -> int:
    repo = settings.repository or ""
    gh = client.connect(settings.token or "", settings.api_url)
    target = settings.pull_request
    if isinstance(target, RunHead):
        head = target
        number = retrier.call(
            f"github: find the open pull request for {head.owner}:{head.branch}",
            lambda: client.open_pull_for_head(gh, repo, head.owner, head.branch, head.sha),
        )
        if number is None:
            io.log(f"no open pull request has head {head.owner}:{head.branch} at {head.sha[:12]}; no comment")
            return EXIT_OK
    else:
        number = int(target or 0)
    login = settings.comment_author or retrier.call(
        "github: who is this token", lambda: client.viewer_login(gh)
    )
    login = login or ACTIONS_BOT_LOGIN
    body = comment_body(pub)

    def upsert() -> tuple[CommentAction, Comment | None]:
        # One retried unit: after a lost response to a POST, the next attempt finds the comment and updates it.
        existing = find_sticky(client.list_comments(gh, repo, number), pub.key, login)
        action = decide_comment(settings.comment_mode, pub, existing)
        if action is CommentAction.CREATE:
            return action, client.create_comment(gh, repo, number, body)
        if action is CommentAction.UPDATE and existing is not None:
            return action, client.update_comment(gh, repo, number, existing, body)
        return action, existing

    action, comment = retrier.call(f"github: comment on {repo}#{number}", upsert)
    where = f"{repo}#{number}"
    if action is CommentAction.CREATE:
        io.say(f"created the comment on {where}: {comment.url if comment else ''}")
    elif action is CommentAction.UPDATE:
        io.say(f"updated the comment on {where}: {comment.url if comment else ''}")
    elif action is CommentAction.SKIP_UNCHANGED:
        io.say(f"the comment on {where} is up to date (same fingerprint); not edited")
    else:
        io.say(f"all green and no earlier comment on {where}; not commenting (--comment-mode failures)")
    return EXIT_OK


def _dry_run(pub: Publication, settings: PublishSettings, lines: tuple[str, ...], io: _Io) -> int:
    """Say what would happen without any network call or file write; untrusted text is fenced off with
    stop-commands so the runner does not turn the printed `::error` lines into real annotations."""
    io.say(f"dry run: would emit {len(lines)} annotations" + (":" if lines else ""))
    if lines:
        io.say(gha.stop_commands("\n".join(lines)))
    path = gha.summary_path(io.env)
    size = len(pub.markdown.encode("utf-8"))
    io.say(
        f"dry run: would append {size} bytes to the job summary ({path or 'GITHUB_STEP_SUMMARY is not set'})"
    )
    target = settings.pull_request
    if settings.comment_mode is CommentMode.OFF or target is None:
        why = "--comment-mode off" if target is not None else "the event is not about a pull request"
        io.say(f"dry run: would not comment ({why})")
        return EXIT_OK
    where = (
        f"the open pull request with head {target.owner}:{target.branch} at {target.sha[:12]}"
        if isinstance(target, RunHead)
        else f"#{target}"
    )
    io.say(
        f"dry run: would create or update the comment {marker(pub.key)} in {settings.repository} on {where} "
        f"(--comment-mode {settings.comment_mode.value}); body:"
    )
    io.say(gha.stop_commands(comment_body(pub)))
    return EXIT_OK
