"""The pure parts of publishing: which PR, which annotations, how big a summary/comment may get."""

from __future__ import annotations

from pathlib import Path

import pytest
from github import GithubException

from db_test_action.errors import DbTestActionError
from db_test_action.model import Annotation, Level
from db_test_action.publish import gha
from db_test_action.publish.client import RetryPolicy, retry_delay_s
from db_test_action.publish.publisher import (
    COMMENT_MAX_CHARS,
    Publication,
    RunHead,
    annotation_lines,
    check_key,
    comment_body,
    fingerprint_in,
    marker,
    pull_request_from_event,
    select_annotations,
)


def test_pull_request_events_give_their_number() -> None:
    assert pull_request_from_event({"pull_request": {"number": 5}}, "o/r") == 5  # also pull_request_target
    assert pull_request_from_event({"issue": {"number": 6, "pull_request": {"url": "…"}}}, "o/r") == 6
    assert pull_request_from_event({"issue": {"number": 6}}, "o/r") is None  # a plain issue
    assert pull_request_from_event({"ref": "refs/heads/main", "commits": []}, "o/r") is None  # push


def test_workflow_run_uses_its_pull_requests_for_this_repository() -> None:
    run = {
        "event": "pull_request",
        "head_branch": "fix",
        "head_sha": "abc",
        "head_repository": {"owner": {"login": "o"}},
        "pull_requests": [
            {"number": 3, "base": {"repo": {"url": "https://api.github.com/repos/other/r"}}},
            {"number": 4, "base": {"repo": {"url": "https://api.github.com/repos/O/R"}}},
        ],
    }
    assert pull_request_from_event({"workflow_run": run}, "o/r") == 4


def test_workflow_run_from_a_fork_needs_a_lookup_by_head() -> None:
    run = {
        "event": "pull_request",
        "head_branch": "fix",
        "head_sha": "abc123",
        "head_repository": {"owner": {"login": "forker"}},
        "pull_requests": [],
    }
    assert pull_request_from_event({"workflow_run": run}, "o/r") == RunHead("forker", "fix", "abc123")
    assert pull_request_from_event({"workflow_run": {**run, "event": "push"}}, "o/r") is None


def test_annotations_keep_the_most_important_and_count_the_rest() -> None:
    errors = [Annotation(Level.ERROR, f"e{i}", "m", file="t.py", line=i, rank=100 - i) for i in range(15)]
    warnings = [Annotation(Level.WARNING, f"w{i}", "m") for i in range(3)]
    chosen = select_annotations([*warnings, *errors], per_level=10)
    shown_errors = [a for a in chosen if a.level is Level.ERROR]
    assert len(shown_errors) == 10
    assert [a.title for a in shown_errors[:9]] == [f"e{i}" for i in range(14, 5, -1)]  # lowest rank first
    assert shown_errors[-1].title == "6 more error annotations not shown"
    assert [a.title for a in chosen if a.level is Level.WARNING] == ["w0", "w1", "w2"]
    assert chosen[0].level is Level.ERROR


def test_annotation_lines_escape_github_command_syntax() -> None:
    [line] = annotation_lines([Annotation(Level.ERROR, "a::b, c", "50%\nnext", file="tests/a,b.py", line=3)])
    assert line == "::error file=tests/a%2Cb.py,line=3,title=a%3A%3Ab%2C c::50%25%0Anext"


def test_summary_is_trimmed_to_the_budget_at_a_line_and_closes_a_fence() -> None:
    markdown = "# head\n```\n" + "é line of output\n" * 100_000  # ~1.8 MB, an unclosed fence when cut
    text = gha.fit_summary(markdown, gha.SUMMARY_LIMIT_BYTES)
    size = len(text.encode("utf-8"))
    assert gha.SUMMARY_LIMIT_BYTES - 400 < size <= gha.SUMMARY_LIMIT_BYTES
    assert "\n```\n\n> **Note:** the job summary was trimmed" in text
    assert "bytes were left out" in text
    body = text.split("\n```\n\n> **Note:**")[0]
    assert body.endswith("é line of output")
    assert gha.fit_summary("small\n", 100) == "small\n"


def test_append_summary_respects_what_the_step_already_wrote(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("x" * (gha.SUMMARY_LIMIT_BYTES - 1000), encoding="utf-8")
    gha.append_summary("line\n" * 1000, {"GITHUB_STEP_SUMMARY": str(summary)})
    assert summary.stat().st_size <= gha.SUMMARY_LIMIT_BYTES
    assert "trimmed" in summary.read_text(encoding="utf-8")
    assert gha.append_summary("x", {}) is None


def test_comment_body_fits_githubs_limit_and_keeps_marker_and_fingerprint() -> None:
    pub = Publication(key="unit", markdown="| row |\n" * 20_000, is_green=False, fingerprint="abc")
    body = comment_body(pub)
    assert len(body) <= COMMENT_MAX_CHARS
    assert marker("unit") in body and fingerprint_in(body, "unit") == "abc"
    assert "cut to GitHub's size limit" in body


@pytest.mark.parametrize("key", ["", "a -->", "x y", "-lead"])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(DbTestActionError, match="--key"):
        check_key(key)


def test_retry_delay_rules() -> None:
    policy = RetryPolicy(backoff_s=1.0, secondary_wait_s=60.0)
    read_only = GithubException(403, {"message": "Resource not accessible by integration"}, {})
    assert retry_delay_s(read_only, 0, policy, 0.0) is None
    assert retry_delay_s(GithubException(422, {"message": "Validation Failed"}, {}), 0, policy, 0.0) is None
    assert retry_delay_s(GithubException(502, {"message": "Bad Gateway"}, {}), 2, policy, 0.0) == 4.0
    secondary = GithubException(403, {"message": "You have exceeded a secondary rate limit."}, {})
    assert retry_delay_s(secondary, 0, policy, 0.0) == 60.0
    hinted = GithubException(429, {"message": "x"}, {"retry-after": "3"})
    assert retry_delay_s(hinted, 0, policy, 0.0) == 3.0


def test_annotation_lines_carry_no_terminal_escapes_or_bidi_controls() -> None:
    """A fork's test name or message must not recolour the job log or reorder what a reviewer reads."""
    name = "tests/\u202ex.py"
    message = "test_\u202eevil\u2066\u200f\u061c \x9b31mred\x1b[0m \x85end"
    [line] = annotation_lines([Annotation(Level.ERROR, "t\u202e", message, file=name, line=1)])
    assert line.isprintable() and not any(c in line for c in "\u202e\u2066\u200f\u061c\x9b\x1b\x85")
    assert "[U+202E]" in line and "end" in line
