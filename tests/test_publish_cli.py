"""`db-test-action publish` end to end: a subprocess with GITHUB_* pointing at tmp files and a fake GitHub."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from fake_github import READ_ONLY, FakeGitHub
from pytest_httpserver import HTTPServer

from db_test_action.publish.publisher import marker

MARKDOWN = "## 1 failed\n\n`test_x` failed: duplicate key value violates unique constraint\n"


@pytest.fixture
def fake(httpserver: HTTPServer) -> FakeGitHub:
    return FakeGitHub(httpserver)


@pytest.fixture
def gh_env(tmp_path: Path, fake: FakeGitHub, cli_env: dict[str, str]) -> dict[str, str]:
    """The variables a runner sets, pointing at tmp files and the fake API; event: pull_request #7."""
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"action": "synchronize", "pull_request": {"number": 7}}), encoding="utf-8")
    (tmp_path / "report.md").write_text(MARKDOWN, encoding="utf-8")
    return {
        **cli_env,
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_API_URL": fake.base_url,
        "GITHUB_TOKEN": fake.token,
    }


def publish(cli: list[str], env: dict[str, str], tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    argv = [*cli, "publish", "--markdown", str(tmp_path / "report.md"), "--key", "unit", *flags]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_publish_creates_then_updates_and_writes_the_summary(
    cli: list[str], gh_env: dict[str, str], fake: FakeGitHub, tmp_path: Path
) -> None:
    first = publish(cli, gh_env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "created the comment on o/r#7" in first.stdout
    (tmp_path / "report.md").write_text("## all green\n", encoding="utf-8")
    second = publish(cli, gh_env, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "updated the comment on o/r#7" in second.stdout
    [comment] = fake.comments[7]
    assert comment["body"].startswith("## all green") and marker("unit") in comment["body"]
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert summary == MARKDOWN + "## all green\n"
    assert fake.token not in first.stdout + first.stderr + second.stdout + second.stderr


def test_fork_pr_read_only_token_exits_0_with_a_hint(
    cli: list[str], gh_env: dict[str, str], fake: FakeGitHub, tmp_path: Path
) -> None:
    fake.is_read_only = True
    result = publish(cli, gh_env, tmp_path)
    assert result.returncode == 0
    [hint] = [line for line in result.stderr.splitlines() if "comment not posted" in line]
    assert READ_ONLY in hint and "workflow_run" in hint
    assert "::warning title=db-test-action PR comment not posted::" in result.stdout
    assert (tmp_path / "summary.md").read_text(encoding="utf-8") == MARKDOWN
    strict = publish(cli, {**gh_env, "DB_TEST_ACTION_FAIL_ON_PUBLISH_ERROR": "true"}, tmp_path)
    assert strict.returncode == 3


def test_workflow_run_event_without_pull_requests_finds_the_fork_pr(
    cli: list[str], gh_env: dict[str, str], fake: FakeGitHub, tmp_path: Path
) -> None:
    fake.add_pull(12, "forker", "patch-1", "deadbeef")
    event = tmp_path / "run-event.json"
    run = {
        "event": "pull_request",
        "head_branch": "patch-1",
        "head_sha": "deadbeef",
        "head_repository": {"full_name": "forker/r", "owner": {"login": "forker"}},
        "pull_requests": [],
    }
    event.write_text(json.dumps({"action": "completed", "workflow_run": run}), encoding="utf-8")
    env = {**gh_env, "GITHUB_EVENT_NAME": "workflow_run", "GITHUB_EVENT_PATH": str(event)}
    result = publish(cli, env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert list(fake.comments) == [12]


def test_ghes_api_url(cli: list[str], gh_env: dict[str, str], httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.clear()
    ghes = FakeGitHub(httpserver, prefix="/api/v3")
    result = publish(cli, {**gh_env, "GITHUB_API_URL": ghes.base_url}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert ghes.base_url.endswith("/api/v3") and len(ghes.comments[7]) == 1
    assert all(path.startswith("/api/") for path in ghes.calls())


def test_dry_run_makes_no_requests_and_writes_nothing(
    cli: list[str], gh_env: dict[str, str], fake: FakeGitHub, tmp_path: Path
) -> None:
    result = publish(cli, gh_env, tmp_path, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would create or update the comment <!-- db-test-action:unit --> in o/r on #7" in result.stdout
    assert MARKDOWN.splitlines()[0] in result.stdout
    assert fake.log == [] and not (tmp_path / "summary.md").exists()


def test_push_event_writes_summary_and_skips_the_comment(
    cli: list[str], gh_env: dict[str, str], fake: FakeGitHub, tmp_path: Path
) -> None:
    push = tmp_path / "push.json"
    push.write_text(json.dumps({"ref": "refs/heads/main"}), encoding="utf-8")
    result = publish(cli, {**gh_env, "GITHUB_EVENT_PATH": str(push)}, tmp_path)
    assert result.returncode == 0 and fake.log == []
    assert "not about a pull request" in result.stderr
    assert (tmp_path / "summary.md").read_text(encoding="utf-8") == MARKDOWN


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"DB_TEST_ACTION_COMMENT_MODE": "sometimes"},
            'DB_TEST_ACTION_COMMENT_MODE: "sometimes" is not valid; use off, always, changes or failures',
        ),
        (
            {"GITHUB_EVENT_PATH": "/nonexistent/event.json"},
            "publish: /nonexistent/event.json: cannot read event file",
        ),
        ({"GITHUB_TOKEN": ""}, "publish: no token; pass --token or set GITHUB_TOKEN"),
        ({"GITHUB_REPOSITORY": "just-a-name"}, "--repository: 'just-a-name' is not OWNER/REPO"),
    ],
)
def test_bad_settings_are_one_line_errors(
    cli: list[str], gh_env: dict[str, str], tmp_path: Path, change: dict[str, str], expected: str
) -> None:
    result = publish(cli, {**gh_env, **change}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"db-test-action: {expected}")


def test_with_comments_off_an_odd_repository_or_event_does_not_matter(
    cli: list[str], gh_env: dict[str, str], fake: FakeGitHub, tmp_path: Path
) -> None:
    """Shard jobs publish with comments off; act (and some runners) report GITHUB_REPOSITORY as a path."""
    odd = {"GITHUB_REPOSITORY": "/work/main", "GITHUB_EVENT_PATH": "/nonexistent/event.json"}
    result = publish(cli, {**gh_env, **odd, "DB_TEST_ACTION_COMMENT_MODE": "off"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert fake.log == []
    assert (tmp_path / "summary.md").read_text(encoding="utf-8") == MARKDOWN


def test_missing_input_is_a_usage_error(cli: list[str], gh_env: dict[str, str]) -> None:
    result = subprocess.run([*cli, "publish"], env=gh_env, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "nothing to publish; pass --report-json FILE or --markdown FILE" in result.stderr


JUNIT = Path(__file__).parent / "data" / "junit" / "phases-reruns.xml"


def test_report_json_from_the_reporter_is_published_end_to_end(
    cli: list[str], gh_env: dict[str, str], fake: FakeGitHub, tmp_path: Path
) -> None:
    report_json = tmp_path / "report.json"
    reported = subprocess.run(
        [
            *cli,
            "report",
            str(JUNIT),
            "--json",
            str(report_json),
            "--markdown",
            str(tmp_path / "report-md.md"),
        ],
        env=gh_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert reported.returncode == 1 and report_json.exists(), reported.stderr  # failing tests: gate red
    argv = [*cli, "publish", "--report-json", str(report_json), "--key", "unit", "--comment-mode", "changes"]
    first = subprocess.run(argv, env=gh_env, capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    errors = [line for line in first.stdout.splitlines() if line.startswith("::error ")]
    assert len(errors) == 5
    # a setup error raised in conftest.py is annotated on the test it broke: its `def` line, 1-based
    assert errors[0].startswith("::error file=tests/test_phases.py,line=10,title=setup error (connection)")
    [comment] = fake.comments[7]
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert comment["body"].startswith(summary.rstrip("\n"))
    assert summary.startswith("### ❌ Test results")
    second = subprocess.run(argv, env=gh_env, capture_output=True, text=True, timeout=60, check=False)
    assert "is up to date (same fingerprint); not edited" in second.stdout, second.stderr
    assert not fake.calls("PATCH")


def test_bad_report_json_is_a_one_line_error(cli: list[str], gh_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "report.json"
    bad.write_text('{"schema_version": 99}', encoding="utf-8")
    result = subprocess.run(
        [*cli, "publish", "--report-json", str(bad)], env=gh_env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"db-test-action: {bad}: schema_version 99 is not supported; this version reads 1"
    )
