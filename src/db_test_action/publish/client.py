"""The network edge of `publish`: PyGithub calls wrapped in our own retry policy.

PyGithub ships `GithubRetry` (a urllib3 `Retry`): it retries 403/5xx inside the connection pool and sleeps
with `time.sleep`, waits `secondary_rate_wait` (60 s) for secondary limits, honours `Retry-After` without
a total cap unless `max_rate_limit_wait` is set, and retries POSTs per request. We disable it (`retry=None`)
and own the policy here because (1) the total wait must be capped across *all* requests of a publish run,
not per request, (2) the sleep and clock must be injectable so tests never sleep for real, and (3) we retry a
whole idempotent operation ("find the sticky comment, then create or update it"), so a POST that timed out but
did land is found on the next attempt instead of being posted twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from github import Github, GithubException
    from github.IssueComment import IssueComment

from db_test_action.config.settings import DEFAULT_API_URL, DEFAULT_MAX_WAIT_S, DEFAULT_RETRIES

T = TypeVar("T")

ACTIONS_BOT_LOGIN = "github-actions[bot]"  # who GITHUB_TOKEN comments as; it cannot call GET /user
RATE_LIMIT_PREFIXES = ("api rate limit exceeded", "you have exceeded a secondary rate limit")


def _libs() -> tuple[ModuleType, ModuleType]:
    """PyGithub and requests, imported on first use: together ~0.5 s that a `publish` with nothing to post
    (comment mode off: summary and annotations only) never pays."""
    import github
    import requests

    return github, requests


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try. `max_wait_s` caps the sum of all sleeps in one publish run."""

    retries: int = DEFAULT_RETRIES
    backoff_s: float = 1.0  # first 5xx/network backoff; doubles each attempt
    max_wait_s: float = DEFAULT_MAX_WAIT_S
    secondary_wait_s: float = 60.0  # GitHub: "wait at least one minute" when no Retry-After is given


class PublishError(Exception):
    """Publishing to GitHub failed for good; `is_permission` marks the read-only-token (fork) case."""

    def __init__(self, message: str, *, is_permission: bool = False) -> None:
        super().__init__(message)
        self.is_permission = is_permission


def _message_of(exc: GithubException) -> str:
    data = exc.data
    if isinstance(data, Mapping) and data.get("message"):
        return str(data["message"])
    return exc.message or str(data or "")


def _header(exc: GithubException, name: str) -> str | None:
    headers = exc.headers or {}
    for key, value in headers.items():
        if key.lower() == name:
            return str(value)
    return None


def retry_delay_s(exc: BaseException, attempt: int, policy: RetryPolicy, now_s: float) -> float | None:
    """Seconds to wait before retrying after `exc`, or None when retrying cannot help.

    Pure: the caller passes the clock. Rate limits win over plain backoff because GitHub tells us when the
    window reopens (`Retry-After`, or `X-RateLimit-Reset` as epoch seconds with remaining 0).
    """
    backoff = policy.backoff_s * (2**attempt)
    github, requests = _libs()
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return backoff
    if not isinstance(exc, github.GithubException):
        return None
    status = exc.status
    message = _message_of(exc).lower()
    retry_after = _header(exc, "retry-after")
    remaining = _header(exc, "x-ratelimit-remaining")
    reset = _header(exc, "x-ratelimit-reset")
    is_rate_limited = status in (403, 429) and (
        retry_after is not None or remaining == "0" or message.startswith(RATE_LIMIT_PREFIXES)
    )
    if is_rate_limited:
        if retry_after is not None and retry_after.strip().isdigit():
            return float(retry_after)
        if remaining == "0" and reset is not None and reset.strip().isdigit():
            return max(float(reset) - now_s, 0.0) + 1.0  # the reset second itself is not exact
        return max(policy.secondary_wait_s, backoff)
    if status >= 500:
        is_hinted = retry_after is not None and retry_after.strip().isdigit()
        return float(retry_after) if is_hinted else backoff  # type: ignore[arg-type]
    return None


def describe(exc: BaseException) -> str:
    """One line for a failed call: status and GitHub's own message, never headers (they may echo auth)."""
    if isinstance(exc, _libs()[0].GithubException):
        return f"{exc.status} {_message_of(exc)}".strip()
    return f"{type(exc).__name__}: {exc}"


def is_permission_error(exc: BaseException) -> bool:
    """403 without rate-limit signs: a read-only token (fork PRs) or a missing `permissions:` entry."""
    return (
        isinstance(exc, _libs()[0].GithubException)
        and exc.status == 403
        and retry_delay_s(exc, 0, RetryPolicy(), 0.0) is None
    )


@dataclass
class Retrier:
    """Runs operations under one shared wait budget; `sleep`/`clock` are injected for tests."""

    policy: RetryPolicy
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    log: Callable[[str], None] = lambda _line: None
    waited_s: float = 0.0

    def call(self, what: str, operation: Callable[[], T]) -> T:
        attempt = 0
        github, requests = _libs()
        while True:
            try:
                return operation()
            except (github.GithubException, requests.RequestException) as exc:
                if is_permission_error(exc):
                    raise PublishError(f"{what}: {describe(exc)}", is_permission=True) from exc
                delay = retry_delay_s(exc, attempt, self.policy, self.clock())
                if delay is None:
                    raise PublishError(f"{what}: {describe(exc)}") from exc
                if attempt >= self.policy.retries:
                    raise PublishError(
                        f"{what}: {describe(exc)}; gave up after {attempt + 1} attempts"
                    ) from exc
                if self.waited_s + delay > self.policy.max_wait_s:
                    raise PublishError(
                        f"{what}: {describe(exc)}; waiting {delay:.0f}s more would exceed "
                        f"--max-wait {self.policy.max_wait_s:.0f}s"
                    ) from exc
                self.log(f"{what}: {describe(exc)}; retrying in {delay:.1f}s")
                self.sleep(delay)
                self.waited_s += delay
                attempt += 1


def within_deadline(work: Callable[[], T], deadline_s: float, message: str) -> T:
    """Run `work` with one overall wall-clock deadline, including time spent inside requests.

    Why a thread: socket timeouts bound each read, not a server that trickles one byte at a time, and a
    signal alarm would only work in the main thread. At the deadline we stop waiting and report; the
    abandoned daemon thread ends with the process (our only remaining work is to exit).
    """
    box: list[Any] = []

    def target() -> None:
        try:
            box.append((True, work()))
        except BaseException as exc:  # handed to the caller's thread below
            box.append((False, exc))

    worker = threading.Thread(target=target, name="db-test-action-publish", daemon=True)
    worker.start()
    worker.join(timeout=deadline_s)
    if not box:
        raise PublishError(message)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def connect(token: str, api_url: str, timeout_s: int = 30) -> Github:
    """A PyGithub client with its own retries and throttling off: `Retrier` owns both.

    `lazy=True` so `get_repo`/`get_issue` build URLs without a GET each; only real work hits the API.
    """
    github, _requests = _libs()
    return github.Github(
        auth=github.Auth.Token(token),
        base_url=api_url.rstrip("/") or DEFAULT_API_URL,
        timeout=timeout_s,
        per_page=100,
        retry=None,
        seconds_between_requests=None,
        seconds_between_writes=None,
        lazy=True,
        user_agent="db-test-action",
    )


def viewer_login(gh: Github) -> str | None:
    """The token's login via GraphQL `viewer` (works for PATs and installation tokens), else REST /user.

    None when neither answers (e.g. a GHES without GraphQL and an installation token); the caller then falls
    back to the configured comment author.
    """
    github, _requests = _libs()
    try:
        _headers, data = gh.requester.graphql_query("query { viewer { login } }", {})
        login = ((data.get("data") or {}).get("viewer") or {}).get("login")
        if login:
            return str(login)
    except github.GithubException as exc:
        if retry_delay_s(exc, 0, RetryPolicy(), 0.0) is not None:
            raise  # 5xx or rate limit: let the Retrier try the whole step again
    try:
        return str(gh.get_user().login)
    except github.GithubException as exc:
        if exc.status in (401, 403, 404):
            return None
        raise


@dataclass(frozen=True, slots=True)
class Comment:
    """The few fields of an issue comment we need, detached from PyGithub."""

    id: int
    author: str
    body: str
    url: str


def _comment(item: IssueComment) -> Comment:
    login = item.user.login if item.user else ""
    return Comment(id=int(item.id), author=login, body=item.body or "", url=item.html_url or "")


def list_comments(gh: Github, repository: str, number: int) -> Iterable[Comment]:
    """All comments of a PR, following `Link: rel="next"` pages (PyGithub's PaginatedList does the paging)."""
    issue = gh.get_repo(repository).get_issue(number)
    for item in issue.get_comments():
        yield Comment(
            id=item.id, author=item.user.login if item.user else "", body=item.body or "", url=item.html_url
        )


def create_comment(gh: Github, repository: str, number: int, body: str) -> Comment:
    item = gh.get_repo(repository).get_issue(number).create_comment(body)
    return Comment(
        id=item.id, author=item.user.login if item.user else "", body=item.body or "", url=item.html_url
    )


def update_comment(gh: Github, repository: str, number: int, comment: Comment, body: str) -> Comment:
    """PATCH /repos/{repo}/issues/comments/{id}; the comment keeps its place in the conversation."""
    gh.get_repo(repository).get_issue(number).get_comment(comment.id).edit(body)
    return Comment(id=comment.id, author=comment.author, body=body, url=comment.url)


def open_pull_for_head(
    gh: Github, repository: str, head_owner: str, head_branch: str, head_sha: str
) -> int | None:
    """The open PR whose head is `owner:branch` at exactly `head_sha` (workflow_run from a fork).

    Matching the SHA keeps a slow, stale run from overwriting the comment of a newer push.
    Falls back to GET /commits/{sha}/pulls, which also lists PRs whose head lives in a fork.
    """
    repo = gh.get_repo(repository)
    for pull in repo.get_pulls(state="open", head=f"{head_owner}:{head_branch}"):
        if pull.head.sha == head_sha:
            return int(pull.number)
    for pull in repo.get_commit(head_sha).get_pulls():
        if pull.state == "open" and pull.head.sha == head_sha:
            return int(pull.number)
    return None
