"""The nightly's history from the previous night's artifact, through our own GitHub client (real HTTP
against the fake GitHub): the default branch's newest one wins over a fork's, no artifact is a first
night, and failing to ask GitHub is an error rather than a new beginning."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fake_github_artifacts import FakeGitHubArtifacts
from pytest_httpserver import HTTPServer

NAME = "db-test-action-stability-history"


def _night(folder: Path, broken: bool) -> Path:
    """One night's JUnit: two runs of a small suite, `test_flow` failing in both when `broken`."""
    for run in (1, 2):
        body = '<failure message="AssertionError: boom">assert False</failure>' if broken else ""
        xml = (
            '<testsuites><testsuite name="pytest" tests="2" time="1.0">'
            '<testcase classname="tests.test_app" name="test_ok" file="tests/test_app.py" time="0.1"/>'
            f'<testcase classname="tests.test_app" name="test_flow" file="tests/test_app.py" time="0.1">{body}</testcase>'
            "</testsuite></testsuites>"
        )
        target = folder / f"db-test-stability-run-{run}-shard-1"
        target.mkdir(parents=True, exist_ok=True)
        (target / "shard-1-run-1.xml").write_text(xml)
    return folder


@pytest.fixture
def fake(httpserver: HTTPServer) -> FakeGitHubArtifacts:
    return FakeGitHubArtifacts(httpserver)


def _stability(cli, cli_env, cwd: Path, fake, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**cli_env, "GITHUB_TOKEN": fake.token, "GITHUB_REPOSITORY": "o/r", "GITHUB_API_URL": fake.base_url}
    return subprocess.run(
        [*cli, "stability", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_default_branch_artifact_continues_the_history(cli, cli_env, tmp_path, fake) -> None:
    first = tmp_path / "first.jsonl"
    night1 = _night(tmp_path / "n1", broken=True)
    made = _stability(cli, cli_env, tmp_path, fake, str(night1), "--history", str(first), "--night", "2026-11-30",
                      "--fail-on", "none")  # fmt: skip
    assert made.returncode == 0, made.stderr
    fake.add_artifact(
        NAME, {"stability-history.jsonl": first.read_text()}, run_id=11, created_at="2026-11-30T03:30:00Z"
    )
    fake.add_artifact(NAME, {"stability-history.jsonl": "not a history\n"}, branch="evil", run_id=12,
                      from_fork=True, created_at="2026-11-30T09:00:00Z")  # fmt: skip

    local = tmp_path / "history" / "stability-history.jsonl"
    night2 = _night(tmp_path / "n2", broken=True)
    proc = _stability(cli, cli_env, tmp_path, fake, str(night2), "--history", str(local), "--history-artifact",
                      NAME, "--night", "2026-12-01", "--require-consecutive", "5",
                      "--fail-on", "consecutive,broken,newly-flaky")  # fmt: skip
    assert "history artifact db-test-action-stability-history: from workflow run 11" in proc.stderr
    history = local.read_text()
    assert "2026-11-30" in history and "2026-12-01" in history  # yesterday's night and tonight
    # the broken test turns the nightly red: the gates are on
    assert proc.returncode == 1, proc.stderr
    assert "BROKEN" in proc.stdout and "gate" in proc.stdout


def test_no_artifact_yet_is_a_first_night(cli, cli_env, tmp_path, fake) -> None:
    local = tmp_path / "h.jsonl"
    proc = _stability(cli, cli_env, tmp_path, fake, str(_night(tmp_path / "n", broken=False)), "--history",
                      str(local), "--history-artifact", NAME)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "none from the default branch yet; this is the first night" in proc.stderr
    assert len(local.read_text().splitlines()) == 2  # the header and tonight


def test_a_missing_history_source_is_an_error_not_a_new_beginning(cli, cli_env, tmp_path, fake) -> None:
    fake.fail("GET", r"/actions/artifacts$", 403, "Resource not accessible by integration", times=10)
    local = tmp_path / "h.jsonl"
    proc = _stability(cli, cli_env, tmp_path, fake, str(_night(tmp_path / "n", broken=False)), "--history",
                      str(local), "--history-artifact", NAME, "--retries", "0")  # fmt: skip
    assert proc.returncode == 3
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        "db-test-action: --history-artifact db-test-action-stability-history: list artifacts"
    )
    assert "grant `actions: read`" in line
    assert not local.exists()  # nothing started over
