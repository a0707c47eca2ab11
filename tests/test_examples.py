"""The README demo is real: the fragile suite produces the incident's three errors under two xdist workers
(as setup/teardown errors, from PostgreSQL), and the robust suite — the same tests — is green."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

import defusedxml.ElementTree as DET

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
    found: set[str] = set()
    for attempt in range(2):  # the choreography makes one run enough; a second only absorbs a loaded machine
        results = tmp_path / f"fragile-{attempt}"
        out = _run(cli, cli_env, pg_server, results, "fragile", "--workers", "2")
        assert out.returncode == 1, out.stderr[-2000:]
        errors = _errors(results)
        assert errors, out.stderr[-2000:]
        for _name, message, _text in errors:
            assert message.startswith(("failed on setup with", "failed on teardown with")), message
        for kind, (exc_class, needle) in KINDS.items():
            if any(needle in message and exc_class in text for _n, message, text in errors):
                found.add(kind)
        if found == set(KINDS):
            break
    assert found == set(KINDS)


def test_robust_suite_is_green_under_the_same_run(cli, cli_env, pg_server, tmp_path):
    out = _run(cli, cli_env, pg_server, tmp_path / "robust", "robust", "--workers", "2", "--repeat", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert _errors(tmp_path / "robust") == []
    for run in (1, 2):
        root = DET.parse(tmp_path / "robust" / f"shard-1-run-{run}.xml").getroot()
        assert int(root.find("testsuite").get("tests")) == 58
