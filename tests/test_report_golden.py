"""The report of a failure-heavy run is the same, content for content, as before the speed work.

tests/data/junit/failure-heavy.expected.{json,md} were written by `db-test-action report` at commit
1667ec5 (expat callbacks, sequential regexes, recursive dataclass-to-dict JSON) from the same generated
input: 2,000 testcases in 4 files from benchmarks/junit_sets.py (~4 % failing with distinct ~2 KB
tracebacks). benchmarks/report_scale.py checks the same at 100,000 testcases against a digest.
Rewritten once since, for the diagnosis fields (collisions, doctor, *_flaky counts) and 1-based lines.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "junit"


def _junit_sets():
    spec = importlib.util.spec_from_file_location("junit_sets", ROOT / "benchmarks" / "junit_sets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_failure_heavy_report_matches_the_golden_json_and_markdown(tmp_path, cli, cli_env):
    results = tmp_path / "results"
    results.mkdir()
    _junit_sets().generate_failure_heavy(results, 2000, 4)
    proc = subprocess.run(
        [*cli, "report", "results", "--json", "r.json", "--markdown", "r.md", "--fail-on", "none"],
        cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = json.loads((DATA / "failure-heavy.expected.json").read_text(encoding="utf-8"))
    actual = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert actual["totals"]["tests"] == 2000 and len(actual["tests"]) > 60  # the input is what it was
    for key in expected:  # a readable first difference before the whole comparison
        assert actual[key] == expected[key], key
    # fields added since the golden was written (regression gate); everything else is byte-for-byte the old
    assert set(actual) - set(expected) <= {"new_failures", "new_breaches", "has_base", "hangs"}
    assert {key: actual[key] for key in expected} == expected
    assert (tmp_path / "r.md").read_text(encoding="utf-8") == (DATA / "failure-heavy.expected.md").read_text(
        encoding="utf-8"
    )
