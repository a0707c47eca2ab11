"""GitHub side of the nightly job: one tracking issue, and the history file on a branch.

Both go through the publisher's PyGithub connection and `Retrier` (shared wait budget, injectable sleep),
and each read-then-write is one retried unit, like the sticky comment: if the response to a POST is lost,
the next attempt finds the issue it created instead of opening a second one.

Tracking issue: found by label *and* a hidden marker *and* authorship (our token's login), so a human
copying the marker into their own issue is never edited; created when something is unstable and none is
open; its body is replaced each night; closed after `close_after` clean nights in a row; extra open copies
(from a race between two nightly runs) are closed as duplicates of the oldest.

History branch: an orphan branch (default `db-test-action-history`) holding one file, written with the
contents API and the blob sha we read, so two concurrent writers get a 409 instead of losing a night.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from github import Github, GithubException, InputGitTreeElement

from db_test_action.config.settings import DEFAULT_LABEL
from db_test_action.publish.client import ACTIONS_BOT_LOGIN, Retrier, RetryPolicy, connect, viewer_login

ISSUE_MAX_CHARS = 65536  # GitHub rejects longer issue bodies with 422


class TrackingAction(str, Enum):
    CREATE = "create"
    UPDATE = "update"
    CLOSE = "close"
    NONE = "none"  # all clean and no open issue: nothing to track


@dataclass(frozen=True, slots=True)
class TrackedIssue:
    number: int
    author: str
    body: str
    url: str


@dataclass(frozen=True, slots=True)
class TrackingSettings:
    repository: str
    token: str = field(repr=False)
    api_url: str
    label: str = DEFAULT_LABEL
    key: str = "stability"
    close_after: int = 3
    author: str | None = None  # None: ask the API, then github-actions[bot]
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True, slots=True)
class TrackingResult:
    action: TrackingAction
    number: int | None = None
    url: str = ""
    duplicates_closed: tuple[int, ...] = ()


# --- pure decisions -----------------------------------------------------------------------------------


def tracking_marker(key: str) -> str:
    return f"<!-- db-test-action:tracking:{key} -->"


def find_tracking(issues: Iterable[TrackedIssue], key: str, login: str) -> tuple[TrackedIssue, ...]:
    """Ours, oldest first: the marker in the body and authored by us (never someone else's issue)."""
    mark = tracking_marker(key)
    found = [i for i in issues if mark in i.body and i.author.casefold() == login.casefold()]
    return tuple(sorted(found, key=lambda i: i.number))


def decide_tracking(
    existing: TrackedIssue | None, clean_nights: int, close_after: int, is_clean_tonight: bool
) -> TrackingAction:
    if existing is None:
        return TrackingAction.NONE if is_clean_tonight else TrackingAction.CREATE
    if close_after > 0 and clean_nights >= close_after:
        return TrackingAction.CLOSE
    return TrackingAction.UPDATE


def issue_body(markdown: str, key: str) -> str:
    """Markdown + marker, cut to GitHub's limit (the JSON report and job summary keep everything)."""
    tail = f"\n\n{tracking_marker(key)}\n"
    budget = ISSUE_MAX_CHARS - len(tail)
    if len(markdown) > budget:
        note = "\n\n> **Note:** cut to GitHub's size limit; see the job summary.\n"
        head = markdown[: budget - len(note)]
        markdown = (head[: head.rindex("\n")] if "\n" in head else head) + note
    return markdown.rstrip("\n") + tail


def close_comment(clean_nights: int, night: str) -> str:
    return (
        f"Closing: {clean_nights} clean nights in a row (every run green), the last one {night}. "
        "A new issue opens when a test turns flaky again."
    )


# --- the tracking issue ------------------------------------------------------------------------------


def _issues(gh: Github, repository: str, label: str) -> Iterable[TrackedIssue]:
    for item in gh.get_repo(repository).get_issues(state="open", labels=[label]):
        if item.pull_request is not None:
            continue  # the issues endpoint lists pull requests too
        yield TrackedIssue(
            int(item.number), item.user.login if item.user else "", item.body or "", item.html_url
        )


def update_tracking_issue(
    settings: TrackingSettings,
    retrier: Retrier,
    *,
    title: str,
    markdown: str,
    night: str,
    clean_nights: int,
    is_clean_tonight: bool,
    gh: Github | None = None,
) -> TrackingResult:
    """Create, update or close the one tracking issue. Raises `PublishError` after retries."""
    gh = gh or connect(settings.token, settings.api_url)
    repo_name = settings.repository
    login = settings.author or retrier.call("github: who is this token", lambda: viewer_login(gh))
    login = login or ACTIONS_BOT_LOGIN
    body = issue_body(markdown, settings.key)

    def upsert() -> TrackingResult:
        ours = find_tracking(_issues(gh, repo_name, settings.label), settings.key, login)
        existing = ours[0] if ours else None
        action = decide_tracking(existing, clean_nights, settings.close_after, is_clean_tonight)
        repo = gh.get_repo(repo_name)
        duplicates = []
        for extra in ours[1:]:
            issue = repo.get_issue(extra.number)
            issue.create_comment(f"Duplicate of #{ours[0].number}; db-test-action keeps one tracking issue.")
            issue.edit(state="closed", state_reason="not_planned")
            duplicates.append(extra.number)
        if action is TrackingAction.CREATE:
            created = repo.create_issue(title=title, body=body, labels=[settings.label])
            return TrackingResult(action, int(created.number), created.html_url or "", tuple(duplicates))
        if existing is None:
            return TrackingResult(action, duplicates_closed=tuple(duplicates))
        issue = repo.get_issue(existing.number)
        if action is TrackingAction.CLOSE:
            issue.edit(title=title, body=body)
            issue.create_comment(close_comment(clean_nights, night))
            issue.edit(state="closed", state_reason="completed")
        else:
            issue.edit(title=title, body=body)
        return TrackingResult(action, existing.number, existing.url, tuple(duplicates))

    return retrier.call(f"github: tracking issue in {repo_name}", upsert)


# --- the history branch ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BranchFile:
    text: str
    sha: str


def load_branch_file(
    gh: Github, retrier: Retrier, repository: str, branch: str, path: str
) -> BranchFile | None:
    """The file's text and blob sha, or None when the branch or the file does not exist yet."""

    def load() -> BranchFile | None:
        try:
            item = gh.get_repo(repository).get_contents(path, ref=branch)
        except GithubException as exc:
            if exc.status == 404:
                return None
            raise
        if isinstance(item, list):
            raise GithubException(422, {"message": f"{path} is a directory on {branch}"}, None)
        if item.encoding == "base64" and item.content:
            data = base64.b64decode(item.content)
        else:  # files over 1 MB come without content: fetch the blob
            blob = gh.get_repo(repository).get_git_blob(item.sha)
            data = base64.b64decode(blob.content) if blob.encoding == "base64" else blob.content.encode()
        return BranchFile(data.decode("utf-8"), item.sha)

    return retrier.call(f"github: read {path} from branch {branch}", load)


def save_branch_file(
    gh: Github,
    retrier: Retrier,
    repository: str,
    branch: str,
    path: str,
    text: str,
    previous: BranchFile | None,
    message: str,
    log: Callable[[str], None] = lambda _line: None,
) -> str:
    """Write the file; the first time, create `branch` as an orphan holding only it. Returns the commit sha.

    With `previous` the update names its blob sha: a concurrent writer makes GitHub answer 409, which is
    not retried (re-reading would silently merge nothing), so the caller reports it.
    """
    repo = gh.get_repo(repository)

    def save() -> str:
        if previous is not None:
            result = repo.update_file(path, message, text, previous.sha, branch=branch)
            return str(result["commit"].sha)
        try:
            result = repo.create_file(path, message, text, branch=branch)
            return str(result["commit"].sha)
        except GithubException as exc:
            if exc.status not in (404, 409, 422) or "branch" not in str(exc.data).lower():
                raise
        log(f"creating the orphan branch {branch} for {path}")
        tree = repo.create_git_tree([InputGitTreeElement(path, "100644", "blob", content=text)])
        commit = repo.create_git_commit(message, tree, [])
        repo.create_git_ref(f"refs/heads/{branch}", commit.sha)
        return str(commit.sha)

    return retrier.call(f"github: write {path} to branch {branch}", save)
