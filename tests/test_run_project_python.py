"""`run --python`: pytest runs in the project's own environment, which may lack a plugin a flag needs.

The project's environment here is a real virtualenv that holds pytest and nothing else (its packages
linked from this test run's), and our plugin comes from `--plugin-path`, as in the action.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import distribution
from pathlib import Path

import pytest
import yaml

SRC = Path(__file__).resolve().parent.parent / "src"


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A venv with pytest (and what it imports) but no pytest-timeout, pytest-xdist or psycopg."""
    root = tmp_path_factory.mktemp("project-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    for name in ("pytest", "pluggy", "iniconfig", "packaging", "pygments"):  # pytest and what it imports
        dist = distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or () if not str(f).startswith("..")}
        for top in tops:
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (Path(site) / top).exists():
                (Path(site) / top).symlink_to(source)
    check = "import pytest\ntry:\n import pytest_timeout\nexcept ImportError:\n print('bare')"
    assert subprocess.run([python, "-c", check], capture_output=True, text=True).stdout == "bare\n"
    return str(python)


def _run(cli, cli_env, pg_server, tmp_path: Path, python: str, *flags: str) -> subprocess.CompletedProcess:
    suite = tmp_path / "suite"
    suite.mkdir(exist_ok=True)
    (suite / "test_x.py").write_text("def test_ok():\n    pass\n")
    cmd = [*cli, "run", "--python", python, "--plugin-path", str(SRC), "--database-url", pg_server.url(),
           "--results-dir", str(tmp_path / "results"), *flags, "--", "-p", "no:cacheprovider"]  # fmt: skip
    return subprocess.run(cmd, cwd=suite, env=cli_env, capture_output=True, text=True, timeout=300)


def test_the_projects_python_runs_the_suite_with_our_plugin_from_its_path(
    cli, cli_env, pg_server, tmp_path, bare_python
):
    done = _run(cli, cli_env, pg_server, tmp_path, bare_python)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 passed" in done.stderr


def test_a_limit_the_projects_pytest_cannot_take_names_the_plugin_to_install(
    cli, cli_env, pg_server, tmp_path, bare_python
):
    done = _run(cli, cli_env, pg_server, tmp_path, bare_python, "--test-timeout", "30s")
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = [line for line in done.stderr.splitlines() if "unrecognized arguments: --timeout=30" in line]
    assert "; pip install pytest-timeout into the project's environment, which --test-timeout needs" in line
    assert "Traceback" not in done.stderr


def _plugins_step_script() -> str:
    """The Python the action's "pytest plugins the project lacks" step runs in the project's interpreter."""
    action = yaml.safe_load((SRC.parent / "action.yml").read_text(encoding="utf-8"))
    (step,) = [s for s in action["runs"]["steps"] if s.get("name") == "pytest plugins the project lacks"]
    body = step["run"].split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    return textwrap.dedent(body)


@pytest.mark.parametrize(
    ("inputs", "wanted"),
    [
        ({}, set()),
        ({"DB_TEST_ACTION_TEST_TIMEOUT": "30s"}, {"pytest-timeout>=2.2"}),
        ({"DB_TEST_ACTION_TEST_TIMEOUT": "0s"}, set()),  # no limit: run passes no --timeout
        (
            {"DB_TEST_ACTION_WORKERS": "2", "DB_TEST_ACTION_RERUNS": "1"},
            {"pytest-xdist>=3.5", "pytest-rerunfailures>=14"},
        ),
        ({"DB_TEST_ACTION_DB_PER_WORKER": "true"}, {"psycopg[binary]>=3.1"}),
    ],
)
def test_the_action_adds_exactly_the_plugins_its_inputs_need(bare_python, inputs, wanted):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC), **inputs}
    done = subprocess.run(
        [bare_python, "-"], input=_plugins_step_script(), env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == wanted


def test_a_plugin_pytest_cannot_import_is_named_too(cli, cli_env, pg_server, tmp_path, bare_python):
    """With autoloading off, `run` loads the plugins with `-p`: pytest's import error names the package."""
    env = {**cli_env, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    done = _run(cli, env, pg_server, tmp_path, bare_python, "--workers", "2")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "; pip install pytest-xdist into the project's environment, which --workers needs" in done.stderr
