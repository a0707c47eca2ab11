"""`db-test-action report` end to end in a subprocess: outputs, exit codes, manifest, base, one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "junit"


def _run(cli, cli_env, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli, "report", *args], cwd=cwd, env=cli_env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def results(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    shutil.copy(DATA / "phases-reruns.xml", folder / "shard-1-run-1.xml")
    return folder


def _passing(folder: Path, shard: int, run: int, tests: list[str]) -> None:
    cases = "".join(f'<testcase classname="tests.test_ok" name="{t}" time="0.5"/>' for t in tests)
    xml = f'<testsuites><testsuite name="pytest" time="2.0">{cases}</testsuite></testsuites>'
    (folder / f"shard-{shard}-run-{run}.xml").write_text(xml)


def test_failures_exit_1_and_write_markdown_json_console(cli, cli_env, results, tmp_path):
    proc = _run(cli, cli_env, tmp_path, "results", "--markdown", "out/report.md", "--json", "out/report.json")
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("Test results: FAILED — 10 tests")
    assert "gate (fail on errors, failures): FAILED (errors, failures)" in proc.stdout
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.startswith("### ❌ Test results")
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["schema_version"] == 1 and data["verdict"] == "failed"


def test_green_run_exits_0_and_fail_on_none_ignores_failures(cli, cli_env, results, tmp_path):
    ok = tmp_path / "ok"
    ok.mkdir()
    _passing(ok, 1, 1, ["test_a", "test_b"])
    assert _run(cli, cli_env, tmp_path, "ok").returncode == 0
    assert _run(cli, cli_env, tmp_path, "results", "--fail-on", "none").returncode == 0
    env = {**cli_env, "DB_TEST_ACTION_FAIL_ON": "flaky"}
    assert (
        subprocess.run([*cli, "report", "results"], cwd=tmp_path, env=env, capture_output=True).returncode
        == 0
    )


def test_truncated_shard_is_named_and_exits_2(cli, cli_env, results, tmp_path):
    data = (results / "shard-1-run-1.xml").read_bytes().replace(b"><", b">\n<")
    (results / "shard-3-run-1.xml").write_bytes(data[: len(data) // 2])
    proc = _run(cli, cli_env, tmp_path, "results", "--markdown", "r.md")
    assert proc.returncode == 2
    assert "problem: results/shard-3-run-1.xml:" in proc.stdout and "truncated XML" in proc.stdout
    assert "re-run shard 3" in (tmp_path / "r.md").read_text()


def test_manifest_names_missing_shards_and_lost_tests(cli, cli_env, tmp_path):
    folder = tmp_path / "res"
    folder.mkdir()
    _passing(folder, 1, 1, ["test_a"])
    _passing(folder, 1, 2, ["test_a"])
    _passing(folder, 2, 1, ["test_b"])
    manifest = {
        "version": 1,
        "shards": 2,
        "repeat": 2,
        "tests": {
            "tests/test_ok.py::test_a": 1,
            "tests/test_ok.py::test_b": 2,
            "tests/test_ok.py::test_c": 2,
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    proc = _run(cli, cli_env, tmp_path, "--manifest", "res/manifest.json")
    assert proc.returncode == 2
    assert (
        "problem: shard-2-run-2.xml: missing: shard 2 run 2 of 2×2 wrote no results; re-run shard 2"
        in proc.stdout
    )
    assert "shard 2: 1 of 2 planned tests never reported (tests/test_ok.py::test_c)" in proc.stdout
    # a shard job checks only itself: shard 1 is complete, shard 2 is not
    assert _run(cli, cli_env, tmp_path, "--manifest", "res/manifest.json", "--shard", "1").returncode == 0
    own = _run(cli, cli_env, tmp_path, "--manifest", "res/manifest.json", "--shard", "2")
    assert own.returncode == 2 and "shard-2-run-2.xml" in own.stdout and "shard-1" not in own.stdout
    _passing(folder, 2, 2, ["test_b", "test_c"])
    assert _run(cli, cli_env, tmp_path, "--manifest", "res/manifest.json").returncode == 0
    bad = _run(cli, cli_env, tmp_path, "--manifest", "res/manifest.json", "--shard", "3")
    assert bad.returncode == 2 and "--shard: 3 is not a shard of" in bad.stderr
    # `report DIR` finds DIR/manifest.json by itself, so --shard works without --manifest
    (folder / "shard-2-run-2.xml").unlink()
    auto = _run(cli, cli_env, tmp_path, "res")
    assert auto.returncode == 2 and "missing: shard 2 run 2 of 2×2" in auto.stdout
    assert _run(cli, cli_env, tmp_path, "res", "--shard", "1").returncode == 0
    (folder / "manifest.json").unlink()
    alone = _run(cli, cli_env, tmp_path, "res", "--shard", "1")
    assert alone.returncode == 2 and "--shard: needs --manifest" in alone.stderr


def test_expect_files(cli, cli_env, tmp_path):
    folder = tmp_path / "res"
    folder.mkdir()
    _passing(folder, 1, 1, ["test_a"])
    proc = _run(cli, cli_env, tmp_path, "res", "--expect-files", "2")
    assert proc.returncode == 2 and "expected 2 result files with tests, found 1" in proc.stdout


def test_base_report_flags_regressions_and_budgets_gate(cli, cli_env, tmp_path):
    base_dir, now_dir = tmp_path / "base", tmp_path / "now"
    base_dir.mkdir(), now_dir.mkdir()
    _passing(base_dir, 1, 1, ["test_a"])
    assert _run(cli, cli_env, tmp_path, "base", "--json", "base.json").returncode == 0
    xml = '<testsuite name="pytest" time="9.0"><testcase classname="tests.test_ok" name="test_a" time="8.0"/></testsuite>'
    (now_dir / "r.xml").write_text(xml)
    proc = _run(
        cli, cli_env, tmp_path, "now", "--base", "base.json", "--fail-on", "budgets", "--markdown", "m.md"
    )
    assert proc.returncode == 1
    assert "slower than base: suite wall time 2.0s → 9.0s" in proc.stdout
    assert "📈 slower" in (tmp_path / "m.md").read_text()


def test_config_file_budgets_and_one_line_errors(cli, cli_env, results, tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.db-test-action.budgets]\nsuite = "2min"\n')
    proc = _run(cli, cli_env, tmp_path, "results")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        'db-test-action: pyproject.toml [tool.db-test-action.budgets] suite: "2min" is not a duration; '
        'use 120 or "2m"'
    )
    (tmp_path / "pyproject.toml").write_text('[tool.db-test-action]\ntitle = "Nightly"\n')
    proc = _run(cli, cli_env, tmp_path, "results", "--budget", "suite=1ms")
    assert proc.stdout.startswith("Nightly: FAILED")
    assert "budget over: suite wall time" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "report: no results given; pass JUnit XML files, directories or globs (or --manifest)"),
        (("x.xml", "--fail-on", "sometimes"), '--fail-on: "sometimes" is not valid'),
    ],
)
def test_usage_errors_exit_2_with_one_line(cli, cli_env, tmp_path, args, message):
    proc = _run(cli, cli_env, tmp_path, *args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr


def test_nothing_found_is_named(cli, cli_env, tmp_path):
    proc = _run(cli, cli_env, tmp_path, "nowhere/*.xml")
    assert proc.returncode == 2
    assert "problem: nowhere/*.xml: no JUnit XML files here" in proc.stdout


def test_a_workflow_command_hidden_in_a_test_name_cannot_run_on_actions(cli, cli_env, tmp_path):
    """A fork controls test names; on Actions the console output is fenced with ::stop-commands::."""
    folder = tmp_path / "res"
    folder.mkdir()
    evil = "x&#10;::error title=pwned::injected"
    (folder / "shard-1-run-1.xml").write_text(
        '<testsuites><testsuite name="pytest" time="1.0">'
        f'<testcase classname="tests.test_ok" name="{evil}" time="0.5"><failure message="boom"/></testcase>'
        "</testsuite></testsuites>"
    )
    plain = _run(cli, cli_env, tmp_path, "res")
    on_actions = _run(cli, {**cli_env, "GITHUB_ACTIONS": "true"}, tmp_path, "res")
    assert "::error title=pwned::injected" in plain.stdout  # what the fence is for
    lines = on_actions.stdout.splitlines()
    assert lines[0].startswith("::stop-commands::")
    token = lines[0].split("::")[2]
    assert lines[-1] == f"::{token}::"
    inside = lines[1:-1]
    assert any("::error title=pwned::injected" in line for line in inside)
    assert on_actions.returncode == plain.returncode == 1


def test_absurd_times_are_read_as_zero_and_named_not_a_crash(cli, cli_env, tmp_path):
    folder = tmp_path / "res"
    folder.mkdir()
    cases = "".join(
        f'<testcase classname="tests.test_t" name="test_{i}" time="{t}"/>'
        for i, t in enumerate(["1e400", "inf", "nan", "-3", "0.25"])
    )
    (folder / "a.xml").write_text(
        f'<testsuites><testsuite name="pytest" time="1e400">{cases}</testsuite></testsuites>'
    )
    proc = _run(cli, cli_env, tmp_path, "res", "--json", "r.json", "--markdown", "r.md")
    assert proc.returncode == 2, proc.stderr  # bad input, named; the report is still written
    assert (
        "problem: res/a.xml: testcase tests/test_t.py::test_0: time='1e400' is not a number of seconds from 0 to 1e7"
        in proc.stdout
    )

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in the JSON report")

    data = json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse)  # no Infinity/NaN
    assert data["totals"]["tests"] == 5 and data["totals"]["duration_s"] == 0.25
    assert len(data["problems"]) == 1
