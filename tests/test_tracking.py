"""Tracking issue and history branch against the stateful fake GitHub over real HTTP (PyGithub unpatched)."""

from __future__ import annotations

import pytest
from fake_github_tracking import FakeGitHubTracking
from pytest_httpserver import HTTPServer

from db_test_action.publish.client import PublishError, Retrier, RetryPolicy, connect
from db_test_action.publish.tracking import (
    TrackedIssue,
    TrackingAction,
    TrackingSettings,
    decide_tracking,
    find_tracking,
    issue_body,
    load_branch_file,
    save_branch_file,
    tracking_marker,
    update_tracking_issue,
)

LABEL = "db-test-action:stability"


@pytest.fixture
def fake(httpserver: HTTPServer) -> FakeGitHubTracking:
    return FakeGitHubTracking(httpserver)


def _settings(fake: FakeGitHubTracking, **change) -> TrackingSettings:
    base = {"repository": "o/r", "token": fake.token, "api_url": fake.base_url, "close_after": 2}
    return TrackingSettings(**(base | change))


def _night(fake, sleeps, clean_nights: int, is_clean: bool, markdown: str = "## report\n", **change):
    return update_tracking_issue(
        _settings(fake, **change),
        Retrier(RetryPolicy(retries=3, backoff_s=0.5), sleep=sleeps.append, clock=lambda: 1e6),
        title=f"Nightly stability ({clean_nights})",
        markdown=markdown,
        night=f"night-{clean_nights}",
        clean_nights=clean_nights,
        is_clean_tonight=is_clean,
    )


# --- pure decisions ----------------------------------------------------------------------------------------


def test_decisions() -> None:
    issue = TrackedIssue(1, "bot", "x", "")
    assert decide_tracking(None, 0, 3, is_clean_tonight=False) is TrackingAction.CREATE
    assert decide_tracking(None, 5, 3, is_clean_tonight=True) is TrackingAction.NONE
    assert decide_tracking(issue, 2, 3, is_clean_tonight=True) is TrackingAction.UPDATE
    assert decide_tracking(issue, 3, 3, is_clean_tonight=True) is TrackingAction.CLOSE
    assert decide_tracking(issue, 9, 0, is_clean_tonight=True) is TrackingAction.UPDATE  # 0: never close


def test_find_ignores_other_authors_and_other_keys() -> None:
    mark = tracking_marker("stability")
    issues = [
        TrackedIssue(5, "someone", f"copied {mark}", ""),
        TrackedIssue(7, "bot", f"ours {mark}", ""),
        TrackedIssue(3, "bot", f"ours too {mark}", ""),
        TrackedIssue(4, "bot", tracking_marker("stability-api"), ""),
    ]
    assert [i.number for i in find_tracking(issues, "stability", "BOT")] == [3, 7]


def test_issue_body_fits_githubs_limit_and_keeps_the_marker() -> None:
    body = issue_body("| row |\n" * 20000, "stability")
    assert len(body) <= 65536 and body.rstrip().endswith(tracking_marker("stability"))
    assert "cut to GitHub's size limit" in body


# --- the issue lifecycle -------------------------------------------------------------------------------------


def test_created_then_updated_then_closed_after_clean_nights(fake: FakeGitHubTracking) -> None:
    sleeps: list[float] = []
    first = _night(fake, sleeps, 0, is_clean=False, markdown="## 2 flaky\n")
    assert first.action is TrackingAction.CREATE
    (issue,) = fake.open_issues()
    assert issue["labels"] == [{"name": LABEL}] and issue["body"].startswith("## 2 flaky")
    assert tracking_marker("stability") in issue["body"]

    second = _night(fake, sleeps, 1, is_clean=True, markdown="## 0 flaky\n")
    assert (second.action, second.number) == (TrackingAction.UPDATE, issue["number"])
    assert issue["body"].startswith("## 0 flaky") and issue["title"] == "Nightly stability (1)"

    third = _night(fake, sleeps, 2, is_clean=True)
    assert third.action is TrackingAction.CLOSE
    assert issue["state"] == "closed" and issue["state_reason"] == "completed"
    (comment,) = fake.comments[issue["number"]]
    assert "2 clean nights in a row" in comment["body"]
    assert len(fake.issues) == 1 and sleeps == []

    fourth = _night(fake, sleeps, 3, is_clean=True)
    assert fourth.action is TrackingAction.NONE and len(fake.issues) == 1

    fifth = _night(fake, sleeps, 0, is_clean=False)
    assert fifth.action is TrackingAction.CREATE and len(fake.open_issues()) == 1 and len(fake.issues) == 2


def test_never_edits_someone_elses_issue_with_the_marker(fake: FakeGitHubTracking) -> None:
    human = fake.add_issue("alice", "copied", f"see {tracking_marker('stability')}")
    result = _night(fake, [], 0, is_clean=False)
    assert result.action is TrackingAction.CREATE and result.number != human["number"]
    assert human["body"].startswith("see") and human["state"] == "open"


def test_duplicates_are_closed_and_the_oldest_kept(fake: FakeGitHubTracking) -> None:
    mark = tracking_marker("stability")
    oldest = fake.add_issue(fake.viewer, "a", f"old {mark}")
    newer = fake.add_issue(fake.viewer, "b", f"new {mark}")
    result = _night(fake, [], 0, is_clean=False)
    assert (result.action, result.number, result.duplicates_closed) == (
        TrackingAction.UPDATE,
        oldest["number"],
        (newer["number"],),
    )
    assert (
        newer["state"] == "closed"
        and f"Duplicate of #{oldest['number']}" in fake.comments[newer["number"]][0]["body"]
    )


def test_paginated_issue_lists_are_followed(fake: FakeGitHubTracking) -> None:
    fake.page_size = 2
    ours = fake.add_issue(fake.viewer, "ours", f"x {tracking_marker('stability')}")  # oldest: listed last
    for i in range(5):
        fake.add_issue("alice", f"other {i}", "unrelated")
    result = _night(fake, [], 0, is_clean=False)
    assert (result.action, result.number) == (TrackingAction.UPDATE, ours["number"]) and len(fake.issues) == 6
    assert any("page=3" in call for call in fake.calls("GET"))


def test_lost_create_response_does_not_duplicate(fake: FakeGitHubTracking) -> None:
    fake.fail("POST", r"/repos/o/r/issues$", 502, "Bad Gateway", is_applied=True)
    sleeps: list[float] = []
    result = _night(fake, sleeps, 0, is_clean=False)
    assert result.action is TrackingAction.UPDATE  # the retry found the issue the lost POST created
    assert len(fake.issues) == 1 and sleeps == [0.5]


def test_secondary_rate_limit_waits_retry_after(fake: FakeGitHubTracking) -> None:
    fake.fail(
        "GET",
        r"/repos/o/r/issues$",
        403,
        "You have exceeded a secondary rate limit",
        headers={"Retry-After": "7"},
    )
    sleeps: list[float] = []
    assert _night(fake, sleeps, 0, is_clean=False).action is TrackingAction.CREATE
    assert sleeps == [7.0]


def test_read_only_token_is_a_permission_error(fake: FakeGitHubTracking) -> None:
    fake.is_read_only = True
    with pytest.raises(PublishError) as info:
        _night(fake, [], 0, is_clean=False)
    assert info.value.is_permission and "403" in str(info.value)


def test_ghes_prefix(httpserver: HTTPServer) -> None:
    fake = FakeGitHubTracking(httpserver, prefix="/api/v3")
    assert _night(fake, [], 0, is_clean=False).action is TrackingAction.CREATE
    assert fake.calls("POST")[-1] == "/api/v3/repos/o/r/issues"


# --- the history branch ----------------------------------------------------------------------------------------


def _io(fake: FakeGitHubTracking):
    return connect(fake.token, fake.base_url), Retrier(
        RetryPolicy(retries=2, backoff_s=0.1), sleep=lambda _s: None
    )


def test_branch_created_as_orphan_then_updated(fake: FakeGitHubTracking) -> None:
    gh, retrier = _io(fake)
    assert load_branch_file(gh, retrier, "o/r", "hist", "h.jsonl") is None
    save_branch_file(gh, retrier, "o/r", "hist", "h.jsonl", "night 1\n", None, "night 1")
    assert fake.branches["hist"] == {"h.jsonl": b"night 1\n"}  # only the history, no code
    loaded = load_branch_file(gh, retrier, "o/r", "hist", "h.jsonl")
    assert loaded is not None and loaded.text == "night 1\n"
    save_branch_file(gh, retrier, "o/r", "hist", "h.jsonl", "night 1\nnight 2\n", loaded, "night 2")
    assert fake.file("hist", "h.jsonl") == "night 1\nnight 2\n"


def test_concurrent_writer_gets_a_conflict_not_a_lost_night(fake: FakeGitHubTracking) -> None:
    gh, retrier = _io(fake)
    save_branch_file(gh, retrier, "o/r", "hist", "h.jsonl", "v1\n", None, "v1")
    stale = load_branch_file(gh, retrier, "o/r", "hist", "h.jsonl")
    save_branch_file(gh, retrier, "o/r", "hist", "h.jsonl", "v2 by another run\n", stale, "v2")
    with pytest.raises(PublishError, match="409"):
        save_branch_file(gh, retrier, "o/r", "hist", "h.jsonl", "v2 by us\n", stale, "v2")
    assert fake.file("hist", "h.jsonl") == "v2 by another run\n"


def test_big_history_is_read_through_the_blob_api(fake: FakeGitHubTracking) -> None:
    fake.big_file_bytes = 10
    gh, retrier = _io(fake)
    text = "x" * 100 + "\n"
    save_branch_file(gh, retrier, "o/r", "hist", "h.jsonl", text, None, "big")
    loaded = load_branch_file(gh, retrier, "o/r", "hist", "h.jsonl")
    assert loaded is not None and loaded.text == text
    assert any("/git/blobs/" in call for call in fake.calls("GET"))


def test_branch_read_retries_a_502(fake: FakeGitHubTracking) -> None:
    gh, _ = _io(fake)
    sleeps: list[float] = []
    retrier = Retrier(RetryPolicy(retries=2, backoff_s=0.25), sleep=sleeps.append)
    save_branch_file(gh, retrier, "o/r", "hist", "h.jsonl", "v1\n", None, "v1")
    fake.fail("GET", r"/contents/", 502, "Bad Gateway")
    loaded = load_branch_file(gh, retrier, "o/r", "hist", "h.jsonl")
    assert loaded is not None and loaded.text == "v1\n" and sleeps == [0.25]
