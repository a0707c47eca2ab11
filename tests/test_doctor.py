"""The fixture doctor on real serial runs: the fragile example's three anti-patterns named with their
fixtures, none on the robust twin, and a connection a fixture never closes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from db_test_action.report.codec import report_from_dict

ROOT = Path(__file__).resolve().parent.parent


def _doctor(
    cli, cli_env, cwd: Path, out: Path, *pytest_args: str
) -> tuple[subprocess.CompletedProcess, dict]:
    cmd = [*cli, "doctor", "--results-dir", str(out / "results"), "--json", str(out / "doctor.json"),
           "--markdown", str(out / "doctor.md"), "--", *pytest_args]  # fmt: skip
    done = subprocess.run(cmd, cwd=cwd, env=cli_env, capture_output=True, text=True, timeout=900)
    data = json.loads((out / "doctor.json").read_text()) if (out / "doctor.json").exists() else {}
    return done, data


def test_doctor_names_the_three_anti_patterns_of_the_fragile_suite_run_serially(cli, cli_env, tmp_path):
    done, data = _doctor(cli, cli_env, ROOT, tmp_path, "examples/fragile", "-q")
    assert done.returncode == 1, done.stderr[-3000:]
    report = report_from_dict(data)
    assert report.totals.passed == report.totals.tests == 58  # serially the suite is green …
    findings = {f.key: f for f in report.doctor or ()}
    assert set(findings) == {"ddl-per-test", "schema-teardown-per-test", "fixed-keys"}  # … and yet
    ddl = findings["ddl-per-test"]
    assert ddl.fixture is not None and ddl.fixture.startswith("engine (examples/fragile/conftest.py:")
    assert any("CREATE OR REPLACE FUNCTION app_encrypt" in line for line in ddl.evidence)
    assert any("CREATE TABLE workspaces" in line for line in ddl.evidence)
    assert ddl.test_count == 52  # every test that uses the database; not the 6 pure validation tests
    drops = findings["schema-teardown-per-test"]
    assert any("workspace_audit references workspaces" in line for line in drops.evidence)
    keys = findings["fixed-keys"]
    assert keys.fixture is not None and keys.fixture.startswith("workspace (")
    assert any("00000000-0000-4000-8000-000000000001" in line for line in keys.evidence)
    assert "--db-setup" in ddl.fix and "db_reset" in drops.fix and "uuid4" in keys.fix
    # Printed by the command, and a section of the Markdown report.
    assert "fixture doctor: 3 anti-patterns" in done.stdout
    assert "#### Fixture doctor" in (tmp_path / "doctor.md").read_text()


def test_doctor_finds_nothing_in_the_robust_suite(cli, cli_env, tmp_path):
    done, data = _doctor(cli, cli_env, ROOT, tmp_path, "examples/robust", "-q")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert report_from_dict(data).doctor == ()
    assert "fixture doctor: no anti-patterns found" in done.stdout


LEAKY = {
    "conftest.py": """
import os

import psycopg
import pytest

KEPT = []


@pytest.fixture
def db():
    conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
    KEPT.append(conn)  # never closed: the pool-not-disposed pattern
    return conn
""",
    "test_leak.py": """
def test_one(db):
    db.execute("SELECT 1")


def test_two(db):
    db.execute("SELECT 1")
""",
}


def test_doctor_sees_connections_left_open(cli, cli_env, tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    for name, text in LEAKY.items():
        (suite / name).write_text(text)
    done, data = _doctor(cli, cli_env, suite, tmp_path, ".", "-q", "-p", "no:randomly")
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    (finding,) = report_from_dict(data).doctor or ()
    assert finding.key == "connections-left-open" and finding.test_count == 2
    assert finding.fixture is not None and finding.fixture.startswith("db (conftest.py:")


def test_doctor_weighs_connections_per_worker_against_max_connections(cli, cli_env, tmp_path):
    """Serially the leaky suite holds 2 connections at once; 4 workers would hold 8 of the 6 − 3 left."""
    suite = tmp_path / "suite"
    suite.mkdir()
    for name, text in LEAKY.items():
        (suite / name).write_text(text)
    cmd = [*cli, "doctor", "--results-dir", str(tmp_path / "results"), "--json", str(tmp_path / "d.json"),
           "--workers", "4", "--max-connections", "6", "--", ".", "-q", "-p", "no:randomly"]  # fmt: skip
    done = subprocess.run(cmd, cwd=suite, env=cli_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    findings = {
        f.key: f for f in report_from_dict(json.loads((tmp_path / "d.json").read_text())).doctor or ()
    }
    assert set(findings) == {"connections-left-open", "connection-headroom"}
    (evidence,) = findings["connection-headroom"].evidence
    assert "up to 2 connections at once (during test_leak.py::test_two)" in evidence
    assert "4 workers would hold 8, and max_connections 6 leaves 3" in evidence
    assert "max_connections" in done.stdout
    manifest = json.loads((tmp_path / "results" / "manifest.json").read_text())
    assert (manifest["max_connections"], manifest["workers"]) == (6, 4)


def test_doctor_needs_a_server_of_its_own(cli, cli_env, tmp_path):
    cmd = [*cli, "doctor", "--database-url", "postgresql://u@127.0.0.1:1/x", "--", "examples/robust"]
    done = subprocess.run(cmd, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "db-test-action: doctor: needs a server of ours (it reads the server's statement log); drop --database-url"
    )
