"""`--quarantine FILE` in real pytest subprocess runs: quarantined failures in any phase are xfailed (not
failing), reported in JUnit with `quarantined=true` and the original error; everything else is untouched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import defusedxml.ElementTree as DET
import pytest
from pytest_runs import run_pytest

from db_test_action.junit.files import parse_junit_file
from db_test_action.model import Outcome
from db_test_action.plugin.quarantine import QuarantineList, parse_quarantine

SUITE = {
    "conftest.py": """
        import pytest

        @pytest.fixture
        def setup_breaks():
            raise RuntimeError('duplicate key value violates unique constraint "workspaces_pkey"')

        @pytest.fixture
        def teardown_breaks():
            yield
            raise RuntimeError("cannot drop table workspaces because other objects depend on it")
    """,
    "tests/test_q.py": """
        import pytest

        def test_body_fails():
            assert 1 == 2, "flaky body"

        def test_setup(setup_breaks):
            pass

        def test_teardown(teardown_breaks):
            pass

        def test_passes():
            pass

        @pytest.mark.parametrize("n", [1, 2])
        def test_param(n):
            assert n == 3
    """,
    "tests/test_other.py": """
        def test_real_failure():
            assert False, "a real bug"

        def test_fine():
            pass
    """,
}
QUARANTINE = """\
# db-test-action quarantine: flaky tests
tests/test_q.py::test_body_fails
tests/test_q.py::test_setup
tests/test_q.py::test_teardown
tests/test_q.py::test_passes

tests/test_q.py::test_param
"""


def _cases(junit: Path) -> dict[str, tuple[str, str, dict[str, str]]]:
    out = {}
    for case in DET.parse(junit).getroot().iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        result = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        key = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed" if result is None else f"{result.tag}:{result.get('type', '')}"
        message = "" if result is None else result.get("message", "")
        if key in out and outcome == "passed":
            continue  # the teardown error comes as a second element; keep the informative one
        out[key] = (outcome, message, props)
    return out


def _run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[Path, subprocess.CompletedProcess]:
    (tmp_path / "quarantine.txt").write_text(QUARANTINE, encoding="utf-8")
    junit = run_pytest(tmp_path, SUITE, *args, env=env)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=tmp_path, env={**_env(), **(env or {})}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return junit, proc


def _env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GITHUB_", "DB_TEST_ACTION_"))
    }


def test_quarantined_failures_in_every_phase_do_not_fail(tmp_path: Path) -> None:
    junit, proc = _run(
        tmp_path, "--quarantine", "quarantine.txt", "--deselect", "tests/test_other.py::test_real_failure"
    )
    assert proc.returncode == 0, proc.stdout
    assert "5 quarantined tests failed (not blocking)" in proc.stdout
    assert "quarantine: 5 entries from quarantine.txt" in proc.stdout
    cases = _cases(junit)
    body = cases["tests.test_q::test_body_fails"]
    assert body[0] == "skipped:pytest.xfail" and body[1].startswith(
        "quarantined (call): AssertionError: flaky body"
    )
    assert body[2]["quarantined"] == "true"
    setup = cases["tests.test_q::test_setup"]
    assert (
        setup[0] == "skipped:pytest.xfail" and "quarantined (setup): RuntimeError: duplicate key" in setup[1]
    )
    teardown = cases["tests.test_q::test_teardown"]
    assert teardown[0] == "skipped:pytest.xfail" and "quarantined (teardown)" in teardown[1]
    assert cases["tests.test_q::test_passes"] == ("passed", "", {"quarantined": "true"})
    assert cases["tests.test_q::test_param[1]"][0] == "skipped:pytest.xfail"  # an entry covers its parameters
    assert cases["tests.test_other::test_fine"] == ("passed", "", {})


def test_a_real_failure_still_fails_the_run(tmp_path: Path) -> None:
    junit, proc = _run(tmp_path, "--quarantine", "quarantine.txt")
    assert proc.returncode == 1
    assert _cases(junit)["tests.test_other::test_real_failure"][0] == "failure:"


def test_without_the_option_nothing_changes(tmp_path: Path) -> None:
    junit, proc = _run(tmp_path)
    assert proc.returncode == 1 and "quarantine" not in proc.stdout
    cases = _cases(junit)
    assert (
        cases["tests.test_q::test_body_fails"][0] == "failure:"
        and not cases["tests.test_q::test_body_fails"][2]
    )
    assert cases["tests.test_q::test_setup"][0] == "error:"


def test_env_variable_and_xdist_workers(tmp_path: Path) -> None:
    env = {"DB_TEST_ACTION_QUARANTINE": str(tmp_path / "quarantine.txt")}
    junit, proc = _run(tmp_path, "-n", "2", "--deselect", "tests/test_other.py::test_real_failure", env=env)
    assert proc.returncode == 0, proc.stdout
    assert _cases(junit)["tests.test_q::test_setup"][0] == "skipped:pytest.xfail"


def test_ini_key_is_relative_to_the_rootdir(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\ndb_quarantine = quarantine.txt\n", encoding="utf-8")
    _junit, proc = _run(tmp_path, "tests/test_q.py", "--rootdir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout


def test_the_reporter_reads_them_as_xfailed_with_the_cause_kept(tmp_path: Path) -> None:
    junit, _proc = _run(tmp_path, "--quarantine", "quarantine.txt")
    occurrences = {o.test_id: o for o in parse_junit_file(junit).occurrences if o.outcome is Outcome.XFAILED}
    setup = occurrences["tests/test_q.py::test_setup"]
    assert "workspaces_pkey" in setup.message


def test_missing_file_is_a_usage_error_naming_the_flag(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text("def test_a():\n    pass\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--quarantine", "nope.txt"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 4
    assert "--quarantine: cannot read nope.txt (No such file or directory)" in proc.stderr


@pytest.mark.parametrize(
    ("node_id", "expected"),
    [
        ("a.py::test_x", True),
        ("a.py::test_x[1-2]", True),
        ("a.py::test_xy", False),
        ("b.py::TestC::test_m", True),  # the class is listed
        ("c.py::test_anything", True),  # the file is listed
        ("cc.py::test_anything", False),
    ],
)
def test_entries_match_ids_parameters_classes_and_files(node_id: str, expected: bool) -> None:
    q = QuarantineList("q", parse_quarantine("# c\na.py::test_x\n  b.py::TestC  \n\nc.py\n"))
    assert (node_id in q) is expected
