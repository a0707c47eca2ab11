"""`publish()` against a stateful fake GitHub over real HTTP (PyGithub unpatched), with injected sleeps."""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from fake_github import READ_ONLY, FakeGitHub
from pytest_httpserver import HTTPServer

from db_test_action.errors import EXIT_ENV, EXIT_OK
from db_test_action.model import Annotation, Level
from db_test_action.publish.client import RetryPolicy
from db_test_action.publish.publisher import (
    CommentMode,
    Publication,
    PublishSettings,
    RunHead,
    fingerprint_in,
    marker,
    publish,
)

PUB = Publication(
    key="unit",
    markdown="## 3 failed, 40 passed\n\n| test | cause |\n|---|---|\n| `test_a` | unique violation |\n",
    is_green=False,
    fingerprint="f1",
    annotations=(
        Annotation(Level.ERROR, "test_a failed", "unique violation", file="tests/test_a.py", line=12),
    ),
)


@dataclass
class Run:
    code: int
    out: str
    err: str
    sleeps: list[float]
    summary: str


@pytest.fixture
def fake(httpserver: HTTPServer) -> FakeGitHub:
    return FakeGitHub(httpserver)


def run(fake: FakeGitHub, tmp_path: Path, pub: Publication = PUB, now: float = 1_000_000.0, **change) -> Run:
    settings = PublishSettings(
        repository="o/r",
        token=fake.token,
        api_url=fake.base_url,
        pull_request=7,
        retry=RetryPolicy(retries=3, backoff_s=0.5, max_wait_s=120.0),
    )
    settings = dataclasses.replace(settings, **change)
    summary = tmp_path / "summary.md"
    out, err, sleeps = io.StringIO(), io.StringIO(), []
    env = {"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_ACTIONS": "true"}
    code = publish(pub, settings, out=out, err=err, env=env, sleep=sleeps.append, clock=lambda: now)
    text = summary.read_text(encoding="utf-8") if summary.exists() else ""
    return Run(code, out.getvalue(), err.getvalue(), sleeps, text)


def test_creates_the_comment_then_updates_it_in_place(fake: FakeGitHub, tmp_path: Path) -> None:
    first = run(fake, tmp_path)
    assert first.code == EXIT_OK, first.err
    assert "created the comment on o/r#7" in first.out
    [comment] = fake.comments[7]
    assert comment["body"].startswith(PUB.markdown.rstrip())
    assert marker("unit") in comment["body"]

    second = run(fake, tmp_path, dataclasses.replace(PUB, markdown="## all green\n", fingerprint="f2"))
    assert "updated the comment on o/r#7" in second.out
    [comment] = fake.comments[7]  # still one comment, edited
    assert comment["body"].startswith("## all green")
    assert fingerprint_in(comment["body"], "unit") == "f2"
    assert fake.calls("POST").count("/repos/o/r/issues/7/comments") == 1
    assert len(fake.calls("PATCH")) == 1


def test_keys_keep_separate_comments(fake: FakeGitHub, tmp_path: Path) -> None:
    run(fake, tmp_path)
    run(fake, tmp_path, dataclasses.replace(PUB, key="unit-slow"))
    assert len(fake.comments[7]) == 2


def test_marker_in_another_users_comment_is_ignored(fake: FakeGitHub, tmp_path: Path) -> None:
    quoted = fake.add_comment(7, "mallory", f"copied {marker('unit')}")
    result = run(fake, tmp_path)
    assert "created the comment" in result.out
    assert quoted["body"] == f"copied {marker('unit')}"
    assert [c["user"]["login"] for c in fake.comments[7]] == ["mallory", "github-actions[bot]"]
    assert not fake.calls("PATCH")


def test_finds_our_comment_on_a_later_page(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.page_size = 2
    for i in range(5):
        fake.add_comment(7, "someone", f"review {i}")
    ours = fake.add_comment(7, "github-actions[bot]", f"old\n{marker('unit')}")
    result = run(fake, tmp_path)
    assert "updated the comment" in result.out, result.err
    assert ours["body"].startswith("## 3 failed")
    assert len(fake.comments[7]) == 6
    assert any("page=3" in path for path in fake.calls("GET"))


def test_fork_token_403_keeps_summary_and_exits_0(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.is_read_only = True
    result = run(fake, tmp_path)
    assert result.code == EXIT_OK
    assert result.summary.startswith("## 3 failed")
    assert READ_ONLY in result.err and "workflow_run" in result.err
    assert "::warning title=db-test-action PR comment not posted::" in result.out
    assert result.sleeps == []  # a permission error is not retried
    strict = run(fake, tmp_path, fail_on_publish_error=True)
    assert strict.code == EXIT_ENV


def test_502_is_retried_with_backoff(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.fail("GET", r"/comments$", 502, "Server Error", times=2)
    result = run(fake, tmp_path)
    assert result.code == EXIT_OK, result.err
    assert result.sleeps == [0.5, 1.0]
    assert len(fake.comments[7]) == 1


def test_lost_response_to_a_post_does_not_post_twice(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.fail("POST", r"/comments$", 502, "Server Error", is_applied=True)
    result = run(fake, tmp_path)
    assert result.code == EXIT_OK, result.err
    assert len(fake.comments[7]) == 1  # the retry found the landed comment and updated it
    assert "updated the comment" in result.out


def test_secondary_rate_limit_honours_retry_after(fake: FakeGitHub, tmp_path: Path) -> None:
    message = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
    fake.fail("POST", r"/comments$", 403, message, headers={"Retry-After": "7"})
    result = run(fake, tmp_path)
    assert result.code == EXIT_OK, result.err
    assert result.sleeps == [7.0]
    assert len(fake.comments[7]) == 1


def test_primary_rate_limit_waits_until_reset(fake: FakeGitHub, tmp_path: Path) -> None:
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1000030"}
    fake.fail("GET", r"/comments$", 403, "API rate limit exceeded for installation ID 1.", headers=headers)
    result = run(fake, tmp_path, now=1_000_000.0)
    assert result.sleeps == [31.0]
    assert result.code == EXIT_OK


def test_wait_cap_gives_up_with_a_clear_message(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.fail("GET", r"/comments$", 429, "slow down", headers={"Retry-After": "600"})
    result = run(fake, tmp_path, fail_on_publish_error=True)
    assert result.code == EXIT_ENV
    assert result.sleeps == []
    assert "would exceed --max-wait 120s" in result.err
    assert result.summary.startswith("## 3 failed")  # the report is not lost


def test_persistent_5xx_gives_up_after_retries(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.fail("GET", r"/comments$", 503, "Service Unavailable", times=10)
    result = run(fake, tmp_path)
    assert result.code == EXIT_OK
    assert len(result.sleeps) == 3
    assert "503 Service Unavailable; gave up after 4 attempts" in result.err


def test_ghes_base_url_prefix(httpserver: HTTPServer, tmp_path: Path) -> None:
    ghes = FakeGitHub(httpserver, prefix="/api/v3")
    result = run(ghes, tmp_path)
    assert result.code == EXIT_OK, result.err
    assert len(ghes.comments[7]) == 1
    assert {p.split("?")[0] for p in ghes.calls()} == {
        "/api/graphql",
        "/api/v3/repos/o/r/issues/7/comments",
    }


def test_workflow_run_fork_finds_the_pr_by_head(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.add_pull(41, "someone", "main", "aaa111")
    fake.add_pull(42, "forker", "fix-it", "bbb222")
    result = run(fake, tmp_path, pull_request=RunHead("forker", "fix-it", "bbb222"))
    assert result.code == EXIT_OK, result.err
    assert list(fake.comments) == [42]
    [lookup] = [p for p in fake.calls("GET") if p.startswith("/repos/o/r/pulls?")]
    assert parse_qs(lookup.split("?")[1]) == {
        "state": ["open"],
        "head": ["forker:fix-it"],
        "per_page": ["100"],
    }


def test_workflow_run_falls_back_to_the_commits_pulls_endpoint(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.add_pull(43, "forker", "renamed-branch", "bbb222")
    result = run(fake, tmp_path, pull_request=RunHead("forker", "fix-it", "bbb222"))
    assert result.code == EXIT_OK, result.err
    assert list(fake.comments) == [43]
    assert any(p.startswith("/repos/o/r/commits/bbb222/pulls") for p in fake.calls("GET"))


def test_workflow_run_for_a_stale_sha_does_not_comment(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.add_pull(42, "forker", "fix-it", "ccc333")  # pushed again since this run started
    result = run(fake, tmp_path, pull_request=RunHead("forker", "fix-it", "bbb222"))
    assert result.code == EXIT_OK
    assert fake.comments == {}
    assert "no open pull request has head forker:fix-it at bbb222" in result.err


def test_unknown_identity_falls_back_to_actions_bot(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.is_viewer_known = False
    ours = fake.add_comment(7, "github-actions[bot]", marker("unit"))
    result = run(fake, tmp_path)
    assert "updated the comment" in result.out, result.err
    assert ours["body"].startswith("## 3 failed")
    assert "/user" in fake.calls("GET")


def test_comment_author_flag_skips_identity_lookup(fake: FakeGitHub, tmp_path: Path) -> None:
    run(fake, tmp_path, comment_author="github-actions[bot]")
    assert "/graphql" not in fake.calls("POST")


def test_changes_mode_leaves_an_identical_report_alone(fake: FakeGitHub, tmp_path: Path) -> None:
    run(fake, tmp_path)
    again = run(fake, tmp_path, comment_mode=CommentMode.CHANGES)
    assert "up to date" in again.out
    assert not fake.calls("PATCH")
    changed = run(
        fake, tmp_path, dataclasses.replace(PUB, fingerprint="f9"), comment_mode=CommentMode.CHANGES
    )
    assert "updated" in changed.out


def test_failures_mode_skips_green_but_clears_an_old_red_comment(fake: FakeGitHub, tmp_path: Path) -> None:
    green = dataclasses.replace(PUB, markdown="## all green\n", is_green=True, fingerprint="g")
    skipped = run(fake, tmp_path, green, comment_mode=CommentMode.FAILURES)
    assert "not commenting" in skipped.out and fake.comments == {}
    run(fake, tmp_path, comment_mode=CommentMode.FAILURES)
    run(fake, tmp_path, green, comment_mode=CommentMode.FAILURES)
    [comment] = fake.comments[7]
    assert comment["body"].startswith("## all green")


def test_mode_off_and_non_pr_events_make_no_requests(fake: FakeGitHub, tmp_path: Path) -> None:
    off = run(fake, tmp_path, comment_mode=CommentMode.OFF)
    push = run(fake, tmp_path, pull_request=None)
    assert off.code == push.code == EXIT_OK
    assert fake.log == []
    assert "::error file=tests/test_a.py,line=12,title=test_a failed::unique violation" in push.out


def test_dry_run_touches_nothing(fake: FakeGitHub, tmp_path: Path) -> None:
    result = run(fake, tmp_path, is_dry_run=True)
    assert fake.log == [] and result.summary == ""
    assert "would create or update the comment <!-- db-test-action:unit --> in o/r on #7" in result.out
    # printed annotations sit between stop-commands markers, so the runner does not execute them
    lines = result.out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("::stop-commands::"))
    token = lines[start].split("::")[2]
    end = lines.index(f"::{token}::")
    assert any(line.startswith("::error ") for line in lines[start:end])
    assert not any(line.startswith("::error ") for line in lines[:start])


def test_token_never_appears_in_output(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.is_read_only = True
    result = run(fake, tmp_path)
    assert fake.token not in result.out + result.err


def test_unwritable_summary_still_posts_the_comment(fake: FakeGitHub, tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    settings = PublishSettings(repository="o/r", token=fake.token, api_url=fake.base_url, pull_request=7)
    env = {"GITHUB_STEP_SUMMARY": str(tmp_path / "missing-dir" / "summary.md")}
    assert publish(PUB, settings, out=out, err=err, env=env) == EXIT_OK
    assert "cannot write the job summary (No such file or directory)" in err.getvalue()
    assert len(fake.comments[7]) == 1
