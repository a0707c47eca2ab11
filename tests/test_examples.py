"""The README demo is real: the fragile suite produces the incident's three errors under two xdist workers
(as setup/teardown errors, from PostgreSQL), and the robust suite — the same tests — is green."""

from __future__ import annotations

import contextlib
import filecmp
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import defusedxml.ElementTree as DET
import pytest

from db_test_action.report.codec import report_from_dict

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
KINDS = {
    "dependent objects (drop_all)": ("DependentObjectsStillExistError", "cannot drop table workspaces"),
    "tuple concurrently updated": ("InternalServerError", "tuple concurrently updated"),
    "workspaces_pkey": ("UniqueViolationError", '"workspaces_pkey"'),
}


def _run(cli, cli_env, pg_server, results: Path, suite: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [*cli, "run", "--database-url", pg_server.url(), "--results-dir", str(results), *extra,
           "--", f"examples/{suite}", "-q"]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300)


def _errors(results: Path) -> list[tuple[str, str, str]]:
    """(test name, message, text) of every <error> in the run's JUnit files."""
    out = []
    for path in sorted(results.glob("shard-*-run-*.xml")):
        for case in DET.parse(path).getroot().iter("testcase"):
            for error in case.iter("error"):
                out.append((case.get("name", ""), error.get("message", ""), error.text or ""))
    return out


def test_suites_hold_the_same_tests():
    fragile = sorted(p.name for p in (EXAMPLES / "fragile").glob("test_*.py"))
    robust = sorted(p.name for p in (EXAMPLES / "robust").glob("test_*.py"))
    assert fragile == robust and len(fragile) >= 6
    _match, mismatch, errors = filecmp.cmpfiles(
        EXAMPLES / "fragile", EXAMPLES / "robust", fragile, shallow=False
    )
    assert (mismatch, errors) == ([], [])


def test_fragile_suite_produces_the_three_errors_under_two_workers(cli, cli_env, pg_server, tmp_path):
    results = tmp_path / "fragile"
    out = _run(cli, cli_env, pg_server, results, "fragile", "--workers", "2")
    assert out.returncode == 1, out.stderr[-2000:]
    errors = _errors(results)
    for _name, message, _text in errors:
        assert message.startswith(("failed on setup with", "failed on teardown with")), message
    found = {
        kind
        for kind, (exc_class, needle) in KINDS.items()
        if any(needle in message and exc_class in text for _n, message, text in errors)
    }
    assert found == set(KINDS)  # by construction (examples/lockstep.py): one run is enough
    # Fixture errors are counted as pytest counts them: its own summary line of this very run.
    json_out = tmp_path / "fragile.json"
    subprocess.run([*cli, "report", str(results), "--json", str(json_out)], cwd=ROOT, env=cli_env,
                   capture_output=True, text=True, timeout=300)  # fmt: skip
    totals = json.loads(json_out.read_text())["totals"]
    said = _pytest_summary((results / "shard-1-run-1.log").read_text())
    assert said.get("errors", 0) == totals["setup_errors"] + totals["teardown_errors"] > 0, (said, totals)
    assert said.get("failed", 0) == totals["failed"], (said, totals)


def _pytest_summary(log: str) -> dict[str, int]:
    """pytest's last summary line ("25 passed, 1 failed, 4 errors in 3.2s") as counts by word."""
    line = next(
        line for line in reversed(log.splitlines()) if re.search(r"\d+ (passed|failed|errors?)\b", line)
    )
    return {("errors" if word == "error" else word): int(n) for n, word in re.findall(r"(\d+) (\w+)", line)}


def test_robust_suite_is_green_under_the_same_run(cli, cli_env, pg_server, tmp_path):
    out = _run(cli, cli_env, pg_server, tmp_path / "robust", "robust", "--workers", "2", "--repeat", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert _errors(tmp_path / "robust") == []
    for run in (1, 2):
        root = DET.parse(tmp_path / "robust" / f"shard-1-run-{run}.xml").getroot()
        assert int(root.find("testsuite").get("tests")) == 58


@contextlib.contextmanager
def cpu_load(processes: int = 2) -> Iterator[None]:
    """Busy loops on every core: the demo must not depend on timing."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


# What the README demo shows on any machine: per category (setup errors, of them flaky, teardown errors,
# of them flaky). Crypto and pkey hit the same tests in every run; the cascade moves between runs (flaky).
DEMO_FIXTURE_ERRORS = {
    "auth_endpoints": (2, 0, 0, 0),
    "csrf_protection": (4, 2, 2, 2),
    "encryption": (2, 2, 2, 2),
}


@pytest.mark.e2e
def test_readme_demo_tells_the_same_story_under_cpu_load(cli, cli_env, tmp_path):
    results, out = tmp_path / "demo-results", tmp_path / "demo-report.json"
    run = [*cli, "run", "--shards", "2", "--shard", "all", "--repeat", "2", "--workers", "2", "--no-fail",
           "--results-dir", str(results), "--", "examples/fragile", "-q"]  # fmt: skip
    with cpu_load():
        done = subprocess.run(run, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    # The console: progress and where pytest's output went, not pytest's output itself.
    assert "short test summary" not in done.stdout + done.stderr
    assert done.stderr.count("pytest's output: ") == 4
    report_cmd = [
        *cli,
        "report",
        str(results),
        "--config",
        "examples/budgets.toml",
        "--json",
        str(out),
    ]
    shown = subprocess.run(report_cmd, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 1, shown.stderr
    # The README shows this output: its verdict line and causes are what every machine prints.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert shown.stdout.splitlines()[0] in readme, shown.stdout.splitlines()[0]
    for line in shown.stdout.splitlines():
        if re.match(r"\s+\d+ × [a-z-]+\s", line):
            assert line.split("  e.g. ")[0] in readme, line
    report = report_from_dict(json.loads(out.read_text()))
    assert report.verdict.value == "failed"
    got = {
        c.name: (c.setup_errors, c.setup_errors_flaky, c.teardown_errors, c.teardown_errors_flaky)
        for c in report.categories
        if c.setup_errors or c.teardown_errors
    }
    assert got == DEMO_FIXTURE_ERRORS
    assert {g.cause.key for g in report.causes} == {"unique-violation", "concurrent-ddl", "dependent-objects"}
    # Budgets at work: the seed's, from the examples' config.
    assert {b.key for b in report.budgets} >= {"suite", "average-test", "categories.workspace_isolation"}
    # Every collision names its partner, on the other worker.
    collisions = [c for t in report.tests for c in t.collisions]
    assert {c.object for c in collisions} == {"workspaces_pkey", "app_encrypt", "workspaces"}
    assert all(c.partner_id and c.partner_worker != c.worker for c in collisions)
