"""The entry point is loaded by every pytest run in an environment that has the package: importing it
without a database option must cost pytest + the standard library + our settings table, nothing more."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("psycopg", "pwd", "github", "requests", "defusedxml", "db_test_action.plugin.db",
         "db_test_action.server", "db_test_action.model", "db_test_action.run")  # fmt: skip


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys; {code}; import json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))  # the last line: what ran may print too


def test_the_entry_point_imports_nothing_heavy() -> None:
    before = _loaded_after("import pytest")
    after = _loaded_after("import pytest, db_test_action.plugin")
    added = after - before
    heavy = sorted(m for m in added if m.startswith(HEAVY))
    assert not heavy, heavy
    ours = {m for m in added if m.startswith("db_test_action")}
    assert ours <= {
        "db_test_action",
        "db_test_action.errors",
        "db_test_action.contract",
        "db_test_action.config",
        "db_test_action.config.settings",
        "db_test_action.config.values",
        "db_test_action.plugin",
        "db_test_action.plugin.options",
        "db_test_action.plugin.sources",
        "db_test_action.plugin.quarantine",
        "db_test_action.plugin.results",
        "db_test_action.plugin.stream",
    }, ours
    # the standard library only, beyond pytest's own imports
    third_party = {m.split(".")[0] for m in added} - set(sys.stdlib_module_names) - {"db_test_action"}
    assert not third_party, third_party


def test_a_plain_pytest_run_never_loads_the_database_half(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "test_x.py").write_text(
        "import sys\n\ndef test_x():\n    assert 'db_test_action.plugin.db' not in sys.modules\n"
        "    assert 'psycopg' not in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_publish_without_a_comment_never_loads_pygithub(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The action publishes on every job; with comment mode off (summary and annotations only) it must not
    pay PyGithub's and requests' import (~0.5 s of each job's overhead)."""
    (tmp_path / "junit.xml").write_text(
        '<testsuite name="pytest"><testcase classname="t" name="test_a" time="0.1"/></testsuite>'
    )
    report = tmp_path / "report.json"
    code = (
        "from db_test_action.cli import main; "
        f"main(['report', {str(tmp_path / 'junit.xml')!r}, '--json', {str(report)!r}]); "
        f"main(['publish', '--report-json', {str(report)!r}, '--comment-mode', 'off'])"
    )
    loaded = _loaded_after(code)
    assert report.exists()
    assert not {m for m in loaded if m.startswith(("github", "requests"))}
